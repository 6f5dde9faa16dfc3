//! Video consultations against a running server: two real WebRTC peers (webrtc 0.21)
//! signal through `GET /v1/consultations/{id}` over loopback, connect, talk on a data
//! channel both ways, restart ICE and keep talking; glare settles; a dropped socket
//! resumes within the grace period and is reported gone after it; the door refuses the
//! wrong people at the wrong time; bad input gets its code and the room keeps working;
//! the appointment moves to arrived and fulfilled, and every step is audited; signing
//! out or a disabled account closes the socket (4401, 4403) and frees the seat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use crate::support::booking::{Clinic, book_ok, clinic, count, free_slot, patient};
use crate::support::peer::Peer;
use crate::support::ws::{self, Ws};
use crate::support::{TestApp, User};
use carewire::clock::ManualClock;
use chrono::{DateTime, Duration, Utc};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const PROTOCOL: &str = "carewire.consult.v1";
const WAIT: StdDuration = StdDuration::from_secs(20);

/// A clinic, a patient and a booked video appointment, with the server's clock five
/// minutes before its start (inside the room's window).
struct Visit {
    app: TestApp,
    clinic: Clinic,
    patient: User,
    appointment: String,
    starts_at: DateTime<Utc>,
    clock: ManualClock,
}

async fn visit(settings: &[(&str, &str)]) -> Visit {
    let clock = ManualClock::starting_at(Utc::now());
    let mut builder = TestApp::builder().clock(clock.clone());
    for (name, value) in settings {
        builder = builder.setting(name, value);
    }
    let app = builder.spawn().await;
    let clinic = clinic(&app).await;
    let (patient, _) = patient(&app).await;
    let starts = free_slot(&app, &clinic, 2).await;
    let booked = book_ok(
        &app,
        &patient.tokens.access,
        json!({ "provider_id": clinic.provider.id, "type_id": clinic.type_id, "starts_at": starts }),
    )
    .await;
    let starts_at: DateTime<Utc> = starts.parse().unwrap();
    clock.set(starts_at - Duration::minutes(5));
    Visit {
        app,
        clinic,
        patient,
        appointment: booked["id"].as_str().unwrap().to_owned(),
        starts_at,
        clock,
    }
}

/// Opens the consultation socket with the access token as a subprotocol.
async fn open(
    app: &TestApp,
    token: Option<&str>,
    appointment: &str,
    query: &str,
) -> Result<Ws, tungstenite::Error> {
    let path = format!("/v1/consultations/{appointment}?{query}");
    ws::open(app, &path, PROTOCOL, token, &[]).await
}

/// The next JSON text frame, within the wait.
async fn next_json(ws: &mut Ws) -> Value {
    ws::next_json(ws, WAIT).await
}

/// The close code after whatever is still queued.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    ws::close_code(ws, WAIT).await
}

/// Opens and joins; returns the socket and `joined`.
async fn join(app: &TestApp, user: &User, appointment: &str, last_seq: Option<u64>) -> (Ws, Value) {
    let mut ws = open(app, Some(&user.tokens.access), appointment, "")
        .await
        .unwrap();
    let mut message = json!({ "type": "join", "id": "j", "protocol": PROTOCOL });
    if let Some(seq) = last_seq {
        message["last_seq"] = json!(seq);
    }
    ws.send(Message::text(message.to_string())).await.unwrap();
    let joined = next_json(&mut ws).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    (ws, joined)
}

/// One participant's socket, pumped by a task: the peer's outgoing signaling goes to
/// `to`, relayed signaling goes to the peer, everything else comes out of `events`.
/// Pings keep the room's heartbeat happy. Aborting the task drops the socket without
/// a close frame, which is what a lost network looks like to the server.
struct Client {
    events: mpsc::UnboundedReceiver<Value>,
    commands: mpsc::UnboundedSender<Value>,
    last_seq: Arc<AtomicU64>,
    pump: JoinHandle<()>,
}

const RELAYED: [&str; 5] = ["offer", "answer", "candidate", "end_of_candidates", "ice_restart"];

