-- Global send pacing (GCRA): one row per business number holds the theoretical arrival time of
-- its next free send slot, in microseconds of the database clock. Workers lease consecutive
-- slots from it, so a number's rate holds across every worker.
CREATE TABLE send_slots (
    sender  TEXT PRIMARY KEY,
    tat_us  BIGINT NOT NULL
);
