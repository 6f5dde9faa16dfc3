-- Business transactions stop NOTIFYing: PostgreSQL takes a global lock at commit for
-- any transaction with a pending notification, so every such commit in the cluster
-- waited on the others (56% of write throughput, measured). The listener of each
-- instance looks for unnumbered events itself (src/realtime/bus.rs); the sequencer
-- still NOTIFYs carewire_seq once per batch, outside business transactions.
DROP TRIGGER events_notify ON events;
DROP FUNCTION events_notify();
