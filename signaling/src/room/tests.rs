//! The room's rules, one test each, driven through `handle` as the server would.

use std::time::Duration;

use uuid::Uuid;

use super::*;
use crate::candidate::{CandidateInit, IceCandidate};
use crate::protocol::{ClosedReason, GuestRole, Joined, LeaveReason, PROTOCOL_VERSION, PeerState};
use crate::rate::RateLimit;
use crate::sdp::fixtures::description;
use crate::sdp::{SdpKind, SessionDescription};

const PATIENT: Uuid = Uuid::from_u128(0x1111);
const PROVIDER: Uuid = Uuid::from_u128(0x2222);
const STRANGER: Uuid = Uuid::from_u128(0x3333);

const P: ConnId = ConnId(1);
const D: ConnId = ConnId(2);
const G: ConnId = ConnId(3);

struct Harness {
    room: Room,
    now: Millis,
    next_id: u64,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(RoomConfig::default())
    }

    fn with(config: RoomConfig) -> Harness {
        let now = Millis::from_millis(1_000);
        Harness {
            room: Room::new(
                Uuid::from_u128(0xA),
                config,
                GuestLinkKey::from_bytes([9; 32]),
                now,
            ),
            now,
            next_id: 0,
        }
    }

    fn input(&mut self, input: Input) -> Vec<Output> {
        self.room.handle(self.now, input)
    }

    fn open(&mut self, conn: ConnId, claim: Claim) -> Vec<Output> {
        self.input(Input::Open {
            conn,
            claim,
            ice_servers: Vec::new(),
        })
    }

    fn send(&mut self, conn: ConnId, body: ClientBody) -> Vec<Output> {
        self.next_id += 1;
        let message = ClientMessage {
            id: MessageId::parse(format!("m{}", self.next_id)).unwrap(),
            body,
        };
        self.input(Input::Message { conn, message })
    }

    fn join(&mut self, conn: ConnId, claim: Claim) -> Vec<Output> {
        let mut out = self.open(conn, claim);
        out.extend(self.send(conn, ClientBody::Join { last_seq: None }));
        out
    }

    fn patient(&mut self) -> Vec<Output> {
        self.join(P, Claim::Patient { account: PATIENT })
    }

    fn provider(&mut self) -> Vec<Output> {
        self.join(D, Claim::Provider { account: PROVIDER })
    }

    /// Patient and provider joined, patient admitted.
    fn in_call() -> Harness {
        let mut h = Harness::new();
        h.patient();
        h.provider();
        h.send(D, ClientBody::Admit);
        h
    }

    fn invite(&mut self, role: GuestRole) -> String {
        let out = self.send(D, ClientBody::InviteGuest { role });
        messages_to(&out, D)
            .into_iter()
            .find_map(|message| match message {
                ServerMessage::GuestLink { token, .. } => Some(token.into_string()),
                _ => None,
            })
            .unwrap()
    }

    fn advance(&mut self, duration: Duration) -> Vec<Output> {
        self.now = self.now.saturating_add(duration);
        self.input(Input::Tick)
    }
}

fn frames_to(out: &[Output], to: ConnId) -> Vec<ServerFrame> {
    out.iter()
        .filter_map(|output| match output {
            Output::Send { conn, frame } if *conn == to => Some(frame.clone()),
            _ => None,
        })
        .collect()
}

fn messages_to(out: &[Output], to: ConnId) -> Vec<ServerMessage> {
    frames_to(out, to)
        .into_iter()
        .map(|frame| frame.message)
        .collect()
}

fn error_to(out: &[Output], to: ConnId) -> Option<ErrorCode> {
    messages_to(out, to)
        .into_iter()
        .find_map(|message| match message {
            ServerMessage::Error { code, .. } => Some(code),
            _ => None,
        })
}

fn joined_of(out: &[Output], to: ConnId) -> Joined {
    messages_to(out, to)
        .into_iter()
        .find_map(|message| match message {
            ServerMessage::Joined(joined) => Some(joined),
            _ => None,
        })
        .unwrap()
}

fn closed(out: &[Output], conn: ConnId) -> Option<CloseReason> {
    out.iter().find_map(|output| match output {
        Output::Close { conn: closed, reason } if *closed == conn => Some(*reason),
        _ => None,
    })
}

