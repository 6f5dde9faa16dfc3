-- A note documents an appointment of its own patient: the link is a foreign key over
-- (appointment, patient), so a note can no longer point at another patient's
-- appointment (and reveal it). Links that already do are wrong: they are removed (the
-- note itself, its versions and its patient are untouched).
UPDATE clinical_notes n SET appointment_id = NULL
  FROM appointments a
 WHERE a.id = n.appointment_id AND a.patient_id <> n.patient_id;
ALTER TABLE appointments ADD CONSTRAINT appointments_id_patient_key UNIQUE (id, patient_id);
ALTER TABLE clinical_notes DROP CONSTRAINT clinical_notes_appointment_fk;
ALTER TABLE clinical_notes ADD CONSTRAINT clinical_notes_appointment_fk
    FOREIGN KEY (appointment_id, patient_id) REFERENCES appointments (id, patient_id);
