//! `GET /v1/ws`: the handshake and the life of one WebSocket connection.
//!
//! The handshake is answered by our own route, not warp's `ws()` (see
//! [`crate::http::websocket`] for why and how): small buffers and hard size limits.
//!
//! Before upgrading, the route checks everything it can answer with a status code:
//! the Origin (403 for a page from a site not in `CAREWIRE_CORS_ORIGINS`: cross-site
//! WebSocket hijacking), then the credential (401): a single-use ticket in the query,
//! or the access token as a `bearer.<token>` subprotocol next to `carewire.v1`.
//!
//! One task per connection runs [`serve`]: it replays what a resuming client missed,
//! then forwards the hub's queue, answers client messages, pings on a heartbeat and
//! closes a socket that went silent, floods, sends oversized frames, cannot keep up
//! (1013), or whose session ended (4401) or account was disabled (4403).

use std::time::Instant;

use carewire_signaling::{Millis, RateLimit, TokenBucket};
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio_tungstenite::tungstenite::{self, Message};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::RealtimeState;
use super::hub::{self, Closing};
use super::protocol::{self, ClientMessage, PROTOCOL, ServerMessage, code};
use super::stream::{self, Audience};
use super::topics::{self, Identity, Topic};
use crate::audit::{self, Code};
use crate::auth::tickets;
use crate::context::RequestContext;
use crate::context::{Caller, Role};
use crate::error::Error;
use crate::http::openapi::problems;
use crate::http::query::Query;
use crate::http::websocket::{self, Socket, Upgrade, close};
use crate::http::{reply, with_state};
use crate::state::AppState;

/// The most topics one connect may name.
const MAX_TOPICS: usize = 16;
/// Events read per replay query.
const REPLAY_BATCH: i64 = 500;

/// A single-use ticket for one WebSocket handshake.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Ticket {
    /// Pass as `GET /v1/ws?ticket=…` (or to a consultation socket).
    pub ticket: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Seconds until `expires_at`.
    pub expires_in: u64,
}

/// POST /v1/ws/ticket: a single-use ticket for one WebSocket handshake.
#[utoipa::path(post, path = "/v1/ws/ticket", tag = "realtime", responses((status = 201, description = "A ticket for `GET /v1/ws?ticket=…`, valid for CAREWIRE_WS_TICKET_TTL_SECS and usable once", body = Ticket), problems::Unauthorized), security(("bearer" = [])))]
pub(crate) fn ticket(state: &AppState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "ws" / "ticket")
        .and(warp::post())
        .and(crate::access::caller(state))
        .and(with_state(state))
        .then(on_ticket)
        .boxed()
}

async fn on_ticket(caller: Caller, state: AppState) -> Response {
    let ttl = state.settings.realtime.ticket_ttl;
    let expires_at =
        chrono::Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(30));
    let result = state
        .db
        .run(move |conn| tickets::issue(conn, &caller, expires_at))
        .await
        .map(|ticket| {
            reply::json(
                StatusCode::CREATED,
                &Ticket {
                    ticket,
                    expires_at,
                    expires_in: ttl.as_secs(),
                },
            )
        });
    reply::respond(result)
}

/// GET /v1/ws?ticket=&resume_from=&topics=: the WebSocket (protocol `carewire.v1`).
#[utoipa::path(get, path = "/v1/ws", tag = "realtime", params(("ticket" = Option<String>, Query, description = "From POST /v1/ws/ticket; or offer the subprotocols `carewire.v1` and `bearer.<access token>`"), ("resume_from" = Option<i64>, Query, description = "The last seq received: missed events are replayed first"), ("topics" = Option<String>, Query, description = "Comma-separated topics to follow from the start, e.g. provider:{id}:slots")), responses((status = 101, description = "Switching to the WebSocket protocol carewire.v1 (see docs/realtime-protocol.md)"), (status = 400, description = "Not a WebSocket handshake", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "No valid ticket or token", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "Origin not allowed", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json")))]
pub(crate) fn ws(state: &RealtimeState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "ws")
        .and(warp::get())
        .and(websocket::upgrade())
        .and(with_state(state))
        .then(|upgrade, state| async move { reply::respond(handshake(upgrade, state).await) })
        .boxed()
}

/// What the client asked for in the query string.
struct Request {
    ticket: Option<String>,
    resume_from: Option<i64>,
    topics: Vec<String>,
}

fn parse_request(raw: &str) -> Result<Request, Error> {
    let q = Query::parse(raw, &["ticket", "resume_from", "topics"])?;
    let topics: Vec<String> = q
        .str("topics")
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if topics.len() > MAX_TOPICS {
        return Err(Error::validation("query.topics", "at most 16 topics"));
    }
    Ok(Request {
        ticket: q.str("ticket").map(str::to_owned),
        resume_from: q.parsed("resume_from", "must be a seq this server sent", |v| {
            v.parse::<i64>().ok().filter(|n| *n >= 0)
        })?,
        topics,
    })
}

