//! Consultation signaling: how fast the consultation room relays WebRTC signaling with
//! many rooms busy at once, against a bare tokio-tungstenite relay doing the same work
//! (the baseline), in the same run.
//!
//! `rooms` booked video appointments, each with its own patient, are arranged through
//! the API. In every room the provider and the patient run rounds of signaling: the
//! provider sends an offer (a browser-like description of about 3 KB, audio and video),
//! the patient answers it (the same size) and trickles `candidates` candidates, and the
//! provider, once it has the answer, trickles as many back. A round starts when the
//! previous one is over and no sooner than its pace allows: each socket sends at most
//! `rate` messages a second (16 by default), below the room's rate limit (bursts of 60,
//! then 20 a second). Rooms start their first round staggered over one round's period.
//! So throughput is capped by the pace (offered load): a relay that keeps up reaches
//! it, one that falls behind delivers less and its latency shows the queueing.
//!
//! Every relayed message carries the moment it was sent (in the description's `o=`
//! session version, in the candidate's foundation), so its latency is the time from the
//! sender's `send` to the receiver reading it, on one clock. After a warm-up, throughput
//! counts the relayed messages received within the measured seconds, and latency is
//! taken over the same messages.
//!
//! The baseline is a relay built directly on tokio-tungstenite, on a runtime of its own
//! (as the server has its own process): it pairs the two sockets of a room by the URL
//! path, answers pings, and forwards every other text frame verbatim to the partner.
//! The clients send it the very same frames.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::db::ScratchDb;
use crate::report::Samples;
use crate::server::{self, Server, id_of};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const PROTOCOL: &str = "carewire.consult.v1";
/// The room's sustained rate limit per connection (after a burst of 60).
const ROOM_RATE_LIMIT: f64 = 20.0;
/// Well inside the room's 15 s heartbeat timeout (it asks for one every 5 s).
const PING_EVERY: Duration = Duration::from_secs(4);
/// Rooms being arranged (handshake, join, admit) at once.
const SETUP_CONCURRENCY: usize = 64;
/// HTTP requests at once while arranging (password hashing dominates).
const API_CONCURRENCY: usize = 8;
/// Rounds run this long before the measured seconds start (connections and allocator
/// warm up).
const WARMUP: Duration = Duration::from_secs(2);
/// A round (or a setup step) that takes longer than this is reported as stalled.
const STALL: Duration = Duration::from_secs(30);
/// Appointments booked per provider (15-minute slots within the next 23 hours).
const PER_PROVIDER: usize = 80;

