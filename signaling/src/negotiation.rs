//! The relay lanes between seats: descriptions and candidates from one seat to another,
//! in order, with candidates held back until the description they belong to is out.
//!
//! The room does not track offer/answer state: glare is the clients' business, settled
//! by perfect negotiation (see [`Seat::polite_toward`]). What the room guarantees is
//! order and timing. A browser may hand over a candidate before the signaling code has
//! sent the description it belongs to (trickle ICE starts at `setLocalDescription`), and
//! a candidate that reaches the peer first fails `addIceCandidate`. So each directed
//! lane remembers the ICE username fragments of the descriptions it has carried, and a
//! candidate waits until a description with its ufrag has gone out. That also covers
//! ICE restart: the restart offer carries a new ufrag, and the new generation's
//! candidates wait for it. Candidates without a ufrag wait for the first description.

use std::collections::{BTreeMap, VecDeque};

use crate::candidate::IceCandidate;
use crate::error::{ErrorCode, Rejection};
use crate::protocol::{Opaque, Seat, ServerMessage};
use crate::sdp::{SdpKind, SessionDescription};

/// How many recent ufrags a lane remembers. Candidates of older generations are still
/// relayed (the browser drops them), which keeps delivery in order.
const REMEMBERED_UFRAGS: usize = 4;

/// Candidate-stream items: a candidate or its end-of-candidates marker.
#[derive(Debug, Clone)]
pub(crate) enum Trickle {
    Candidate(IceCandidate),
    End { username_fragment: Option<String> },
}

impl Trickle {
    pub(crate) fn end(username_fragment: Option<String>) -> Trickle {
        Trickle::End { username_fragment }
    }

    fn ufrag(&self) -> Option<&str> {
        match self {
            Trickle::Candidate(candidate) => candidate.ufrag(),
            Trickle::End { username_fragment } => username_fragment.as_deref(),
        }
    }

    fn into_message(self, from: Seat) -> ServerMessage {
        match self {
            Trickle::Candidate(candidate) => ServerMessage::Candidate {
                from,
                candidate: candidate.into_init(),
            },
            Trickle::End { username_fragment } => ServerMessage::EndOfCandidates {
                from,
                username_fragment,
            },
        }
    }
}

#[derive(Debug, Default)]
struct Lane {
    described: bool,
    ufrags: VecDeque<String>,
    pending: VecDeque<Trickle>,
}

