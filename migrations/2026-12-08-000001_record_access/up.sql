-- A booking is not a key to the record: an appointment opens the patient's record to
-- its provider (a care relationship, src/records/access.rs) only when the patient
-- booked it, staff booked it, the provider already had a relationship with the
-- patient when booking, or the patient has accepted it since.
ALTER TABLE appointments
    ADD COLUMN opens_record boolean NOT NULL DEFAULT true,
    ADD COLUMN record_accepted_at timestamptz;

-- Bookings a provider made for themselves before this rule open nothing until the
-- patient accepts them, unless the provider registered the patient. Only the new
-- column changes: the row trigger's other work does not apply.
ALTER TABLE appointments DISABLE TRIGGER appointments_before_write;
UPDATE appointments a SET opens_record = false
 WHERE a.booked_by = a.provider_id
   AND NOT EXISTS (SELECT 1 FROM patients p WHERE p.id = a.patient_id AND p.created_by = a.provider_id);
ALTER TABLE appointments ENABLE TRIGGER appointments_before_write;