/// `rate`: messages a second each socket sends at most (the pace of the rounds).
pub fn run(rooms: usize, seconds: u64, candidates: usize, rate: f64) -> anyhow::Result<()> {
    anyhow::ensure!(rooms > 0 && seconds > 0, "--rooms and --seconds must be positive");
    anyhow::ensure!(
        rate > 0.0 && rate <= ROOM_RATE_LIMIT - 1.0,
        "--rate must be positive and stay below the room's limit of {ROOM_RATE_LIMIT} messages/s \
         (pings need room too)"
    );
    anyhow::ensure!(
        candidates < 40,
        "--candidates: at most 39, so that a round's messages fit the room's burst of 60"
    );
    let binary = server::build(None)?;
    let db = ScratchDb::create("consult")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // The room is open from 24 h before the start to 24 h after the end, so
        // appointments anywhere in the next day can be entered now.
        let window = [
            ("CAREWIRE_CONSULT_OPENS_BEFORE_MINUTES", "1440"),
            ("CAREWIRE_CONSULT_CLOSES_AFTER_MINUTES", "1440"),
        ];
        let server = Server::start_with(&binary, &db, &window).await?;
        let arranging = Instant::now();
        let (visits, providers) = arrange(&server, rooms).await?;
        println!(
            "arranged {rooms} booked video appointments ({providers} providers, {rooms} patients) in {:.1} s",
            arranging.elapsed().as_secs_f64()
        );

        let workload = Arc::new(Workload::new(seconds, candidates, rate));
        println!(
            "\nsignaling relay: {rooms} rooms ({} sockets), {seconds} s; each round an offer and an answer \
             ({} B descriptions) and {candidates} candidates each way, at most {rate} messages/s \
             per socket (round period {:.0} ms; offered at most {:.0} relayed/s); measured after {} s of warm-up",
            rooms * 2,
            workload.description_bytes,
            workload.period.as_secs_f64() * 1000.0,
            workload.ceiling(rooms),
            WARMUP.as_secs(),
        );

        let bare = {
            let relay = BareRelay::start()?;
            let url = format!("ws://{}", relay.addr);
            measure(&workload, rooms, "bare relay", |i| seat_bare(url.clone(), i)).await?
        };
        let ws_base = server.base.replace("http://", "ws://");
        let ours = measure(&workload, rooms, "carewire", |i| {
            seat_consultation(ws_base.clone(), visits[i].clone())
        })
        .await?;

        println!("{}", bare.all.line());
        println!("{}", bare.descriptions.line());
        println!("{}", bare.candidates.line());
        println!("{}", ours.all.line());
        println!("{}", ours.descriptions.line());
        println!("{}", ours.candidates.line());
        let (ours_rate, bare_rate) = (ours.rate(seconds), bare.rate(seconds));
        println!(
            "throughput: carewire {ours_rate:.0} relayed/s, bare relay {bare_rate:.0} relayed/s (offered at most {:.0})",
            workload.ceiling(rooms)
        );
        println!(
            "ratios: p99 {:.2} (goal <= 1.5), throughput {:.2} (goal >= 0.7); p50 {:.2}",
            ours.all.percentile_ms(99.0) / bare.all.percentile_ms(99.0),
            ours_rate / bare_rate,
            ours.all.percentile_ms(50.0) / bare.all.percentile_ms(50.0),
        );
        anyhow::Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Arranging the appointments through the API.

/// One booked video appointment and the access tokens of its two participants.
#[derive(Clone)]
struct Visit {
    appointment: String,
    provider_token: String,
    patient_token: String,
}

/// A patient account, signed in, with its own patient record: the token and the
/// record's id.
async fn patient(server: &Server, i: usize) -> anyhow::Result<(String, String)> {
    let token = server
        .patient_account(&format!("patient{i}@consult.bench.test"))
        .await?;
    let res = server
        .client
        .post(format!("{}/v1/patients", server.base))
        .bearer_auth(&token)
        .json(&json!({ "legal_name": { "given": format!("Given{i}"), "family": "Consult" }, "birth_date": "1984-02-29" }))
        .send()
        .await?;
    let status = res.status();
    let record: Value = res.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "POST /v1/patients: {status} {record}");
    Ok((token, id_of(&record)?))
}

/// A provider in UTC, open all day every day, with a 15-minute video type: its id,
/// the type's id and the provider's token.
async fn provider(server: &Server, n: usize) -> anyhow::Result<(String, String, String)> {
    let email = format!("dr{n}@consult.bench.test");
    let account = server
        .post(
            "/v1/admin/users",
            &json!({ "email": email, "password": server::PASSWORD, "role": "provider", "display_name": format!("Dr Consult {n}") }),
        )
        .await?;
    let id = id_of(&account)?;
    server
        .post(
            "/v1/providers",
            &json!({ "account_id": id, "display_name": format!("Dr Consult {n}"), "time_zone": "UTC" }),
        )
        .await?;
    server
        .send(
            reqwest::Method::PUT,
            &format!("/v1/providers/{id}/availability/weekly"),
            &server::all_day_hours(),
        )
        .await?;
    let kind = server
        .post(
            &format!("/v1/providers/{id}/appointment-types"),
            &json!({ "name": "Video visit", "duration_minutes": 15, "modality": "video", "booking_horizon_days": 730 }),
        )
        .await?;
    let token = server.login(&email).await?;
    Ok((id, id_of(&kind)?, token))
}