fn offer(session: u64, ufrag: &str) -> SessionDescription {
    SessionDescription::parse(SdpKind::Offer, description(session, ufrag)).unwrap()
}

fn candidate(foundation: u32, ufrag: &str) -> IceCandidate {
    IceCandidate::parse(CandidateInit {
        candidate: format!("candidate:{foundation} 1 udp 2122260223 10.0.0.1 5000 typ host"),
        sdp_mid: Some("0".to_owned()),
        sdp_mline_index: Some(0),
        username_fragment: Some(ufrag.to_owned()),
    })
    .unwrap()
}

#[test]
fn a_patient_who_joins_is_told_to_wait_and_the_appointment_is_marked_arrived() {
    let mut h = Harness::new();
    let out = h.patient();
    let joined = joined_of(&out, P);
    assert_eq!(
        (joined.seat, joined.role, joined.phase),
        (Seat::Patient, Role::Patient, Phase::Waiting)
    );
    assert_eq!(joined.protocol, PROTOCOL_VERSION);
    assert!(joined.polite);
    let waiting = frames_to(&out, P)
        .into_iter()
        .find(|f| f.message == ServerMessage::Waiting)
        .unwrap();
    assert_eq!(waiting.seq, Some(1));
    assert!(out.contains(&Output::AppointmentStatus {
        appointment: h.room.appointment(),
        status: RequestedStatus::Arrived,
    }));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Audit(AuditRecord {
            action: AuditAction::Joined,
            ..
        })
    )));
}

#[test]
fn arrived_is_requested_only_at_the_first_check_in() {
    let mut h = Harness::new();
    h.patient();
    h.send(P, ClientBody::Leave);
    let again = h.join(ConnId(9), Claim::Patient { account: PATIENT });
    assert!(
        !again
            .iter()
            .any(|o| matches!(o, Output::AppointmentStatus { .. }))
    );
}

#[test]
fn the_provider_sees_the_waiting_patient_and_admitting_starts_the_call_for_everyone() {
    let mut h = Harness::new();
    h.patient();
    let out = h.provider();
    let joined = joined_of(&out, D);
    assert!(!joined.polite);
    assert_eq!(joined.participants.len(), 1);
    assert_eq!(joined.participants[0].seat, Seat::Patient);
    assert_eq!(joined.participants[0].state, PeerState::Connected);
    assert!(messages_to(&out, P).iter().any(|m| matches!(
        m,
        ServerMessage::PeerJoined {
            seat: Seat::Provider,
            ..
        }
    )));

    let out = h.send(D, ClientBody::Admit);
    assert_eq!(h.room.phase(), Phase::InCall);
    assert!(messages_to(&out, P).contains(&ServerMessage::Admitted));
    assert!(messages_to(&out, D).contains(&ServerMessage::Admitted));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Audit(AuditRecord {
            seat: Seat::Patient,
            action: AuditAction::Admitted { .. },
            ..
        })
    )));
}

#[test]
fn admitting_with_nobody_waiting_is_a_state_mismatch() {
    let mut h = Harness::new();
    h.provider();
    let out = h.send(D, ClientBody::Admit);
    assert_eq!(error_to(&out, D), Some(ErrorCode::StateMismatch));
}

#[test]
fn only_the_provider_may_admit_end_or_invite() {
    let mut h = Harness::new();
    h.patient();
    h.provider();
    for body in [
        ClientBody::Admit,
        ClientBody::End,
        ClientBody::InviteGuest {
            role: GuestRole::Guest,
        },
    ] {
        let out = h.send(P, body);
        assert_eq!(error_to(&out, P), Some(ErrorCode::Unauthorized));
    }
    assert_eq!(h.room.phase(), Phase::Waiting);
}

#[test]
fn descriptions_are_refused_in_the_waiting_room() {
    let mut h = Harness::new();
    h.patient();
    h.provider();
    let out = h.send(
        P,
        ClientBody::Description {
            to: Seat::Provider,
            description: offer(1, "pAAA"),
        },
    );
    assert_eq!(error_to(&out, P), Some(ErrorCode::StateMismatch));
    assert!(messages_to(&out, D).is_empty());
}

