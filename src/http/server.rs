//! Accepting connections and shutting down gracefully.
//!
//! Each connection runs behind [`GuardedIo`] (its header, body and keep-alive
//! timeouts). At most `CAREWIRE_HTTP_MAX_CONNECTIONS` are served at once: one more is
//! answered with a fixed 503 written straight to its socket and closed, without a task
//! or a parser, so a flood of connections costs little.
//!
//! On the shutdown signal the listener closes at once (new connections are refused),
//! idle keep-alive connections close, and requests in flight get up to the grace
//! period to finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::connection::{Connection, GuardedIo};
use super::edge::{Edge, EdgeConfig};

/// What a connection over the cap is told: a complete response, so that a client sees
/// why, with the problem document every error carries.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/problem+json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 155\r\n\
\r\n\
{\"type\":\"https://carewire.dev/problems/service-unavailable\",\"title\":\"Service unavailable\",\"status\":503,\"detail\":\"Too many connections; try again shortly.\"}";

/// Serves `routes` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    config: Arc<EdgeConfig>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let capacity = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = capacity.clone().try_acquire_owned() else {
            // A fresh socket's send buffer is empty: this write does not block.
            let _ = stream.try_write(OVER_CAPACITY);
            ::metrics::counter!("http_connections_refused_total").increment(1);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Arc::new(Connection::default());
        let io = GuardedIo::new(stream, config.timeouts, connection.clone());
        let service = Edge::new(routes.clone(), config.clone(), peer, connection);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        open_connections = open,
        "shutting down: finishing requests in flight"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(
            grace_secs = grace.as_secs(),
            "grace period over; closing the remaining connections"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::OVER_CAPACITY;

    #[test]
    fn the_over_capacity_answer_is_a_complete_response_with_a_problem() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 503);
    }
}
