ALTER TABLE clinical_notes DROP CONSTRAINT clinical_notes_appointment_fk;
ALTER TABLE clinical_notes ADD CONSTRAINT clinical_notes_appointment_fk
    FOREIGN KEY (appointment_id) REFERENCES appointments (id);
ALTER TABLE appointments DROP CONSTRAINT appointments_id_patient_key;
