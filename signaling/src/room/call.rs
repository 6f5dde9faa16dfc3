//! The call itself: the provider's `admit`, `end` and `invite_guest`, and relaying
//! descriptions, candidates and ICE-restart requests between seats.
//!
//! Relaying starts when the provider admits and goes only to the seat named in `to`:
//! never back to the sender, never to a third participant, never out of this room.

use super::{AuditAction, CloseReason, Identity, Output, Room};
use crate::candidate::IceCandidate;
use crate::error::{ErrorCode, Rejection};
use crate::negotiation::Trickle;
use crate::protocol::{ClosedReason, GuestRole, MessageId, Opaque, Phase, Role, Seat, ServerMessage};
use crate::room::effects::RequestedStatus;
use crate::sdp::SessionDescription;
use crate::time::{Millis, duration_millis};

impl Room {
    pub(super) fn admit(&mut self, seat: Seat, out: &mut Vec<Output>) -> Result<(), Rejection> {
        let by = self.provider_identity(seat, "only the provider admits")?;
        if self.phase != Phase::Waiting {
            return Err(Rejection::new(
                ErrorCode::StateMismatch,
                "the call has already started",
            ));
        }
        let admitted: Vec<(Seat, Identity)> = self
            .seats
            .iter()
            .filter(|(seat, _)| **seat != Seat::Provider)
            .map(|(seat, participant)| (*seat, participant.identity))
            .collect();
        if admitted.is_empty() {
            return Err(Rejection::new(ErrorCode::StateMismatch, "nobody is waiting"));
        }
        self.phase = Phase::InCall;
        for (seat, identity) in admitted {
            self.audit(seat, identity, AuditAction::Admitted { by }, out);
        }
        let everyone: Vec<Seat> = self.seats.keys().copied().collect();
        for seat in everyone {
            self.tell(seat, ServerMessage::Admitted, out);
        }
        Ok(())
    }

    pub(super) fn end(&mut self, seat: Seat, out: &mut Vec<Output>) -> Result<(), Rejection> {
        let provider = self.provider_identity(seat, "only the provider ends the consultation")?;
        self.audit(seat, provider, AuditAction::Ended, out);
        if self.phase == Phase::InCall {
            out.push(Output::AppointmentStatus {
                appointment: self.appointment,
                status: RequestedStatus::Fulfilled,
            });
        }
        self.close(ClosedReason::Ended, out);
        Ok(())
    }

    pub(super) fn invite_guest(
        &mut self,
        now: Millis,
        seat: Seat,
        id: &MessageId,
        role: GuestRole,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        let provider = self.provider_identity(seat, "only the provider invites a guest")?;
        if self.seats.contains_key(&Seat::Guest) {
            return Err(Rejection::new(ErrorCode::RoomFull, "the guest seat is taken"));
        }
        let role = Role::from(role);
        let ttl = self.config.guest_link_ttl;
        let (invite, token) = self.invites.issue(role, now.saturating_add(ttl));
        self.audit(seat, provider, AuditAction::GuestInvited { invite, role }, out);
        let link = ServerMessage::GuestLink {
            in_reply_to: id.clone(),
            token: Opaque::new(token),
            role,
            expires_in_ms: duration_millis(ttl),
        };
        self.tell(seat, link, out);
        Ok(())
    }

    pub(super) fn relay_description(
        &mut self,
        from: Seat,
        to: Seat,
        description: SessionDescription,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        self.check_route(from, to)?;
        for message in self.lanes.description(from, to, description) {
            self.tell(to, message, out);
        }
        Ok(())
    }

    pub(super) fn relay_candidate(
        &mut self,
        from: Seat,
        to: Seat,
        candidate: IceCandidate,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        self.relay_trickle(from, to, Trickle::Candidate(candidate), out)
    }

    pub(super) fn relay_end_of_candidates(
        &mut self,
        from: Seat,
        to: Seat,
        username_fragment: Option<String>,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        self.relay_trickle(from, to, Trickle::end(username_fragment), out)
    }

    fn relay_trickle(
        &mut self,
        from: Seat,
        to: Seat,
        item: Trickle,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        self.check_route(from, to)?;
        let max_pending = self.config.max_pending_candidates;
        if let Some(message) = self.lanes.trickle(from, to, item, max_pending)? {
            self.tell(to, message, out);
        }
        Ok(())
    }

    /// An ICE restart needs nothing from the room beyond this request: the restarted
    /// side's next offer carries a new ufrag and is relayed like any other.
    pub(super) fn relay_ice_restart(
        &mut self,
        from: Seat,
        to: Seat,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        self.check_route(from, to)?;
        self.tell(to, ServerMessage::IceRestart { from }, out);
        Ok(())
    }

    fn check_route(&self, from: Seat, to: Seat) -> Result<(), Rejection> {
        if self.phase != Phase::InCall {
            return Err(Rejection::new(
                ErrorCode::StateMismatch,
                "media negotiation starts when the provider admits",
            ));
        }
        if from == to {
            return Err(Rejection::new(
                ErrorCode::BadMessage,
                "a message cannot be addressed to its sender",
            ));
        }
        if !self.seats.contains_key(&to) {
            return Err(Rejection::new(ErrorCode::NotInRoom, "nobody holds that seat"));
        }
        Ok(())
    }

    fn provider_identity(&self, seat: Seat, refusal: &'static str) -> Result<Identity, Rejection> {
        match self.seats.get(&seat) {
            Some(participant) if seat == Seat::Provider => Ok(participant.identity),
            _ => Err(Rejection::new(ErrorCode::Unauthorized, refusal)),
        }
    }

    /// Closes the room: every participant hears why, every connection is closed.
    pub(super) fn close(&mut self, reason: ClosedReason, out: &mut Vec<Output>) {
        let everyone: Vec<Seat> = self.seats.keys().copied().collect();
        for seat in everyone {
            self.tell(seat, ServerMessage::RoomClosed { reason }, out);
        }
        let close_reason = match reason {
            ClosedReason::Ended => CloseReason::Ended,
            ClosedReason::Empty => CloseReason::RoomClosed,
        };
        for conn in std::mem::take(&mut self.connections).into_keys() {
            out.push(Output::Close {
                conn,
                reason: close_reason,
            });
        }
        self.seats.clear();
        self.phase = Phase::Closed;
        out.push(Output::Closed { reason });
    }
}
