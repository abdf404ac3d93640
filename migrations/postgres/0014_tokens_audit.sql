-- Scoped API tokens (roles) and the audit log of admin actions (README "Roles and audit").
--
-- A token is stored as the SHA-256 of its secret, never the secret: the secret is 32 random
-- bytes, so a fast hash cannot be reversed by guessing. Names are unique (`herald tokens
-- revoke NAME`); a revoked token keeps its row so `herald tokens list` shows who had access.
CREATE TABLE api_tokens (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT COLLATE "C" NOT NULL UNIQUE,
    role         TEXT NOT NULL,
    secret_hash  TEXT COLLATE "C" NOT NULL UNIQUE,  -- hex SHA-256 of the secret; looked up per request
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);

-- Append-only: rows are inserted, read, and deleted by the retention purge (class `audit`)
-- only. A contact is named by its keyed hash, never its number.
CREATE TABLE audit_log (
    id     BIGSERIAL PRIMARY KEY,
    at     TIMESTAMPTZ NOT NULL,
    actor  TEXT NOT NULL,        -- token:<name>, bootstrap, cli@<host>
    action TEXT NOT NULL,        -- campaign.pause, contact.export, tokens.create, …
    target TEXT,                 -- campaign id, contact:<keyed hash>, token name
    result TEXT NOT NULL,        -- ok, denied, not_found, error: …
    route  TEXT                  -- METHOD /api/… for HTTP calls
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