#[test]
fn an_offer_reaches_only_the_addressed_peer_marked_with_the_senders_seat() {
    let mut h = Harness::in_call();
    let token = h.invite(GuestRole::Interpreter);
    h.join(G, Claim::Guest { token });
    let out = h.send(
        P,
        ClientBody::Description {
            to: Seat::Provider,
            description: offer(1, "pAAA"),
        },
    );
    let to_provider = messages_to(&out, D);
    assert_eq!(to_provider.len(), 1);
    assert!(
        matches!(&to_provider[0], ServerMessage::Offer { from: Seat::Patient, sdp } if sdp.as_str().contains("pAAA"))
    );
    assert!(messages_to(&out, P).is_empty());
    assert!(messages_to(&out, G).is_empty());
}

#[test]
fn a_message_addressed_to_its_sender_is_a_bad_message() {
    let mut h = Harness::in_call();
    let out = h.send(P, ClientBody::IceRestart { to: Seat::Patient });
    assert_eq!(error_to(&out, P), Some(ErrorCode::BadMessage));
}

#[test]
fn a_message_to_an_empty_seat_is_not_in_room() {
    let mut h = Harness::in_call();
    let out = h.send(P, ClientBody::IceRestart { to: Seat::Guest });
    assert_eq!(error_to(&out, P), Some(ErrorCode::NotInRoom));
}

#[test]
fn messages_before_join_are_not_in_room() {
    let mut h = Harness::new();
    h.open(P, Claim::Patient { account: PATIENT });
    let out = h.send(P, ClientBody::IceRestart { to: Seat::Provider });
    assert_eq!(error_to(&out, P), Some(ErrorCode::NotInRoom));
}

#[test]
fn a_connection_never_opened_in_this_room_is_not_in_room() {
    let mut h = Harness::new();
    let out = h.input(Input::Frame {
        conn: ConnId(77),
        text: r#"{"type":"ping","id":"x1"}"#.to_owned(),
    });
    assert_eq!(error_to(&out, ConnId(77)), Some(ErrorCode::NotInRoom));
}

#[test]
fn a_frame_of_an_unknown_type_is_answered_with_its_id() {
    let mut h = Harness::new();
    h.open(P, Claim::Patient { account: PATIENT });
    let out = h.input(Input::Frame {
        conn: P,
        text: r#"{"type":"dance","id":"q7"}"#.to_owned(),
    });
    let error = messages_to(&out, P).pop().unwrap();
    assert!(matches!(
        error,
        ServerMessage::Error { in_reply_to: Some(id), code: ErrorCode::UnknownType, .. } if id.as_str() == "q7"
    ));
}

#[test]
fn ping_gets_pong() {
    let mut h = Harness::new();
    h.open(P, Claim::Patient { account: PATIENT });
    let out = h.send(P, ClientBody::Ping);
    let frames = frames_to(&out, P);
    assert!(matches!(frames[0].message, ServerMessage::Pong { .. }));
    assert_eq!(frames[0].seq, None);
}

#[test]
fn someone_else_claiming_a_taken_seat_gets_room_full() {
    let mut h = Harness::new();
    h.patient();
    let out = h.join(ConnId(9), Claim::Patient { account: STRANGER });
    assert_eq!(error_to(&out, ConnId(9)), Some(ErrorCode::RoomFull));
    assert_eq!(closed(&out, ConnId(9)), Some(CloseReason::Rejected));
}

#[test]
fn joining_twice_on_one_connection_is_a_state_mismatch() {
    let mut h = Harness::new();
    h.patient();
    let out = h.send(P, ClientBody::Join { last_seq: None });
    assert_eq!(error_to(&out, P), Some(ErrorCode::StateMismatch));
}

#[test]
fn a_second_connection_with_the_same_identity_replaces_the_first() {
    let mut h = Harness::new();
    h.patient();
    h.provider();
    let out = h.join(ConnId(9), Claim::Patient { account: PATIENT });
    assert_eq!(messages_to(&out, P), [ServerMessage::SessionReplaced]);
    assert_eq!(closed(&out, P), Some(CloseReason::Replaced));
    assert_eq!(joined_of(&out, ConnId(9)).seat, Seat::Patient);
    let seats = h.room.seats();
    let patient = seats.iter().find(|s| s.seat == Seat::Patient).unwrap();
    assert_eq!(patient.conn, Some(ConnId(9)));
    // The replaced connection is forgotten: its late messages are refused.
    let late = h.send(P, ClientBody::Ping);
    assert_eq!(error_to(&late, P), Some(ErrorCode::NotInRoom));
}

