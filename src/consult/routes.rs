//! `GET /v1/consultations/{appointment_id}`: the consultation's WebSocket (protocol
//! `carewire.consult.v1`, see `signaling/PROTOCOL.md`), and
//! `GET /v1/consultations/{appointment_id}/ice-servers`: fresh TURN credentials.
//!
//! The handshake answers with a status code what it can: not a WebSocket (400), an
//! Origin from another site (403), no valid credential (401). Whether this caller may
//! enter this appointment's room now is answered on the socket, as the protocol's
//! error codes (`UNAUTHORIZED`, `NOT_IN_WINDOW`, `STATE_MISMATCH`) followed by a 1008
//! close: a browser cannot read the body of a refused handshake, so a status code
//! would only say "failed".

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::{self, Message};
use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use carewire_signaling::{ErrorCode, IceServer, PROTOCOL_VERSION, Rejection, ServerFrame};

use super::ConsultState;
use super::admission::{self, Appointment, Knock, Refusal};
use super::rooms::{Outbound, RoomFacts};
use crate::audit::{self, Code};
use crate::context::Caller;
use crate::context::RequestContext;
use crate::error::Error;
use crate::http::openapi::problems;
use crate::http::query::Query;
use crate::http::websocket::{self, Socket, Upgrade, close};
use crate::http::{reply, request_context, with_state};
use crate::realtime::hub::Closing;
use crate::scheduling::appointments;

/// GET /v1/consultations/{appointment_id}?ticket=|guest=: the consultation socket.
#[utoipa::path(get, path = "/v1/consultations/{id}", tag = "consultations", params(("id" = Uuid, Path, description = "The video appointment"), ("ticket" = Option<String>, Query, description = "From POST /v1/ws/ticket; or offer the subprotocols `carewire.consult.v1` and `bearer.<access token>`"), ("guest" = Option<String>, Query, description = "A guest link token minted by the provider (`invite_guest`), instead of an account")), responses((status = 101, description = "Switching to the WebSocket protocol carewire.consult.v1 (see signaling/PROTOCOL.md)"), (status = 400, description = "Not a WebSocket handshake", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "No valid ticket, token or guest link", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "Origin not allowed", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json")))]
pub(crate) fn socket(state: &ConsultState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "consultations" / Uuid)
        .and(warp::get())
        .and(websocket::upgrade())
        .and(with_state(state))
        .then(|appointment, upgrade, state| async move {
            reply::respond(handshake(appointment, upgrade, state).await)
        })
        .boxed()
}

/// GET /v1/consultations/{appointment_id}/ice-servers: STUN and TURN servers with
/// fresh credentials, for a participant whose call outlives its first ones.
#[utoipa::path(get, path = "/v1/consultations/{id}/ice-servers", tag = "consultations", params(("id" = Uuid, Path, description = "The video appointment")), responses((status = 200, description = "`{\"ice_servers\": [...]}`, ready for `new RTCPeerConnection({iceServers})`"), problems::Unauthorized, (status = 404, description = "Not your consultation, or not open now", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(crate) fn ice_servers(state: &ConsultState) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "consultations" / Uuid / "ice-servers")
        .and(warp::get())
        .and(crate::access::caller(state))
        .and(request_context())
        .and(with_state(state))
        .then(on_ice_servers)
        .boxed()
}

async fn on_ice_servers(
    appointment: Uuid,
    caller: Caller,
    ctx: RequestContext,
    state: ConsultState,
) -> Response {
    let result = async {
        let knock = Knock::Account {
            id: caller.account_id,
            role: caller.role,
        };
        match decide(&state, appointment, knock).await? {
            Ok(_) => {
                let servers = ice_for(&state, &caller.account_id.to_string())?;
                Ok(reply::json(StatusCode::OK, &json!({ "ice_servers": servers })))
            }
            Err(refusal) => {
                deny(&state, &ctx, Some(&caller), appointment, &refusal).await;
                Err(Error::NotFound)
            }
        }
    }
    .await;
    reply::respond(result)
}

fn ice_for(state: &ConsultState, user: &str) -> Result<Vec<IceServer>, Error> {
    let now = u64::try_from(state.clock.now().timestamp()).unwrap_or(0);
    state.settings.consult.ice.servers_for(user, now).map_err(|e| {
        tracing::error!(error = %e, "minting TURN credentials failed");
        Error::internal("the ICE servers could not be prepared")
    })
}

