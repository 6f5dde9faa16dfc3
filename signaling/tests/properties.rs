//! Property tests over random traffic: fifteen connections spread over three rooms
//! join, leave, drop, resume, negotiate and go silent in random order, with random
//! clock jumps. After every input the outputs are checked against a model of what each
//! connection has been told:
//!
//! - nothing panics;
//! - each seat holds at most one live session, and the room agrees with its outputs;
//! - nothing is relayed back to its sender or to another room's connection, and a
//!   message sent to the wrong room is answered with an error to its sender only;
//! - every description and candidate reaches only the peer it was addressed to, in the
//!   order it was sent, and a candidate never arrives before a description of its ICE
//!   generation;
//! - sequence numbers only grow within a participant's stream.

use std::collections::{BTreeMap, BTreeSet};

use carewire_signaling::candidate::{CandidateInit, IceCandidate};
use carewire_signaling::protocol::{ClientBody, ClientMessage, MessageId, Opaque, Seat, ServerMessage};
use carewire_signaling::sdp::{SdpKind, SessionDescription};
use carewire_signaling::{
    Claim, ConnId, GuestLinkKey, GuestRole, Input, Millis, Output, Room, RoomConfig, ServerFrame,
};
use proptest::prelude::*;
use uuid::Uuid;

const ROOMS: usize = 3;
const CONNS: u64 = 15;

fn home(conn: u64) -> usize {
    (conn % ROOMS as u64) as usize
}

/// What a connection claims to be: by its number, a patient, a provider, a guest, a
/// second device of the patient (to exercise replacement), or a stranger to the
/// provider seat (to exercise ROOM_FULL).
fn claim_of(conn: u64, tokens: &[Option<String>; ROOMS]) -> Claim {
    let room = home(conn) as u128;
    match (conn / ROOMS as u64) % 5 {
        0 | 3 => Claim::Patient {
            account: Uuid::from_u128(room * 10 + 1),
        },
        1 => Claim::Provider {
            account: Uuid::from_u128(room * 10 + 2),
        },
        2 => Claim::Guest {
            token: tokens[home(conn)]
                .clone()
                .unwrap_or_else(|| "bm90IGEgdG9rZW4".to_owned()),
        },
        _ => Claim::Provider {
            account: Uuid::from_u128(room * 10 + 9),
        },
    }
}

