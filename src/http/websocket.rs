//! The parts of a WebSocket handshake every socket endpoint shares: the request's
//! parts ([`upgrade`], one filter for every socket route), checking the request, the
//! Origin and the credential, answering 101, and building the `WebSocketStream` with
//! our own buffers once hyper hands over the connection.
//!
//! We answer the handshake ourselves instead of using warp's `ws()`: warp gives every
//! socket tungstenite's default 128 KiB read buffer with no knob, and idle memory per
//! connection is a product goal. The edge keeps the connection's hyper upgrade in the
//! request ([`UpgradeSlot`]); [`accept`] answers 101 and spawns the socket's task.
//!
//! Credentials, in the order they are tried: a single-use ticket from
//! `POST /v1/ws/ticket` in the query (browsers cannot set headers on a WebSocket), or
//! the access token offered as a `bearer.<token>` subprotocol next to the endpoint's
//! own protocol name. The token is never echoed back.

use std::future::Future;

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role as WsRole, WebSocketConfig};
use warp::reply::Response;

use crate::auth::tickets;
use crate::context::Caller;
use crate::error::Error;
use crate::http::edge::UpgradeSlot;
use crate::http::reply;
use crate::state::AppState;

/// How long a close frame may take to go out before the socket is simply dropped.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long, after the close frame, the server reads and discards what the client
/// still sends before it lets the connection go.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// A server-side socket over a hyper upgrade.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A well-formed WebSocket handshake request.
#[derive(Debug)]
pub struct Handshake {
    key: HeaderValue,
    /// The subprotocols the client offered, in order.
    offered: Vec<String>,
}

impl Handshake {
    /// Checks that the request asks for a version-13 WebSocket; 400 otherwise. `slot`
    /// is the upgrade the edge kept for it (only for an HTTP/1.1 request that asks
    /// for one).
    pub fn parse(
        headers: &HeaderMap,
        slot: Option<&UpgradeSlot>,
        endpoint: &str,
    ) -> Result<Handshake, Error> {
        let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
        let is_upgrade =
            slot.is_some_and(|s| crate::http::tokens::wants_upgrade(s.version(), headers, "websocket"));
        let (Some(key), true) = (key, is_upgrade) else {
            return Err(Error::bad_request(format!(
                "{endpoint} is a WebSocket endpoint: send an Upgrade: websocket handshake"
            )));
        };
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .and_then(|v| v.to_str().ok())
            != Some("13")
        {
            return Err(Error::bad_request("only WebSocket version 13 is supported"));
        }
        let offered = crate::http::tokens::tokens(headers, &header::SEC_WEBSOCKET_PROTOCOL)
            .map(str::to_owned)
            .collect();
        Ok(Handshake { key, offered })
    }

    /// Whether the client offered the subprotocol `name`.
    pub fn offers(&self, name: &str) -> bool {
        self.offered.iter().any(|p| p == name)
    }

    /// The access token offered as a `bearer.<token>` subprotocol.
    pub fn bearer(&self) -> Option<&str> {
        self.offered.iter().find_map(|p| p.strip_prefix("bearer."))
    }
}

/// A WebSocket upgrade request as a socket route receives it: the headers, the
/// upgrade the edge kept for it, where it came from, and the raw query string. The
/// headers and the query carry credentials (a `bearer.` subprotocol, a ticket, a guest
/// link), so `Debug` shows where it came from only.
pub struct Upgrade {
    pub headers: HeaderMap,
    pub slot: Option<UpgradeSlot>,
    pub ctx: crate::context::RequestContext,
    pub query: String,
}

/// The parts of a socket route's request after its path and method.
pub fn upgrade() -> impl warp::Filter<Extract = (Upgrade,), Error = warp::Rejection> + Clone {
    use warp::Filter;
    warp::header::headers_cloned()
        .and(warp::ext::optional::<UpgradeSlot>())
        .and(crate::http::request_context())
        .and(crate::http::query::raw())
        .map(|headers, slot, ctx, query| Upgrade {
            headers,
            slot,
            ctx,
            query,
        })
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrade")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl Upgrade {
    /// Checks the handshake (400 unless it asks for a version-13 WebSocket at
    /// `endpoint`) and then the origin (403).
    pub fn check(&self, state: &AppState, endpoint: &str) -> Result<Handshake, Error> {
        let handshake = Handshake::parse(&self.headers, self.slot.as_ref(), endpoint)?;
        check_origin(state, &self.headers)?;
        Ok(handshake)
    }
}

