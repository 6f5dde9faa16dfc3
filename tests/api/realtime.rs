//! The real-time gateway against a real server, with tokio-tungstenite as the client:
//! the handshake (credentials, Origin), subscriptions and their authorization, events
//! in order with `seq`, resume, slow consumers and limits, losing the LISTEN
//! connection, sessions that end; and reminders (two instances, restarts, reschedules)
//! with the webhook channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use crate::support::booking::{Clinic, act, book_ok, clinic, count, free_slot, patient};
use crate::support::ws::{self, Ws, http_status};
use crate::support::{TestApp, User};
use carewire::clock::{Clock, ManualClock};
use chrono::{DateTime, Duration, Utc};
use diesel::RunQueryDsl;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

/// Opens `/v1/ws?{query}` with the access token as a subprotocol and `extra` headers.
async fn open(
    app: &TestApp,
    token: Option<&str>,
    query: &str,
    extra: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    ws::open(app, &format!("/v1/ws?{query}"), "carewire.v1", token, extra).await
}

/// Connects and reads the welcome.
async fn connect(app: &TestApp, user: &User, query: &str) -> (Ws, Value) {
    let mut ws = open(app, Some(&user.tokens.access), query, &[]).await.unwrap();
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// The next JSON text message, within 10 s.
async fn next_json(ws: &mut Ws) -> Value {
    ws::next_json(ws, StdDuration::from_secs(10)).await
}

/// The next message of `kind` (`event` messages are matched on their `event`).
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let message = next_json(ws).await;
        if message["type"] == kind || message["event"] == kind {
            return message;
        }
    }
}

/// Whether nothing arrives for `wait`.
async fn silent(ws: &mut Ws, wait: StdDuration) -> Option<Value> {
    match tokio::time::timeout(wait, ws.next()).await {
        Err(_) => None,
        Ok(Some(Ok(Message::Text(text)))) => Some(serde_json::from_str(&text).unwrap()),
        Ok(other) => Some(json!({ "other": format!("{other:?}") })),
    }
}

/// The close code the server ends the socket with (reading past anything queued).
async fn close_code(ws: &mut Ws) -> Option<u16> {
    ws::close_code(ws, StdDuration::from_secs(15)).await
}

async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::text(message.to_string())).await.unwrap();
}