async fn handshake(appointment: Uuid, upgrade: Upgrade, state: ConsultState) -> Result<Response, Error> {
    let handshake = upgrade.check(&state, "GET /v1/consultations/{id}")?;
    let query = Query::parse(&upgrade.query, &["ticket", "guest"])?;
    let (knock, caller) = match query.str("guest") {
        Some(token) if !token.is_empty() && token.len() <= 512 => (
            Knock::Guest {
                token: token.to_owned(),
            },
            None,
        ),
        Some(_) => {
            return Err(Error::Unauthorized {
                reason: "the guest link is not valid",
            });
        }
        None => {
            let caller =
                websocket::authenticate(&state, &handshake, query.str("ticket"), PROTOCOL_VERSION).await?;
            (
                Knock::Account {
                    id: caller.account_id,
                    role: caller.role,
                },
                Some(caller),
            )
        }
    };
    // Frames up to the protocol's 128 KiB reach the room (which answers `BAD_MESSAGE`
    // for more); tungstenite cuts anything past the setting with 1009 before buffering.
    let config = websocket::config(state.settings.consult.max_message_bytes);
    let ctx = upgrade.ctx;
    websocket::accept(
        &handshake,
        upgrade.slot,
        PROTOCOL_VERSION,
        config,
        move |socket| enter(socket, state, ctx, appointment, knock, caller),
    )
}

/// Loads the appointment and asks [`admission::admit`]. The outer error is the
/// database's; the inner one the refusal to send.
async fn decide(
    state: &ConsultState,
    appointment: Uuid,
    knock: Knock,
) -> Result<Result<(RoomFacts, carewire_signaling::Claim), Refusal>, Error> {
    let window = state.settings.consult.window;
    let now = state.clock.now();
    state
        .db
        .run(move |conn| {
            let row = appointments::load(conn, appointment)?;
            let patient_account = match &row {
                Some(row) => appointments::patient_account(conn, row.patient_id)?,
                None => None,
            };
            let view = row.as_ref().map(|row| Appointment {
                provider_id: row.provider_id,
                patient_account,
                modality: &row.modality,
                status: row.status(),
                starts_at: row.starts_at,
                ends_at: row.ends_at,
            });
            let decision = admission::admit(knock, view.as_ref(), window, now);
            Ok(decision.map(|claim| {
                let row = row.as_ref().map(|r| (r.patient_id, r.provider_id));
                let (patient_id, provider_id) = row.unwrap_or_default();
                (
                    RoomFacts {
                        appointment,
                        patient_id,
                        provider_id,
                    },
                    claim,
                )
            }))
        })
        .await
}

/// Records a refused entry. Guests have no account to record it against: their
/// refusals are the room's (`GUEST_LINK_INVALID`) or the window's, and are logged.
async fn deny(
    state: &ConsultState,
    ctx: &RequestContext,
    caller: Option<&Caller>,
    appointment: Uuid,
    refusal: &Refusal,
) {
    let Some(caller) = caller else {
        tracing::info!(%appointment, reason = refusal.audit_reason, "guest refused at the consultation door");
        return;
    };
    let denial = audit::Denial::forbidden(
        crate::audit::resource::APPOINTMENT,
        Code::new(refusal.audit_reason),
    )
    .resource(appointment);
    if let Err(e) = denial.record(&state.db, ctx, caller).await {
        tracing::warn!(error = %e, "recording a refused consultation entry failed");
    }
}

async fn refuse(mut socket: Socket, rejection: Rejection) {
    if let Ok(text) = ServerFrame::error(None, rejection).to_json() {
        let _ = socket.send(Message::text(text)).await;
    }
    close(socket, 1008, "refused").await;
}

