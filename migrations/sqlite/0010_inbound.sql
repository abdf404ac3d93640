-- The conversation side (DESIGN §1.6, reference §5/§8): what customers write, kept minimally —
-- who (the number, for export and erasure), to which business number, when, what type, Meta's
-- message id (redelivered webhooks are ignored by it) and the text only where it is the proof
-- of an opt-in. `received_at` is what the retention purge goes by. Times are ms since the
-- epoch, like every SQLite table here.
CREATE TABLE inbound_messages (
    wamid       TEXT PRIMARY KEY,
    sender      TEXT NOT NULL,                 -- phone_number_id written to
    phone       TEXT NOT NULL,                 -- the customer, E.164
    at          INTEGER NOT NULL,              -- when written (never after received_at)
    kind        TEXT NOT NULL,                 -- text | button | interactive | … | unsupported
    referral    INTEGER NOT NULL DEFAULT 0,    -- 1: from a click-to-WhatsApp ad
    proof_text  TEXT,                          -- only for an opt-in keyword message
    received_at INTEGER NOT NULL
);
CREATE INDEX inbound_messages_phone ON inbound_messages (phone);
CREATE INDEX inbound_messages_received ON inbound_messages (received_at);

-- The customer-service window per (business number, customer): 24 h after the last message,
-- and a 72 h free entry point after a click-to-WhatsApp ad. Only ever extended.
CREATE TABLE service_windows (
    sender     TEXT NOT NULL,
    phone      TEXT NOT NULL,
    open_until INTEGER NOT NULL,
    free_until INTEGER,
    PRIMARY KEY (sender, phone)
);
CREATE INDEX service_windows_phone ON service_windows (phone);

-- Click-to-chat opt-in keywords: a customer who writes `keyword` to `sender` consents to
-- `category` on WhatsApp, with `source` as where the link was published.
CREATE TABLE optin_keywords (
    sender       TEXT NOT NULL,
    keyword      TEXT NOT NULL,                -- normalised: upper case, single spaces
    category     TEXT NOT NULL,
    source       TEXT NOT NULL,
    business     TEXT NOT NULL,
    confirmation TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (sender, keyword)
);
