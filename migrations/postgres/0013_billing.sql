-- What Meta bills: one row per message whose status webhook carried `pricing` with
-- `billable: true`, priced with the rate card when the webhook arrived (Meta's category × the
-- recipient's market). Holds no number (the market only), so it outlives erasure and
-- retention of the ledger rows: a campaign's billed cost stays what it was.
CREATE TABLE billing (
    key       TEXT COLLATE "C" PRIMARY KEY,
    campaign  TEXT COLLATE "C" NOT NULL,
    channel   TEXT NOT NULL,
    category  TEXT NOT NULL,            -- Meta's pricing category
    market    TEXT NOT NULL,
    micros    BIGINT NOT NULL CHECK (micros >= 0),
    currency  TEXT NOT NULL,
    billed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX billing_campaign ON billing (campaign);