async fn ticket(app: &TestApp, token: &str) -> String {
    let res = app.post_as("/v1/ws/ticket", token, &json!({})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn at(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test]
async fn the_handshake_needs_a_valid_credential_and_an_allowed_origin() {
    let app = TestApp::builder()
        .setting("CAREWIRE_CORS_ORIGINS", "https://app.clinic.test")
        .spawn()
        .await;
    let user = app.patient().await;

    assert_eq!(http_status(open(&app, None, "", &[]).await), 401);
    assert_eq!(http_status(open(&app, Some("not-a-token"), "", &[]).await), 401);
    assert_eq!(
        http_status(open(&app, None, "ticket=cwt_made_up", &[]).await),
        401
    );

    // A ticket works once.
    let t = ticket(&app, &user.tokens.access).await;
    let mut ws = open(&app, None, &format!("ticket={t}"), &[]).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    assert_eq!(
        http_status(open(&app, None, &format!("ticket={t}"), &[]).await),
        401
    );

    // A page from another site may not open a socket with the user's credentials.
    let evil = [("origin", "https://evil.example")];
    assert_eq!(
        http_status(open(&app, Some(&user.tokens.access), "", &evil).await),
        403
    );
    let t = ticket(&app, &user.tokens.access).await;
    assert_eq!(
        http_status(open(&app, None, &format!("ticket={t}"), &evil).await),
        403
    );
    let allowed = [("origin", "https://app.clinic.test")];
    assert!(open(&app, Some(&user.tokens.access), "", &allowed).await.is_ok());

    // A plain GET is not a handshake.
    assert_eq!(
        app.get_as("/v1/ws", &user.tokens.access).await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_patient_hears_their_appointment_changes_in_order_and_nobody_elses() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let (ada, _) = patient(&app).await;
    let (bob, _) = patient(&app).await;
    let (mut ada_ws, welcome) = connect(&app, &ada, "").await;
    assert_eq!(
        next_json(&mut ada_ws).await["type"],
        "notifications",
        "a fresh connection lists unread notifications"
    );
    let (mut bob_ws, _) = connect(&app, &bob, "").await;
    let _ = next_json(&mut bob_ws).await;
    let (mut dr_ws, _) = connect(&app, &c.provider, "").await;
    let _ = next_json(&mut dr_ws).await;

    let start = free_slot(&app, &c, 3).await;
    let booked = book_ok(&app, &ada.tokens.access, json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": start, "reason": "migraine" })).await;
    let later = free_slot(&app, &c, 4).await;
    let res = act(
        &app,
        &ada.tokens.access,
        &booked,
        "reschedule",
        Some(json!({ "starts_at": later })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let moved: Value = res.json().await.unwrap();
    let res = act(
        &app,
        &ada.tokens.access,
        &moved,
        "cancel",
        Some(json!({ "reason": "better" })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);

    let mut seqs = vec![welcome["seq"].as_i64().unwrap()];
    let mut kinds = Vec::new();
    while kinds.len() < 5 {
        let event = next_json(&mut ada_ws).await;
        assert_eq!(event["type"], "event", "{event}");
        assert_eq!(event["topics"], json!(["appointments"]));
        assert_eq!(event["data"]["appointment_id"], booked["id"]);
        assert!(
            !event.to_string().contains("migraine"),
            "the reason for visit never travels in events"
        );
        seqs.push(event["seq"].as_i64().unwrap());
        kinds.push(event["event"].as_str().unwrap().to_owned());
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq increases strictly: {seqs:?}"
    );
    assert_eq!(
        kinds,
        [
            "appointment.booked",
            "appointment.rescheduled",
            "slot.released",
            "appointment.cancelled",
            "slot.released"
        ]
    );
    // The provider follows the same changes on their calendar; another patient hears nothing.
    assert_eq!(next_json(&mut dr_ws).await["event"], "appointment.booked");
    assert_eq!(silent(&mut bob_ws, StdDuration::from_millis(700)).await, None);
}

#[tokio::test]
async fn anyone_may_watch_a_providers_slots_but_only_the_provider_their_queue() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let (ada, ada_patient) = patient(&app).await;
    let (bob, _) = patient(&app).await;

    // Bob watches the provider's free/busy: times only, never who.
    let (mut bob_ws, _) = connect(&app, &bob, &format!("topics=provider:{}:slots", c.provider.id)).await;
    let _ = next_json(&mut bob_ws).await;
    let start = free_slot(&app, &c, 2).await;
    let booked = book_ok(
        &app,
        &ada.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": start }),
    )
    .await;
    let event = next_json(&mut bob_ws).await;
    assert_eq!(event["event"], "appointment.booked");
    assert_eq!(
        event["topics"],
        json!([format!("provider:{}:slots", c.provider.id)])
    );
    assert_eq!(event["data"]["busy"], true);
    assert_eq!(at(&event["data"]["starts_at"]), at(&json!(start)));
    assert!(
        !event.to_string().contains(&ada_patient),
        "no patient id on a public topic: {event}"
    );
    assert!(!event.to_string().contains(booked["id"].as_str().unwrap()));

    // Bob may not watch the waiting room, and the attempt is audited.
    send(
        &mut bob_ws,
        json!({ "type": "subscribe", "id": "q1", "topic": format!("provider:{}:queue", c.provider.id) }),
    )
    .await;
    let refused = next_of(&mut bob_ws, "error").await;
    assert_eq!(
        (refused["id"].as_str(), refused["code"].as_str()),
        (Some("q1"), Some("forbidden_topic"))
    );
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT count(*) AS n FROM audit_events WHERE action = 'access_denied' AND resource_type = 'realtime_topic' AND actor_id = '{}'",
                bob.id
            )
        ),
        1
    );
    send(
        &mut bob_ws,
        json!({ "type": "subscribe", "id": "q2", "topic": "patients:everyone" }),
    )
    .await;
    assert_eq!(next_of(&mut bob_ws, "error").await["code"], "unknown_topic");
    send(&mut bob_ws, json!({ "type": "launch", "id": "q3" })).await;
    assert_eq!(next_of(&mut bob_ws, "error").await["code"], "bad_message");

    // The provider watches their own queue and sees Ada check in.
    let (mut dr_ws, _) = connect(&app, &c.provider, "").await;
    let _ = next_json(&mut dr_ws).await;
    send(
        &mut dr_ws,
        json!({ "type": "subscribe", "id": "s1", "topic": format!("provider:{}:queue", c.provider.id) }),
    )
    .await;
    let ack = next_of(&mut dr_ws, "ack").await;
    assert_eq!(ack["id"], "s1");
    assert!(ack["seq"].as_i64().is_some());
    let res = act(&app, &ada.tokens.access, &booked, "check-in", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let event = next_of(&mut dr_ws, "appointment.status_changed").await;
    assert_eq!(event["data"]["status"], "arrived");
    let topics: Vec<&str> = event["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        topics.contains(&format!("provider:{}:queue", c.provider.id).as_str()),
        "{topics:?}"
    );
    assert_eq!(event["data"]["patient_id"], ada_patient.as_str());
}

#[tokio::test]
async fn a_client_that_resumes_gets_exactly_the_events_it_missed_in_order() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let (ada, _) = patient(&app).await;
    let (mut ws, _) = connect(&app, &ada, "").await;
    let _ = next_json(&mut ws).await;
    let first = book_ok(&app, &ada.tokens.access, json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": free_slot(&app, &c, 2).await })).await;
    let seen = next_json(&mut ws).await;
    let last_seq = seen["seq"].as_i64().unwrap();
    ws.close(None).await.unwrap();

    // While offline: three more bookings (three events).
    let mut missed = Vec::new();
    for day in 3..6 {
        let b = book_ok(&app, &ada.tokens.access, json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": free_slot(&app, &c, day).await })).await;
        missed.push(b["id"].clone());
    }
    let (mut ws, welcome) = connect(&app, &ada, &format!("resume_from={last_seq}")).await;
    assert_eq!(welcome["resumed"], true);
    let mut replayed = Vec::new();
    let mut seqs = vec![last_seq];
    for _ in 0..3 {
        let event = next_json(&mut ws).await;
        assert_eq!(event["type"], "event", "{event}");
        seqs.push(event["seq"].as_i64().unwrap());
        replayed.push(event["data"]["appointment_id"].clone());
    }
    assert_eq!(replayed, missed, "exactly the missed events, in order");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_ne!(replayed[0], first["id"], "nothing already seen is repeated");
    // Then live again.
    let live = book_ok(&app, &ada.tokens.access, json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": free_slot(&app, &c, 7).await })).await;
    let event = next_json(&mut ws).await;
    assert_eq!(event["data"]["appointment_id"], live["id"]);
    assert!(event["seq"].as_i64().unwrap() > *seqs.last().unwrap());
}

#[tokio::test]
async fn a_client_that_drops_right_after_the_welcome_resumes_from_its_seq_and_loses_nothing() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let (ada, _) = patient(&app).await;
    let (mut ws, _) = connect(&app, &ada, "").await;
    let _ = next_json(&mut ws).await;
    book_ok(&app, &ada.tokens.access, json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": free_slot(&app, &c, 2).await })).await;
    let last_seq = next_of(&mut ws, "event").await["seq"].as_i64().unwrap();
    ws.close(None).await.unwrap();
    let mut missed = Vec::new();
    for day in 3..5 {
        let b = book_ok(&app, &ada.tokens.access, json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": free_slot(&app, &c, day).await })).await;
        missed.push(b["id"].clone());
    }

    // The protocol's rule: no event received before a drop, resume from welcome.seq.
    let (ws, welcome) = connect(&app, &ada, &format!("resume_from={last_seq}")).await;
    assert_eq!(welcome["resumed"], true);
    drop(ws);
    let resume_from = welcome["seq"].as_i64().unwrap();
    let (mut ws, welcome) = connect(&app, &ada, &format!("resume_from={resume_from}")).await;
    assert_eq!(welcome["resumed"], true, "{welcome}");
    let mut replayed = Vec::new();
    for _ in 0..2 {
        let event = next_json(&mut ws).await;
        assert_eq!(event["type"], "event", "the missed events are replayed: {event}");
        replayed.push(event["data"]["appointment_id"].clone());
    }
    assert_eq!(replayed, missed);
}

#[tokio::test]
async fn resuming_from_before_what_is_kept_asks_for_a_resync() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let (ada, _) = patient(&app).await;
    for day in 2..4 {
        book_ok(&app, &ada.tokens.access, json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": free_slot(&app, &c, day).await })).await;
    }
    // The retention job pruned everything (as if older than CAREWIRE_EVENT_RETENTION_DAYS).
    // Only numbered events are pruned; the listener numbers them just after commit.
    let mut conn = app.db.connect();
    for _ in 0..200 {
        if count(&app, "SELECT count(*) AS n FROM events WHERE seq IS NULL") == 0 {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(25)).await;
    }
    let pruned = carewire::realtime::stream::prune(&mut conn, Utc::now() + Duration::seconds(5)).unwrap();
    assert!(pruned >= 2);
    let (mut ws, welcome) = connect(&app, &ada, "resume_from=1").await;
    assert_eq!(welcome["resumed"], false);
    let resync = next_json(&mut ws).await;
    assert_eq!(resync["type"], "resync_required", "{resync}");
    assert_eq!(resync["seq"], welcome["seq"]);
    // A seq this server never sent, too.
    let (mut ws, _) = connect(&app, &ada, "resume_from=999999").await;
    assert_eq!(next_json(&mut ws).await["type"], "resync_required");
}

#[tokio::test]
async fn ending_a_session_or_disabling_the_account_closes_its_sockets() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = app.patient().await;
    let (mut ws, _) = connect(&app, &user, "").await;
    let res = app
        .post_as("/v1/auth/logout", &user.tokens.access, &json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(close_code(&mut ws).await, Some(4401));

    let tokens = app.tokens(&user.email).await;
    let signed_in = User {
        tokens,
        ..user.clone()
    };
    let (mut ws, _) = connect(&app, &signed_in, "").await;
    let res = app
        .post_as(
            &format!("/v1/admin/users/{}/disable", user.id),
            &admin.tokens.access,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(close_code(&mut ws).await, Some(4403));
}

#[tokio::test]
async fn oversized_messages_and_floods_are_refused_then_closed() {
    let app = TestApp::builder()
        .setting("CAREWIRE_WS_MESSAGES_PER_SEC", "5")
        .setting("CAREWIRE_WS_MAX_MESSAGE_BYTES", "1024")
        .spawn()
        .await;
    let user = app.patient().await;

    let (mut ws, _) = connect(&app, &user, "").await;
    let _ = next_json(&mut ws).await;
    for i in 0..10 {
        send(&mut ws, json!({ "type": "ping", "id": i.to_string() })).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    while let Some(message) = silent(&mut ws, StdDuration::from_millis(300)).await {
        match message["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") if message["code"] == "rate_limited" => limited += 1,
            _ => {}
        }
    }
    assert_eq!((pongs, limited), (10, 0), "a burst of twice the rate passes");
    for i in 0..20 {
        send(&mut ws, json!({ "type": "ping", "id": i.to_string() })).await;
    }
    let mut limited = 0;
    while let Some(message) = silent(&mut ws, StdDuration::from_millis(300)).await {
        if message["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert_eq!(limited, 1, "over the rate: told once, the excess dropped");
    for i in 0..200 {
        if ws
            .send(Message::text(
                json!({ "type": "ping", "id": i.to_string() }).to_string(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, Some(1008), "a flood closes the socket");

    let (mut ws, _) = connect(&app, &user, "").await;
    let _ = next_json(&mut ws).await;
    let _ = ws.send(Message::text("x".repeat(4096))).await;
    assert_eq!(close_code(&mut ws).await, Some(u16::from(CloseCode::Size)));
}

#[tokio::test]
async fn every_frame_counts_against_the_rate_and_a_flooder_hears_why_it_was_closed() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let app = TestApp::builder()
        .setting("CAREWIRE_WS_MESSAGES_PER_SEC", "5")
        .spawn()
        .await;
    let user = app.patient().await;
    type Flood = (&'static str, fn(usize) -> Message);
    let floods: [Flood; 3] = [
        ("binary frames", |i| Message::binary(i.to_string().into_bytes())),
        ("pings", |i| Message::Ping(i.to_string().into_bytes().into())),
        ("text frames", |i| {
            Message::text(json!({ "type": "ping", "id": i.to_string() }).to_string())
        }),
    ];
    for (what, frame) in floods {
        let (mut ws, _) = connect(&app, &user, "").await;
        let _ = next_json(&mut ws).await;
        // All at once, without reading: the server has unread data when it closes.
        for i in 0..2000 {
            if ws.feed(frame(i)).await.is_err() {
                break;
            }
        }
        let _ = ws.flush().await;
        let mut answers = 0;
        let code = loop {
            match tokio::time::timeout(StdDuration::from_secs(15), ws.next())
                .await
                .expect("closed within 15 s")
            {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(Message::Text(_) | Message::Pong(_))) => answers += 1,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("{what}: the connection broke instead of closing: {e}"),
                None => break None,
            }
        };
        assert_eq!(
            code,
            Some(1008),
            "{what}: the flood is closed with 1008, and the client hears it"
        );
        assert!(answers < 100, "{what}: {answers} answers to 2000 frames");
    }

    // Text that is not UTF-8 is 1007 (RFC 6455 section 8.1), not a protocol error.
    let (mut ws, _) = connect(&app, &user, "").await;
    let _ = next_json(&mut ws).await;
    let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(bad)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1007));
}

/// Inserts `n` notification events of about `size` bytes for `account`, the way the
/// reminder dispatcher does.
fn flood(app: &TestApp, account: &str, n: usize, size: usize) {
    diesel::sql_query(format!(
        "INSERT INTO events (kind, account_id, payload) \
         SELECT 'notification', '{account}', jsonb_build_object('n', g, 'padding', repeat('x', {size})) \
           FROM generate_series(1, {n}) g"
    ))
    .execute(&mut app.db.connect())
    .unwrap();
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_while_others_get_everything() {
    let app = TestApp::builder()
        .setting("CAREWIRE_WS_QUEUE", "1024")
        .spawn()
        .await;
    let user = app.patient().await;
    let (mut slow, _) = connect(&app, &user, "").await;
    let (mut fast, _) = connect(&app, &user, "").await;
    let _ = next_json(&mut fast).await;
    assert_eq!(app.hub.connections(), 2);

    let (batches, per_batch) = (40, 100);
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < batches * per_batch {
            let event = next_json(&mut fast).await;
            if event["type"] == "event" {
                seqs.push(event["seq"].as_i64().unwrap());
            }
        }
        (seqs, fast)
    });
    // 40 × 100 events of 8 KiB: far more than the kernel buffers of a socket nobody reads.
    for _ in 0..batches {
        flood(&app, &user.id, per_batch, 8 * 1024);
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    let (seqs, _fast) = tokio::time::timeout(StdDuration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "the fast client got every event, in order"
    );

    // The slow one was cut off: it reads what had reached it, then the close (1013),
    // or the connection simply ends when not even the close frame fit.
    let mut received = 0;
    let code = loop {
        match tokio::time::timeout(StdDuration::from_secs(15), slow.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(_))) => received += 1,
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert!(
        received < batches * per_batch,
        "the slow client did not get everything ({received})"
    );
    assert!(code.is_none_or(|c| c == 1013), "closed with {code:?}");
    assert_eq!(app.hub.connections(), 1, "its queue and routes are gone");
}

#[tokio::test]
async fn losing_the_listening_connection_recovers_and_catches_up() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let (ada, _) = patient(&app).await;
    let (mut ws, _) = connect(&app, &ada, "").await;
    let _ = next_json(&mut ws).await;
    let killed = count(
        &app,
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
         WHERE application_name = 'carewire-listener' AND datname = current_database()",
    );
    assert_eq!(killed, 1);
    let booked = book_ok(&app, &ada.tokens.access, json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": free_slot(&app, &c, 2).await })).await;
    let event = next_json(&mut ws).await;
    assert_eq!(event["data"]["appointment_id"], booked["id"]);
}

/// A clinic whose type reminds 24 h, 1 h and 10 min before (the defaults), and a
/// booked appointment three days ahead.
async fn booked_in_three_days(app: &TestApp) -> (Clinic, User, Value) {
    let c = clinic(app).await;
    let (ada, _) = patient(app).await;
    let booked = book_ok(app, &ada.tokens.access, json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": free_slot(app, &c, 3).await })).await;
    (c, ada, booked)
}

fn pending_jobs(app: &TestApp, appointment: &Value) -> Vec<(i32, DateTime<Utc>)> {
    #[derive(diesel::QueryableByName)]
    struct Job {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        appointment_version: i32,
        #[diesel(sql_type = diesel::sql_types::Timestamptz)]
        due_at: DateTime<Utc>,
    }
    let jobs: Vec<Job> = diesel::sql_query(format!(
        "SELECT appointment_version, due_at FROM reminder_jobs WHERE appointment_id = '{}' AND status = 'pending' ORDER BY due_at",
        appointment["id"].as_str().unwrap()
    ))
    .load(&mut app.db.connect())
    .unwrap();
    jobs.into_iter()
        .map(|j| (j.appointment_version, j.due_at))
        .collect()
}

fn reminders_for(app: &TestApp, account: &str) -> i64 {
    count(
        app,
        &format!(
            "SELECT count(*) AS n FROM notifications WHERE account_id = '{account}' AND kind = 'appointment.reminder'"
        ),
    )
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_reminder_goes_out_once_at_its_offset_with_two_instances_running() {
    let clock = ManualClock::starting_at(Utc::now());
    let first = TestApp::builder()
        .clock(clock.clone())
        .setting("CAREWIRE_REMINDER_POLL_MS", "20")
        .spawn()
        .await;
    let second = TestApp::builder()
        .clock(clock.clone())
        .setting("CAREWIRE_REMINDER_POLL_MS", "20")
        .database(first.db.shared())
        .spawn()
        .await;
    let (c, ada, booked) = booked_in_three_days(&first).await;
    let starts = at(&booked["starts_at"]);
    assert_eq!(
        pending_jobs(&first, &booked)
            .iter()
            .map(|(_, due)| starts - *due)
            .collect::<Vec<_>>(),
        vec![Duration::hours(24), Duration::hours(1), Duration::minutes(10)]
    );
    // Ada listens on the second instance; the reminder is claimed by either.
    let (mut ws, _) = connect(&second, &ada, "").await;
    let _ = next_json(&mut ws).await;

    clock.set(starts - Duration::hours(24) + Duration::seconds(1));
    let pushed = next_of(&mut ws, "notification").await;
    assert_eq!(pushed["topics"], json!(["notifications"]));
    assert_eq!(pushed["data"]["kind"], "appointment.reminder");
    assert_eq!(pushed["data"]["appointment_id"], booked["id"]);
    assert_eq!(pushed["data"]["payload"]["minutes_before"], 1440);
    assert_eq!(pushed["data"]["late"], false);
    // Both instances kept polling: still exactly one, for each of Ada and the provider.
    tokio::time::sleep(StdDuration::from_millis(400)).await;
    assert_eq!(reminders_for(&first, &ada.id), 1);
    assert_eq!(reminders_for(&first, &c.provider.id), 1);
    assert_eq!(silent(&mut ws, StdDuration::from_millis(300)).await, None);

    // Over REST too, and reading it over the socket marks it read.
    let listed: Value = first
        .get_as("/v1/me/notifications?unread=true", &ada.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    send(
        &mut ws,
        json!({ "type": "read", "id": "r1", "notification_id": pushed["data"]["id"] }),
    )
    .await;
    assert_eq!(next_of(&mut ws, "ack").await["id"], "r1");
    let listed: Value = second
        .get_as("/v1/me/notifications?unread=true", &ada.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty());

    clock.set(starts - Duration::minutes(10));
    let pushed = next_of(&mut ws, "notification").await;
    assert_eq!(
        pushed["data"]["payload"]["minutes_before"], 60,
        "the 1 h reminder, then the 10 min one"
    );
    let pushed = next_of(&mut ws, "notification").await;
    assert_eq!(pushed["data"]["payload"]["minutes_before"], 10);
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert_eq!(reminders_for(&first, &ada.id), 3);
    assert_eq!(
        count(
            &first,
            "SELECT count(*) AS n FROM reminder_jobs WHERE status = 'sent'"
        ),
        3
    );
}

#[tokio::test]
async fn rescheduling_replaces_the_reminders_and_cancelling_removes_them() {
    let clock = ManualClock::starting_at(Utc::now());
    let app = TestApp::builder()
        .clock(clock.clone())
        .setting("CAREWIRE_REMINDER_POLL_MS", "20")
        .spawn()
        .await;
    let (c, ada, booked) = booked_in_three_days(&app).await;
    let old_start = at(&booked["starts_at"]);
    let res = act(
        &app,
        &ada.tokens.access,
        &booked,
        "reschedule",
        Some(json!({ "starts_at": free_slot(&app, &c, 5).await })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let moved: Value = res.json().await.unwrap();
    let new_start = at(&moved["starts_at"]);
    let jobs = pending_jobs(&app, &booked);
    assert_eq!(jobs.len(), 3);
    assert!(
        jobs.iter()
            .all(|(version, due)| *version == 2 && new_start - *due <= Duration::hours(24))
    );

    // The old time passes: nothing is said about it.
    clock.set(old_start - Duration::minutes(5));
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert_eq!(reminders_for(&app, &ada.id), 0);

    let res = act(
        &app,
        &ada.tokens.access,
        &moved,
        "cancel",
        Some(json!({ "reason": "cannot come" })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(pending_jobs(&app, &booked).is_empty());
    clock.set(new_start - Duration::minutes(5));
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert_eq!(
        reminders_for(&app, &ada.id),
        0,
        "a cancelled appointment never reminds"
    );
}

#[tokio::test]
async fn overdue_reminders_go_out_once_after_a_restart_marked_late_unless_started() {
    let clock = ManualClock::starting_at(Utc::now());
    let mut first = TestApp::builder().clock(clock.clone()).spawn().await;
    let c = clinic(&first).await;
    let (ada, _) = patient(&first).await;
    let soon = book_ok(&first, &ada.tokens.access, json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": free_slot(&first, &c, 2).await })).await;
    let later = book_ok(&first, &ada.tokens.access, json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": free_slot(&first, &c, 4).await })).await;
    first.shutdown().await;

    // While the server is down, `soon` starts and `later`'s 24 h reminder falls due.
    let later_start = at(&later["starts_at"]);
    clock.set(later_start - Duration::hours(22));
    assert!(at(&soon["starts_at"]) < clock.now());
    let second = TestApp::builder()
        .clock(clock.clone())
        .setting("CAREWIRE_REMINDER_POLL_MS", "20")
        .database(first.db.shared())
        .spawn()
        .await;
    wait_for("the overdue reminder", || reminders_for(&second, &ada.id) == 1).await;
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert_eq!(reminders_for(&second, &ada.id), 1, "sent once");
    assert_eq!(
        count(
            &second,
            &format!(
                "SELECT count(*) AS n FROM notifications WHERE account_id = '{}' AND late AND appointment_id = '{}'",
                ada.id,
                later["id"].as_str().unwrap()
            )
        ),
        1,
        "marked late"
    );
    assert_eq!(
        count(
            &second,
            &format!(
                "SELECT count(*) AS n FROM reminder_jobs WHERE appointment_id = '{}' AND status = 'skipped'",
                soon["id"].as_str().unwrap()
            )
        ),
        3,
        "an appointment that already started is not reminded of"
    );
    let (mut ws, _) = connect(&second, &ada, "").await;
    let unread = next_json(&mut ws).await;
    assert_eq!(unread["type"], "notifications");
    assert_eq!(unread["items"][0]["late"], true, "waiting as unread on connect");
}

/// A request as the receiver saw it: headers (lower-case names) and body.
type Seen = (HashMap<String, String>, String);

/// A webhook receiver that refuses the first `failures` requests with 500.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn receiver(failures: usize) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/carewire", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 4096];
            let (headers, body) = loop {
                let n = stream.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break (HashMap::new(), String::new());
                }
                buffer.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buffer).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let headers: HashMap<String, String> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    let length: usize = headers
                        .get("content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break (headers, body[..length].to_owned());
                    }
                }
            };
            let n = {
                let mut seen = log.lock().unwrap();
                seen.push((headers, body));
                seen.len()
            };
            let status = if n <= failures {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = stream
                .write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
                )
                .await;
        }
    });
    Receiver { url, seen }
}

#[tokio::test]
async fn the_webhook_channel_signs_each_notification_and_retries_until_accepted() {
    const SECRET: &str = "a webhook secret of at least 32 bytes!";
    let hook = receiver(2).await;
    let clock = ManualClock::starting_at(Utc::now());
    let app = TestApp::builder()
        .clock(clock.clone())
        .setting("CAREWIRE_REMINDER_POLL_MS", "20")
        .setting("CAREWIRE_REMINDER_OFFSETS", "24h")
        .setting("CAREWIRE_WEBHOOK_URL", &hook.url)
        .setting("CAREWIRE_WEBHOOK_SECRET", SECRET)
        .setting("CAREWIRE_WEBHOOK_BACKOFF_MS", "1000")
        .spawn()
        .await;
    let (_, ada, booked) = booked_in_three_days(&app).await;
    clock.set(at(&booked["starts_at"]) - Duration::hours(23));
    // Two notifications (Ada, the provider); the receiver refuses the first two
    // requests, so retries follow the backoff as the clock moves on.
    for _ in 0..100 {
        if count(
            &app,
            "SELECT count(*) AS n FROM webhook_deliveries WHERE status = 'delivered'",
        ) == 2
        {
            break;
        }
        clock.advance(Duration::seconds(2));
        tokio::time::sleep(StdDuration::from_millis(60)).await;
    }
    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM webhook_deliveries WHERE status = 'delivered'"
        ),
        2
    );
    let seen = hook.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "two refused, then each delivered once");
    let mut attempts: HashMap<String, Vec<String>> = HashMap::new();
    for (headers, body) in &seen {
        let signature = &headers["carewire-signature"];
        let (t, v1) = signature.strip_prefix("t=").unwrap().split_once(",v1=").unwrap();
        let expected = {
            use hmac::{KeyInit, Mac};
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(format!("{t}.{body}").as_bytes());
            hex::encode(mac.finalize().into_bytes())
        };
        assert_eq!(v1, expected, "signed over the timestamp and the exact body");
        let payload: Value = serde_json::from_str(body).unwrap();
        assert_eq!(payload["type"], "notification.created");
        assert_eq!(payload["notification"]["appointment_id"], booked["id"]);
        attempts
            .entry(headers["carewire-delivery"].clone())
            .or_default()
            .push(headers["carewire-attempt"].clone());
    }
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts
            .values()
            .all(|a| a.last().unwrap().parse::<i32>().unwrap() == i32::try_from(a.len()).unwrap())
    );
    assert!(
        seen.iter().all(|(_, body)| !body.contains(&ada.email)),
        "no PHI in webhook bodies"
    );
}

/// Issue 14, item 7: a reminder names an appointment, so showing it and marking it
/// read (over REST and over the socket) is audited against the appointment's patient.
#[tokio::test]
async fn reading_notifications_about_an_appointment_is_audited_against_its_patient() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let (ada, ada_patient) = patient(&app).await;
    let booked = book_ok(
        &app,
        &ada.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": free_slot(&app, &c, 3).await }),
    )
    .await;
    // Two reminders of Ada's, and one naming no appointment.
    let mut conn = app.db.connect();
    let ids: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::now_v7()).collect();
    for (i, id) in ids.iter().enumerate() {
        let appointment = if i < 2 {
            format!("'{}'", booked["id"].as_str().unwrap())
        } else {
            "NULL".into()
        };
        diesel::sql_query(format!(
            "INSERT INTO notifications (id, account_id, kind, appointment_id, payload, late, created_at) \
             VALUES ('{id}', '{}', 'appointment.reminder', {appointment}, '{{}}', false, now())",
            ada.id
        ))
        .execute(&mut conn)
        .unwrap();
    }
    let events = |resource: &str| {
        count(
            &app,
            &format!(
                "SELECT count(*) AS n FROM audit_events WHERE resource_type = 'notification' \
                   AND patient_id = '{ada_patient}' AND actor_id = '{}' {resource}",
                ada.id
            ),
        )
    };
    let listed: Value = app
        .get_as("/v1/me/notifications", &ada.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 3);
    assert_eq!(
        events("AND action = 'read' AND (details->'notifications'->>'count')::int = 2"),
        1
    );

    let res = app
        .post_as(
            &format!("/v1/me/notifications/{}/read", ids[0]),
            &ada.tokens.access,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        events(&format!("AND action = 'update' AND resource_id = '{}'", ids[0])),
        1
    );
    // The one naming no appointment discloses nothing.
    let res = app
        .post_as(
            &format!("/v1/me/notifications/{}/read", ids[2]),
            &ada.tokens.access,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(events(&format!("AND resource_id = '{}'", ids[2])), 0);

    let (mut ws, _) = connect(&app, &ada, "").await;
    send(
        &mut ws,
        json!({ "type": "read", "id": "r1", "notification_id": ids[1] }),
    )
    .await;
    assert_eq!(next_of(&mut ws, "ack").await["id"], "r1");
    assert_eq!(
        events(&format!("AND action = 'update' AND resource_id = '{}'", ids[1])),
        1
    );
}

/// Issue 16, item 1: business transactions put nothing on the commit path (no NOTIFY,
/// which PostgreSQL serializes cluster-wide); watchers hear the change all the same,
/// through the listener that looks for unnumbered events, and the sequencer announces
/// each batch once.
#[tokio::test]
async fn a_booking_commits_without_notify_and_its_watchers_still_hear_it() {
    use diesel::connection::SimpleConnection;
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let (ada, _) = patient(&app).await;
    let mut listener = app.db.connect();
    listener
        .batch_execute("LISTEN carewire_events; LISTEN carewire_seq")
        .unwrap();
    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM pg_trigger WHERE tgrelid = 'events'::regclass AND NOT tgisinternal"
        ),
        0,
        "no trigger on the outbox"
    );
    let (mut watcher, _) = connect(&app, &ada, &format!("topics=provider:{}:slots", c.provider.id)).await;
    let _ = next_json(&mut watcher).await;
    book_ok(
        &app,
        &ada.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": free_slot(&app, &c, 2).await }),
    )
    .await;
    assert_eq!(
        next_of(&mut watcher, "appointment.booked").await["event"],
        "appointment.booked"
    );
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    listener.batch_execute("SELECT 1").unwrap();
    let channels: Vec<String> = listener
        .notifications_iter()
        .map(|n| n.unwrap().channel)
        .collect();
    assert!(!channels.iter().any(|c| c == "carewire_events"), "{channels:?}");
    assert!(channels.iter().any(|c| c == "carewire_seq"), "{channels:?}");
}