/// Free slot starts of a provider's type from a few minutes from now to 23 hours from
/// now: all inside the consultation window (24 h before the start) right away.
async fn slots(server: &Server, provider: &str, kind: &str) -> anyhow::Result<Vec<String>> {
    let now = Utc::now();
    let from = (now + chrono::Duration::minutes(5))
        .to_rfc3339()
        .replace('+', "%2B");
    let to = (now + chrono::Duration::hours(23))
        .to_rfc3339()
        .replace('+', "%2B");
    let res = server
        .client
        .get(format!(
            "{}/v1/providers/{provider}/slots?type={kind}&from={from}&to={to}",
            server.base
        ))
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "slot search: {status} {body}");
    Ok(body["slots"]
        .as_array()
        .map(|slots| {
            slots
                .iter()
                .filter_map(|s| s["starts_at"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// `rooms` booked video appointments, each with a patient of its own, among as many
/// providers as their free slots need. Also returns how many providers.
async fn arrange(server: &Server, rooms: usize) -> anyhow::Result<(Vec<Visit>, usize)> {
    let patients: Vec<(String, String)> = futures_util::stream::iter((0..rooms).map(|i| patient(server, i)))
        .buffered(API_CONCURRENCY)
        .try_collect()
        .await?;
    // (provider id, type id, provider token, slot start) for each room.
    let mut places = Vec::with_capacity(rooms);
    let mut providers = 0;
    while places.len() < rooms {
        let (id, kind, token) = provider(server, providers).await?;
        providers += 1;
        let free = slots(server, &id, &kind).await?;
        anyhow::ensure!(
            !free.is_empty(),
            "provider {id} offers no slot in the next 23 hours"
        );
        let take = free.len().min(PER_PROVIDER).min(rooms - places.len());
        places.extend(
            free.into_iter()
                .take(take)
                .map(|starts_at| (id.clone(), kind.clone(), token.clone(), starts_at)),
        );
    }
    let bookings = places.into_iter().zip(patients).map(
        |((provider_id, kind, provider_token, starts_at), (patient_token, patient_id))| async move {
            let booked = server
                .post(
                    "/v1/appointments",
                    &json!({
                        "provider_id": provider_id,
                        "type_id": kind,
                        "patient_id": patient_id,
                        "starts_at": starts_at,
                        "reason": "Video follow-up",
                    }),
                )
                .await?;
            anyhow::Ok(Visit {
                appointment: id_of(&booked)?,
                provider_token,
                patient_token,
            })
        },
    );
    let visits = futures_util::stream::iter(bookings)
        .buffered(API_CONCURRENCY)
        .try_collect()
        .await?;
    Ok((visits, providers))
}

// ---------------------------------------------------------------------------------------
// The workload: frames, stamps, pacing.

/// The frames every room exchanges, with the send time stamped into them: microseconds
/// since `epoch`, which every task of this process shares.
struct Workload {
    epoch: Instant,
    seconds: u64,
    candidates: usize,
    /// The shortest time between two rounds' starts in one room.
    period: Duration,
    description_bytes: usize,
    /// JSON text before and after the stamp, for the offer and the answer.
    offer: (String, String),
    answer: (String, String),
}

const STAMP: &str = "@STAMP@";
const PROVIDER_UFRAG: &str = "Pv7q";
const PATIENT_UFRAG: &str = "Pt3k";

impl Workload {
    fn new(seconds: u64, candidates: usize, rate: f64) -> Workload {
        // JSON text around the stamp, which only the description's o= line holds.
        let frame = |kind: &str, to: &str, sdp: &str| -> (String, String) {
            let text = json!({ "type": kind, "id": format!("{kind}-1"), "to": to, "sdp": sdp }).to_string();
            let (before, after) = text.split_once(STAMP).unwrap_or((text.as_str(), ""));
            (before.to_owned(), after.to_owned())
        };
        let offer = description(4_611_731_400_430_051_336, PROVIDER_UFRAG, "actpass");
        let answer = description(7_014_213_561_478_123_456, PATIENT_UFRAG, "active");
        Workload {
            epoch: Instant::now(),
            seconds,
            candidates,
            period: Duration::from_secs_f64((1 + candidates) as f64 / rate),
            // With a stamp of ten digits, as it is for the first few hours.
            description_bytes: offer.replace(STAMP, "1234567890").len(),
            offer: frame("offer", "patient", &offer),
            answer: frame("answer", "provider", &answer),
        }
    }

    /// Relayed messages a second if every round ran at its pace.
    fn ceiling(&self, rooms: usize) -> f64 {
        rooms as f64 * 2.0 * (1 + self.candidates) as f64 / self.period.as_secs_f64()
    }

    fn stamp(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn sent_at(&self, stamp: u64) -> Instant {
        self.epoch + Duration::from_micros(stamp)
    }

    fn offer(&self) -> String {
        format!("{}{}{}", self.offer.0, self.stamp(), self.offer.1)
    }

    fn answer(&self) -> String {
        format!("{}{}{}", self.answer.0, self.stamp(), self.answer.1)
    }

    /// The `n`th candidate of a round, from the seat whose ufrag is `ufrag` to `to`. Its
    /// foundation is the stamp (RFC 8839 allows 1 to 32 ice-chars).
    fn candidate(&self, to: &str, ufrag: &str, n: usize) -> String {
        format!(
            r#"{{"type":"candidate","id":"cand-{n}","to":"{to}","candidate":"candidate:{} 1 udp 2122260223 127.0.0.1 {} typ host generation 0 ufrag {ufrag}","sdp_mid":"0","sdp_mline_index":0,"username_fragment":"{ufrag}"}}"#,
            self.stamp(),
            50_000 + n,
        )
    }
}

/// A browser-like description with bundled audio and video (Opus, VP8, VP9, H.264 and
/// their retransmission formats), ICE credentials and a DTLS fingerprint: about 3 KB,
/// with the stamp in the `o=` line's session version.
fn description(session: u64, ufrag: &str, setup: &str) -> String {
    let mut sdp = format!(
        "v=0\r\n\
         o=- {session} {STAMP} IN IP4 127.0.0.1\r\n\
         s=-\r\n\
         t=0 0\r\n\
         a=group:BUNDLE 0 1\r\n\
         a=extmap-allow-mixed\r\n\
         a=msid-semantic: WMS bench-stream\r\n"
    );
    let transport = |mid: &str| {
        format!(
            "c=IN IP4 0.0.0.0\r\n\
             a=rtcp:9 IN IP4 0.0.0.0\r\n\
             a=ice-ufrag:{ufrag}\r\n\
             a=ice-pwd:aSecretIcePasswordOf24Ch\r\n\
             a=ice-options:trickle\r\n\
             a=fingerprint:sha-256 0F:74:31:25:CB:A2:13:EC:28:6F:6D:2C:61:FF:5D:C2:BC:B9:DB:3D:98:14:8D:1A:BB:EA:33:0C:A4:60:A8:8E\r\n\
             a=setup:{setup}\r\n\
             a=mid:{mid}\r\n"
        )
    };
    sdp.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n");
    sdp.push_str(&transport("0"));
    sdp.push_str(
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
         a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
         a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
         a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
         a=sendrecv\r\n\
         a=msid:bench-stream bench-audio\r\n\
         a=rtcp-mux\r\n\
         a=rtpmap:111 opus/48000/2\r\n\
         a=rtcp-fb:111 transport-cc\r\n\
         a=fmtp:111 minptime=10;useinbandfec=1\r\n\
         a=rtpmap:63 red/48000/2\r\n\
         a=fmtp:63 111/111\r\n\
         a=rtpmap:9 G722/8000\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:13 CN/8000\r\n\
         a=rtpmap:110 telephone-event/48000\r\n\
         a=rtpmap:126 telephone-event/8000\r\n\
         a=ssrc:1001 cname:bench-cname\r\n\
         a=ssrc:1001 msid:bench-stream bench-audio\r\n",
    );
    sdp.push_str("m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 102 103 104 105 106 107\r\n");
    sdp.push_str(&transport("1"));
    sdp.push_str(
        "a=extmap:14 urn:ietf:params:rtp-hdrext:toffset\r\n\
         a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
         a=extmap:13 urn:3gpp:video-orientation\r\n\
         a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
         a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay\r\n\
         a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
         a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
         a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n\
         a=sendrecv\r\n\
         a=msid:bench-stream bench-video\r\n\
         a=rtcp-mux\r\n\
         a=rtcp-rsize\r\n",
    );
    for (pt, codec, fmtp) in [
        (96, "VP8/90000", None),
        (98, "VP9/90000", Some("profile-id=0")),
        (
            102,
            "H264/90000",
            Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"),
        ),
        (
            104,
            "H264/90000",
            Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
        ),
        (106, "AV1/90000", None),
    ] {
        sdp.push_str(&format!("a=rtpmap:{pt} {codec}\r\n"));
        for feedback in ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"] {
            sdp.push_str(&format!("a=rtcp-fb:{pt} {feedback}\r\n"));
        }
        if let Some(fmtp) = fmtp {
            sdp.push_str(&format!("a=fmtp:{pt} {fmtp}\r\n"));
        }
        sdp.push_str(&format!(
            "a=rtpmap:{} rtx/90000\r\na=fmtp:{} apt={pt}\r\n",
            pt + 1,
            pt + 1
        ));
    }
    sdp.push_str(
        "a=ssrc-group:FID 2001 2002\r\n\
         a=ssrc:2001 cname:bench-cname\r\n\
         a=ssrc:2001 msid:bench-stream bench-video\r\n\
         a=ssrc:2002 cname:bench-cname\r\n\
         a=ssrc:2002 msid:bench-stream bench-video\r\n",
    );
    sdp
}

/// What a received frame was.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Offer,
    Answer,
    Candidate,
    /// The peer left (bare relay: its `leave`; carewire: `peer_left`), or the room closed.
    Leave,
    Other,
}

/// The measured seconds: what is received in between counts.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    to: Instant,
}

impl Window {
    fn contains(&self, at: Instant) -> bool {
        self.from <= at && at <= self.to
    }
}

/// Latencies of the relayed messages received within the measured seconds.
struct Tally {
    descriptions: Samples,
    candidates: Samples,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            descriptions: Samples::new(""),
            candidates: Samples::new(""),
        }
    }
}

/// Reads a frame received at `at`: what it is, with its latency noted if it was relayed.
fn read(
    text: &str,
    at: Instant,
    workload: &Workload,
    window: Window,
    tally: &mut Tally,
) -> anyhow::Result<Got> {
    let value: Value = serde_json::from_str(text)?;
    let stamp =
        |stamp: Option<u64>| stamp.ok_or_else(|| anyhow::anyhow!("no stamp in a relayed frame: {text:.300}"));
    let got = match value["type"].as_str().unwrap_or_default() {
        kind @ ("offer" | "answer") => {
            let sent = stamp(value["sdp"].as_str().and_then(|sdp| {
                sdp.lines()
                    .find_map(|line| line.strip_prefix("o="))
                    .and_then(|origin| origin.split_whitespace().nth(2))
                    .and_then(|version| version.parse().ok())
            }))?;
            if window.contains(at) {
                tally
                    .descriptions
                    .record(at.saturating_duration_since(workload.sent_at(sent)));
            }
            if kind == "offer" { Got::Offer } else { Got::Answer }
        }
        "candidate" => {
            let sent = stamp(value["candidate"].as_str().and_then(|line| {
                line.strip_prefix("candidate:")
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|foundation| foundation.parse().ok())
            }))?;
            if window.contains(at) {
                tally
                    .candidates
                    .record(at.saturating_duration_since(workload.sent_at(sent)));
            }
            Got::Candidate
        }
        "leave" | "peer_left" | "room_closed" => Got::Leave,
        "error" | "session_replaced" => anyhow::bail!("the relay answered {text}"),
        _ => Got::Other,
    };
    Ok(got)
}

