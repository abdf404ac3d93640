-- A campaign's spending limit (in millionths of the rate card's currency) and the estimated
-- cost committed against it: charged before a request goes out, given back when it fails.
ALTER TABLE campaigns ADD COLUMN budget_micros BIGINT CHECK (budget_micros >= 0);
ALTER TABLE campaigns ADD COLUMN budget_currency TEXT;
ALTER TABLE campaigns ADD COLUMN committed_micros BIGINT NOT NULL DEFAULT 0;
