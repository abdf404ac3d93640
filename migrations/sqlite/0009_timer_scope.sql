-- What a timer belongs to (a campaign), so `herald follow-ups status CAMPAIGN` counts its
-- pending follow-ups without reading every payload. NULL for timers of no campaign.
ALTER TABLE timers ADD COLUMN scope TEXT;
CREATE INDEX timers_scope ON timers (kind, scope) WHERE fired_at IS NULL;
