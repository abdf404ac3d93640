-- The messaging tier's count, kept incrementally: how many numbers a portfolio reached in the
-- window as of `counted_at` (ms). A reservation subtracts the numbers that left the window
-- since then (a range of the `tier_reach_window` index) and adds the ones it reaches, instead
-- of counting the whole 24 h window per batch — O(n²) over a campaign. Recounted in full when
-- older than ten minutes, when the window length changes, and after a reservation that skipped
-- the count (an unlimited sender of the portfolio), which deletes the row.
CREATE TABLE tier_count (
    portfolio  TEXT PRIMARY KEY,
    window_ms  INTEGER NOT NULL,
    counted_at INTEGER NOT NULL,
    anchored_at INTEGER NOT NULL,      -- the last full count
    reached    INTEGER NOT NULL CHECK (reached >= 0)
) WITHOUT ROWID;