async fn handshake(upgrade: Upgrade, state: RealtimeState) -> Result<Response, Error> {
    let handshake = upgrade.check(&state, "GET /v1/ws")?;
    let request = parse_request(&upgrade.query)?;
    let caller = websocket::authenticate(&state, &handshake, request.ticket.as_deref(), PROTOCOL).await?;
    let account_id = caller.account_id;
    let patient_id = match caller.role {
        Role::Patient => {
            state
                .db
                .run(move |conn| Ok(crate::accounts::patient_id(conn, account_id)?))
                .await?
        }
        Role::Provider | Role::Admin => None,
    };
    let identity = Identity {
        account_id,
        role: caller.role,
        session_id: caller.session_id,
        patient_id,
    };
    let config = websocket::config(state.settings.realtime.max_message_bytes);
    let ctx = upgrade.ctx;
    websocket::accept(&handshake, upgrade.slot, PROTOCOL, config, move |socket| {
        serve(socket, state, ctx, identity, request)
    })
}

/// The budget for client messages: the signaling crate's token bucket, with a burst
/// of twice the rate per second, plus a count of the messages dropped in a row (too
/// many and the socket closes).
#[derive(Debug)]
struct Bucket {
    tokens: TokenBucket,
    limit: RateLimit,
    /// The bucket's time origin: when the connection opened.
    opened: Instant,
    dropped: u32,
}

impl Bucket {
    fn new(per_sec: u32) -> Bucket {
        let limit = RateLimit {
            burst: per_sec.saturating_mul(2),
            per_second: per_sec,
        };
        Bucket {
            tokens: TokenBucket::full(limit, Millis::from_millis(0)),
            limit,
            opened: Instant::now(),
            dropped: 0,
        }
    }

