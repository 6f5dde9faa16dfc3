//! The edge of every request, around the warp routes: request ids, the request span
//! and its log line, metrics, CORS, security headers, the body-size limit, the client
//! address, and turning a panic into a 500 while the server keeps serving.
//!
//! It is a hyper `Service` wrapping warp's, so it sees every request and response,
//! including the ones warp rejects.

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use tower_service::Service as _;
use tracing::Instrument;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::connection::{Connection, TimedBody, Timeouts};
use super::routes::RouteTable;
use super::{metrics, reply, tokens, web};
use crate::config::HttpSettings;
use crate::error::Error;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of one request: taken from `X-Request-Id` when it is sane, else generated.
/// Echoed on the response and attached to every log line of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub Arc<str>);

impl RequestId {
    fn from_headers(headers: &HeaderMap) -> RequestId {
        let given = headers
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 128
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            });
        let id = match given {
            Some(id) => id.to_owned(),
            None => uuid::Uuid::now_v7().simple().to_string(),
        };
        RequestId(id.into())
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A connection's pending protocol upgrade, handed from the edge to the route that
/// answers it (`GET /v1/ws`): hyper keeps it in the request's extensions, which
/// warp's filters can only read when it is `Clone`.
#[derive(Clone)]
pub struct UpgradeSlot {
    upgrade: Arc<std::sync::Mutex<Option<hyper::upgrade::OnUpgrade>>>,
    version: http::Version,
}

impl std::fmt::Debug for UpgradeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpgradeSlot")
    }
}

impl UpgradeSlot {
    /// The HTTP version of the request that asked for the upgrade.
    pub fn version(&self) -> http::Version {
        self.version
    }

