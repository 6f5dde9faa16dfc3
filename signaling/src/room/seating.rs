//! Taking and giving up seats: opening a connection, `join` (fresh, resumed, or
//! replacing a live session of the same identity), and `leave`.
//!
//! One identity, one seat, one live connection. A second connection with the same
//! identity replaces the first (a reloaded tab, a phone that switched networks before
//! the old socket timed out), except on the guest seat: a guest link is single-use, so
//! it can bring its guest back only while the seat is held for a reconnection, never
//! take over a live session.

use super::{
    Claim, CloseReason, ConnId, Connection, Identity, Output, Participant, Presence, Room, reject, send,
};
use crate::error::{ErrorCode, Rejection};
use crate::ice::IceServer;
use crate::outbox::Outbox;
use crate::protocol::{
    Joined, LeaveReason, MessageId, PROTOCOL_VERSION, PeerState, PeerView, Phase, Role, Seat, ServerFrame,
    ServerMessage,
};
use crate::rate::TokenBucket;
use crate::room::effects::{AuditAction, RequestedStatus};
use crate::time::{Millis, duration_millis};

impl Room {
    pub(super) fn open(
        &mut self,
        now: Millis,
        conn: ConnId,
        claim: Claim,
        ice_servers: Vec<IceServer>,
        out: &mut Vec<Output>,
    ) {
        // The server names connections; a reused id is its bug, and replacing the
        // existing connection would orphan a seat. Ignore it.
        if self.connections.contains_key(&conn) {
            return;
        }
        if self.connections.len() >= self.config.max_connections {
            let rejection = Rejection::new(ErrorCode::RoomFull, "this room has too many connections");
            return refuse(out, conn, None, rejection);
        }
        self.connections.insert(
            conn,
            Connection {
                claim,
                ice_servers,
                seat: None,
                last_heard: now,
                bucket: TokenBucket::full(self.config.rate_limit, now),
            },
        );
    }