// ---------------------------------------------------------------------------------------
// The two sides of a room.

async fn send(ws: &mut Ws, text: String) -> anyhow::Result<()> {
    ws.send(Message::text(text)).await?;
    Ok(())
}

/// The next text frame; `None` once the socket is closed.
async fn next_text(ws: &mut Ws) -> anyhow::Result<Option<String>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(Some(text.as_str().to_owned())),
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// Application pings, as the room's heartbeat asks.
struct Pinger {
    last: Instant,
    n: u64,
}

impl Pinger {
    fn new() -> Pinger {
        Pinger {
            last: Instant::now(),
            n: 0,
        }
    }

    async fn maybe(&mut self, ws: &mut Ws) -> anyhow::Result<()> {
        if self.last.elapsed() >= PING_EVERY {
            self.n += 1;
            self.last = Instant::now();
            send(ws, format!(r#"{{"type":"ping","id":"ping-{}"}}"#, self.n)).await?;
        }
        Ok(())
    }
}

/// The provider drives the rounds: offer, wait for the answer, trickle its candidates,
/// wait for the patient's; the next round no sooner than the pace allows.
async fn provider_side(
    mut ws: Ws,
    w: Arc<Workload>,
    first_round: Instant,
    window: Window,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new();
    let mut pinger = Pinger::new();
    let mut round_at = first_round;
    let mut rounds = 0u64;
    while round_at < window.to {
        tokio::time::sleep_until(round_at.into()).await;
        pinger.maybe(&mut ws).await?;
        send(&mut ws, w.offer()).await?;
        let (mut answered, mut received) = (false, 0);
        let stalled = tokio::time::Instant::now() + STALL;
        while !answered || received < w.candidates {
            let text = tokio::time::timeout_at(stalled, next_text(&mut ws))
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "provider: round {rounds} stalled (answer {answered}, {received} of {} candidates)",
                        w.candidates
                    )
                })??
                .ok_or_else(|| anyhow::anyhow!("provider: the socket closed in round {rounds}"))?;
            match read(&text, Instant::now(), &w, window, &mut tally)? {
                Got::Answer => {
                    answered = true;
                    for n in 0..w.candidates {
                        send(&mut ws, w.candidate("patient", PROVIDER_UFRAG, n)).await?;
                    }
                }
                Got::Candidate => received += 1,
                Got::Leave => anyhow::bail!("provider: the patient left in round {rounds}"),
                Got::Offer | Got::Other => {}
            }
        }
        rounds += 1;
        round_at = (round_at + w.period).max(Instant::now());
    }
    send(&mut ws, r#"{"type":"leave","id":"bye"}"#.to_owned()).await?;
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    Ok(tally)
}