/// 403 for a browser page from a site that is neither in `CAREWIRE_CORS_ORIGINS` nor
/// this host itself: cross-site WebSocket hijacking rides on the victim's cookies and
/// tickets, and browsers do not apply CORS to WebSockets.
pub fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), Error> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        // Not a browser: native clients send no Origin, and cannot be hijacked.
        return Ok(());
    };
    let origin = origin.to_ascii_lowercase();
    if state.settings.http.cors_origins.contains(&origin) {
        return Ok(());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host.is_empty() && (origin == format!("http://{host}") || origin == format!("https://{host}")) {
        return Ok(());
    }
    tracing::info!("WebSocket refused: origin not allowed");
    Err(Error::Forbidden)
}

/// Who opens the socket: from a ticket, or from a bearer subprotocol offered next to
/// `protocol`. 401 when neither is valid.
pub async fn authenticate(
    state: &AppState,
    handshake: &Handshake,
    ticket: Option<&str>,
    protocol: &str,
) -> Result<Caller, Error> {
    if let Some(ticket) = ticket {
        let ticket = ticket.to_owned();
        let caller = state
            .db
            .run(move |conn| Ok(tickets::redeem(conn, &ticket)?))
            .await?
            .ok_or(Error::Unauthorized {
                reason: "the ticket is unknown, expired or already used",
            })?;
        if !state.auth.sessions.is_live(&state.db, caller.session_id).await? {
            return Err(Error::Unauthorized {
                reason: "the session has ended; sign in again",
            });
        }
        return Ok(caller);
    }
    let Some(token) = handshake.bearer() else {
        return Err(Error::Unauthorized {
            reason: "a ticket (?ticket=, from POST /v1/ws/ticket) or an access token (subprotocol bearer.<token>) is required",
        });
    };
    if !handshake.offers(protocol) {
        return Err(Error::bad_request(format!(
            "offer the subprotocol {protocol} next to bearer.<token>"
        )));
    }
    state.auth.authenticate(&state.db, token).await
}

/// Small buffers: an idle socket should cost a few KiB, not tungstenite's 256 KiB of
/// defaults. Messages over `max_message` close the socket (1009).
pub fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Answers 101 and, once hyper hands the connection over, runs `serve` on the socket
/// in a task of its own. `protocol` is echoed when the client offered it.
pub fn accept<F, Fut>(
    handshake: &Handshake,
    slot: Option<UpgradeSlot>,
    protocol: &'static str,
    config: WebSocketConfig,
    serve: F,
) -> Result<Response, Error>
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    // The edge keeps the upgrade for every request that asks for one, by the same
    // reading of the headers as `Handshake::parse`; none here means the connection
    // cannot switch protocols (it was taken already, say), which is the client's doing.
    let on_upgrade = slot.and_then(|s| s.take()).ok_or(Error::bad_request(
        "this connection cannot be upgraded to a WebSocket",
    ))?;
    let mut res = reply::empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = res.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let accept = derive_accept_key(handshake.key.as_bytes());
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|_| Error::internal("bad accept key"))?,
    );
    if handshake.offers(protocol) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    }
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), WsRole::Server, Some(config))
                        .await;
                serve(socket).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    Ok(res)
}

/// Sends a close frame with `code` and `reason` (waiting at most a second for a peer
/// that stopped reading), then lets the client drain before dropping the socket.
///
/// Closing a TCP connection with unread bytes in its receive buffer makes the kernel
/// send a reset, and a reset can destroy the close frame before the client reads it:
/// a flooding client would never learn why it was cut off. So after the close frame
/// the server stops writing (FIN), reads and discards whatever still arrives until the
/// client hangs up or [`LINGER`] passes, and only then drops the connection.
pub async fn close(mut socket: Socket, code: u16, reason: impl Into<Utf8Bytes>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(Some(frame))).await;
    let io = socket.get_mut();
    let _ = tokio::time::timeout(LINGER, async {
        let _ = io.shutdown().await;
        let mut scratch = [0u8; 4096];
        while matches!(io.read(&mut scratch).await, Ok(n) if n > 0) {}
    })
    .await;
}
