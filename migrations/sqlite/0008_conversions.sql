-- Conversion events (DESIGN §1.6): orders a shop reports, one row per event_id, ever (a
-- repeated event is ignored). Attributed at ingestion to the campaign's main ledger key of the
-- customer and the channel that reached them; unattributed events are kept too (key NULL).
-- Times are ms since the epoch, flags 0/1, like every SQLite table here.
CREATE TABLE conversions (
    event_id        TEXT PRIMARY KEY,
    campaign        TEXT NOT NULL,
    recipient_key   TEXT,                      -- the main ledger key; NULL = unattributed
    channel         TEXT,                      -- whatsapp | sms; NULL when unattributed
    after_follow_up INTEGER NOT NULL DEFAULT 0,
    -- E.164, kept only for an unattributed event that named a number, so a GDPR export or
    -- erasure finds it; an attributed event reaches the number through its ledger row.
    phone           TEXT,
    event           TEXT NOT NULL,
    at              INTEGER NOT NULL,
    amount_micros   INTEGER CHECK (amount_micros >= 0),
    currency        TEXT,
    received_at     INTEGER NOT NULL,
    CHECK ((amount_micros IS NULL) = (currency IS NULL))
);
-- converted_keys and the per-campaign summary.
CREATE INDEX conversions_campaign ON conversions (campaign, recipient_key);
-- GDPR export / erase: through the ledger key, or by number.
CREATE INDEX conversions_key ON conversions (recipient_key) WHERE recipient_key IS NOT NULL;
CREATE INDEX conversions_phone ON conversions (phone) WHERE phone IS NOT NULL;