#[test]
fn a_dropped_participant_keeps_the_seat_and_the_others_see_it_reconnecting() {
    let mut h = Harness::in_call();
    let out = h.input(Input::Disconnected { conn: P });
    assert_eq!(
        messages_to(&out, D),
        [ServerMessage::PeerReconnecting { seat: Seat::Patient }]
    );
    let patient = h
        .room
        .seats()
        .into_iter()
        .find(|s| s.seat == Seat::Patient)
        .unwrap();
    assert_eq!(patient.conn, None);
}

#[test]
fn a_participant_who_resumes_gets_what_it_missed_and_the_others_see_it_back() {
    let mut h = Harness::in_call();
    let last_seen = {
        // Everything the patient saw so far: waiting, peer_joined, admitted.
        let out = h.send(D, ClientBody::Ping);
        assert!(messages_to(&out, P).is_empty());
        3
    };
    h.input(Input::Disconnected { conn: P });
    h.send(
        D,
        ClientBody::Description {
            to: Seat::Patient,
            description: offer(5, "dAAA"),
        },
    );
    h.send(
        D,
        ClientBody::Candidate {
            to: Seat::Patient,
            candidate: candidate(1, "dAAA"),
        },
    );

    h.open(ConnId(9), Claim::Patient { account: PATIENT });
    let out = h.send(
        ConnId(9),
        ClientBody::Join {
            last_seq: Some(last_seen),
        },
    );
    let joined = joined_of(&out, ConnId(9));
    assert!(joined.resumed);
    assert_eq!(joined.last_seq, 5);
    let replayed: Vec<_> = frames_to(&out, ConnId(9)).into_iter().skip(1).collect();
    assert_eq!(
        replayed.iter().map(|f| f.seq).collect::<Vec<_>>(),
        [Some(4), Some(5)]
    );
    assert!(matches!(
        replayed[0].message,
        ServerMessage::Offer {
            from: Seat::Provider,
            ..
        }
    ));
    assert!(matches!(
        replayed[1].message,
        ServerMessage::Candidate {
            from: Seat::Provider,
            ..
        }
    ));
    assert!(messages_to(&out, D).contains(&ServerMessage::PeerJoined {
        seat: Seat::Patient,
        role: Role::Patient,
        polite: false,
        resumed: true,
    }));
}

#[test]
fn a_resume_from_a_forgotten_seq_starts_afresh_and_peers_start_over() {
    let mut h = Harness::with(RoomConfig {
        outbox_messages: 2,
        ..RoomConfig::default()
    });
    h.patient();
    h.provider();
    h.send(D, ClientBody::Admit);
    h.input(Input::Disconnected { conn: P });
    for _ in 0..3 {
        h.send(D, ClientBody::IceRestart { to: Seat::Patient });
    }
    h.open(ConnId(9), Claim::Patient { account: PATIENT });
    let out = h.send(ConnId(9), ClientBody::Join { last_seq: Some(1) });
    assert!(!joined_of(&out, ConnId(9)).resumed);
    assert_eq!(frames_to(&out, ConnId(9)).len(), 1);
    assert!(
        messages_to(&out, D)
            .iter()
            .any(|m| matches!(m, ServerMessage::PeerJoined { resumed: false, .. }))
    );
}

#[test]
fn after_the_grace_period_the_others_see_peer_left() {
    let mut h = Harness::in_call();
    h.input(Input::Disconnected { conn: P });
    h.advance(Duration::from_secs(10));
    h.send(D, ClientBody::Ping);
    let early = h.advance(Duration::from_secs(9));
    assert!(messages_to(&early, D).is_empty());
    let out = h.advance(Duration::from_secs(1));
    assert!(messages_to(&out, D).contains(&ServerMessage::PeerLeft {
        seat: Seat::Patient,
        reason: LeaveReason::TimedOut
    }));
    assert!(h.room.seats().iter().all(|s| s.seat != Seat::Patient));
}

