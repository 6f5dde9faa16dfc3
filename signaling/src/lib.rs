//! Carewire's consultation-room signaling: the protocol and the room state machine.
//!
//! This crate is pure: messages go in, effects come out. It opens no sockets, touches
//! no database and knows nothing of warp; the server's `consult` module feeds it
//! messages from WebSocket connections and carries its effects back out. That keeps
//! every rule (who may join, who is polite, what is relayed to whom, how a dropped
//! participant resumes) testable without IO.
//!
//! Contents arrive with the video-consultation work: versioned message types, the
//! room state machine (waiting room → in call → ended), perfect-negotiation roles,
//! candidate buffering, ICE restart, resume with a grace period, and SDP validation
//! through `webrtc`.