    fn take(&mut self) -> bool {
        let now = Millis::from_millis(u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX));
        if self.tokens.try_take(self.limit, now) {
            self.dropped = 0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

/// Consecutive messages over the rate before the socket is closed (1008).
const MAX_DROPPED: u32 = 50;

async fn send(socket: &mut Socket, message: &ServerMessage) -> Result<(), tungstenite::Error> {
    socket.send(Message::text(message.to_text())).await
}

/// The life of one connection, from the welcome to the close.
async fn serve(
    mut socket: Socket,
    state: RealtimeState,
    ctx: RequestContext,
    identity: Identity,
    request: Request,
) {
    // Topics named at connect: followed from the start (so they are replayed too),
    // refusals answered once the socket is up.
    let mut topics = Vec::new();
    let mut refused = Vec::new();
    for name in &request.topics {
        match Topic::parse(name) {
            None => refused.push(ServerMessage::error(
                None,
                code::UNKNOWN_TOPIC,
                format!("unknown topic {name}"),
            )),
            Some(topic) => match topics::authorize(topic, &identity) {
                Ok(()) => topics.push(topic),
                Err(why) => {
                    deny(&state, &ctx, &identity, why).await;
                    refused.push(ServerMessage::error(
                        None,
                        why,
                        format!("you may not follow {name}"),
                    ));
                }
            },
        }
    }
    let registration = state.hub.register(identity, &topics);
    let id = registration.id;
    let outcome = run(
        &mut socket,
        &state,
        &ctx,
        identity,
        &mut topics,
        request.resume_from,
        refused,
        registration,
    )
    .await;
    state.hub.unregister(id);
    match outcome {
        Ending::Close(closing) => close(socket, closing.code, closing.reason).await,
        Ending::Gone => {}
    }
}

enum Ending {
    Close(Closing),
    /// The client went away (or the socket broke): nothing to say.
    Gone,
}

async fn deny(state: &RealtimeState, ctx: &RequestContext, identity: &Identity, why: &'static str) {
    let caller = identity.caller();
    let denial = audit::Denial::forbidden(Code::new("realtime_topic"), Code::new(why));
    if let Err(e) = denial.record(&state.db, ctx, &caller).await {
        tracing::warn!(error = %e, "recording a refused subscription failed");
    }
}

#[expect(clippy::too_many_arguments, reason = "the parts of one connection, used once")]
async fn run(
    socket: &mut Socket,
    state: &RealtimeState,
    ctx: &RequestContext,
    identity: Identity,
    topics: &mut Vec<Topic>,
    resume_from: Option<i64>,
    refused: Vec<ServerMessage>,
    registration: hub::Registration,
) -> Ending {
    let hub::Registration {
        id,
        cursor,
        mut rx,
        mut control,
    } = registration;
    let settings = &state.settings.realtime;

    // What to replay, or whether the client must resync.
    let head = match state.db.run(|conn| Ok(stream::head(conn)?)).await {
        Ok(head) => head,
        Err(_) => {
            return Ending::Close(Closing {
                code: 1011,
                reason: "database unavailable",
            });
        }
    };
    let (resumed, resync) = match resume_from {
        None => (false, false),
        Some(from) if from < head.pruned_through || from > head.last_seq => (false, true),
        Some(_) => (true, false),
    };
    // Live events the client already saw (it was ahead of this instance) are skipped.
    let mut seen_through = if resumed {
        resume_from.unwrap_or(0).max(cursor)
    } else {
        cursor
    };

    // The welcome's seq is where this client may resume from should it drop now: on a
    // resumed connection, its own resume point (the replay that follows is still to
    // come); otherwise the live head.
    let welcome = ServerMessage::Welcome {
        protocol: PROTOCOL,
        seq: if resumed {
            resume_from.unwrap_or(cursor)
        } else {
            cursor
        },
        resumed,
        account_id: identity.account_id,
        topics: std::iter::once("notifications".to_owned())
            .chain(std::iter::once("appointments".to_owned()))
            .chain(topics.iter().map(Topic::name))
            .collect(),
        heartbeat_secs: settings.heartbeat.as_secs(),
    };
    if send(socket, &welcome).await.is_err() {
        return Ending::Gone;
    }
    for message in &refused {
        if send(socket, message).await.is_err() {
            return Ending::Gone;
        }
    }
    if resync {
        let message = ServerMessage::ResyncRequired {
            seq: cursor,
            reason: "resume_from is older than the events kept, or unknown: reload, then carry on from seq",
        };
        if send(socket, &message).await.is_err() {
            return Ending::Gone;
        }
    } else if let Some(from) = resume_from.filter(|_| resumed) {
        if let Err(ending) = replay(socket, state, &identity, topics, from, cursor).await {
            return ending;
        }
    } else if let Err(ending) = unread(socket, state, ctx, &identity).await {
        return ending;
    }

    let mut bucket = Bucket::new(settings.messages_per_sec);
    let mut heard = Instant::now();
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.heartbeat,
        settings.heartbeat,
    );
    loop {
        tokio::select! {
            biased;
            changed = control.changed() => {
                let closing = if changed.is_ok() { *control.borrow() } else { None };
                return Ending::Close(closing.unwrap_or(hub::SHUTTING_DOWN));
            }
            queued = rx.recv() => {
                let Some((seq, text)) = queued else {
                    return Ending::Close(hub::SLOW_CONSUMER);
                };
                if seq <= seen_through {
                    continue;
                }
                seen_through = seq;
                // A client that stops reading blocks this send; the hub then flags it
                // as slow, and the close wins the race.
                tokio::select! {
                    sent = socket.send(Message::Text(text)) => if sent.is_err() { return Ending::Gone },
                    _ = control.changed() => return Ending::Close(control.borrow().unwrap_or(hub::SLOW_CONSUMER)),
                }
            }
            incoming = socket.next() => {
                heard = Instant::now();
                let message = match incoming {
                    None | Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed | tungstenite::Error::Io(_))) => return Ending::Gone,
                    Some(Err(tungstenite::Error::Capacity(_))) => return Ending::Close(Closing { code: 1009, reason: "message too big" }),
                    Some(Err(tungstenite::Error::Utf8(_))) => return Ending::Close(Closing { code: 1007, reason: "text frames must be UTF-8" }),
                    Some(Err(_)) => return Ending::Close(Closing { code: 1002, reason: "protocol error" }),
                    Some(Ok(Message::Close(_))) => return Ending::Gone,
                    Some(Ok(message)) => message,
                };
                // Every frame the client chooses to send costs a token, whatever it
                // carries: text, binary and pings alike (a pong answers our ping).
                if matches!(message, Message::Text(_) | Message::Binary(_) | Message::Ping(_)) && !bucket.take() {
                    if bucket.dropped > MAX_DROPPED {
                        return Ending::Close(Closing { code: 1008, reason: "too many messages" });
                    }
                    let reply = ServerMessage::error(None, code::RATE_LIMITED, "too many messages; slow down");
                    if bucket.dropped == 1 && send(socket, &reply).await.is_err() { return Ending::Gone }
                    continue;
                }
                match message {
                    Message::Binary(_) => {
                        let reply = ServerMessage::error(None, code::BAD_MESSAGE, "messages are JSON text frames");
                        if send(socket, &reply).await.is_err() { return Ending::Gone }
                    }
                    Message::Text(text) => {
                        let reply = answer(state, ctx, &identity, id, topics, text.as_str()).await;
                        if send(socket, &reply).await.is_err() { return Ending::Gone }
                    }
                    _ => {} // ping (answered by tungstenite), pong, raw frame
                }
            }
            _ = heartbeat.tick() => {
                if heard.elapsed() > settings.idle_timeout {
                    return Ending::Close(Closing { code: 1001, reason: "heartbeat timeout" });
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return Ending::Gone;
                }
            }
        }
    }
}

