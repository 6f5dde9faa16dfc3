ALTER TABLE appointments DROP COLUMN record_accepted_at, DROP COLUMN opens_record;