#[test]
fn the_grace_period_is_configurable() {
    let mut h = Harness::with(RoomConfig {
        reconnect_grace: Duration::from_secs(3),
        ..RoomConfig::default()
    });
    h.patient();
    h.provider();
    h.input(Input::Disconnected { conn: P });
    let out = h.advance(Duration::from_secs(3));
    assert!(
        messages_to(&out, D)
            .iter()
            .any(|m| matches!(m, ServerMessage::PeerLeft { .. }))
    );
}

#[test]
fn a_connection_silent_past_the_heartbeat_timeout_is_dropped_on_tick() {
    let mut h = Harness::in_call();
    h.advance(Duration::from_secs(10));
    h.send(D, ClientBody::Ping);
    let out = h.advance(Duration::from_secs(5));
    assert_eq!(closed(&out, P), Some(CloseReason::HeartbeatTimeout));
    assert_eq!(closed(&out, D), None);
    assert!(messages_to(&out, D).contains(&ServerMessage::PeerReconnecting { seat: Seat::Patient }));
}

#[test]
fn leaving_frees_the_seat_at_once() {
    let mut h = Harness::in_call();
    let out = h.send(P, ClientBody::Leave);
    assert_eq!(closed(&out, P), Some(CloseReason::Left));
    assert!(messages_to(&out, D).contains(&ServerMessage::PeerLeft {
        seat: Seat::Patient,
        reason: LeaveReason::Left
    }));
}

#[test]
fn an_empty_room_closes_after_the_timeout() {
    let mut h = Harness::new();
    h.patient();
    h.send(P, ClientBody::Leave);
    let early = h.advance(Duration::from_secs(299));
    assert!(early.is_empty());
    let out = h.advance(Duration::from_secs(1));
    assert!(out.contains(&Output::Closed {
        reason: ClosedReason::Empty
    }));
    assert!(h.room.is_closed());
}

#[test]
fn ending_the_call_closes_everything_and_requests_fulfilled() {
    let mut h = Harness::in_call();
    let out = h.send(D, ClientBody::End);
    assert!(messages_to(&out, P).contains(&ServerMessage::RoomClosed {
        reason: ClosedReason::Ended
    }));
    assert_eq!(closed(&out, P), Some(CloseReason::Ended));
    assert_eq!(closed(&out, D), Some(CloseReason::Ended));
    assert!(out.contains(&Output::AppointmentStatus {
        appointment: h.room.appointment(),
        status: RequestedStatus::Fulfilled,
    }));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Audit(AuditRecord {
            action: AuditAction::Ended,
            ..
        })
    )));
    assert!(out.contains(&Output::Closed {
        reason: ClosedReason::Ended
    }));
}

#[test]
fn ending_before_anyone_was_admitted_requests_no_status() {
    let mut h = Harness::new();
    h.patient();
    h.provider();
    let out = h.send(D, ClientBody::End);
    assert!(!out.iter().any(|o| matches!(
        o,
        Output::AppointmentStatus {
            status: RequestedStatus::Fulfilled,
            ..
        }
    )));
}

#[test]
fn a_closed_room_refuses_newcomers() {
    let mut h = Harness::in_call();
    h.send(D, ClientBody::End);
    let out = h.open(ConnId(9), Claim::Patient { account: PATIENT });
    assert_eq!(error_to(&out, ConnId(9)), Some(ErrorCode::StateMismatch));
    assert_eq!(closed(&out, ConnId(9)), Some(CloseReason::Rejected));
}

#[test]
fn a_guest_with_a_valid_link_takes_the_guest_seat_in_the_role_the_provider_chose() {
    let mut h = Harness::in_call();
    let token = h.invite(GuestRole::Interpreter);
    let out = h.join(G, Claim::Guest { token });
    let joined = joined_of(&out, G);
    assert_eq!((joined.seat, joined.role), (Seat::Guest, Role::Interpreter));
    assert!(joined.polite);
    assert!(joined.participants.iter().all(|peer| peer.polite));
    assert!(messages_to(&out, P).contains(&ServerMessage::PeerJoined {
        seat: Seat::Guest,
        role: Role::Interpreter,
        polite: false,
        resumed: false,
    }));
}