/// The patient answers each offer and trickles its candidates, until the provider
/// leaves.
async fn patient_side(mut ws: Ws, w: Arc<Workload>, window: Window) -> anyhow::Result<Tally> {
    let mut tally = Tally::new();
    let mut pinger = Pinger::new();
    loop {
        let text = match tokio::time::timeout(PING_EVERY, next_text(&mut ws)).await {
            Err(_) => {
                anyhow::ensure!(
                    Instant::now() < window.to + STALL,
                    "patient: the provider never left"
                );
                pinger.maybe(&mut ws).await?;
                continue;
            }
            Ok(text) => match text? {
                Some(text) => text,
                None => break,
            },
        };
        match read(&text, Instant::now(), &w, window, &mut tally)? {
            Got::Offer => {
                send(&mut ws, w.answer()).await?;
                for n in 0..w.candidates {
                    send(&mut ws, w.candidate("provider", PATIENT_UFRAG, n)).await?;
                }
            }
            Got::Leave => break,
            Got::Answer | Got::Candidate | Got::Other => {}
        }
        pinger.maybe(&mut ws).await?;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    Ok(tally)
}

/// A room's two sockets, both in the call.
struct Pair {
    provider: Ws,
    patient: Ws,
}

/// Reads until a frame of type `want`; an error frame or a close is a failure.
async fn expect(ws: &mut Ws, want: &str, who: &str) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + STALL;
    loop {
        let text = tokio::time::timeout_at(deadline, next_text(ws))
            .await
            .map_err(|_| anyhow::anyhow!("{who}: no {want} within {STALL:?}"))??
            .ok_or_else(|| anyhow::anyhow!("{who}: the socket closed while waiting for {want}"))?;
        let value: Value = serde_json::from_str(&text)?;
        match value["type"].as_str() {
            Some(t) if t == want => return Ok(value),
            Some("error") => anyhow::bail!("{who}: waiting for {want}, got {value}"),
            _ => {}
        }
    }
}