    /// The upgrade, once.
    pub fn take(&self) -> Option<hyper::upgrade::OnUpgrade> {
        self.upgrade
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// The client's address: the peer, or with `CAREWIRE_TRUST_FORWARDED_FOR` the last
/// `X-Forwarded-For` entry (the one our own proxy appended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// What the edge needs from the settings.
#[derive(Debug)]
pub struct EdgeConfig {
    /// Every route, for labels and a 405's `Allow`.
    pub routes: RouteTable,
    pub body_limit: usize,
    pub cors_origins: HashSet<String>,
    pub hsts_max_age: Option<u64>,
    pub trust_forwarded_for: bool,
    /// The browser client is served (`CAREWIRE_WEB_CLIENT`): its paths get its label.
    pub web_client: bool,
    /// How long a connection may take over each part of a request, and sit idle.
    pub timeouts: Timeouts,
    /// Most connections served at once; more are refused with a 503.
    pub max_connections: usize,
}

impl EdgeConfig {
    pub fn from_settings(http: &HttpSettings, routes: RouteTable) -> EdgeConfig {
        EdgeConfig {
            routes,
            body_limit: http.body_limit,
            cors_origins: http.cors_origins.iter().cloned().collect(),
            hsts_max_age: http.hsts_max_age,
            trust_forwarded_for: http.trust_forwarded_for,
            web_client: http.web_client,
            timeouts: Timeouts {
                header: http.header_timeout,
                body: http.body_timeout,
                keep_alive: http.keep_alive_timeout,
            },
            max_connections: http.max_connections,
        }
    }

    /// Whether a browser page from `origin` may call us.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.cors_origins.contains(&origin.to_ascii_lowercase())
    }
}

/// The per-connection service.
#[derive(Clone)]
pub struct Edge {
    routes: BoxedFilter<(Response,)>,
    config: Arc<EdgeConfig>,
    peer: SocketAddr,
    connection: Arc<Connection>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Edge {
    pub fn new(
        routes: BoxedFilter<(Response,)>,
        config: Arc<EdgeConfig>,
        peer: SocketAddr,
        connection: Arc<Connection>,
    ) -> Edge {
        Edge {
            routes,
            config,
            peer,
            connection,
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Edge {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let started = Instant::now();
        let in_progress = InProgress::start(self.connection.clone());
        let request_id = RequestId::from_headers(req.headers());
        let method = req.method().clone();
        // Only origin-form targets (`/path?query`), or absolute-form ones with a path,
        // name a resource here: `CONNECT host:port`, `GET healthz`, `OPTIONS *` do not.
        let origin_form = req.uri().path().starts_with('/');
        let path = if origin_form {
            req.uri().path().to_owned()
        } else {
            String::new()
        };
        // Static files of the browser client share one label: never the raw path,
        // which would make the label set unbounded.
        let route = self.config.routes.template_for(&method, &path).or_else(|| {
            (self.config.web_client && web::serves(&method, &path)).then(|| Arc::from(web::ROUTE_LABEL))
        });
        let span = tracing::info_span!(
            "request",
            request_id = %request_id,
            method = %method,
            route = route.as_deref().unwrap_or("unmatched"),
            status = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        let client_ip = client_ip(req.headers(), self.peer, self.config.trust_forwarded_for);
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let authenticated = req.headers().contains_key(header::AUTHORIZATION);
        req.extensions_mut().insert(request_id.clone());
        req.extensions_mut().insert(ClientIp(client_ip));
        if tokens::wants_upgrade(req.version(), req.headers(), "websocket") {
            let upgrade = hyper::upgrade::on(&mut req);
            let version = req.version();
            req.extensions_mut().insert(UpgradeSlot {
                upgrade: Arc::new(std::sync::Mutex::new(Some(upgrade))),
                version,
            });
        }
        let (parts, body) = req.into_parts();
        let (body, body_progress) = TimedBody::new(body, self.config.timeouts.body);
        let req = Request::from_parts(parts, body);

        let config = self.config.clone();
        let connection = self.connection.clone();
        let mut routes = warp::service(self.routes.clone());
        let in_flight = metrics::InFlight::start();
        async move {
            let mut res = if !origin_form {
                reply::error(&Error::bad_request(
                    "the request target must be a path (origin-form, RFC 9112 §3.2.1)",
                ))
            } else if let Some(res) = preflight(&req, &config, origin.as_deref()) {
                res
            } else if declared_length(req.headers()).is_some_and(|len| len > config.body_limit as u64) {
                reply::error(&Error::PayloadTooLarge {
                    limit: config.body_limit,
                })
            } else {
                let call = routes.call(req);
                match AssertUnwindSafe(call).catch_unwind().await {
                    Ok(Ok(res)) => res,
                    Ok(Err(never)) => match never {},
                    Err(_) => {
                        tracing::error!("handler panicked; answered 500");
                        reply::error(&Error::internal("handler panicked"))
                    }
                }
            };
            if body_progress.timed_out() {
                res = reply::error(&Error::RequestTimeout);
            }
            if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                connection.upgraded();
            } else if !body_progress.finished() {
                // The body was not read (an early refusal, a 413): the client may still
                // be sending it, so this connection cannot carry another request. Say
                // so, rather than drop it under a client that would reuse it.
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            if res.status() == StatusCode::METHOD_NOT_ALLOWED {
                let allow = config.routes.allowed_methods(&path).join(", ");
                if let Ok(value) = HeaderValue::from_str(&allow) {
                    res.headers_mut().insert(header::ALLOW, value);
                }
            }
            decorate(
                &mut res,
                &config,
                &request_id,
                &path,
                origin.as_deref(),
                authenticated,
            );
            drop(in_flight);
            drop(in_progress);

            let status = res.status().as_u16();
            let elapsed = started.elapsed();
            let span = tracing::Span::current();
            span.record("status", status);
            span.record("latency_ms", elapsed.as_secs_f64() * 1000.0);
            metrics::record_request(
                method.as_str(),
                route.as_deref().unwrap_or("unmatched"),
                status,
                elapsed,
            );
            if status >= 500 {
                tracing::warn!(status, "request finished");
            } else {
                tracing::info!(status, "request finished");
            }
            Ok(res)
        }
        .instrument(span)
        .boxed()
    }
}

/// A request the edge works on, for the connection's timeouts: started when its
/// headers are in, finished when the edge answers, however that happens.
struct InProgress(Arc<Connection>);

impl InProgress {
    fn start(connection: Arc<Connection>) -> InProgress {
        connection.request_started();
        InProgress(connection)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn client_ip(headers: &HeaderMap, peer: SocketAddr, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for
        && let Some(last) = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
        && let Ok(ip) = last.trim().parse::<IpAddr>()
    {
        return ip;
    }
    peer.ip()
}

const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const ALLOW_HEADERS: &str =
    "authorization, content-type, if-match, if-none-match, idempotency-key, x-request-id";
const EXPOSE_HEADERS: &str = "etag, location, retry-after, x-request-id";

/// Answers a CORS preflight, or `None` when this is not one.
fn preflight<B>(req: &Request<B>, config: &EdgeConfig, origin: Option<&str>) -> Option<Response> {
    let origin = origin?;
    if req.method() != Method::OPTIONS || !req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return None;
    }
    if !config.origin_allowed(origin) {
        return Some(reply::error(&Error::Forbidden));
    }
    let mut res = reply::empty(StatusCode::NO_CONTENT);
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    Some(res)
}

/// Headers every response carries.
fn decorate(
    res: &mut Response,
    config: &EdgeConfig,
    request_id: &RequestId,
    path: &str,
    origin: Option<&str>,
    authenticated: bool,
) {
    let h = res.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id.0) {
        h.insert(REQUEST_ID, value);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // API answers may carry personal data: no shared or private cache keeps them.
    if (authenticated || path.starts_with("/v1/")) && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(max_age) = config.hsts_max_age
        && let Ok(value) = HeaderValue::from_str(&format!("max-age={max_age}; includeSubDomains"))
    {
        h.insert(header::STRICT_TRANSPORT_SECURITY, value);
    }
    if !config.cors_origins.is_empty() {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(origin) = origin
        && config.origin_allowed(origin)
        && let Ok(value) = HeaderValue::from_str(origin)
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_request_id_is_kept_and_a_hostile_one_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(&*RequestId::from_headers(&headers).0, "abc-123");
        headers.insert(REQUEST_ID, HeaderValue::from_static("a b\"<script>"));
        assert_ne!(&*RequestId::from_headers(&headers).0, "a b\"<script>");
        assert_eq!(RequestId::from_headers(&HeaderMap::new()).0.len(), 32);
    }

    #[test]
    fn forwarded_for_is_used_only_when_trusted_and_then_the_last_entry() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9"),
        );
        assert_eq!(client_ip(&headers, peer, false), peer.ip());
        assert_eq!(
            client_ip(&headers, peer, true),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }
}