#[test]
fn the_patient_is_polite_toward_the_provider_and_impolite_toward_the_guest() {
    let mut h = Harness::in_call();
    let token = h.invite(GuestRole::Caregiver);
    h.join(G, Claim::Guest { token });
    let out = h.join(ConnId(9), Claim::Patient { account: PATIENT });
    let joined = joined_of(&out, ConnId(9));
    assert!(joined.polite);
    let toward = |seat| {
        joined
            .participants
            .iter()
            .find(|p| p.seat == seat)
            .unwrap()
            .polite
    };
    assert!(toward(Seat::Provider));
    assert!(!toward(Seat::Guest));
}

#[test]
fn a_guest_link_is_single_use() {
    let mut h = Harness::in_call();
    let token = h.invite(GuestRole::Guest);
    h.join(G, Claim::Guest { token: token.clone() });
    h.send(G, ClientBody::Leave);
    let out = h.join(ConnId(9), Claim::Guest { token });
    assert_eq!(error_to(&out, ConnId(9)), Some(ErrorCode::GuestLinkInvalid));
    assert_eq!(closed(&out, ConnId(9)), Some(CloseReason::Rejected));
}

#[test]
fn a_guest_link_cannot_take_over_a_connected_guest() {
    let mut h = Harness::in_call();
    let token = h.invite(GuestRole::Guest);
    h.join(G, Claim::Guest { token: token.clone() });
    let out = h.join(ConnId(9), Claim::Guest { token });
    assert_eq!(error_to(&out, ConnId(9)), Some(ErrorCode::GuestLinkInvalid));
    assert_eq!(
        h.room
            .seats()
            .iter()
            .find(|s| s.seat == Seat::Guest)
            .unwrap()
            .conn,
        Some(G)
    );
}

#[test]
fn a_dropped_guest_may_come_back_with_its_link_within_the_grace_period() {
    let mut h = Harness::in_call();
    let token = h.invite(GuestRole::Guest);
    h.join(G, Claim::Guest { token: token.clone() });
    h.input(Input::Disconnected { conn: G });
    let out = h.join(ConnId(9), Claim::Guest { token });
    assert_eq!(joined_of(&out, ConnId(9)).seat, Seat::Guest);
}

#[test]
fn a_forged_or_expired_guest_link_is_refused() {
    let mut h = Harness::in_call();
    let out = h.join(
        G,
        Claim::Guest {
            token: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        },
    );
    assert_eq!(error_to(&out, G), Some(ErrorCode::GuestLinkInvalid));

    let token = h.invite(GuestRole::Guest);
    h.advance(Duration::from_secs(31 * 60));
    assert!(!h.room.is_closed());
    let out = h.join(ConnId(9), Claim::Guest { token });
    assert_eq!(error_to(&out, ConnId(9)), Some(ErrorCode::GuestLinkInvalid));
}

#[test]
fn inviting_while_the_guest_seat_is_taken_is_room_full() {
    let mut h = Harness::in_call();
    let token = h.invite(GuestRole::Guest);
    h.join(G, Claim::Guest { token });
    let out = h.send(
        D,
        ClientBody::InviteGuest {
            role: GuestRole::Guest,
        },
    );
    assert_eq!(error_to(&out, D), Some(ErrorCode::RoomFull));
}

#[test]
fn connections_beyond_the_limit_get_room_full() {
    let mut h = Harness::with(RoomConfig {
        max_connections: 2,
        ..RoomConfig::default()
    });
    h.open(ConnId(1), Claim::Patient { account: PATIENT });
    h.open(ConnId(2), Claim::Provider { account: PROVIDER });
    let out = h.open(ConnId(3), Claim::Provider { account: PROVIDER });
    assert_eq!(error_to(&out, ConnId(3)), Some(ErrorCode::RoomFull));
}