/// After the 101: decide, then carry frames between the socket and the room.
async fn enter(
    mut socket: Socket,
    state: ConsultState,
    ctx: RequestContext,
    appointment: Uuid,
    knock: Knock,
    caller: Option<Caller>,
) {
    let ice_user = match &caller {
        Some(c) => c.account_id.to_string(),
        None => format!("guest.{appointment}"),
    };
    let (facts, claim) = match decide(&state, appointment, knock).await {
        Ok(Ok(admitted)) => admitted,
        Ok(Err(refusal)) => {
            deny(&state, &ctx, caller.as_ref(), appointment, &refusal).await;
            return refuse(socket, refusal.rejection).await;
        }
        Err(_) => return close(socket, 1011, "database unavailable").await,
    };
    let ice_servers = match ice_for(&state, &ice_user) {
        Ok(servers) => servers,
        Err(_) => return close(socket, 1011, "ICE servers unavailable").await,
    };
    let (outbound_tx, mut outbound) = mpsc::channel(super::rooms::OUTBOUND_QUEUE);
    let Some(room) = state
        .rooms
        .open(&state, facts, claim, ice_servers, outbound_tx, ctx)
        .await
    else {
        return close(socket, 1011, "room unavailable").await;
    };
    metrics::gauge!("consult_connections").increment(1.0);
    // An account's socket closes when its session ends (4401) or the account is
    // disabled (4403), as the gateway's do: signing out ends the call too.
    let mut session = caller.map(|c| (c.account_id, state.hub.watch_session(c.account_id, c.session_id)));
    // A room on another instance answers every ping; silence for a whole heartbeat
    // timeout means its owner is gone, and the client should reconnect to the room's
    // next owner.
    let silence = state.rooms.config().heartbeat_timeout;
    let mut heard_from_room = tokio::time::Instant::now();
    let mut watchdog = tokio::time::interval(silence / 3);
    loop {
        tokio::select! {
            ended = session_ended(&mut session) => {
                // Give the seat up at once, as a `leave` would: the others see the
                // participant leave now rather than after the reconnect grace period.
                let _ = room.frame(SESSION_LEAVE.to_owned()).await;
                close(socket, ended.code, ended.reason).await;
                break;
            }
            _ = watchdog.tick(), if room.is_remote() => {
                if heard_from_room.elapsed() > silence {
                    room.disconnected(&state.rooms).await;
                    close(socket, 1012, "room moved; reconnect").await;
                    break;
                }
            }
            out = outbound.recv() => match out {
                Some(Outbound::Text(text)) => {
                    heard_from_room = tokio::time::Instant::now();
                    if socket.send(Message::text(text)).await.is_err() {
                        room.disconnected(&state.rooms).await;
                        break;
                    }
                }
                Some(Outbound::Close { code, reason }) => {
                    close(socket, code, reason).await;
                    break;
                }
                // The room cut this connection off (it could not keep up) or is gone.
                None => {
                    close(socket, 1013, "too slow; reconnect and resume").await;
                    break;
                }
            },
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if !room.frame(text.as_str().to_owned()).await {
                        close(socket, 1001, "room closed").await;
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let rejection = Rejection::new(ErrorCode::BadMessage, "messages are JSON text frames");
                    if let Ok(text) = ServerFrame::error(None, rejection).to_json()
                        && socket.send(Message::text(text)).await.is_err()
                    {
                        room.disconnected(&state.rooms).await;
                        break;
                    }
                }
                Some(Err(tungstenite::Error::Capacity(_))) => {
                    room.disconnected(&state.rooms).await;
                    close(socket, 1009, "message too big").await;
                    break;
                }
                Some(Err(tungstenite::Error::Utf8(_))) => {
                    room.disconnected(&state.rooms).await;
                    close(socket, 1007, "text frames must be UTF-8").await;
                    break;
                }
                None | Some(Ok(Message::Close(_))) | Some(Err(_)) => {
                    room.disconnected(&state.rooms).await;
                    break;
                }
                Some(Ok(_)) => {} // ping (tungstenite answers), pong, raw frame
            },
        }
    }
    if let Some((account, (id, _))) = session {
        state.hub.unwatch_session(account, id);
    }
    metrics::gauge!("consult_connections").decrement(1.0);
}

/// What the room is told when a participant's session ends under it.
const SESSION_LEAVE: &str = r#"{"type":"leave","id":"session-ended"}"#;

/// A watched session: the account, and the hub's watcher id and receiver.
type SessionWatch = (Uuid, (u64, watch::Receiver<Option<Closing>>));

/// Resolves when the watched session ends; never for a guest (no session).
async fn session_ended(session: &mut Option<SessionWatch>) -> Closing {
    let Some((_, (_, control))) = session else {
        return std::future::pending().await;
    };
    loop {
        if let Some(closing) = *control.borrow_and_update() {
            return closing;
        }
        if control.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}