/// Sends what a resuming client missed: matching events in `(from, through]`.
async fn replay(
    socket: &mut Socket,
    state: &RealtimeState,
    identity: &Identity,
    topics: &[Topic],
    from: i64,
    through: i64,
) -> Result<(), Ending> {
    let audience = Audience {
        account_id: identity.account_id,
        patient_id: identity.patient_id,
        providers: topics
            .iter()
            .filter_map(|t| match t {
                Topic::ProviderSlots(p) | Topic::ProviderQueue(p) => Some(*p),
                Topic::Notifications | Topic::Appointments => None,
            })
            .collect(),
    };
    let mut after = from;
    while after < through {
        let batch_audience = audience.clone();
        let events = state
            .db
            .run(move |conn| {
                Ok(stream::replay(
                    conn,
                    &batch_audience,
                    after,
                    through,
                    REPLAY_BATCH,
                )?)
            })
            .await
            .map_err(|_| {
                Ending::Close(Closing {
                    code: 1011,
                    reason: "database unavailable",
                })
            })?;
        for event in &events {
            if let Some(text) = hub::replay_message(identity, topics, event) {
                socket.send(Message::text(text)).await.map_err(|_| Ending::Gone)?;
            }
        }
        match events.last() {
            Some(last) if (events.len() as i64) == REPLAY_BATCH => after = last.seq,
            _ => break,
        }
    }
    Ok(())
}

/// On a fresh connection: the unread notifications (dedupe by id with any that also
/// arrive as events).
async fn unread(
    socket: &mut Socket,
    state: &RealtimeState,
    ctx: &RequestContext,
    identity: &Identity,
) -> Result<(), Ending> {
    let (ctx, caller) = (ctx.clone(), identity.caller());
    let items = state
        .db
        .run(move |conn| {
            // Shown, so audited like the REST list (notifications::disclose).
            diesel::Connection::transaction(conn, |conn| {
                let items = crate::notifications::list(conn, caller.account_id, true, None, 50)?;
                crate::notifications::disclose(conn, &ctx, &caller, audit::action::READ, &items)?;
                Ok::<_, crate::error::Error>(items)
            })
        })
        .await
        .map_err(|_| {
            Ending::Close(Closing {
                code: 1011,
                reason: "database unavailable",
            })
        })?;
    let message = ServerMessage::Notifications {
        items: items.iter().map(crate::notifications::channels::view).collect(),
    };
    send(socket, &message).await.map_err(|_| Ending::Gone)
}

/// The answer to one client message.
async fn answer(
    state: &RealtimeState,
    ctx: &RequestContext,
    identity: &Identity,
    id: u64,
    topics: &mut Vec<Topic>,
    text: &str,
) -> ServerMessage {
    let message = match protocol::parse(text) {
        Ok(message) => message,
        Err(reply) => return reply,
    };
    match message {
        ClientMessage::Ping { id } => ServerMessage::Pong { id },
        ClientMessage::Subscribe { id: mid, topic } => {
            let Some(parsed) = Topic::parse(&topic) else {
                return ServerMessage::error(
                    Some(&mid),
                    code::UNKNOWN_TOPIC,
                    format!("unknown topic {topic}"),
                );
            };
            if let Err(why) = topics::authorize(parsed, identity) {
                deny(state, ctx, identity, why).await;
                return ServerMessage::error(Some(&mid), why, format!("you may not follow {topic}"));
            }
            if !topics.contains(&parsed) {
                topics.push(parsed);
            }
            let seq = state.hub.subscribe(id, parsed);
            ServerMessage::Ack {
                id: mid,
                seq: Some(seq),
            }
        }
        ClientMessage::Unsubscribe { id: mid, topic } => {
            if let Some(parsed) = Topic::parse(&topic) {
                topics.retain(|t| *t != parsed);
                state.hub.unsubscribe(id, parsed);
            }
            ServerMessage::Ack { id: mid, seq: None }
        }
        ClientMessage::Read {
            id: mid,
            notification_id,
        } => {
            let caller = identity.caller();
            let ctx = ctx.clone();
            match state
                .db
                .run(move |conn| crate::notifications::read_one(conn, &ctx, &caller, notification_id))
                .await
            {
                Ok(Some(_)) => ServerMessage::Ack { id: mid, seq: None },
                Ok(None) => ServerMessage::error(Some(&mid), code::NOT_FOUND, "no such notification"),
                Err(_) => ServerMessage::error(Some(&mid), code::INTERNAL, "try again"),
            }
        }
    }
}
