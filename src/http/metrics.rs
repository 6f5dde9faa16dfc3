//! Prometheus metrics: the process-wide recorder and the names we record.
//!
//! Labels are bounded: routes are templates (`/v1/admin/users/{id}`), never raw paths,
//! and nothing personal is ever a label.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::db::Db;

/// Latency buckets in seconds, from 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The recorder's handle, installing the global recorder on first use. Several
/// servers in one process (tests) share it.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        handle
    })
}

/// Counts one finished request and its latency.
pub fn record_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let method = method.to_owned();
    let route = route.to_owned();
    metrics::counter!(
        "http_requests_total",
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status.to_string(),
    )
    .increment(1);
    metrics::histogram!(
        "http_request_duration_seconds",
        "method" => method,
        "route" => route,
    )
    .record(elapsed.as_secs_f64());
}

/// Tracks requests in flight while alive.
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    pub fn start() -> InFlight {
        metrics::gauge!("http_requests_in_flight").increment(1.0);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("http_requests_in_flight").decrement(1.0);
    }
}

/// The exposition text, with the pool's gauges read now.
pub fn render(db: &Db) -> String {
    let state = db.state();
    let idle = f64::from(state.idle_connections);
    let open = f64::from(state.connections);
    metrics::gauge!("db_pool_connections", "state" => "idle").set(idle);
    metrics::gauge!("db_pool_connections", "state" => "in_use").set(open - idle);
    let handle = handle();
    handle.run_upkeep();
    handle.render()
}
