-- Conversion events (DESIGN §1.6): orders a shop reports, one row per event_id, ever (a
-- repeated event is ignored). Attributed at ingestion to the campaign's main ledger key of the
-- customer and the channel that reached them; unattributed events are kept too (key NULL).
CREATE TABLE conversions (
    event_id        TEXT COLLATE "C" PRIMARY KEY,
    campaign        TEXT COLLATE "C" NOT NULL,
    recipient_key   TEXT COLLATE "C",          -- the main ledger key; NULL = unattributed
    channel         TEXT,                      -- whatsapp | sms; NULL when unattributed
    after_follow_up BOOLEAN NOT NULL DEFAULT false,
    -- E.164, kept only for an unattributed event that named a number, so a GDPR export or
    -- erasure finds it; an attributed event reaches the number through its ledger row.
    phone           TEXT,
    event           TEXT NOT NULL,
    at              TIMESTAMPTZ NOT NULL,
    amount_micros   BIGINT CHECK (amount_micros >= 0),
    currency        TEXT,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((amount_micros IS NULL) = (currency IS NULL))
);
-- converted_keys and the per-campaign summary.
CREATE INDEX conversions_campaign ON conversions (campaign, recipient_key);
-- GDPR export / erase: through the ledger key, or by number.
CREATE INDEX conversions_key ON conversions (recipient_key) WHERE recipient_key IS NOT NULL;
CREATE INDEX conversions_phone ON conversions (phone) WHERE phone IS NOT NULL;
