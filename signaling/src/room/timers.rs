//! Time-driven rules: a dropped connection holds its seat for the grace period, a
//! silent connection counts as dropped, and an empty room closes.
//!
//! The heartbeat exists because a phone that loses coverage sends no TCP FIN: without
//! it, the room would hold a dead connection as live, and the others would see neither
//! `peer_reconnecting` nor, later, `peer_left`.

use super::{CloseReason, ConnId, Output, Presence, Room};
use crate::protocol::{ClosedReason, LeaveReason, Seat, ServerMessage};
use crate::time::Millis;

impl Room {
    pub(super) fn disconnected(&mut self, now: Millis, conn: ConnId, out: &mut Vec<Output>) {
        let Some(connection) = self.connections.remove(&conn) else {
            return;
        };
        let Some(seat) = connection.seat else {
            return;
        };
        let until = now.saturating_add(self.config.reconnect_grace);
        let Some(participant) = self.seats.get_mut(&seat) else {
            return;
        };
        if participant.presence != Presence::Live(conn) {
            return;
        }
        participant.presence = Presence::Away { until };
        self.tell_others(seat, |_| ServerMessage::PeerReconnecting { seat }, out);
    }

    pub(super) fn tick(&mut self, now: Millis, out: &mut Vec<Output>) {
        let timeout = self.config.heartbeat_timeout;
        let silent: Vec<ConnId> = self
            .connections
            .iter()
            .filter(|(_, connection)| now.saturating_since(connection.last_heard) >= timeout)
            .map(|(conn, _)| *conn)
            .collect();
        for conn in silent {
            out.push(Output::Close {
                conn,
                reason: CloseReason::HeartbeatTimeout,
            });
            self.disconnected(now, conn, out);
        }

        let expired: Vec<Seat> = self
            .seats
            .iter()
            .filter(
                |(_, participant)| matches!(participant.presence, Presence::Away { until } if until <= now),
            )
            .map(|(seat, _)| *seat)
            .collect();
        for seat in expired {
            self.release(now, seat, LeaveReason::TimedOut, out);
        }

        if let Some(since) = self.empty_since
            && now.saturating_since(since) >= self.config.empty_timeout
        {
            self.close(ClosedReason::Empty, out);
        }
    }

    /// When the next timer falls due: tick then (or earlier; ticks are idempotent).
    /// `None` for a closed room.
    pub fn next_deadline(&self) -> Option<Millis> {
        if self.is_closed() {
            return None;
        }
        let heartbeats = self.connections.values().map(|connection| {
            connection
                .last_heard
                .saturating_add(self.config.heartbeat_timeout)
        });
        let graces = self
            .seats
            .values()
            .filter_map(|participant| match participant.presence {
                Presence::Away { until } => Some(until),
                Presence::Live(_) => None,
            });
        let empty = self
            .empty_since
            .map(|since| since.saturating_add(self.config.empty_timeout));
        heartbeats.chain(graces).chain(empty).min()
    }
}
