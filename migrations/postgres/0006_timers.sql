-- Durable timers: "do X for key K at time T" (SMS fallback deadlines, follow-ups, retention).
-- One row per (kind, key): scheduling again keeps the first. A worker claims due rows with a
-- lease like a ledger key (`owner`, `lease_until`); a lapsed lease may be taken over. `fired_at`
-- set means done: the row is never claimed again, so a timer fires at most once.
CREATE TABLE timers (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    due_at TIMESTAMPTZ NOT NULL,
    payload TEXT NOT NULL, -- JSON, opaque to the store
    owner TEXT,
    lease_until TIMESTAMPTZ,
    claims INTEGER NOT NULL DEFAULT 0,
    fired_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);
CREATE INDEX timers_due ON timers (due_at) WHERE fired_at IS NULL;
