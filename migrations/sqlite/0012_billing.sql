-- What Meta bills: one row per message whose status webhook carried `pricing` with
-- `billable: true`, priced with the rate card when the webhook arrived (Meta's category × the
-- recipient's market). Holds no number (the market only), so it outlives erasure and
-- retention of the ledger rows: a campaign's billed cost stays what it was. Times are ms.
CREATE TABLE billing (
    key       TEXT PRIMARY KEY,
    campaign  TEXT NOT NULL,
    channel   TEXT NOT NULL,
    category  TEXT NOT NULL,            -- Meta's pricing category
    market    TEXT NOT NULL,
    micros    INTEGER NOT NULL CHECK (micros >= 0),
    currency  TEXT NOT NULL,
    billed_at INTEGER NOT NULL
);
CREATE INDEX billing_campaign ON billing (campaign);