impl Lane {
    fn ready(&self, ufrag: Option<&str>) -> bool {
        match ufrag {
            None => self.described,
            Some(ufrag) => self.ufrags.iter().any(|known| known == ufrag),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Lanes {
    lanes: BTreeMap<(Seat, Seat), Lane>,
}

impl Lanes {
    /// Relays a description: the messages for `to`, the description first and then any
    /// candidates that were waiting for it.
    pub(crate) fn description(
        &mut self,
        from: Seat,
        to: Seat,
        description: SessionDescription,
    ) -> Vec<ServerMessage> {
        let lane = self.lanes.entry((from, to)).or_default();
        lane.described = true;
        let ufrag = description.ice_ufrag().to_owned();
        if !lane.ufrags.contains(&ufrag) {
            if lane.ufrags.len() == REMEMBERED_UFRAGS {
                lane.ufrags.pop_front();
            }
            lane.ufrags.push_back(ufrag);
        }
        let sdp = Opaque::new(description.as_str());
        let mut out = vec![match description.kind() {
            SdpKind::Offer => ServerMessage::Offer { from, sdp },
            SdpKind::Answer => ServerMessage::Answer { from, sdp },
        }];
        let pending = std::mem::take(&mut lane.pending);
        let (ready, waiting): (VecDeque<_>, VecDeque<_>) =
            pending.into_iter().partition(|item| lane.ready(item.ufrag()));
        lane.pending = waiting;
        out.extend(ready.into_iter().map(|item| item.into_message(from)));
        out
    }

    /// Relays a candidate or end-of-candidates now (`Some`), or holds it (`None`).
    pub(crate) fn trickle(
        &mut self,
        from: Seat,
        to: Seat,
        item: Trickle,
        max_pending: usize,
    ) -> Result<Option<ServerMessage>, Rejection> {
        let lane = self.lanes.entry((from, to)).or_default();
        if lane.ready(item.ufrag()) {
            return Ok(Some(item.into_message(from)));
        }
        if lane.pending.len() >= max_pending {
            return Err(Rejection::new(
                ErrorCode::StateMismatch,
                "too many candidates before their description; send the description first",
            ));
        }
        lane.pending.push_back(item);
        Ok(None)
    }

    /// Forgets every lane to or from `seat`: its peer connections are gone, and what
    /// was held for them belongs to nobody.
    pub(crate) fn reset(&mut self, seat: Seat) {
        self.lanes.retain(|(from, to), _| *from != seat && *to != seat);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candidate::CandidateInit;
    use crate::sdp::fixtures::description;

    fn candidate_text(message: &ServerMessage) -> Option<&str> {
        match message {
            ServerMessage::Candidate { candidate, .. } => Some(&candidate.candidate),
            _ => None,
        }
    }

    fn offer(ufrag: &str) -> SessionDescription {
        SessionDescription::parse(SdpKind::Offer, description(1, ufrag)).unwrap()
    }

    fn candidate(foundation: u32, ufrag: Option<&str>) -> Trickle {
        Trickle::Candidate(
            IceCandidate::parse(CandidateInit {
                candidate: format!("candidate:{foundation} 1 udp 1 10.0.0.1 5000 typ host"),
                sdp_mid: Some("0".to_owned()),
                sdp_mline_index: None,
                username_fragment: ufrag.map(str::to_owned),
            })
            .unwrap(),
        )
    }

    #[test]
    fn a_candidate_before_any_description_is_held_and_follows_it() {
        let mut lanes = Lanes::default();
        let held = lanes
            .trickle(Seat::Patient, Seat::Provider, candidate(1, Some("aaaa")), 8)
            .unwrap();
        assert!(held.is_none());
        let out = lanes.description(Seat::Patient, Seat::Provider, offer("aaaa"));
        assert!(matches!(
            out[0],
            ServerMessage::Offer {
                from: Seat::Patient,
                ..
            }
        ));
        assert_eq!(
            candidate_text(&out[1]),
            Some("candidate:1 1 udp 1 10.0.0.1 5000 typ host")
        );
    }

    #[test]
    fn a_candidate_after_its_description_goes_straight_through() {
        let mut lanes = Lanes::default();
        lanes.description(Seat::Patient, Seat::Provider, offer("aaaa"));
        let now = lanes.trickle(Seat::Patient, Seat::Provider, candidate(1, Some("aaaa")), 8);
        assert!(now.unwrap().is_some());
        let no_ufrag = lanes.trickle(Seat::Patient, Seat::Provider, candidate(2, None), 8);
        assert!(no_ufrag.unwrap().is_some());
    }

    #[test]
    fn after_an_ice_restart_new_candidates_wait_for_the_restart_offer() {
        let mut lanes = Lanes::default();
        lanes.description(Seat::Provider, Seat::Patient, offer("aaaa"));
        let early = lanes.trickle(Seat::Provider, Seat::Patient, candidate(2, Some("bbbb")), 8);
        assert!(early.unwrap().is_none());
        let out = lanes.description(Seat::Provider, Seat::Patient, offer("bbbb"));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn lanes_are_directed_so_a_description_releases_only_its_own_senders_candidates() {
        let mut lanes = Lanes::default();
        let held = lanes.trickle(Seat::Provider, Seat::Patient, candidate(1, None), 8);
        assert!(held.unwrap().is_none());
        let out = lanes.description(Seat::Patient, Seat::Provider, offer("aaaa"));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn held_candidates_are_bounded() {
        let mut lanes = Lanes::default();
        for n in 0..2 {
            lanes
                .trickle(Seat::Guest, Seat::Provider, candidate(n, None), 2)
                .unwrap();
        }
        let err = lanes
            .trickle(Seat::Guest, Seat::Provider, candidate(9, None), 2)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::StateMismatch);
    }

    #[test]
    fn resetting_a_seat_drops_what_was_held_for_it() {
        let mut lanes = Lanes::default();
        lanes
            .trickle(Seat::Patient, Seat::Provider, candidate(1, None), 8)
            .unwrap();
        lanes.reset(Seat::Provider);
        let out = lanes.description(Seat::Patient, Seat::Provider, offer("aaaa"));
        assert_eq!(out.len(), 1);
    }
}