fn pump(mut ws: Ws, peer: Option<Arc<Peer>>, to: &'static str, last_seq: Arc<AtomicU64>) -> Client {
    let (events_tx, events) = mpsc::unbounded_channel();
    let (commands, mut commands_rx) = mpsc::unbounded_channel::<Value>();
    let seq = Arc::clone(&last_seq);
    let pump = tokio::spawn(async move {
        let mut n = 0u64;
        let mut ping = tokio::time::interval(StdDuration::from_secs(3));
        loop {
            let outgoing = async {
                match &peer {
                    Some(peer) => peer.next_outgoing().await,
                    None => std::future::pending().await,
                }
            };
            let mut message = tokio::select! {
                command = commands_rx.recv() => match command { Some(c) => c, None => return },
                signal = outgoing => match signal {
                    Some(mut s) => { s["to"] = json!(to); s }
                    None => return,
                },
                frame = ws.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(frame))) => {
                            let code = frame.map(|f| u16::from(f.code));
                            let _ = events_tx.send(json!({ "type": "_closed", "code": code }));
                            return;
                        }
                        Some(Ok(_)) => continue,
                        None | Some(Err(_)) => {
                            let _ = events_tx.send(json!({ "type": "_closed", "code": null }));
                            return;
                        }
                    };
                    let value: Value = serde_json::from_str(&text).unwrap();
                    if let Some(s) = value["seq"].as_u64() {
                        seq.fetch_max(s, Ordering::SeqCst);
                    }
                    let relayed = RELAYED.contains(&value["type"].as_str().unwrap_or(""));
                    match (&peer, relayed) {
                        (Some(peer), true) => peer.handle_relayed(&value).await.unwrap(),
                        _ => { let _ = events_tx.send(value); }
                    }
                    continue;
                }
                _ = ping.tick() => json!({ "type": "ping" }),
            };
            n += 1;
            if message.get("id").is_none() {
                message["id"] = json!(format!("m{n}"));
            }
            if ws.send(Message::text(message.to_string())).await.is_err() {
                return;
            }
        }
    });
    Client {
        events,
        commands,
        last_seq,
        pump,
    }
}

impl Client {
    fn send(&self, message: Value) {
        self.commands.send(message).unwrap();
    }

    /// The next event of `kind`, skipping pongs and others.
    async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let event = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {kind} in time"))
                .unwrap_or_else(|| panic!("socket pump ended before {kind}"));
            if event["type"] == kind {
                return event;
            }
            assert_ne!(
                event["type"], "_closed",
                "closed while waiting for {kind}: {event}"
            );
        }
    }

    /// Everything but pongs that arrives within `wait`.
    async fn drain(&mut self, wait: StdDuration) -> Vec<Value> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if event["type"] != "pong" {
                seen.push(event);
            }
        }
        seen
    }

    /// Drops the socket as a lost network would: no close frame.
    fn cut(self) -> Arc<AtomicU64> {
        self.pump.abort();
        self.last_seq
    }
}

