-- Whole-day windows cannot be expressed before this migration: they go with it.
DELETE FROM availability_rules WHERE start_time = end_time;
ALTER TABLE availability_rules ADD CONSTRAINT availability_rules_check CHECK (start_time <> end_time);
