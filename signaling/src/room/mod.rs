//! The consultation room: one appointment's seats, phase and relay lanes, driven as
//! `handle(now, input) -> outputs`.
//!
//! - `config`: [`RoomConfig`], the timings and bounds.
//! - `effects`: [`Output`] and what it carries (audit records, status requests).
//! - `seating`: opening connections, `join` (fresh, resumed or replacing), `leave`.
//! - `call`: the provider's `admit`, `end` and `invite_guest`, and relaying.
//! - `timers`: dropped connections, heartbeats, the grace period, the empty room.
//!
//! The caller decides who a connection is (the [`Claim`]); the room decides whether
//! that seat is free, what the phase allows, and who hears what. A room handles one
//! input at a time; the server serializes inputs per room (one task or one lock).

mod call;
mod config;
mod effects;
mod seating;
mod timers;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use uuid::Uuid;

pub use config::RoomConfig;
pub use effects::{AuditAction, AuditRecord, CloseReason, ConnId, Identity, Output, RequestedStatus};

use crate::error::{ErrorCode, Rejection};
use crate::guest::{GuestInvites, GuestLinkKey};
use crate::ice::IceServer;
use crate::negotiation::Lanes;
use crate::outbox::Outbox;
use crate::protocol::{ClientBody, ClientMessage, MessageId, Phase, Role, Seat, ServerFrame, ServerMessage};
use crate::rate::TokenBucket;
use crate::time::Millis;

/// Who the server says a connection is. The room trusts it: authentication and the
/// appointment's window are checked before a connection reaches the room.
#[derive(Clone, PartialEq, Eq)]
pub enum Claim {
    /// The appointment's patient.
    Patient { account: Uuid },
    /// The appointment's provider.
    Provider { account: Uuid },
    /// Someone holding a guest link; the room checks the token.
    Guest { token: String },
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Claim::Patient { account } => f.debug_struct("Patient").field("account", account).finish(),
            Claim::Provider { account } => f.debug_struct("Provider").field("account", account).finish(),
            Claim::Guest { .. } => f.write_str("Guest { token: <redacted> }"),
        }
    }
}

/// Something that happened to the room.
#[derive(Debug, Clone)]
pub enum Input {
    /// A WebSocket for this room was accepted. The client's `join` follows.
    Open {
        conn: ConnId,
        claim: Claim,
        /// The ICE servers for this participant, handed over in `joined`.
        ice_servers: Vec<IceServer>,
    },
    /// A text frame arrived.
    Frame { conn: ConnId, text: String },
    /// An already parsed message arrived (for callers that parse, and for tests).
    Message { conn: ConnId, message: ClientMessage },
    /// The connection is gone (closed by the client, or failed).
    Disconnected { conn: ConnId },
    /// Time passed; run the timers. Call it at [`Room::next_deadline`], or every second.
    Tick,
}

/// A seat's occupant, for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatView {
    pub seat: Seat,
    pub role: Role,
    pub identity: Identity,
    /// The live connection, or `None` while the seat is held for a reconnection.
    pub conn: Option<ConnId>,
}

/// One consultation's room. See the module documentation.
#[derive(Debug)]
pub struct Room {
    appointment: Uuid,
    config: RoomConfig,
    phase: Phase,
    connections: BTreeMap<ConnId, Connection>,
    seats: BTreeMap<Seat, Participant>,
    lanes: Lanes,
    invites: GuestInvites,
    /// `arrived` is requested once, at the patient's first check-in.
    arrival_reported: bool,
    /// Since when no seat has been held; `None` while someone is seated.
    empty_since: Option<Millis>,
}

#[derive(Debug)]
struct Connection {
    claim: Claim,
    ice_servers: Vec<IceServer>,
    seat: Option<Seat>,
    last_heard: Millis,
    bucket: TokenBucket,
}

#[derive(Debug)]
struct Participant {
    role: Role,
    identity: Identity,
    presence: Presence,
    outbox: Outbox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Live(ConnId),
    /// Dropped; the seat is held until `until`.
    Away {
        until: Millis,
    },
}

impl Room {
    /// A new, empty room for `appointment`, in the waiting phase. `guest_key` must be
    /// 32 fresh random bytes; it signs this room's guest links.
    pub fn new(appointment: Uuid, config: RoomConfig, guest_key: GuestLinkKey, now: Millis) -> Room {
        Room {
            appointment,
            config,
            phase: Phase::Waiting,
            connections: BTreeMap::new(),
            seats: BTreeMap::new(),
            lanes: Lanes::default(),
            invites: GuestInvites::new(guest_key, appointment),
            arrival_reported: false,
            empty_since: Some(now),
        }
    }

