-- Per-recipient events for CRMs (HERALD_RECIPIENT_EVENTS): a durable outbox written in the
-- same transaction as the fact it reports (an outcome, a status webhook), so an event is
-- never lost when the process dies after recording the fact. Written only when events are on.
--
-- One row per (message key, state): a redelivered webhook or a re-run job adds nothing
-- (INSERT … ON CONFLICT DO NOTHING). `id` orders events; the relay publishes a key's events
-- in id order. Published rows are kept (published_at set) so a late duplicate still finds its
-- row, and the retention purge (class `events`) deletes them later. Times are ms.
CREATE TABLE recipient_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_key     TEXT NOT NULL,     -- the ledger key (key, key#sms, key#follow-up)
    state           TEXT NOT NULL,     -- sent, delivered, read, failed, fallback, …
    recipient       TEXT,              -- the number, for erasure (never sent unless configured)
    payload         TEXT NOT NULL,     -- the JSON body as published
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    owner           TEXT,
    lease_until     INTEGER,
    last_error      TEXT,
    published_at    INTEGER,
    UNIQUE (message_key, state)
);
CREATE INDEX recipient_events_open ON recipient_events (id) WHERE published_at IS NULL;
CREATE INDEX recipient_events_published ON recipient_events (published_at)
    WHERE published_at IS NOT NULL;
CREATE INDEX recipient_events_recipient ON recipient_events (recipient);

-- Events no sink took within a day: moved here (herald_crm_events_dead_total), kept for an
-- operator to look at or replay, purged with class `events`.
CREATE TABLE recipient_events_dead (
    id          INTEGER PRIMARY KEY,
    message_key TEXT NOT NULL,
    state       TEXT NOT NULL,
    recipient   TEXT,
    payload     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    last_error  TEXT,
    dead_at     INTEGER NOT NULL
);
CREATE INDEX recipient_events_dead_at ON recipient_events_dead (dead_at);
CREATE INDEX recipient_events_dead_recipient ON recipient_events_dead (recipient);