#[test]
fn candidates_sent_before_their_offer_are_held_and_follow_it() {
    let mut h = Harness::in_call();
    let early = h.send(
        P,
        ClientBody::Candidate {
            to: Seat::Provider,
            candidate: candidate(1, "pAAA"),
        },
    );
    assert!(early.is_empty());
    let out = h.send(
        P,
        ClientBody::Description {
            to: Seat::Provider,
            description: offer(1, "pAAA"),
        },
    );
    let to_provider = messages_to(&out, D);
    assert!(matches!(to_provider[0], ServerMessage::Offer { .. }));
    assert!(matches!(to_provider[1], ServerMessage::Candidate { .. }));
    let seqs: Vec<_> = frames_to(&out, D).iter().map(|f| f.seq.unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn an_ice_restart_request_reaches_the_peer_and_the_restart_offer_releases_new_candidates() {
    let mut h = Harness::in_call();
    h.send(
        D,
        ClientBody::Description {
            to: Seat::Patient,
            description: offer(1, "dAAA"),
        },
    );
    let out = h.send(P, ClientBody::IceRestart { to: Seat::Provider });
    assert_eq!(
        messages_to(&out, D),
        [ServerMessage::IceRestart { from: Seat::Patient }]
    );

    let held = h.send(
        D,
        ClientBody::Candidate {
            to: Seat::Patient,
            candidate: candidate(2, "dBBB"),
        },
    );
    assert!(messages_to(&held, P).is_empty());
    let out = h.send(
        D,
        ClientBody::Description {
            to: Seat::Patient,
            description: offer(2, "dBBB"),
        },
    );
    assert_eq!(messages_to(&out, P).len(), 2);
}

#[test]
fn end_of_candidates_is_relayed_in_the_candidate_stream() {
    let mut h = Harness::in_call();
    h.send(
        D,
        ClientBody::Description {
            to: Seat::Patient,
            description: offer(1, "dAAA"),
        },
    );
    let out = h.send(
        D,
        ClientBody::EndOfCandidates {
            to: Seat::Patient,
            username_fragment: Some("dAAA".to_owned()),
        },
    );
    assert!(matches!(
        messages_to(&out, P)[0],
        ServerMessage::EndOfCandidates {
            from: Seat::Provider,
            ..
        }
    ));
}

#[test]
fn a_connection_that_floods_is_rate_limited() {
    let limit = RateLimit {
        burst: 3,
        per_second: 1,
    };
    let mut h = Harness::with(RoomConfig {
        rate_limit: limit,
        ..RoomConfig::default()
    });
    h.open(P, Claim::Patient { account: PATIENT });
    for _ in 0..3 {
        let out = h.send(P, ClientBody::Ping);
        assert_eq!(error_to(&out, P), None);
    }
    let out = h.send(P, ClientBody::Ping);
    assert_eq!(error_to(&out, P), Some(ErrorCode::RateLimited));
}

#[test]
fn sequence_numbers_count_up_per_participant() {
    let mut h = Harness::in_call();
    let mut seqs = Vec::new();
    for n in 0..3 {
        let out = h.send(
            D,
            ClientBody::Description {
                to: Seat::Patient,
                description: offer(n, "dAAA"),
            },
        );
        seqs.extend(frames_to(&out, P).into_iter().filter_map(|f| f.seq));
    }
    assert_eq!(seqs, [4, 5, 6]);
}

#[test]
fn the_next_deadline_is_the_earliest_timer() {
    let mut h = Harness::new();
    // Empty since creation: the empty-room timeout.
    assert_eq!(
        h.room.next_deadline(),
        Some(h.now.saturating_add(Duration::from_secs(300)))
    );
    h.patient();
    // Now the patient's heartbeat.
    assert_eq!(
        h.room.next_deadline(),
        Some(h.now.saturating_add(Duration::from_secs(15)))
    );
    h.input(Input::Disconnected { conn: P });
    assert_eq!(
        h.room.next_deadline(),
        Some(h.now.saturating_add(Duration::from_secs(20)))
    );
}

#[test]
fn a_fresh_rejoin_tells_the_waiting_patient_again() {
    let mut h = Harness::new();
    h.patient();
    h.input(Input::Disconnected { conn: P });
    let out = h.join(ConnId(9), Claim::Patient { account: PATIENT });
    assert!(!joined_of(&out, ConnId(9)).resumed);
    assert!(messages_to(&out, ConnId(9)).contains(&ServerMessage::Waiting));
}

#[test]
fn frames_sent_as_text_behave_like_parsed_messages() {
    let mut h = Harness::new();
    h.open(P, Claim::Patient { account: PATIENT });
    let text = r#"{"type":"join","id":"j1","protocol":"carewire.consult.v1"}"#.to_owned();
    let out = h.input(Input::Frame { conn: P, text });
    assert_eq!(joined_of(&out, P).in_reply_to.as_str(), "j1");
}
