-- Retention (DESIGN §1.1 HERALD_RETENTION, GDPR Art. 5(1)(e)): the purge deletes personal rows
-- after their period, and what a campaign's totals need survives them here. Before ledger rows
-- are deleted, their counts are added to `campaign_totals` in the same transaction, so
-- `herald campaign status` shows the same numbers before and after a purge. No number, key or
-- wamid is kept: `prefix` is the recipient's first four digits (the country calling code and a
-- little more), only so what was sent can still be priced by market.
CREATE TABLE campaign_totals (
    campaign TEXT NOT NULL,
    role     TEXT NOT NULL,            -- first | fallback | follow_up (as in campaign_funnel)
    channel  TEXT NOT NULL,
    category TEXT NOT NULL,
    state    TEXT NOT NULL,            -- sent | failed | skipped | unknown (never pending/sending)
    reason   TEXT NOT NULL DEFAULT '', -- skip reason or error code; '' when none
    delivery TEXT NOT NULL DEFAULT '', -- delivered | read | failed | expired; '' when none
    prefix   TEXT NOT NULL DEFAULT '', -- '' for an erased (hashed) recipient
    n        INTEGER NOT NULL CHECK (n >= 0),
    PRIMARY KEY (campaign, role, channel, category, state, reason, delivery, prefix)
);

-- What the purge looks rows up by: their age.
CREATE INDEX ledger_updated ON ledger (updated_at);
CREATE INDEX conversions_received ON conversions (received_at);
CREATE INDEX timers_fired ON timers (fired_at) WHERE fired_at IS NOT NULL;
CREATE INDEX revocations_revoked ON revocations (revoked_at);
CREATE INDEX tier_reach_reached ON tier_reach (last_reached_at);
CREATE INDEX service_windows_open ON service_windows (open_until);
CREATE INDEX suppressions_created ON suppressions (created_at);
