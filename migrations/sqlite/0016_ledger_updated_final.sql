-- The purge looks ledger rows up by age, and only final ones: keys still pending or being
-- sent are never purged. Indexed only once final, a key's claim and its mark (`sending`) write
-- no entry here, where every message used to insert one and move it twice (README, "herald
-- against a raw load generator"). The purge's condition is the index's predicate word for word.
DROP INDEX ledger_updated;
CREATE INDEX ledger_updated ON ledger (updated_at) WHERE state NOT IN ('pending', 'sending');
