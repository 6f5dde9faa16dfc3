DROP TABLE break_glass_grants;
DROP TABLE clinical_note_versions;
DROP TABLE clinical_notes;
DROP TABLE patients;
ALTER TABLE accounts DROP COLUMN display_name;
ALTER TABLE data_keys DROP COLUMN encryptions;