async fn appointment_status(v: &Visit, who: &User) -> String {
    let res = v
        .app
        .get_as(&format!("/v1/appointments/{}", v.appointment), &who.tokens.access)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits for the appointment to reach `status` (the room applies it right after it
/// answers the join).
async fn wait_status(v: &Visit, who: &User, status: &str) {
    let mut seen = String::new();
    // Generous: on a loaded 2-core machine the room's database effects can queue.
    for _ in 0..300 {
        seen = appointment_status(v, who).await;
        if seen == status {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    panic!("the appointment stayed {seen}, never {status}");
}

/// Audit events of `action` about this appointment, once `expected` of them have
/// landed or 10 s have passed: the room writes its records after it has moved on.
async fn audited(v: &Visit, action: &str, expected: i64) -> i64 {
    let mut seen = 0;
    for _ in 0..200 {
        seen = audited_now(v, action);
        if seen >= expected {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    seen
}

/// Audit events of `action` about this appointment, now.
fn audited_now(v: &Visit, action: &str) -> i64 {
    count(
        &v.app,
        &format!(
            "SELECT count(*) AS n FROM audit_events WHERE action = '{action}' AND resource_id = '{}'",
            v.appointment
        ),
    )
}

/// Both sides seated and admitted, each with a real peer behind its socket.
struct Call {
    patient: Client,
    provider: Client,
    patient_peer: Arc<Peer>,
    provider_peer: Arc<Peer>,
}

async fn seated_and_admitted(v: &Visit) -> Call {
    seated_and_admitted_at(v, &v.app, &v.app).await
}

/// The same, with the patient connected to `patient_at` and the provider to `provider_at`
/// (two instances of one deployment, or the same one).
async fn seated_and_admitted_at(v: &Visit, patient_at: &TestApp, provider_at: &TestApp) -> Call {
    let (patient_ws, joined) = join(patient_at, &v.patient, &v.appointment, None).await;
    assert_eq!(
        (&joined["seat"], &joined["polite"], &joined["phase"]),
        (&json!("patient"), &json!(true), &json!("waiting"))
    );
    let patient_peer = Arc::new(Peer::new(true).await.unwrap());
    let mut patient = pump(
        patient_ws,
        Some(Arc::clone(&patient_peer)),
        "provider",
        Arc::new(AtomicU64::new(0)),
    );
    patient.next_of("waiting").await;

    let (provider_ws, joined) = join(provider_at, &v.clinic.provider, &v.appointment, None).await;
    assert_eq!(
        (&joined["seat"], &joined["polite"]),
        (&json!("provider"), &json!(false))
    );
    assert_eq!(joined["participants"][0]["seat"], "patient", "{joined}");
    let provider_peer = Arc::new(Peer::new(false).await.unwrap());
    let mut provider = pump(
        provider_ws,
        Some(Arc::clone(&provider_peer)),
        "patient",
        Arc::new(AtomicU64::new(0)),
    );
    assert_eq!(patient.next_of("peer_joined").await["seat"], "provider");
    provider.send(json!({ "type": "admit" }));
    patient.next_of("admitted").await;
    provider.next_of("admitted").await;
    Call {
        patient,
        provider,
        patient_peer,
        provider_peer,
    }
}

async fn talk(from: &Peer, to: &Peer, text: &str) {
    from.send_text(text).await.unwrap();
    assert_eq!(to.recv_text(WAIT).await.unwrap(), text);
}

#[tokio::test]
async fn a_video_visit_connects_restarts_ice_and_ends_fulfilled_with_every_step_audited() {
    let v = visit(&[]).await;
    // The provider watches the waiting room on the real-time gateway.
    let mut queue = {
        let mut request = format!(
            "ws://{}/v1/ws?topics=provider:{}:queue",
            v.app.addr, v.clinic.provider.id
        )
        .into_client_request()
        .unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("carewire.v1, bearer.{}", v.clinic.provider.tokens.access)
                .parse()
                .unwrap(),
        );
        tokio_tungstenite::connect_async(request).await.unwrap().0
    };
    assert_eq!(next_json(&mut queue).await["type"], "welcome");

    let mut call = seated_and_admitted(&v).await;

    // Joining the waiting room checked the patient in, and the provider's queue saw it.
    wait_status(&v, &v.patient, "arrived").await;
    loop {
        let event = next_json(&mut queue).await;
        if event["event"] == "appointment.status_changed" {
            assert_eq!(event["data"]["status"], "arrived", "{event}");
            assert_eq!(event["data"]["appointment_id"], v.appointment.as_str());
            break;
        }
    }

    // The impolite provider opens the channel: offer, answer and trickled candidates
    // go through the server, and the peers connect on loopback.
    call.provider_peer.open_channel().await.unwrap();
    call.provider_peer.wait_connected(WAIT).await.unwrap();
    call.patient_peer.wait_connected(WAIT).await.unwrap();
    talk(&call.provider_peer, &call.patient_peer, "can you hear me?").await;
    talk(&call.patient_peer, &call.provider_peer, "loud and clear").await;

    // ICE restart: a new offer with a new ufrag, relayed like any other; still talking.
    let before = call.provider_peer.local_ufrag().await.unwrap();
    call.provider_peer.restart_ice().await.unwrap();
    for _ in 0..100 {
        if call.provider_peer.local_ufrag().await.as_deref() != Some(before.as_str()) {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert_ne!(
        call.provider_peer.local_ufrag().await.unwrap(),
        before,
        "ICE restarted"
    );
    call.provider_peer.wait_connected(WAIT).await.unwrap();
    talk(&call.provider_peer, &call.patient_peer, "after the restart").await;
    talk(&call.patient_peer, &call.provider_peer, "still here").await;
    for peer in [&call.provider_peer, &call.patient_peer] {
        assert_eq!(
            peer.background_errors(),
            Vec::<String>::new(),
            "negotiation ran clean"
        );
    }

    // The provider ends the consultation: both are told and closed, and the
    // appointment is fulfilled through the state machine.
    call.provider.send(json!({ "type": "end" }));
    assert_eq!(call.patient.next_of("room_closed").await["reason"], "ended");
    assert_eq!(call.provider.next_of("room_closed").await["reason"], "ended");
    assert_eq!(call.patient.next_of("_closed").await["code"], 1000);
    // Ending the call fulfils the appointment.
    wait_status(&v, &v.clinic.provider, "fulfilled").await;

    assert_eq!(audited(&v, "consult_join", 2).await, 2, "both joins audited");
    assert_eq!(audited(&v, "consult_admit", 1).await, 1, "the admission audited");
    assert_eq!(audited(&v, "consult_end", 1).await, 1, "the end audited");
    // A closed room is not reopened for a fulfilled appointment.
    let mut late = open(&v.app, Some(&v.patient.tokens.access), &v.appointment, "")
        .await
        .unwrap();
    assert_eq!(next_json(&mut late).await["code"], "STATE_MISMATCH");
    assert_eq!(close_code(&mut late).await, Some(1008));
    call.patient_peer.close().await;
    call.provider_peer.close().await;
}

#[tokio::test]
async fn glare_both_sides_offering_at_once_still_connects() {
    let v = visit(&[]).await;
    let call = seated_and_admitted(&v).await;
    // Both add a channel at the same moment: two offers cross in the server. The
    // polite patient rolls back and answers; the impolite provider ignores the
    // patient's offer.
    let (a, b) = tokio::join!(
        call.patient_peer.open_channel(),
        call.provider_peer.open_channel()
    );
    a.unwrap();
    b.unwrap();
    call.patient_peer.wait_connected(WAIT).await.unwrap();
    call.provider_peer.wait_connected(WAIT).await.unwrap();
    talk(&call.patient_peer, &call.provider_peer, "both offered").await;
    talk(&call.provider_peer, &call.patient_peer, "and it settled").await;
    call.patient_peer.close().await;
    call.provider_peer.close().await;
}

#[tokio::test]
async fn a_dropped_socket_resumes_within_the_grace_period_and_is_gone_after_it() {
    let v = visit(&[("CAREWIRE_CONSULT_RECONNECT_GRACE_SECS", "3")]).await;
    let mut call = seated_and_admitted(&v).await;
    call.provider_peer.open_channel().await.unwrap();
    call.patient_peer.wait_connected(WAIT).await.unwrap();
    talk(&call.patient_peer, &call.provider_peer, "before the drop").await;

    // The patient's network drops; the provider sees them reconnecting, not gone.
    let last_seq = call.patient.cut();
    assert_eq!(
        call.provider.next_of("peer_reconnecting").await["seat"],
        "patient"
    );
    // Meanwhile the provider says something the patient must not miss.
    call.provider
        .send(json!({ "type": "ice_restart", "to": "patient" }));

    let seen = last_seq.load(Ordering::SeqCst);
    let (ws, joined) = join(&v.app, &v.patient, &v.appointment, Some(seen)).await;
    assert_eq!(joined["resumed"], true, "{joined}");
    // The missed relay is replayed straight after `joined`.
    let mut resumed = pump(ws, None, "provider", Arc::clone(&last_seq));
    let replayed = resumed.next_of("ice_restart").await;
    assert_eq!(replayed["from"], "provider");
    assert!(replayed["seq"].as_u64().unwrap() > seen);
    let back = call.provider.next_of("peer_joined").await;
    assert_eq!(
        (&back["seat"], &back["resumed"]),
        (&json!("patient"), &json!(true))
    );
    // The media path never depended on the socket.
    talk(&call.provider_peer, &call.patient_peer, "you are back").await;
    let quiet = call.provider.drain(StdDuration::from_millis(500)).await;
    assert!(
        quiet.iter().all(|e| e["type"] != "peer_left"),
        "no peer_left within the grace period: {quiet:?}"
    );

    // Dropped again, and this time not back within 3 s: the provider sees peer_left.
    resumed.cut();
    call.provider.next_of("peer_reconnecting").await;
    let left = call.provider.next_of("peer_left").await;
    assert_eq!(
        (&left["seat"], &left["reason"]),
        (&json!("patient"), &json!("timed_out"))
    );
    assert_eq!(audited(&v, "consult_leave", 1).await, 1, "the timeout is audited");
    assert_eq!(
        audited(&v, "consult_reconnect", 1).await,
        1,
        "the resume is audited"
    );
    call.patient_peer.close().await;
    call.provider_peer.close().await;
}

#[tokio::test]
async fn the_door_refuses_strangers_and_the_wrong_time_with_stable_codes() {
    let v = visit(&[]).await;
    // No credential at all: 401 before the upgrade.
    let err = open(&v.app, None, &v.appointment, "").await.unwrap_err();
    assert!(
        matches!(&err, tungstenite::Error::Http(res) if res.status() == 401),
        "{err:?}"
    );
    // A page from another site: 403 (cross-site WebSocket hijacking).
    let mut request = format!("ws://{}/v1/consultations/{}", v.app.addr, v.appointment)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("{PROTOCOL}, bearer.{}", v.patient.tokens.access)
            .parse()
            .unwrap(),
    );
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(request).await.unwrap_err();
    assert!(
        matches!(&err, tungstenite::Error::Http(res) if res.status() == 403),
        "{err:?}"
    );

    // Another patient, and an appointment that does not exist: UNAUTHORIZED alike.
    let (stranger, _) = patient(&v.app).await;
    for appointment in [v.appointment.clone(), uuid::Uuid::new_v4().to_string()] {
        let mut ws = open(&v.app, Some(&stranger.tokens.access), &appointment, "")
            .await
            .unwrap();
        let error = next_json(&mut ws).await;
        assert_eq!(
            (&error["type"], &error["code"]),
            (&json!("error"), &json!("UNAUTHORIZED"))
        );
        assert_eq!(close_code(&mut ws).await, Some(1008));
    }
    assert_eq!(
        count(
            &v.app,
            &format!(
                "SELECT count(*) AS n FROM audit_events WHERE action = 'access_denied' AND actor_id = '{}'",
                stranger.id
            )
        ),
        2,
        "both refusals audited"
    );

    // The right patient, too early (an hour before the start) and too late.
    for at in [v.starts_at - Duration::hours(1), v.starts_at + Duration::hours(2)] {
        v.clock.set(at);
        let mut ws = open(&v.app, Some(&v.patient.tokens.access), &v.appointment, "")
            .await
            .unwrap();
        assert_eq!(next_json(&mut ws).await["code"], "NOT_IN_WINDOW");
        assert_eq!(close_code(&mut ws).await, Some(1008));
    }
    v.clock.set(v.starts_at - Duration::minutes(14));
    // Inside the window the same patient gets in: the refusals changed nothing.
    let (_ws, joined) = join(&v.app, &v.patient, &v.appointment, None).await;
    assert_eq!(joined["seat"], "patient");
    wait_status(&v, &v.patient, "arrived").await;
}

#[tokio::test]
async fn bad_signaling_gets_its_code_and_the_room_keeps_working() {
    let v = visit(&[]).await;
    let mut call = seated_and_admitted(&v).await;
    let cases = [
        (
            json!({ "type": "offer", "to": "patient", "sdp": "not sdp" }),
            "BAD_SDP",
        ),
        (
            json!({ "type": "offer", "to": "patient", "sdp": format!("v=0\r\n{}", "a=x:y\r\n".repeat(12_000)) }),
            "BAD_SDP",
        ),
        (
            json!({ "type": "candidate", "to": "patient", "candidate": "candidate:1 1 carrier-pigeon 1 10.0.0.1 9 typ host", "sdp_mid": "0" }),
            "BAD_CANDIDATE",
        ),
        (json!({ "type": "teleport", "to": "patient" }), "UNKNOWN_TYPE"),
        (
            json!({ "type": "candidate", "to": "provider", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdp_mid": "0" }),
            "BAD_MESSAGE",
        ),
        (json!({ "type": "admit" }), "STATE_MISMATCH"),
    ];
    for (i, (message, code)) in cases.into_iter().enumerate() {
        let mut message = message;
        let id = format!("bad{i}");
        message["id"] = json!(id);
        call.provider.send(message);
        let error = call.provider.next_of("error").await;
        assert_eq!(
            (&error["in_reply_to"], &error["code"]),
            (&json!(id), &json!(code)),
            "{error}"
        );
    }
    // The patient's admit is not theirs to send.
    call.patient.send(json!({ "type": "admit", "id": "p-admit" }));
    assert_eq!(call.patient.next_of("error").await["code"], "UNAUTHORIZED");
    // None of it reached the patient, and the call still connects.
    let leaked = call.patient.drain(StdDuration::from_millis(300)).await;
    assert!(leaked.iter().all(|e| e["type"] != "offer"), "{leaked:?}");
    call.provider_peer.open_channel().await.unwrap();
    call.provider_peer.wait_connected(WAIT).await.unwrap();
    talk(&call.patient_peer, &call.provider_peer, "still works").await;

    // A guest link seats one interpreter; the link does not seat a second.
    call.provider
        .send(json!({ "type": "invite_guest", "role": "interpreter" }));
    let link = call.provider.next_of("guest_link").await;
    let token = link["token"].as_str().unwrap().to_owned();
    let query = format!("guest={token}");
    let mut guest = open(&v.app, None, &v.appointment, &query).await.unwrap();
    guest
        .send(Message::text(
            json!({ "type": "join", "id": "g1", "protocol": PROTOCOL }).to_string(),
        ))
        .await
        .unwrap();
    let joined = next_json(&mut guest).await;
    assert_eq!(
        (&joined["seat"], &joined["role"]),
        (&json!("guest"), &json!("interpreter"))
    );
    let mut second = open(&v.app, None, &v.appointment, &query).await.unwrap();
    second
        .send(Message::text(
            json!({ "type": "join", "id": "g2", "protocol": PROTOCOL }).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(next_json(&mut second).await["code"], "GUEST_LINK_INVALID");
    assert_eq!(close_code(&mut second).await, Some(1008));
    assert_eq!(audited(&v, "consult_guest_invite", 1).await, 1);
    call.patient_peer.close().await;
    call.provider_peer.close().await;
}

#[tokio::test]
async fn ice_servers_come_with_fresh_coturn_credentials_for_participants_only() {
    let v = visit(&[
        ("CAREWIRE_STUN_URLS", "stun:stun.example.org:3478"),
        ("CAREWIRE_TURN_URLS", "turn:turn.example.org:3478?transport=udp"),
        ("CAREWIRE_TURN_SECRET", "north-wind-shared-secret"),
        ("CAREWIRE_TURN_TTL_SECS", "3600"),
    ])
    .await;
    let path = format!("/v1/consultations/{}/ice-servers", v.appointment);
    let res = v.app.get_as(&path, &v.patient.tokens.access).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let servers = body["ice_servers"].as_array().unwrap();
    assert_eq!(servers[0]["urls"][0], "stun:stun.example.org:3478");
    assert!(servers[0].get("username").is_none());
    let username = servers[1]["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, v.patient.id);
    let expected_expiry = (v.starts_at - Duration::minutes(5)).timestamp() + 3600;
    assert_eq!(
        expiry.parse::<i64>().unwrap(),
        expected_expiry,
        "TTL from the server clock"
    );
    // The credential is coturn's: base64(HMAC-SHA1(secret, username)).
    let credential = carewire_signaling::turn_credentials(
        &carewire_signaling::TurnSecret::new(b"north-wind-shared-secret".to_vec()),
        &v.patient.id,
        u64::try_from(expected_expiry - 3600).unwrap(),
        StdDuration::from_secs(3600),
    )
    .unwrap();
    assert_eq!(servers[1]["credential"], credential.password.as_str());
    // The same come with `joined`.
    let (_ws, joined) = join(&v.app, &v.patient, &v.appointment, None).await;
    assert_eq!(joined["ice_servers"][1]["username"], username);

    // Not a participant: 404, as for an appointment that does not exist.
    let (stranger, _) = patient(&v.app).await;
    let res = v.app.get_as(&path, &stranger.tokens.access).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn two_instances_hold_one_room_and_a_participant_may_resume_on_either() {
    let v = visit(&[]).await;
    let second = TestApp::builder()
        .clock(v.clock.clone())
        .database(v.app.db.shared())
        .spawn()
        .await;

    // The patient opens the room on the first instance; the provider reaches the
    // second, which relays to the room's owner (one room: the provider sees the
    // patient in it).
    let Call {
        patient,
        mut provider,
        patient_peer,
        provider_peer,
    } = seated_and_admitted_at(&v, &v.app, &second).await;

    provider_peer.open_channel().await.unwrap();
    provider_peer.wait_connected(WAIT).await.unwrap();
    patient_peer.wait_connected(WAIT).await.unwrap();
    talk(&provider_peer, &patient_peer, "across instances").await;
    talk(&patient_peer, &provider_peer, "heard you").await;

    // The patient's connection to the first instance drops; they come back through
    // the second, and resume.
    let last_seq = patient.cut();
    provider.next_of("peer_reconnecting").await;
    let seen = last_seq.load(Ordering::SeqCst);
    let (ws, joined) = join(&second, &v.patient, &v.appointment, Some(seen)).await;
    assert_eq!(joined["resumed"], true, "{joined}");
    let mut patient = pump(ws, None, "provider", last_seq);
    let back = provider.next_of("peer_joined").await;
    assert_eq!(back["resumed"], true);
    talk(&patient_peer, &provider_peer, "back through the other door").await;

    provider.send(json!({ "type": "end" }));
    assert_eq!(patient.next_of("room_closed").await["reason"], "ended");
    assert_eq!(provider.next_of("room_closed").await["reason"], "ended");
    wait_status(&v, &v.patient, "fulfilled").await;
    assert_eq!(
        count(&v.app, "SELECT count(*) AS n FROM consult_rooms"),
        0,
        "the closed room gave up its lease"
    );
    patient_peer.close().await;
    provider_peer.close().await;
}

/// The next frame of type `kind` on a raw socket, skipping the others.
async fn next_of_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let frame = next_json(ws).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

#[tokio::test]
async fn signing_out_or_a_disabled_account_ends_the_consultation_socket_and_frees_the_seat() {
    let v = visit(&[]).await;
    let (mut patient_ws, _) = join(&v.app, &v.patient, &v.appointment, None).await;
    let (mut provider_ws, joined) = join(&v.app, &v.clinic.provider, &v.appointment, None).await;
    assert_eq!(joined["participants"][0]["seat"], "patient", "{joined}");

    // The patient signs out (from any client): their consultation closes with 4401,
    // and the provider sees them leave at once rather than after the grace period.
    let res = v
        .app
        .post_as("/v1/auth/logout", &v.patient.tokens.access, &json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(close_code(&mut patient_ws).await, Some(4401));
    let left = next_of_type(&mut provider_ws, "peer_left").await;
    assert_eq!(
        (&left["seat"], &left["reason"]),
        (&json!("patient"), &json!("left"))
    );

    // An admin disables the provider's account: their socket closes with 4403.
    let res = v
        .app
        .post_as(
            &format!("/v1/admin/users/{}/disable", v.clinic.provider.id),
            &v.clinic.admin.tokens.access,
            &json!({}),
        )
        .await;
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(close_code(&mut provider_ws).await, Some(4403));
}

#[tokio::test]
async fn a_video_appointment_says_when_its_room_is_open_as_configured() {
    let v = visit(&[
        ("CAREWIRE_CONSULT_OPENS_BEFORE_MINUTES", "5"),
        ("CAREWIRE_CONSULT_CLOSES_AFTER_MINUTES", "10"),
    ])
    .await;
    for who in [&v.patient, &v.clinic.provider] {
        let res = v
            .app
            .get_as(&format!("/v1/appointments/{}", v.appointment), &who.tokens.access)
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let appointment: Value = res.json().await.unwrap();
        let at = |field: &str| -> DateTime<Utc> { appointment[field].as_str().unwrap().parse().unwrap() };
        let room = &appointment["consultation"];
        let opens: DateTime<Utc> = room["opens_at"].as_str().unwrap().parse().unwrap();
        let closes: DateTime<Utc> = room["closes_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(opens, at("starts_at") - Duration::minutes(5), "{appointment}");
        assert_eq!(closes, at("ends_at") + Duration::minutes(10), "{appointment}");
    }
    // The server keeps to what it announced: a minute before the room opens, joining
    // is refused; at the opening minute it is not.
    v.clock.set(v.starts_at - Duration::minutes(6));
    let mut ws = open(&v.app, Some(&v.patient.tokens.access), &v.appointment, "")
        .await
        .unwrap();
    let refused = next_json(&mut ws).await;
    assert_eq!(refused["code"], "NOT_IN_WINDOW", "{refused}");
    v.clock.set(v.starts_at - Duration::minutes(5));
    let (_ws, joined) = join(&v.app, &v.patient, &v.appointment, None).await;
    assert_eq!(joined["seat"], "patient");
}

#[tokio::test]
async fn a_locked_audit_table_does_not_freeze_the_room_and_its_records_land_afterwards_in_order() {
    use diesel::RunQueryDsl;
    use diesel::connection::SimpleConnection;
    let v = visit(&[("CAREWIRE_CONSULT_HEARTBEAT_TIMEOUT_SECS", "6")]).await;
    let mut call = seated_and_admitted(&v).await;
    let expected_before = ["consult_join", "consult_join", "consult_admit"];
    let consult_actions = || -> Vec<String> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            action: String,
        }
        diesel::sql_query(format!(
            "SELECT action FROM audit_events WHERE resource_id = '{}' AND action LIKE 'consult_%' ORDER BY id",
            v.appointment
        ))
        .load::<Row>(&mut v.app.db.connect())
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect()
    };
    for _ in 0..200 {
        if consult_actions().len() == expected_before.len() {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert_eq!(consult_actions(), expected_before);

    // Someone holds the audit table for 20 s: every audit write waits (reads do not).
    let mut holder = v.app.db.connect();
    holder
        .batch_execute("BEGIN; LOCK TABLE audit_events IN EXCLUSIVE MODE;")
        .unwrap();
    call.provider
        .send(json!({ "type": "invite_guest", "role": "interpreter" }));
    call.provider.next_of("guest_link").await;
    call.provider
        .send(json!({ "type": "invite_guest", "role": "caregiver" }));
    call.provider.next_of("guest_link").await;
    let locked_until = tokio::time::Instant::now() + StdDuration::from_secs(20);
    let mut n = 0;
    while tokio::time::Instant::now() < locked_until {
        n += 1;
        for (who, client) in [("patient", &mut call.patient), ("provider", &mut call.provider)] {
            client.send(json!({ "type": "ping", "id": format!("lock-{n}") }));
            let id = format!("lock-{n}");
            let answered = async {
                // The pump's own pings are answered too; wait for this one's.
                while client.next_of("pong").await["in_reply_to"] != id.as_str() {}
            };
            tokio::time::timeout(StdDuration::from_secs(2), answered)
                .await
                .unwrap_or_else(|_| {
                    panic!("the {who} got no pong within 2 s while the audit table was locked")
                });
        }
        tokio::time::sleep(StdDuration::from_millis(500)).await;
    }
    assert_eq!(
        consult_actions(),
        expected_before,
        "nothing was written under the lock"
    );
    holder.batch_execute("ROLLBACK").unwrap();

    let expected = [
        "consult_join",
        "consult_join",
        "consult_admit",
        "consult_guest_invite",
        "consult_guest_invite",
    ];
    for _ in 0..200 {
        if consult_actions().len() >= expected.len() {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert_eq!(consult_actions(), expected, "every record, in the room's order");
    for (who, client) in [("patient", &mut call.patient), ("provider", &mut call.provider)] {
        let seen = client.drain(StdDuration::from_secs(1)).await;
        assert!(
            !seen.iter().any(|e| e["type"] == "_closed"
                || e["type"] == "peer_reconnecting"
                || e["type"] == "peer_left"),
            "the {who} saw {seen:?}"
        );
    }
}

#[tokio::test]
async fn the_consultation_sockets_frame_size_and_rate_are_settings() {
    let v = visit(&[
        ("CAREWIRE_CONSULT_MAX_MESSAGE_BYTES", "131072"),
        ("CAREWIRE_CONSULT_MESSAGE_BURST", "3"),
        ("CAREWIRE_CONSULT_MESSAGES_PER_SEC", "1"),
    ])
    .await;
    let (mut ws, _) = join(&v.app, &v.patient, &v.appointment, None).await;
    // The join took one token; two more pass, then the rate answers.
    for i in 0..4 {
        let ping = json!({ "type": "ping", "id": format!("p{i}") });
        ws.send(Message::text(ping.to_string())).await.unwrap();
    }
    let mut answers = Vec::new();
    while answers.len() < 4 {
        let answer = next_json(&mut ws).await;
        if answer["type"] == "pong" || answer["type"] == "error" {
            answers.push((answer["type"].clone(), answer["code"].clone()));
        }
    }
    assert_eq!(
        answers,
        [
            (json!("pong"), Value::Null),
            (json!("pong"), Value::Null),
            (json!("error"), json!("RATE_LIMITED")),
            (json!("error"), json!("RATE_LIMITED")),
        ]
    );
    // A frame over the setting closes the socket with 1009; the seat is held, so the
    // participant rejoins with the same seat.
    let _ = ws.send(Message::text("x".repeat(140 * 1024))).await;
    assert_eq!(close_code(&mut ws).await, Some(1009));
    let (_ws, joined) = join(&v.app, &v.patient, &v.appointment, None).await;
    assert_eq!(joined["seat"], "patient", "{joined}");
}
