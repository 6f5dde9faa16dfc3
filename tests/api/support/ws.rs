//! WebSocket clients as outside clients are: tokio-tungstenite over loopback, the
//! access token offered as a `bearer.<token>` subprotocol next to the endpoint's own.
//! The real-time gateway's tests and the consultation tests share these.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TestApp;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `path` (with its query) on `app`, offering `protocol` and, with a token,
/// `bearer.<token>`; `extra` headers are added as given.
pub async fn open(
    app: &TestApp,
    path: &str,
    protocol: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("ws://{}{path}", app.addr).into_client_request().unwrap();
    if let Some(token) = token {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("{protocol}, bearer.{token}").parse().unwrap(),
        );
    }
    for (name, value) in extra {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.map(|(ws, _)| ws)
}

/// The next JSON text frame within `wait` (pings and pongs skipped); panics on a close.
pub async fn next_json(ws: &mut Ws, wait: Duration) -> Value {
    loop {
        let message = tokio::time::timeout(wait, ws.next())
            .await
            .unwrap_or_else(|_| panic!("a frame within {wait:?}"))
            .expect("the socket is open")
            .expect("a valid frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// The close code the server ends the socket with, after whatever is still queued;
/// `None` when the socket breaks without one.
pub async fn close_code(ws: &mut Ws, wait: Duration) -> Option<u16> {
    loop {
        match tokio::time::timeout(wait, ws.next())
            .await
            .unwrap_or_else(|_| panic!("closed within {wait:?}"))
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// The HTTP status of a refused handshake.
pub fn http_status(result: Result<Ws, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("not an HTTP refusal: {other}"),
        Ok(_) => panic!("the handshake succeeded"),
    }
}