    pub fn appointment(&self) -> Uuid {
        self.appointment
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Who holds which seat.
    pub fn seats(&self) -> Vec<SeatView> {
        self.seats
            .iter()
            .map(|(seat, participant)| SeatView {
                seat: *seat,
                role: participant.role,
                identity: participant.identity,
                conn: match participant.presence {
                    Presence::Live(conn) => Some(conn),
                    Presence::Away { .. } => None,
                },
            })
            .collect()
    }

    /// Feeds one input and returns the effects to carry out, in order.
    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        if self.is_closed() {
            self.refuse_closed(input, &mut out);
            return out;
        }
        match input {
            Input::Open {
                conn,
                claim,
                ice_servers,
            } => self.open(now, conn, claim, ice_servers, &mut out),
            Input::Frame { conn, text } => {
                if let Err(rejection) = self.hear(now, conn) {
                    reject(&mut out, conn, ClientMessage::peek_id(&text), rejection);
                    return out;
                }
                match ClientMessage::parse(&text) {
                    Ok(message) => self.message(now, conn, message, &mut out),
                    Err(bad) => reject(&mut out, conn, bad.id, bad.rejection),
                }
            }
            Input::Message { conn, message } => match self.hear(now, conn) {
                Ok(()) => self.message(now, conn, message, &mut out),
                Err(rejection) => reject(&mut out, conn, Some(message.id), rejection),
            },
            Input::Disconnected { conn } => self.disconnected(now, conn, &mut out),
            Input::Tick => self.tick(now, &mut out),
        }
        out
    }

    /// Notes that `conn` spoke, and charges its token bucket.
    fn hear(&mut self, now: Millis, conn: ConnId) -> Result<(), Rejection> {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return Err(Rejection::new(
                ErrorCode::NotInRoom,
                "this connection is not open in this room",
            ));
        };
        connection.last_heard = connection.last_heard.max(now);
        if connection.bucket.try_take(self.config.rate_limit, now) {
            Ok(())
        } else {
            Err(Rejection::new(
                ErrorCode::RateLimited,
                "too many messages; slow down",
            ))
        }
    }

    fn message(&mut self, now: Millis, conn: ConnId, message: ClientMessage, out: &mut Vec<Output>) {
        let ClientMessage { id, body } = message;
        match body {
            ClientBody::Join { last_seq } => return self.join(now, conn, id, last_seq, out),
            ClientBody::Ping => {
                return send(
                    out,
                    conn,
                    ServerFrame::reply(ServerMessage::Pong { in_reply_to: id }),
                );
            }
            ClientBody::Leave => return self.leave(now, conn, out),
            _ => {}
        }
        let Some(seat) = self.connections.get(&conn).and_then(|connection| connection.seat) else {
            let rejection = Rejection::new(ErrorCode::NotInRoom, "join the room first");
            return reject(out, conn, Some(id), rejection);
        };
        let result = match body {
            ClientBody::Admit => self.admit(seat, out),
            ClientBody::End => self.end(seat, out),
            ClientBody::InviteGuest { role } => self.invite_guest(now, seat, &id, role, out),
            ClientBody::Description { to, description } => self.relay_description(seat, to, description, out),
            ClientBody::Candidate { to, candidate } => self.relay_candidate(seat, to, candidate, out),
            ClientBody::EndOfCandidates {
                to,
                username_fragment,
            } => self.relay_end_of_candidates(seat, to, username_fragment, out),
            ClientBody::IceRestart { to } => self.relay_ice_restart(seat, to, out),
            // Answered above, before the seat check.
            ClientBody::Join { .. } | ClientBody::Ping | ClientBody::Leave => Ok(()),
        };
        if let Err(rejection) = result {
            reject(out, conn, Some(id), rejection);
        }
    }

    /// A closed room refuses new connections, and answers late frames (a race with
    /// its closing, which already closed every connection it had) with an error only:
    /// a connection it never had is not its to close.
    fn refuse_closed(&self, input: Input, out: &mut Vec<Output>) {
        let rejection = Rejection::new(ErrorCode::StateMismatch, "this consultation has ended");
        match input {
            Input::Open { conn, .. } => {
                reject(out, conn, None, rejection);
                out.push(Output::Close {
                    conn,
                    reason: CloseReason::Rejected,
                });
            }
            Input::Frame { conn, text } => reject(out, conn, ClientMessage::peek_id(&text), rejection),
            Input::Message { conn, message } => reject(out, conn, Some(message.id), rejection),
            Input::Disconnected { .. } | Input::Tick => {}
        }
    }

    /// Sends a room event to the participant in `seat`: numbered and kept for replay,
    /// and written now if the participant is connected.
    fn tell(&mut self, seat: Seat, message: ServerMessage, out: &mut Vec<Output>) {
        let Some(participant) = self.seats.get_mut(&seat) else {
            return;
        };
        let frame = participant.outbox.push(message);
        if let Presence::Live(conn) = participant.presence {
            send(out, conn, frame);
        }
    }

    /// Sends a room event, shaped for each recipient, to everyone but `except`.
    fn tell_others(&mut self, except: Seat, message: impl Fn(Seat) -> ServerMessage, out: &mut Vec<Output>) {
        let others: Vec<Seat> = self
            .seats
            .keys()
            .copied()
            .filter(|seat| *seat != except)
            .collect();
        for seat in others {
            self.tell(seat, message(seat), out);
        }
    }

    fn audit(&self, seat: Seat, identity: Identity, action: AuditAction, out: &mut Vec<Output>) {
        out.push(Output::Audit(AuditRecord {
            appointment: self.appointment,
            seat,
            identity,
            action,
        }));
    }
}

fn send(out: &mut Vec<Output>, conn: ConnId, frame: ServerFrame) {
    out.push(Output::Send { conn, frame });
}

fn reject(out: &mut Vec<Output>, conn: ConnId, id: Option<MessageId>, rejection: Rejection) {
    send(out, conn, ServerFrame::error(id, rejection));
}