fn seat_of_claim(claim: &Claim) -> Seat {
    match claim {
        Claim::Patient { .. } => Seat::Patient,
        Claim::Provider { .. } => Seat::Provider,
        Claim::Guest { .. } => Seat::Guest,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Open(u64),
    Join {
        conn: u64,
        resume: bool,
    },
    Offer {
        conn: u64,
        to: Seat,
        generation: u8,
        answer: bool,
        stray: bool,
    },
    Candidate {
        conn: u64,
        to: Seat,
        generation: u8,
        stray: bool,
    },
    EndOfCandidates {
        conn: u64,
        to: Seat,
    },
    IceRestart {
        conn: u64,
        to: Seat,
    },
    Admit(u64),
    Invite(u64),
    End(u64),
    Ping(u64),
    Leave(u64),
    Disconnect(u64),
    Garbage(u64),
    Tick(u64),
}

fn seat() -> impl Strategy<Value = Seat> {
    prop_oneof![Just(Seat::Patient), Just(Seat::Provider), Just(Seat::Guest)]
}

/// Mostly the patient, provider and guest of each room; sometimes a second device or
/// a stranger.
fn conn() -> impl Strategy<Value = u64> + Clone {
    prop_oneof![8 => 0..9u64, 2 => 9..CONNS]
}

/// The provider seats' claimants, for the provider-only operations.
fn provider() -> impl Strategy<Value = u64> + Clone {
    prop_oneof![4 => 3..6u64, 1 => 12..CONNS]
}

fn op() -> impl Strategy<Value = Op> {
    let conn = conn();
    prop_oneof![
        2 => conn.clone().prop_map(Op::Open),
        12 => (conn.clone(), any::<bool>()).prop_map(|(conn, resume)| Op::Join { conn, resume }),
        6 => (conn.clone(), seat(), 0u8..2, any::<bool>(), prop::bool::weighted(0.05))
            .prop_map(|(conn, to, generation, answer, stray)| Op::Offer { conn, to, generation, answer, stray }),
        12 => (conn.clone(), seat(), 0u8..2, prop::bool::weighted(0.05))
            .prop_map(|(conn, to, generation, stray)| Op::Candidate { conn, to, generation, stray }),
        1 => (conn.clone(), seat()).prop_map(|(conn, to)| Op::EndOfCandidates { conn, to }),
        1 => (conn.clone(), seat()).prop_map(|(conn, to)| Op::IceRestart { conn, to }),
        6 => prop_oneof![4 => provider(), 1 => conn.clone()].prop_map(Op::Admit),
        2 => prop_oneof![4 => provider(), 1 => conn.clone()].prop_map(Op::Invite),
        // Ending closes a room for the rest of the case: rare, or little else is tested.
        1 => (provider(), prop::bool::weighted(0.05))
            .prop_map(|(conn, end)| if end { Op::End(conn) } else { Op::Ping(conn) }),
        2 => conn.clone().prop_map(Op::Ping),
        2 => conn.clone().prop_map(Op::Leave),
        3 => conn.clone().prop_map(Op::Disconnect),
        1 => conn.prop_map(Op::Garbage),
        3 => prop_oneof![6 => 0u64..3_000, 1 => 3_000u64..25_000].prop_map(Op::Tick),
    ]
}

fn description_text(tag: u64, ufrag: &str) -> String {
    format!(
        "v=0\r\no=- {tag} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:{ufrag}\r\n\
         a=ice-pwd:0123456789abcdefghijklmn\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\n\
         a=rtpmap:111 opus/48000/2\r\n"
    )
}

fn tag_of_description(sdp: &Opaque) -> u64 {
    sdp.as_str()
        .split("o=- ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|tag| tag.parse().ok())
        .expect("descriptions in this test carry their tag as the session id")
}

fn tag_of_candidate(candidate: &CandidateInit) -> u64 {
    candidate.candidate["candidate:".len()..]
        .split(' ')
        .next()
        .and_then(|tag| tag.parse().ok())
        .expect("candidates in this test carry their tag as the foundation")
}

fn ufrag(conn: u64, generation: u8) -> String {
    format!("uf{generation}x{conn}")
}

/// What the test knows, from the outputs alone.
#[derive(Default)]
struct Model {
    /// Which seat each live connection was told it holds.
    live: BTreeMap<(usize, ConnId), Seat>,
    /// A seat's stream restarts (a new outbox) when someone takes it afresh.
    tenure: BTreeMap<(usize, Seat), u32>,
    last_seq: BTreeMap<(usize, Seat, u32), u64>,
    tokens: [Option<String>; ROOMS],
    /// Tag → (room, from, to, ufrag) of every description and candidate sent.
    sent: BTreeMap<u64, (usize, Seat, Seat, String)>,
    delivered_description: BTreeMap<(usize, Seat, u32, Seat), u64>,
    delivered_candidate: BTreeMap<(usize, Seat, u32, Seat, String), u64>,
    described: BTreeSet<(usize, Seat, u32, Seat, String)>,
    next_tag: u64,
    /// Connections opened and not yet closed or dropped.
    opened: BTreeSet<u64>,
}

impl Model {
    fn tenure(&self, room: usize, seat: Seat) -> u32 {
        self.tenure.get(&(room, seat)).copied().unwrap_or(0)
    }

    /// Checks one input's outputs and learns from them.
    fn observe(&mut self, room: usize, input_conn: Option<ConnId>, joining: bool, out: &[Output]) {
        for output in out {
            match output {
                Output::Close { conn, .. } => {
                    self.live.remove(&(room, *conn));
                    self.opened.remove(&conn.0);
                }
                Output::Send { conn, frame } => self.observe_frame(room, *conn, input_conn, joining, frame),
                _ => {}
            }
        }
        for seat in Seat::ALL {
            let holders = self
                .live
                .iter()
                .filter(|((r, _), s)| *r == room && **s == seat)
                .count();
            assert!(
                holders <= 1,
                "room {room}: {holders} live sessions on the {seat} seat"
            );
        }
    }

    fn observe_frame(
        &mut self,
        room: usize,
        conn: ConnId,
        input_conn: Option<ConnId>,
        joining: bool,
        frame: &ServerFrame,
    ) {
        if let ServerMessage::Joined(joined) = &frame.message {
            assert_eq!(
                home(conn.0),
                room,
                "a connection joined a room it was never opened in"
            );
            if joined.last_seq == 0 && !joined.resumed {
                *self.tenure.entry((room, joined.seat)).or_default() += 1;
            }
            self.live.insert((room, conn), joined.seat);
            return;
        }
        if let ServerMessage::GuestLink { token, .. } = &frame.message {
            self.tokens[room] = Some(token.as_str().to_owned());
        }
        let Some(&seat) = self.live.get(&(room, conn)) else {
            assert_eq!(
                Some(conn),
                input_conn,
                "room {room} wrote to {conn:?}, which holds no seat there"
            );
            assert_eq!(
                frame.seq, None,
                "a reply to a seatless connection is never sequenced"
            );
            return;
        };
        assert_eq!(
            home(conn.0),
            room,
            "room {room} wrote to another room's connection"
        );
        let tenure = self.tenure(room, seat);
        if let Some(seq) = frame.seq {
            let last = self.last_seq.entry((room, seat, tenure)).or_default();
            assert!(seq > *last, "seq went from {last} to {seq} on the {seat} seat");
            *last = seq;
        }
        let from = match &frame.message {
            ServerMessage::Offer { from, .. }
            | ServerMessage::Answer { from, .. }
            | ServerMessage::Candidate { from, .. }
            | ServerMessage::EndOfCandidates { from, .. }
            | ServerMessage::IceRestart { from } => *from,
            _ => return,
        };
        assert_ne!(from, seat, "a message was relayed back to its sender's seat");
        if !joining {
            assert_ne!(
                Some(conn),
                input_conn,
                "a message was relayed to the connection that sent it"
            );
        }
        match &frame.message {
            ServerMessage::Offer { sdp, .. } | ServerMessage::Answer { sdp, .. } => {
                let tag = tag_of_description(sdp);
                let (sent_room, sent_from, sent_to, ufrag) = self.sent[&tag].clone();
                assert_eq!(
                    (sent_room, sent_from, sent_to),
                    (room, from, seat),
                    "description {tag} misrouted"
                );
                let last = self
                    .delivered_description
                    .entry((room, seat, tenure, from))
                    .or_default();
                assert!(tag > *last, "description {tag} overtook {last}");
                *last = tag;
                self.described.insert((room, seat, tenure, from, ufrag));
            }
            ServerMessage::Candidate { candidate, .. } => {
                let tag = tag_of_candidate(candidate);
                let (sent_room, sent_from, sent_to, ufrag) = self.sent[&tag].clone();
                assert_eq!(
                    (sent_room, sent_from, sent_to),
                    (room, from, seat),
                    "candidate {tag} misrouted"
                );
                assert!(
                    self.described
                        .contains(&(room, seat, tenure, from, ufrag.clone())),
                    "candidate {tag} arrived before any description of its generation"
                );
                let last = self
                    .delivered_candidate
                    .entry((room, seat, tenure, from, ufrag))
                    .or_default();
                assert!(tag > *last, "candidate {tag} overtook {last}");
                *last = tag;
            }
            _ => {}
        }
    }
}

struct World {
    rooms: Vec<Room>,
    model: Model,
    now: Millis,
    next_id: u64,
}

impl World {
    fn new() -> World {
        let now = Millis::from_millis(0);
        World {
            rooms: (0..ROOMS)
                .map(|r| {
                    Room::new(
                        Uuid::from_u128(0xA000 + r as u128),
                        RoomConfig::default(),
                        GuestLinkKey::from_bytes([r as u8; 32]),
                        now,
                    )
                })
                .collect(),
            model: Model::default(),
            now,
            next_id: 0,
        }
    }

    fn message(&mut self, conn: u64, body: ClientBody, stray: bool) {
        if !matches!(body, ClientBody::Join { .. }) {
            self.come_back(conn, stray);
        }
        self.next_id += 1;
        let message = ClientMessage {
            id: MessageId::parse(format!("m{}", self.next_id)).expect("short ASCII ids are valid"),
            body,
        };
        let joining = matches!(message.body, ClientBody::Join { .. });
        let room = if stray {
            (home(conn) + 1) % ROOMS
        } else {
            home(conn)
        };
        let seats_before = self.rooms[room].seats();
        let out = self.rooms[room].handle(
            self.now,
            Input::Message {
                conn: ConnId(conn),
                message,
            },
        );
        if stray {
            for output in &out {
                match output {
                    Output::Send { conn: to, frame } => {
                        assert_eq!(*to, ConnId(conn));
                        assert!(matches!(frame.message, ServerMessage::Error { .. }));
                    }
                    other => panic!("a message to the wrong room caused {other:?}"),
                }
            }
            assert_eq!(self.rooms[room].seats(), seats_before);
        }
        self.model.observe(room, Some(ConnId(conn)), joining, &out);
    }

    /// A connection that was closed or never opened comes (back) in first, the way a
    /// client reconnects; one opened but not joined stays so, to test NOT_IN_ROOM.
    fn come_back(&mut self, conn: u64, stray: bool) {
        if !stray && !self.model.opened.contains(&conn) {
            self.apply(Op::Join { conn, resume: true });
        }
    }

    fn sender_seat(&self, conn: u64) -> Option<Seat> {
        self.model.live.get(&(home(conn), ConnId(conn))).copied()
    }

    fn apply(&mut self, op: Op) {
        self.now = self.now.saturating_add(std::time::Duration::from_millis(250));
        match op {
            Op::Open(conn) => {
                let room = home(conn);
                self.model.opened.insert(conn);
                let out = self.rooms[room].handle(
                    self.now,
                    Input::Open {
                        conn: ConnId(conn),
                        claim: claim_of(conn, &self.model.tokens),
                        ice_servers: Vec::new(),
                    },
                );
                self.model.observe(room, Some(ConnId(conn)), false, &out);
            }
            Op::Join { conn, resume } => {
                let room = home(conn);
                if !self.model.opened.contains(&conn) {
                    self.apply(Op::Open(conn));
                }
                let seat = seat_of_claim(&claim_of(conn, &self.model.tokens));
                let tenure = self.model.tenure(room, seat);
                let last_seq = resume.then(|| {
                    self.model
                        .last_seq
                        .get(&(room, seat, tenure))
                        .copied()
                        .unwrap_or(0)
                });
                self.message(conn, ClientBody::Join { last_seq }, false);
            }
            Op::Offer {
                conn,
                to,
                generation,
                answer,
                stray,
            } => {
                self.come_back(conn, stray);
                let ufrag = ufrag(conn, generation);
                let tag = self.register(conn, to, &ufrag);
                let kind = if answer { SdpKind::Answer } else { SdpKind::Offer };
                let description = SessionDescription::parse(kind, description_text(tag, &ufrag))
                    .expect("the template is a valid description");
                self.message(conn, ClientBody::Description { to, description }, stray);
            }
            Op::Candidate {
                conn,
                to,
                generation,
                stray,
            } => {
                self.come_back(conn, stray);
                let ufrag = ufrag(conn, generation);
                let tag = self.register(conn, to, &ufrag);
                let candidate = IceCandidate::parse(CandidateInit {
                    candidate: format!("candidate:{tag} 1 udp 2122260223 10.0.0.1 5000 typ host"),
                    sdp_mid: Some("0".to_owned()),
                    sdp_mline_index: Some(0),
                    username_fragment: Some(ufrag),
                })
                .expect("the template is a valid candidate");
                self.message(conn, ClientBody::Candidate { to, candidate }, stray);
            }
            Op::EndOfCandidates { conn, to } => self.message(
                conn,
                ClientBody::EndOfCandidates {
                    to,
                    username_fragment: None,
                },
                false,
            ),
            Op::IceRestart { conn, to } => self.message(conn, ClientBody::IceRestart { to }, false),
            Op::Admit(conn) => self.message(conn, ClientBody::Admit, false),
            Op::Invite(conn) => self.message(
                conn,
                ClientBody::InviteGuest {
                    role: GuestRole::Interpreter,
                },
                false,
            ),
            Op::End(conn) => self.message(conn, ClientBody::End, false),
            Op::Ping(conn) => self.message(conn, ClientBody::Ping, false),
            Op::Leave(conn) => self.message(conn, ClientBody::Leave, false),
            Op::Disconnect(conn) => {
                let room = home(conn);
                self.model.live.remove(&(room, ConnId(conn)));
                self.model.opened.remove(&conn);
                let out = self.rooms[room].handle(self.now, Input::Disconnected { conn: ConnId(conn) });
                self.model.observe(room, None, false, &out);
            }
            Op::Garbage(conn) => {
                let room = home(conn);
                let out = self.rooms[room].handle(
                    self.now,
                    Input::Frame {
                        conn: ConnId(conn),
                        text: r#"{"type":"offer","id":"g","to":"provider","sdp":"garbage"}"#.to_owned(),
                    },
                );
                self.model.observe(room, Some(ConnId(conn)), false, &out);
            }
            Op::Tick(millis) => {
                self.now = self.now.saturating_add(std::time::Duration::from_millis(millis));
                for room in 0..ROOMS {
                    let out = self.rooms[room].handle(self.now, Input::Tick);
                    self.model.observe(room, None, false, &out);
                }
            }
        }
        for (room, state) in self.rooms.iter().enumerate() {
            let seats = state.seats();
            let conns: BTreeSet<_> = seats.iter().filter_map(|s| s.conn).collect();
            assert_eq!(
                conns.len(),
                seats.iter().filter(|s| s.conn.is_some()).count(),
                "one connection, two seats"
            );
            for view in seats {
                if let Some(conn) = view.conn {
                    assert_eq!(
                        self.model.live.get(&(room, conn)),
                        Some(&view.seat),
                        "room and outputs disagree"
                    );
                }
            }
        }
    }

    /// Records a description or candidate about to be sent, under a fresh tag.
    fn register(&mut self, conn: u64, to: Seat, ufrag: &str) -> u64 {
        self.model.next_tag += 1;
        let tag = self.model.next_tag;
        if let Some(from) = self.sender_seat(conn) {
            self.model
                .sent
                .insert(tag, (home(conn), from, to, ufrag.to_owned()));
        }
        tag
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_traffic_keeps_every_room_rule(ops in prop::collection::vec(op(), 1..200)) {
        let mut world = World::new();
        for op in ops {
            world.apply(op);
        }
    }
}

/// A fixed script that reaches the interesting states the random one may miss: three
/// seats in a call, a drop, a resume and an ICE restart.
#[test]
fn a_scripted_three_party_call_keeps_every_room_rule() {
    let mut world = World::new();
    let script = [
        Op::Open(0),
        Op::Join {
            conn: 0,
            resume: false,
        },
        Op::Open(3),
        Op::Join {
            conn: 3,
            resume: false,
        },
        Op::Admit(3),
        Op::Invite(3),
        Op::Open(6),
        Op::Join {
            conn: 6,
            resume: false,
        },
        Op::Candidate {
            conn: 0,
            to: Seat::Provider,
            generation: 0,
            stray: false,
        },
        Op::Offer {
            conn: 0,
            to: Seat::Provider,
            generation: 0,
            answer: false,
            stray: false,
        },
        Op::Offer {
            conn: 3,
            to: Seat::Patient,
            generation: 0,
            answer: true,
            stray: false,
        },
        Op::Offer {
            conn: 6,
            to: Seat::Provider,
            generation: 0,
            answer: false,
            stray: false,
        },
        Op::Candidate {
            conn: 6,
            to: Seat::Provider,
            generation: 0,
            stray: true,
        },
        Op::Disconnect(0),
        Op::Offer {
            conn: 3,
            to: Seat::Patient,
            generation: 1,
            answer: false,
            stray: false,
        },
        Op::Open(9),
        Op::Join {
            conn: 9,
            resume: true,
        },
        Op::IceRestart {
            conn: 9,
            to: Seat::Provider,
        },
        Op::Candidate {
            conn: 3,
            to: Seat::Patient,
            generation: 2,
            stray: false,
        },
        Op::Offer {
            conn: 3,
            to: Seat::Patient,
            generation: 2,
            answer: false,
            stray: false,
        },
        Op::Tick(10_000),
        Op::End(3),
    ];
    for op in script {
        world.apply(op);
    }
    assert!(world.rooms[0].is_closed());
}
