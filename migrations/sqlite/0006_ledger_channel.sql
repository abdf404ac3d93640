-- Every key's row says which channel carried it (DESIGN §1.5): whatsapp (all rows so far) or
-- sms. The report and metrics split by it.
ALTER TABLE ledger ADD COLUMN channel TEXT NOT NULL DEFAULT 'whatsapp';