    pub(super) fn join(
        &mut self,
        now: Millis,
        conn: ConnId,
        id: MessageId,
        last_seq: Option<u64>,
        out: &mut Vec<Output>,
    ) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        if connection.seat.is_some() {
            let rejection = Rejection::new(ErrorCode::StateMismatch, "this connection has already joined");
            return reject(out, conn, Some(id), rejection);
        }
        let (seat, identity, role) = match &connection.claim {
            Claim::Patient { account } => (Seat::Patient, Identity::Account(*account), Role::Patient),
            Claim::Provider { account } => (Seat::Provider, Identity::Account(*account), Role::Provider),
            Claim::Guest { token } => match self.invites.check(token, now) {
                Ok(invite) => (
                    Seat::Guest,
                    Identity::Guest {
                        invite: invite.number,
                    },
                    invite.role,
                ),
                Err(rejection) => {
                    self.connections.remove(&conn);
                    return refuse(out, conn, Some(id), rejection);
                }
            },
        };
        match self.seats.get(&seat) {
            None => self.seat_fresh(conn, id, seat, identity, role, out),
            Some(holder) if holder.identity != identity => {
                self.connections.remove(&conn);
                let rejection = Rejection::new(ErrorCode::RoomFull, "this seat is taken");
                refuse(out, conn, Some(id), rejection);
            }
            Some(holder) if seat == Seat::Guest && matches!(holder.presence, Presence::Live(_)) => {
                self.connections.remove(&conn);
                let rejection = Rejection::new(
                    ErrorCode::GuestLinkInvalid,
                    "this guest link is in use by a connected guest",
                );
                refuse(out, conn, Some(id), rejection);
            }
            Some(_) => self.take_back(conn, id, seat, last_seq, out),
        }
    }

    fn seat_fresh(
        &mut self,
        conn: ConnId,
        id: MessageId,
        seat: Seat,
        identity: Identity,
        role: Role,
        out: &mut Vec<Output>,
    ) {
        self.seats.insert(
            seat,
            Participant {
                role,
                identity,
                presence: Presence::Live(conn),
                outbox: Outbox::new(self.config.outbox_messages, self.config.outbox_bytes),
            },
        );
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection.seat = Some(seat);
        }
        if let Identity::Guest { invite } = identity {
            self.invites.redeem(invite);
        }
        self.empty_since = None;

        self.send_joined(conn, id, seat, false, out);
        self.audit(seat, identity, AuditAction::Joined, out);
        if seat == Seat::Patient && !self.arrival_reported {
            self.arrival_reported = true;
            out.push(Output::AppointmentStatus {
                appointment: self.appointment,
                status: RequestedStatus::Arrived,
            });
        }
        self.after_seating(seat, role, false, out);
    }

    /// The seat's identity is back: replace a live session, or end an absence.
    fn take_back(
        &mut self,
        conn: ConnId,
        id: MessageId,
        seat: Seat,
        last_seq: Option<u64>,
        out: &mut Vec<Output>,
    ) {
        let Some(participant) = self.seats.get_mut(&seat) else {
            return;
        };
        let previous = std::mem::replace(&mut participant.presence, Presence::Live(conn));
        let replay = last_seq.and_then(|last_seen| participant.outbox.after(last_seen));
        let resumed = replay.is_some();
        let (role, identity) = (participant.role, participant.identity);

        if let Presence::Live(old) = previous {
            self.connections.remove(&old);
            send(out, old, ServerFrame::reply(ServerMessage::SessionReplaced));
            out.push(Output::Close {
                conn: old,
                reason: CloseReason::Replaced,
            });
        }
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection.seat = Some(seat);
        }

        self.send_joined(conn, id, seat, resumed, out);
        for frame in replay.into_iter().flatten() {
            send(out, conn, frame);
        }
        if !resumed {
            // A fresh start means a new RTCPeerConnection on that side: whatever was
            // held for the old one is worthless.
            self.lanes.reset(seat);
        }
        self.audit(seat, identity, AuditAction::Reconnected { resumed }, out);
        self.after_seating(seat, role, resumed, out);
    }

    /// Tells the newcomer it waits, if it does, and the others that it is here.
    fn after_seating(&mut self, seat: Seat, role: Role, resumed: bool, out: &mut Vec<Output>) {
        if !resumed && self.phase == Phase::Waiting && seat != Seat::Provider {
            self.tell(seat, ServerMessage::Waiting, out);
        }
        self.tell_others(
            seat,
            |other| ServerMessage::PeerJoined {
                seat,
                role,
                polite: other.polite_toward(seat),
                resumed,
            },
            out,
        );
    }

    fn send_joined(&self, conn: ConnId, id: MessageId, seat: Seat, resumed: bool, out: &mut Vec<Output>) {
        let (Some(me), Some(connection)) = (self.seats.get(&seat), self.connections.get(&conn)) else {
            return;
        };
        let participants = self
            .seats
            .iter()
            .filter(|(other, _)| **other != seat)
            .map(|(other, participant)| PeerView {
                seat: *other,
                role: participant.role,
                polite: seat.polite_toward(*other),
                state: match participant.presence {
                    Presence::Live(_) => PeerState::Connected,
                    Presence::Away { .. } => PeerState::Reconnecting,
                },
            })
            .collect();
        let joined = Joined {
            in_reply_to: id,
            protocol: PROTOCOL_VERSION.into(),
            seat,
            role: me.role,
            // For the provider this is false, its flag in every pair.
            polite: seat.polite_toward(Seat::Provider),
            phase: self.phase,
            participants,
            resumed,
            last_seq: me.outbox.head(),
            ping_interval_ms: duration_millis(self.config.ping_interval),
            ice_servers: connection.ice_servers.clone(),
        };
        send(out, conn, ServerFrame::reply(ServerMessage::Joined(joined)));
    }

    pub(super) fn leave(&mut self, now: Millis, conn: ConnId, out: &mut Vec<Output>) {
        let Some(connection) = self.connections.remove(&conn) else {
            return;
        };
        if let Some(seat) = connection.seat {
            self.release(now, seat, LeaveReason::Left, out);
        }
        out.push(Output::Close {
            conn,
            reason: CloseReason::Left,
        });
    }

    /// Frees `seat` for good and tells the others. The caller closes the connection,
    /// if there still is one.
    pub(super) fn release(&mut self, now: Millis, seat: Seat, reason: LeaveReason, out: &mut Vec<Output>) {
        let Some(participant) = self.seats.remove(&seat) else {
            return;
        };
        self.lanes.reset(seat);
        if let Identity::Guest { invite } = participant.identity {
            self.invites.spend(invite);
        }
        self.audit(seat, participant.identity, AuditAction::Left { reason }, out);
        self.tell_others(seat, |_| ServerMessage::PeerLeft { seat, reason }, out);
        if self.seats.is_empty() {
            self.empty_since = Some(now);
        }
    }
}

/// Refuses a connection at the door: the error, then the close.
fn refuse(out: &mut Vec<Output>, conn: ConnId, id: Option<MessageId>, rejection: Rejection) {
    reject(out, conn, id, rejection);
    out.push(Output::Close {
        conn,
        reason: CloseReason::Rejected,
    });
}
