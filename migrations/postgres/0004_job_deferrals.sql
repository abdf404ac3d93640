-- The live deferred copy of each job on RabbitMQ: the token its republished copy carries. A
-- copy that comes back with another token is a duplicate (dropped), so a deferred job exists
-- once. Rows are removed when the job completes or is dead-lettered.
CREATE TABLE job_deferrals (
    job TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    deferred_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