async fn connect(request: tokio_tungstenite::tungstenite::handshake::client::Request) -> anyhow::Result<Ws> {
    // Nagle off, as the server has it.
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true).await?;
    Ok(ws)
}

/// Opens `GET /v1/consultations/{id}` with the token as a subprotocol.
async fn open_consultation(ws_base: &str, appointment: &str, token: &str) -> anyhow::Result<Ws> {
    let mut request = format!("{ws_base}/v1/consultations/{appointment}").into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("{PROTOCOL}, bearer.{token}").parse()?,
    );
    connect(request).await
}

/// Carewire's room: the patient joins, the provider joins and admits; both are then in
/// the call.
async fn seat_consultation(ws_base: String, visit: Visit) -> anyhow::Result<Pair> {
    let join = |id: &str| json!({ "type": "join", "id": id, "protocol": PROTOCOL }).to_string();
    let mut patient = open_consultation(&ws_base, &visit.appointment, &visit.patient_token).await?;
    send(&mut patient, join("pj")).await?;
    expect(&mut patient, "joined", "patient").await?;
    let mut provider = open_consultation(&ws_base, &visit.appointment, &visit.provider_token).await?;
    send(&mut provider, join("dj")).await?;
    expect(&mut provider, "joined", "provider").await?;
    send(&mut provider, r#"{"type":"admit","id":"da"}"#.to_owned()).await?;
    expect(&mut provider, "admitted", "provider").await?;
    expect(&mut patient, "admitted", "patient").await?;
    Ok(Pair { provider, patient })
}

/// The bare relay's room `i`: two sockets on the same path, paired by the relay.
async fn seat_bare(url: String, i: usize) -> anyhow::Result<Pair> {
    let mut provider = connect(format!("{url}/room/{i}").into_client_request()?).await?;
    let mut patient = connect(format!("{url}/room/{i}").into_client_request()?).await?;
    expect(&mut provider, "admitted", "provider").await?;
    expect(&mut patient, "admitted", "patient").await?;
    Ok(Pair { provider, patient })
}

/// What one system did.
struct Outcome {
    all: Samples,
    descriptions: Samples,
    candidates: Samples,
}

impl Outcome {
    fn rate(&self, seconds: u64) -> f64 {
        self.all.count() as f64 / seconds as f64
    }
}

/// Seats every room (`seat(i)`), then runs the rounds in all of them at once for the
/// workload's seconds.
async fn measure<F, Fut>(w: &Arc<Workload>, rooms: usize, label: &str, seat: F) -> anyhow::Result<Outcome>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Pair>> + Send + 'static,
{
    let (start_tx, start_rx) = watch::channel(None::<Instant>);
    let (ready_tx, mut ready_rx) = mpsc::channel::<anyhow::Result<()>>(rooms);
    let gate = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let seating = Instant::now();
    let tasks: Vec<_> = (0..rooms)
        .map(|i| {
            let seated = seat(i);
            let (gate, mut start_rx, ready_tx, w) =
                (gate.clone(), start_rx.clone(), ready_tx.clone(), w.clone());
            tokio::spawn(async move {
                let seated = {
                    let _permit = gate.acquire_owned().await?;
                    seated.await
                };
                let Pair {
                    mut provider,
                    mut patient,
                } = match seated {
                    Ok(pair) => {
                        let _ = ready_tx.send(Ok(())).await;
                        pair
                    }
                    Err(e) => {
                        let message = format!("room {i}: {e:#}");
                        let _ = ready_tx.send(Err(e)).await;
                        anyhow::bail!(message);
                    }
                };
                // In the call: keep both sockets alive until every room is.
                let start = loop {
                    if let Some(start) = *start_rx.borrow_and_update() {
                        break start;
                    }
                    tokio::select! {
                        changed = start_rx.changed() => changed?,
                        () = tokio::time::sleep(PING_EVERY) => {
                            for ws in [&mut provider, &mut patient] {
                                send(ws, r#"{"type":"ping","id":"idle"}"#.to_owned()).await?;
                            }
                        }
                    }
                };
                let from = start + WARMUP;
                let window = Window {
                    from,
                    to: from + Duration::from_secs(w.seconds),
                };
                // Rooms start staggered over one round's period.
                let offset = w.period.mul_f64(i as f64 / rooms as f64);
                let patient = tokio::spawn(patient_side(patient, w.clone(), window));
                let provider = provider_side(provider, w.clone(), start + offset, window).await;
                let patient = patient.await?;
                let (provider, patient) = (
                    provider.map_err(|e| e.context(format!("room {i}")))?,
                    patient.map_err(|e| e.context(format!("room {i}")))?,
                );
                anyhow::Ok([provider, patient])
            })
        })
        .collect();
    drop(ready_tx);
    let abort = |tasks: &[tokio::task::JoinHandle<_>]| tasks.iter().for_each(|t| t.abort());
    for _ in 0..rooms {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                abort(&tasks);
                return Err(e.context(format!("{label}: seating the rooms")));
            }
            None => {
                abort(&tasks);
                anyhow::bail!("{label}: a room task ended while seating");
            }
        }
    }
    println!(
        "  {label}: {rooms} rooms seated in {:.1} s",
        seating.elapsed().as_secs_f64()
    );
    start_tx.send(Some(Instant::now() + Duration::from_millis(500)))?;
    let mut outcome = Outcome {
        all: Samples::new(format!("{label}: relayed messages, send -> receipt")),
        descriptions: Samples::new(format!("{label}:   descriptions (offer, answer)")),
        candidates: Samples::new(format!("{label}:   candidates")),
    };
    let mut tasks = tasks.into_iter();
    while let Some(task) = tasks.next() {
        let result = match task.await {
            Ok(result) => result,
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(tallies) => {
                for tally in tallies {
                    outcome.descriptions.merge(&tally.descriptions);
                    outcome.candidates.merge(&tally.candidates);
                    outcome.all.merge(&tally.descriptions);
                    outcome.all.merge(&tally.candidates);
                }
            }
            Err(e) => {
                tasks.for_each(|t| t.abort());
                return Err(e.context(label.to_owned()));
            }
        }
    }
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------
// The baseline relay.

/// A relay on tokio-tungstenite alone, on a runtime of its own.
struct BareRelay {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
}

impl Drop for BareRelay {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The first socket of a room, waiting for its partner: its queue, and where to send
/// it the partner's.
type Waiting = HashMap<String, (mpsc::Sender<Message>, oneshot::Sender<mpsc::Sender<Message>>)>;

impl BareRelay {
    fn start() -> anyhow::Result<BareRelay> {
        // As many workers as the server's runtime has (one per core).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("bare-relay")
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let waiting = Arc::new(Mutex::new(Waiting::new()));
        runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(bare_connection(stream, waiting.clone()));
            }
        });
        Ok(BareRelay {
            runtime: Some(runtime),
            addr,
        })
    }
}

