-- Consultation rooms across instances. A room lives in one instance's memory; this
-- table says which, under a lease the owner renews while the room is open, so that a
-- participant who reaches another instance is relayed to the owner, and a room whose
-- owner died is taken over once the lease runs out.
CREATE TABLE consult_rooms (
    appointment_id uuid        PRIMARY KEY REFERENCES appointments (id) ON DELETE CASCADE,
    instance_id    uuid        NOT NULL,
    lease_until    timestamptz NOT NULL
);

-- Signaling frames on their way between instances: written by the sender, NOTIFY
-- 'carewire_consult' with the receiving instance's id, deleted by the receiver as it
-- reads them. Unlogged: a frame is worth nothing after a crash (the room it belonged
-- to is gone with its owner), so it need not cost WAL.
CREATE UNLOGGED TABLE consult_relay (
    id          bigserial   PRIMARY KEY,
    instance_id uuid        NOT NULL,
    body        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consult_relay_by_instance ON consult_relay (instance_id, id);
