-- Resolving `unknown` keys (the request may have reached Meta): a key left unknown by a crash
-- or a timeout, for which no status webhook came although later statuses of its sender did,
-- was never accepted and is sent once more. `resent_unknown` makes that at most once, ever;
-- `last_status_at` is the newest status time (Meta's clock) seen for a sender's messages.
ALTER TABLE senders ADD COLUMN last_status_at TIMESTAMPTZ;
ALTER TABLE ledger ADD COLUMN resent_unknown BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX ledger_unknown ON ledger (campaign, job) WHERE state = 'unknown';