/// One socket: paired with the other socket on the same path, it forwards every text
/// frame to it verbatim and answers pings.
#[allow(
    clippy::result_large_err,
    reason = "the handshake callback's signature is tungstenite's"
)]
async fn bare_connection(stream: TcpStream, waiting: Arc<Mutex<Waiting>>) -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    stream.set_nodelay(true)?;
    let mut path = String::new();
    let ws = tokio_tungstenite::accept_hdr_async(stream, |request: &Request, response: Response| {
        path = request.uri().path().to_owned();
        Ok(response)
    })
    .await?;
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(256);
    tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let first = {
        let mut waiting = waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match waiting.remove(&path) {
            Some((partner, tell)) => {
                let _ = tell.send(tx.clone());
                Ok(partner)
            }
            None => {
                let (tell, told) = oneshot::channel();
                waiting.insert(path, (tx.clone(), tell));
                Err(told)
            }
        }
    };
    let partner = match first {
        Ok(partner) => partner,
        Err(told) => told.await?,
    };
    tx.send(Message::text(r#"{"type":"admitted"}"#)).await?;
    while let Some(message) = stream.next().await {
        match message? {
            Message::Text(text) if text.as_str().starts_with(r#"{"type":"ping""#) => {
                tx.send(Message::text(r#"{"type":"pong"}"#)).await?;
            }
            Message::Text(text) => partner.send(Message::Text(text)).await?,
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}
