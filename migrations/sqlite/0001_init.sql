-- herald store, SQLite flavour. Times are INTEGER milliseconds since the Unix epoch (UTC):
-- compact, compared as numbers, and immune to text-format drift.

CREATE TABLE senders (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL,
    portfolio_id   TEXT NOT NULL,
    display_number TEXT NOT NULL,
    rate_per_sec   INTEGER NOT NULL,
    tier_limit     INTEGER,
    status         TEXT NOT NULL,
    status_reason  TEXT,
    updated_at     INTEGER NOT NULL
);

CREATE TABLE templates (
    account_id TEXT NOT NULL,
    name       TEXT NOT NULL,
    language   TEXT NOT NULL,
    category   TEXT NOT NULL,
    status     TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, name, language)
);
-- set_template_status names a template by (name, language) across accounts.
CREATE INDEX templates_name ON templates (name, language);

-- The latest grant per (phone, category); revocations are history in their own table.
CREATE TABLE consents (
    phone      TEXT NOT NULL,
    category   TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    source     TEXT NOT NULL,
    proof      TEXT NOT NULL,
    PRIMARY KEY (phone, category)
);

CREATE TABLE revocations (
    id         INTEGER PRIMARY KEY,
    phone      TEXT NOT NULL,
    category   TEXT,            -- NULL: every category
    revoked_at INTEGER NOT NULL,
    source     TEXT NOT NULL
);
CREATE INDEX revocations_phone ON revocations (phone);

-- Looked up by hash only, so a suppression outlives the erasure of the number itself.
CREATE TABLE suppressions (
    id         INTEGER PRIMARY KEY,
    phone      TEXT,            -- NULL once the contact is erased
    phone_hash TEXT NOT NULL,   -- hex sha256 of the E.164 string
    reason     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (phone_hash, reason)
);

CREATE TABLE campaigns (
    id         TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    reason     TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- The ledger: one row per idempotency key, ever.
CREATE TABLE ledger (
    key             TEXT PRIMARY KEY,
    campaign        TEXT NOT NULL,
    job             TEXT NOT NULL,
    sender          TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    template        TEXT NOT NULL,
    language        TEXT NOT NULL,
    category        TEXT NOT NULL,
    state           TEXT NOT NULL,   -- pending | sending | sent | failed | skipped | unknown
    reason          TEXT,            -- skip reason or Graph error code
    wamid           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    owner           TEXT,            -- cleared when the key reaches its outcome
    lease_until     INTEGER,
    delivery        TEXT,            -- delivered | read | failed (status webhooks)
    delivery_error  TEXT,            -- error code of a failed delivery
    billed_category TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
-- Paging and counting a campaign's keys.
CREATE INDEX ledger_campaign ON ledger (campaign, key);
-- Status webhooks name messages by wamid.
CREATE INDEX ledger_wamid ON ledger (wamid) WHERE wamid IS NOT NULL;
-- renew_lease: only keys still in flight carry an owner, so this index stays small.
CREATE INDEX ledger_owner ON ledger (owner) WHERE owner IS NOT NULL;
-- GDPR export / erase by number.
CREATE INDEX ledger_recipient ON ledger (recipient);

-- Messaging tier: who each portfolio reached, and when last.
CREATE TABLE tier_reach (
    portfolio       TEXT NOT NULL,
    phone           TEXT NOT NULL,
    last_reached_at INTEGER NOT NULL,
    PRIMARY KEY (portfolio, phone)
) WITHOUT ROWID;
CREATE INDEX tier_reach_window ON tier_reach (portfolio, last_reached_at);
