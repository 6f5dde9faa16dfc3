-- A booking is not a key to the record: an appointment opens the patient's record to
-- its provider (a care relationship, src/records/access.rs) only when the patient
-- booked it, staff booked it, the provider already had a relationship with the
-- patient when booking, or the patient has accepted it since.
ALTER TABLE appointments
    ADD COLUMN opens_record boolean NOT NULL DEFAULT true,
    ADD COLUMN record_accepted_at timestamptz;

-- Bookings a provider made for themselves before this rule open nothing until the
-- patient accepts them, unless the provider had a relationship when booking that was
-- not of their own making: they registered the patient, or another appointment with
-- them that the patient or staff booked starts within 90 days (the default care
-- relationship window) of the booking. Those that close get a new version, since
-- what clients read of them changed. Only these columns change: the row trigger's
-- other work does not apply.
ALTER TABLE appointments DISABLE TRIGGER appointments_before_write;
UPDATE appointments a SET opens_record = false, version = a.version + 1, updated_at = now()
 WHERE a.booked_by = a.provider_id
   AND NOT EXISTS (SELECT 1 FROM patients p
                    WHERE p.id = a.patient_id AND p.created_by = a.provider_id
                      AND p.created_at > a.created_at - interval '90 days')
   AND NOT EXISTS (SELECT 1 FROM appointments o
                    WHERE o.provider_id = a.provider_id AND o.patient_id = a.patient_id
                      AND o.booked_by <> o.provider_id
                      AND o.status IN ('pending', 'booked', 'arrived', 'fulfilled')
                      AND o.starts_at BETWEEN a.created_at - interval '90 days' AND a.created_at + interval '90 days');
ALTER TABLE appointments ENABLE TRIGGER appointments_before_write;
