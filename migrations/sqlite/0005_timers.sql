-- Durable timers: "do X for key K at time T" (SMS fallback deadlines, follow-ups, retention).
-- One row per (kind, key): scheduling again keeps the first. A worker claims due rows with a
-- lease like a ledger key (`owner`, `lease_until`); a lapsed lease may be taken over. `fired_at`
-- set means done: the row is never claimed again, so a timer fires at most once. Times are ms
-- since the epoch, like every SQLite time here; `payload` is JSON text.
CREATE TABLE timers (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    payload TEXT NOT NULL,
    owner TEXT,
    lease_until INTEGER,
    claims INTEGER NOT NULL DEFAULT 0,
    fired_at INTEGER,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX timers_due ON timers (due_at) WHERE fired_at IS NULL;
