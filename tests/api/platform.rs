//! The HTTP platform: health, readiness, metrics, problem documents for every kind of
//! bad request, the edge's headers, panics, a lost database, graceful shutdown, and
//! the `carewire` binary itself.

use crate::support;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{TestApp, problem, problem_type};
use reqwest::{Method, StatusCode};
use serde_json::json;
use warp::Filter;

/// `src/lib.rs`: dependencies point down. No import cycle between top-level modules
/// of `src/` has more than 2 modules, and none passes through the leaves every layer
/// uses (config, db, error, crypto, context).
#[test]
#[allow(clippy::print_stdout, reason = "with --nocapture it prints the layers")]
fn module_graph_points_down() {
    let graph = support::modules::read(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for (i, layer) in support::modules::layers(&graph).iter().enumerate() {
        println!("layer {i}: {}", layer.join(" "));
    }
    let cycles = support::modules::cycles(&graph);
    for cycle in &cycles {
        println!("cycle: {cycle:?}");
        assert!(
            cycle.len() <= 2,
            "an import cycle of {} modules: {cycle:?}",
            cycle.len()
        );
        for leaf in ["config", "db", "error", "crypto", "context"] {
            assert!(!cycle.contains(leaf), "{leaf} is in an import cycle: {cycle:?}");
        }
    }
    assert!(graph["access"].contains("auth"), "the graph is read: {graph:?}");
}

#[tokio::test]
async fn healthz_answers_without_touching_the_database() {
    let app = TestApp::spawn().await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["status"], "ok");
}

#[tokio::test]
async fn readyz_is_ready_when_the_database_is_migrated() {
    let app = TestApp::spawn().await;
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn readyz_is_not_ready_while_a_migration_is_missing() {
    use diesel::RunQueryDsl;
    let app = TestApp::spawn().await;
    let mut conn = app.db.connect();
    diesel::sql_query("DELETE FROM __diesel_schema_migrations WHERE version = (SELECT max(version) FROM __diesel_schema_migrations)")
        .execute(&mut conn)
        .unwrap();
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem_type(&problem(res).await), "service-unavailable");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_and_show_the_pool() {
    let app = TestApp::spawn().await;
    app.get("/healthz").await;
    let admin = app.admin().await;
    let missing = uuid::Uuid::new_v4();
    app.get_as(&format!("/v1/admin/users/{missing}"), &admin.tokens.access)
        .await;

    let res = app.get("/metrics").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/healthz",status="200"}"#),
        "{text}"
    );
    // Ids never become labels: the template does.
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/v1/admin/users/{id}",status="404"}"#),
        "{text}"
    );
    assert!(!text.contains(&missing.to_string()));
    assert!(text.contains("http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains(r#"db_pool_connections{state="idle"}"#), "{text}");
    assert!(text.contains(r#"db_pool_connections{state="in_use"}"#), "{text}");
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = TestApp::spawn().await;
    let res = app.get("/v1/no-such-thing").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body = problem(res).await;
    assert_eq!(problem_type(&body), "route-not-found");
    assert_eq!(body["status"], 404);
    assert!(body["title"].is_string());
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem_that_says_what_is_allowed() {
    let app = TestApp::spawn().await;
    let res = app
        .request(Method::DELETE, "/v1/auth/login")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()["allow"], "POST");
    assert_eq!(problem_type(&problem(res).await), "method-not-allowed");
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_whether_declared_or_streamed() {
    let app = TestApp::builder()
        .setting("CAREWIRE_BODY_LIMIT_BYTES", "2048")
        .spawn()
        .await;
    let big = json!({ "email": "a@example.test", "password": "x".repeat(4096) });
    let res = app.post_json("/v1/auth/login", &big).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = problem(res).await;
    assert_eq!(problem_type(&body), "payload-too-large");
    assert_eq!(body["limit"], 2048);

    // Chunked, so no Content-Length announces the size.
    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1024]))),
    );
    let res = app
        .request(Method::POST, "/v1/auth/login")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415() {
    let app = TestApp::spawn().await;
    let res = app
        .request(Method::POST, "/v1/auth/login")
        .header("content-type", "text/plain")
        .body("email=a")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(problem_type(&problem(res).await), "unsupported-media-type");
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = TestApp::spawn().await;
    let res = app
        .request(Method::POST, "/v1/auth/login")
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem_type(&problem(res).await), "bad-request");
}

#[tokio::test]
async fn a_failed_validation_is_a_422_that_names_the_field_but_not_the_value() {
    let app = TestApp::spawn().await;
    let res = app
        .post_json(
            "/v1/auth/register",
            &json!({ "email": "Ada Lovelace", "password": support::PASSWORD }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = problem(res).await;
    assert_eq!(problem_type(&body), "validation-failed");
    assert_eq!(body["errors"][0]["field"], "email");
    assert!(!body.to_string().contains("Ada Lovelace"));

    let res = app
        .post_json("/v1/auth/register", &json!({ "email": "ada@example.test" }))
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(res).await["errors"][0]["field"], "password");
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_and_the_server_keeps_serving() {
    let boom = warp::path!("test" / "boom")
        .and(warp::get())
        .map(|| -> warp::reply::Response { panic!("deliberate test panic") })
        .boxed();
    let app = TestApp::builder().extra_routes(boom).spawn().await;
    let res = app.get("/test/boom").await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = problem(res).await;
    assert_eq!(problem_type(&body), "internal-error");
    assert!(
        !body.to_string().contains("deliberate"),
        "the panic message leaked: {body}"
    );
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_sane_one_is_echoed() {
    let app = TestApp::spawn().await;
    let res = app.get("/nope").await;
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32);
    let res = app
        .request(Method::GET, "/healthz")
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-42");
}

#[tokio::test]
async fn security_headers_are_set_and_api_answers_are_never_cached() {
    let app = TestApp::builder()
        .setting("CAREWIRE_HSTS_MAX_AGE_SECS", "31536000")
        .spawn()
        .await;
    let patient = app.patient().await;
    let res = app.get_as("/v1/me", &patient.tokens.access).await;
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );

    let plain = TestApp::spawn().await;
    assert!(
        plain
            .get("/healthz")
            .await
            .headers()
            .get("strict-transport-security")
            .is_none()
    );
}

#[tokio::test]
async fn cors_answers_only_the_allowed_origins() {
    let app = TestApp::builder()
        .setting("CAREWIRE_CORS_ORIGINS", "https://app.example.test")
        .spawn()
        .await;
    let preflight = |origin: &'static str| {
        app.request(Method::OPTIONS, "/v1/auth/login")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let res = preflight("https://app.example.test").await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example.test"
    );
    assert!(
        res.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );

    let res = preflight("https://evil.example.test").await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().get("access-control-allow-origin").is_none());

    let res = app
        .request(Method::GET, "/healthz")
        .header("origin", "https://evil.example.test")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    let res = app
        .request(Method::GET, "/healthz")
        .header("origin", "https://app.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example.test"
    );
    assert!(
        res.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes_served() {
    let app = TestApp::spawn().await;
    let res = app.get("/openapi.json").await;
    assert_eq!(res.status(), StatusCode::OK);
    let spec: serde_json::Value = res.json().await.unwrap();
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        spec["openapi"]
    );
    let paths = spec["paths"].as_object().unwrap();
    let table = carewire::api::openapi::route_table();
    let routes = table.routes();
    assert!(
        routes.len() > 40,
        "the route table is read from the document: {routes:?}"
    );
    for route in routes {
        let method = route.method.to_ascii_lowercase();
        assert!(
            paths.get(&*route.path).and_then(|p| p.get(&method)).is_some(),
            "{} {} is served but missing from /openapi.json",
            route.method,
            route.path
        );
    }
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            assert!(
                routes
                    .iter()
                    .any(|r| &*r.path == path && r.method.eq_ignore_ascii_case(method)),
                "/openapi.json documents {method} {path}, which the route table does not list"
            );
        }
    }
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
    assert!(spec["components"]["schemas"]["AppointmentView"].is_object());
    // A closed schema inside an allOf forbids the other members' fields: no body could
    // be valid (seen: NewProvider, found by schemathesis).
    let schemas = spec["components"]["schemas"].as_object().unwrap();
    for (name, schema) in schemas {
        for member in schema["allOf"].as_array().into_iter().flatten() {
            let resolved = member["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .map_or(member, |target| &schemas[target]);
            assert_ne!(
                resolved["additionalProperties"],
                serde_json::json!(false),
                "{name} combines a closed schema in allOf: no value can satisfy it"
            );
        }
    }
}

#[tokio::test]
async fn every_route_in_the_route_table_is_served() {
    let app = TestApp::spawn().await;
    for route in carewire::api::openapi::route_table().routes() {
        let path = route
            .path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    uuid::Uuid::new_v4().to_string()
                } else {
                    segment.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let method = Method::from_bytes(route.method.as_bytes()).unwrap();
        let res = app.request(method, &path).send().await.unwrap();
        assert_ne!(
            res.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{} {}",
            route.method,
            route.path
        );
        if res.status() == StatusCode::NOT_FOUND {
            let body = problem(res).await;
            assert_ne!(
                problem_type(&body),
                "route-not-found",
                "{} {}",
                route.method,
                route.path
            );
        }
    }
}

/// A server that reaches its database through a proxy the test can cut, with this
/// acquire timeout and sessions checked on every request.
async fn behind_a_proxy(acquire_timeout_ms: &str) -> (support::proxy::DbProxy, TestApp) {
    let proxy = support::proxy::DbProxy::start(support::database::backend().target.clone()).await;
    let app = TestApp::builder()
        .via_proxy(proxy.port)
        .setting("CAREWIRE_DB_ACQUIRE_TIMEOUT_MS", acquire_timeout_ms)
        .setting("CAREWIRE_SESSION_CHECK_TTL_MS", "0")
        .spawn()
        .await;
    (proxy, app)
}

#[tokio::test]
async fn a_lost_database_answers_503_quickly_and_the_server_recovers_by_itself() {
    let (proxy, app) = behind_a_proxy("300").await;
    let patient = app.patient().await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);

    proxy.cut();
    // A client that waits no longer than a few seconds still gets its answer.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let res = client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("answered while the database is down");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(problem_type(&problem(res).await), "service-unavailable");
    let res = client
        .get(app.url("/v1/me"))
        .bearer_auth(&patient.tokens.access)
        .send()
        .await
        .expect("answered while the database is down");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);

    proxy.restore();
    let mut recovered = false;
    for _ in 0..50 {
        if app.get("/readyz").await.status() == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the server did not recover after the database came back"
    );
    assert_eq!(
        app.get_as("/v1/me", &patient.tokens.access).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn while_the_database_is_down_requests_fail_fast_instead_of_waiting_for_a_connection() {
    // An acquire timeout far longer than any client waits: only the breaker can answer.
    let (proxy, app) = behind_a_proxy("600000").await;
    let patient = app.patient().await;
    proxy.cut();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // The first requests find out that connecting fails; every one is answered.
    for _ in 0..20 {
        let res = client
            .get(app.url("/v1/me"))
            .bearer_auth(&patient.tokens.access)
            .send()
            .await
            .expect("answered while the database is down");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()["retry-after"], "1");
        assert_eq!(problem_type(&problem(res).await), "service-unavailable");
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("db_breaker_open 1"), "{metrics}");

    proxy.restore();
    let mut recovered = false;
    for _ in 0..100 {
        let res = client
            .get(app.url("/v1/me"))
            .bearer_auth(&patient.tokens.access)
            .send()
            .await
            .expect("answered");
        if res.status() == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recovered,
        "the breaker did not close after the database came back"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("db_breaker_open 0"), "{metrics}");
}

#[tokio::test]
async fn a_database_lost_inside_a_transaction_is_a_503_not_a_500() {
    use diesel::connection::SimpleConnection;
    let (proxy, app) = behind_a_proxy("300").await;
    let (patient, record) = support::booking::patient(&app).await;

    // Hold the audit table so the read's transaction is still open when the link dies.
    // The lock may have to wait for the sealer's transaction, whose statements pass
    // through the proxy on this runtime: wait for it off the runtime, or neither moves.
    let mut holder = app.db.connect();
    let mut holder = tokio::task::spawn_blocking(move || {
        holder
            .batch_execute("BEGIN; LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE;")
            .unwrap();
        holder
    })
    .await
    .unwrap();
    let read = tokio::spawn({
        let request = app
            .request(Method::GET, &format!("/v1/patients/{record}"))
            .bearer_auth(&patient.tokens.access);
        async move { request.send().await }
    });
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity \
        WHERE datname = current_database() AND wait_event_type = 'Lock'";
    for _ in 0..100 {
        if support::booking::count(&app, waiting) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        support::booking::count(&app, waiting) > 0,
        "the read never reached the audit write"
    );
    proxy.cut();
    let res = read.await.unwrap().expect("answered");
    holder.batch_execute("ROLLBACK").unwrap();

    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(problem_type(&problem(res).await), "service-unavailable");
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight_and_refuses_new_ones() {
    let entered = Arc::new(tokio::sync::Notify::new());
    let entered_route = entered.clone();
    let slow = warp::path!("test" / "slow")
        .and(warp::get())
        .then(move || {
            let entered = entered_route.clone();
            async move {
                entered.notify_one();
                tokio::time::sleep(Duration::from_millis(800)).await;
                carewire::http::reply::json(StatusCode::OK, &json!({ "finished": true }))
            }
        })
        .boxed();
    let mut app = TestApp::builder().extra_routes(slow).spawn().await;
    let url = app.url("/test/slow");
    let in_flight = tokio::spawn(async move { reqwest::get(url).await });
    entered.notified().await;
    app.shutdown().await;

    let res = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["finished"], true);
    assert!(
        reqwest::get(app.url("/healthz")).await.is_err(),
        "a new connection was accepted"
    );
}

mod binary {
    //! The real `carewire` binary, as an operator runs it.

    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use crate::support::{self, TestDatabase};

    fn carewire() -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_carewire"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CAREWIRE_JWT_SECRET", support::JWT_SECRET)
            .env("CAREWIRE_KEK", support::KEK)
            .env("CAREWIRE_LOG", "info");
        cmd
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn wait_ready(port: u16, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("carewire exited early with {status}");
            }
            if let Ok(res) = raw_http::get_status(&format!("http://127.0.0.1:{port}/readyz"))
                && res == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("carewire was not ready within 60 s");
    }

    fn terminate(child: &mut Child) -> std::process::ExitStatus {
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "carewire did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A tiny blocking GET, so these tests need no runtime: the status code or an error.
    mod raw_http {
        use std::io::{Read, Write};
        pub fn get_status(url: &str) -> std::io::Result<u16> {
            let rest = url.strip_prefix("http://").unwrap();
            let (host, path) = rest.split_once('/').unwrap();
            let mut stream = std::net::TcpStream::connect(host)?;
            stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
            write!(
                stream,
                "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            )?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            response
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| std::io::Error::other("no status line"))
        }
    }

    #[test]
    fn serve_stops_cleanly_on_sigterm() {
        let db = TestDatabase::create();
        let port = free_port();
        let data = tempfile::tempdir().unwrap();
        let mut child = carewire()
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("CAREWIRE_LISTEN", format!("127.0.0.1:{port}"))
            .env("CAREWIRE_DATA_DIR", data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_ready(port, &mut child);
        let status = terminate(&mut child);
        assert!(status.success(), "exit status {status}");
    }

    #[test]
    fn without_database_url_serve_runs_and_stops_its_own_cluster_and_reuses_it() {
        let data = tempfile::Builder::new()
            .prefix("cw-q")
            .tempdir_in("/tmp")
            .unwrap();
        let pgdata = data.path().join("pg");
        for run in 0..2 {
            let port = free_port();
            let log = data.path().join(format!("serve-{run}.log"));
            let mut child = carewire()
                .arg("serve")
                .env("CAREWIRE_LISTEN", format!("127.0.0.1:{port}"))
                .env("CAREWIRE_DATA_DIR", data.path())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            wait_ready(port, &mut child);
            assert!(
                pgdata.join("postmaster.pid").exists(),
                "the cluster is not running"
            );
            let status = terminate(&mut child);
            assert!(status.success(), "exit status {status}");
            let text = std::fs::read_to_string(&log).unwrap();
            assert_eq!(
                text.matches("using the embedded PostgreSQL cluster").count(),
                1,
                "it should say once which database it uses: {text}"
            );
            assert!(
                !pgdata.join("postmaster.pid").exists(),
                "the cluster was left running"
            );
        }
        // The second start reused the cluster: one set of migrations, applied once.
        let first = std::fs::read_to_string(data.path().join("serve-0.log")).unwrap();
        let second = std::fs::read_to_string(data.path().join("serve-1.log")).unwrap();
        assert!(first.contains("applied database migrations"));
        assert!(!second.contains("applied database migrations"));
        remove_relocated_cluster(&pgdata);
    }

    fn running_as_root() -> bool {
        let out = Command::new("id").arg("-u").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "0"
    }

    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// A folder like a root shell's home or a fresh `mktemp -d`: mode 700.
    fn private_folder() -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("cw-private")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    /// As root the cluster may live under the `postgres` user's home, with `pgdata` a
    /// link to it: remove it too.
    fn remove_relocated_cluster(pgdata: &Path) {
        if let Ok(target) = std::fs::read_link(pgdata)
            && let Some(base) = target.parent()
        {
            let _ = std::fs::remove_dir_all(base);
        }
    }

    #[test]
    fn the_quick_start_serves_from_a_private_folder_without_opening_it_up() {
        let private = private_folder();
        let checkout = private.path().join("carewire");
        std::fs::create_dir(&checkout).unwrap();
        let pgdata = checkout.join(".carewire").join("pg");
        for run in 0..2 {
            let port = free_port();
            let log = private.path().join(format!("serve-{run}.log"));
            // As the quick start says: `serve` in the checkout, no DATABASE_URL, the
            // default data folder.
            let mut child = carewire()
                .arg("serve")
                .current_dir(&checkout)
                .env("CAREWIRE_LISTEN", format!("127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            wait_ready(port, &mut child);
            let status = terminate(&mut child);
            let text = std::fs::read_to_string(&log).unwrap();
            assert!(status.success(), "exit status {status}: {text}");
            if running_as_root() && run == 0 {
                assert!(
                    text.contains("cannot reach the folder asked for")
                        && text.contains(&private.path().display().to_string()),
                    "the log should say why the cluster lives elsewhere, naming the folder in the way: {text}"
                );
            }
            if running_as_root() {
                let target = std::fs::read_link(&pgdata).expect("the data folder links to the cluster");
                assert!(
                    text.contains(&format!("folder={}", target.display())),
                    "the log should say where the cluster is: {text}"
                );
            }
        }
        assert_eq!(mode_of(private.path()), 0o700, "the private folder was opened up");
        let second = std::fs::read_to_string(private.path().join("serve-1.log")).unwrap();
        assert!(
            !second.contains("applied database migrations"),
            "the second start should reuse the cluster: {second}"
        );
        remove_relocated_cluster(&pgdata);
    }

    #[test]
    fn a_failed_first_start_leaves_nothing_behind() {
        use std::os::unix::fs::PermissionsExt;
        let private = private_folder();
        // PostgreSQL binaries whose initdb fails, in a folder anyone can reach.
        let bin = tempfile::Builder::new()
            .prefix("cw-bin")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for (name, script) in [
            (
                "initdb",
                "#!/bin/sh\necho 'initdb: error: the disk is full (simulated)' >&2\nexit 1\n",
            ),
            ("pg_ctl", "#!/bin/sh\nexit 3\n"),
            ("postgres", "#!/bin/sh\nexit 1\n"),
        ] {
            let path = bin.path().join(name);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let output = carewire()
            .arg("serve")
            .current_dir(private.path())
            .env("CAREWIRE_PG_BIN_DIR", bin.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("the disk is full (simulated)"), "{stderr}");
        assert!(
            !private.path().join(".carewire").exists(),
            "the failed start left {} behind",
            private.path().join(".carewire").display()
        );
        // Nor a cluster folder under the `postgres` user's home (where it goes as root).
        let ours = private.path().display().to_string();
        let left: Vec<PathBuf> = std::fs::read_dir("/var/lib/postgresql/carewire")
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| std::fs::read_to_string(p.join("origin")).is_ok_and(|o| o.contains(&ours)))
            .collect();
        assert!(
            left.is_empty(),
            "the failed start left a cluster folder behind: {left:?}"
        );
    }

    #[test]
    fn a_cluster_the_postgres_user_cannot_reach_is_named_with_the_folder_in_the_way() {
        if !running_as_root() {
            return; // Only root hands the cluster to another user.
        }
        let private = private_folder();
        // An existing cluster folder (not empty): never replaced by a new one elsewhere.
        let pgdata = private.path().join(".carewire").join("pg");
        std::fs::create_dir_all(&pgdata).unwrap();
        std::fs::write(pgdata.join("PG_VERSION"), "15\n").unwrap();
        let output = carewire()
            .arg("serve")
            .current_dir(private.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("{} (mode 0700", private.path().display())),
            "the error should name the folder in the way and why: {stderr}"
        );
        assert!(stderr.contains("CAREWIRE_DATA_DIR"), "{stderr}");
        assert!(
            pgdata.join("PG_VERSION").exists(),
            "the existing folder was touched"
        );
        assert_eq!(mode_of(private.path()), 0o700);
    }

    #[test]
    fn without_postgresql_binaries_serve_says_how_to_get_them() {
        let data = tempfile::tempdir().unwrap();
        let empty = tempfile::tempdir().unwrap();
        let output = carewire()
            .arg("serve")
            .env("CAREWIRE_DATA_DIR", data.path())
            .env("CAREWIRE_PG_BIN_DIR", empty.path())
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("apt-get install postgresql"), "{stderr}");
        assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    }

    #[test]
    fn a_start_that_fails_exits_with_1_and_says_why_every_time() {
        use diesel::connection::SimpleConnection;
        let db = TestDatabase::create_empty();
        // A role that may connect but not create tables: migrating fails.
        let role = format!("cw_no_create_{}", std::process::id());
        let mut conn = db.connect();
        conn.batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC"
        ))
        .unwrap();
        let url = support::database::with_param(&db.url, "user", &role);
        let data = tempfile::tempdir().unwrap();
        for attempt in 1..=30 {
            let output = carewire()
                .arg("serve")
                .env("DATABASE_URL", &url)
                .env("CAREWIRE_LISTEN", "127.0.0.1:0")
                .env("CAREWIRE_DATA_DIR", data.path())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(1),
                "attempt {attempt}: {:?}\n{stderr}",
                output.status
            );
            assert!(
                stderr.contains("permission denied"),
                "attempt {attempt}: {stderr}"
            );
        }
        drop(conn);
        drop(db);
        let mut admin = diesel::Connection::establish(&support::database::with_param(
            &support::database::backend().base_url,
            "dbname",
            "postgres",
        ))
        .map(|c: diesel::PgConnection| c);
        if let Ok(admin) = admin.as_mut() {
            let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS {role}"));
        }
    }

    #[test]
    fn a_bad_setting_is_named_and_stops_the_start() {
        let output = carewire()
            .arg("serve")
            .env("CAREWIRE_DB_POOL_SIZE", "many")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("CAREWIRE_DB_POOL_SIZE"), "{stderr}");
    }

    #[test]
    fn migrate_applies_pending_migrations_once() {
        let db = TestDatabase::create_empty();
        let run = || {
            let output = carewire()
                .arg("migrate")
                .env("DATABASE_URL", &db.url)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).to_string()
        };
        assert!(run().contains("Applied"));
        assert!(run().contains("up to date"));
    }

    #[test]
    fn migrate_as_the_owner_grants_a_runtime_role_that_owns_nothing_and_production_refuses_the_owner() {
        use carewire::db::roles;
        use diesel::Connection;
        let db = TestDatabase::create_empty();
        // A role with nothing granted: `migrate` gives it exactly the runtime rights.
        let runtime = support::TestRole::create(&db, "rt", "");
        let runtime_url = runtime.url(&db.url);
        let migrate = |owner: Option<&str>| {
            let mut cmd = carewire();
            cmd.arg("migrate").env("DATABASE_URL", &runtime_url);
            if let Some(owner) = owner {
                cmd.env("CAREWIRE_MIGRATION_DATABASE_URL", owner);
            }
            cmd.output().unwrap()
        };
        // Without the owner's URL the runtime role cannot migrate, and says how to.
        let refused = migrate(None);
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("permission denied"), "{stderr}");
        let output = migrate(Some(&db.url));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("Applied"), "{stdout}");
        assert!(
            stdout.contains(&format!("Granted the runtime role {}", runtime.name)),
            "{stdout}"
        );

        let mut conn = diesel::PgConnection::establish(&runtime_url).unwrap();
        let standing = roles::standing(&mut conn).unwrap();
        assert!(!standing.can_rewrite_audit(), "{standing:?}");
        assert!(carewire::db::pending_migrations(&mut conn).unwrap().is_empty());
        let mut owner = db.connect();
        let standing = roles::standing(&mut owner).unwrap();
        assert!(standing.can_rewrite_audit(), "{standing:?}");

        // Serving as the owner: refused in production, a loud warning elsewhere.
        let serve = |environment: &str, url: &str| {
            let mut child = carewire()
                .arg("serve")
                .env("CAREWIRE_ENVIRONMENT", environment)
                .env("DATABASE_URL", url)
                .env("CAREWIRE_AUDIT_SIGNING_KEY", support::AUDIT_SIGNING_KEY)
                .env("CAREWIRE_LISTEN", "127.0.0.1:0")
                .env("CAREWIRE_DATA_DIR", tempfile::tempdir().unwrap().keep())
                .stderr(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // A server that starts keeps running: stop it after a few seconds.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).to_string()
                    + &String::from_utf8_lossy(&output.stdout),
            )
        };
        let (code, log) = serve("production", &db.url);
        assert_eq!(code, Some(1), "{log}");
        assert!(
            log.contains("is a superuser") && log.contains("in production"),
            "{log}"
        );
        let (code, log) = serve("development", &db.url);
        assert_eq!(code, None, "the development server keeps running: {log}");
        assert!(log.contains("THE DATABASE ROLE IS A SUPERUSER"), "{log}");
        // As the runtime role, production starts, and says nothing of the kind.
        let (code, log) = serve("production", &runtime_url);
        assert_eq!(code, None, "the production server keeps running: {log}");
        assert!(!log.contains("THE DATABASE ROLE"), "{log}");
        assert!(log.contains("listening"), "{log}");
    }

    #[test]
    fn help_explains_each_command() {
        let output = carewire().arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        for command in ["serve", "migrate", "user"] {
            assert!(text.contains(command), "{text}");
        }
        let output = carewire().args(["user", "create", "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.contains("--email") && text.contains("--role") && text.contains("standard input"),
            "{text}"
        );
    }
}

mod hostile_clients {
    //! Clients that send too slowly, too much, or not quite HTTP, over raw sockets so
    //! that nothing normalizes what they send.

    use std::time::Duration;

    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use crate::support::{TestApp, problem_type};

    /// One response as read off the wire.
    struct Raw {
        status: u16,
        head: String,
        body: String,
    }

    impl Raw {
        fn header(&self, name: &str) -> Option<String> {
            self.head.lines().find_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        }

        fn problem(&self) -> Value {
            serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not a problem: {}", self.body))
        }
    }

    async fn connect(app: &TestApp) -> TcpStream {
        TcpStream::connect(app.addr).await.unwrap()
    }

    /// Reads one response (headers and a Content-Length body).
    async fn read_response(stream: &mut TcpStream) -> Raw {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .expect("a response within 10 s")
                .unwrap();
            assert!(
                n > 0,
                "the connection closed before a response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
        let raw = Raw {
            status,
            head,
            body: String::new(),
        };
        let length: usize = raw
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            body.extend_from_slice(&chunk[..n]);
        }
        Raw {
            body: String::from_utf8_lossy(&body[..length]).into_owned(),
            ..raw
        }
    }

    /// Whether the server closes the connection within `within` (EOF or a reset).
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(within, stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => true,
            Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&chunk[..n])),
            Err(_) => false,
        }
    }

    fn app_with(settings: &[(&str, &str)]) -> crate::support::TestAppBuilder {
        settings
            .iter()
            .fold(TestApp::builder(), |b, (name, value)| b.setting(name, value))
    }

    #[tokio::test]
    async fn a_connection_that_stops_mid_request_line_is_closed_after_the_header_timeout() {
        let app = app_with(&[("CAREWIRE_HTTP_HEADER_TIMEOUT_MS", "300")])
            .spawn()
            .await;
        let mut stream = connect(&app).await;
        stream.write_all(b"GET /heal").await.unwrap();
        assert!(
            !closed_within(&mut stream, Duration::from_millis(100)).await,
            "closed before its time"
        );
        assert!(
            closed_within(&mut stream, Duration::from_secs(5)).await,
            "a half request line holds the connection"
        );
        // So is one that trickles its headers, a byte at a time, past the timeout.
        let mut stream = connect(&app).await;
        let mut closed = false;
        for byte in
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
        {
            if stream.write_all(&[*byte]).await.is_err()
                || closed_within(&mut stream, Duration::from_millis(50)).await
            {
                closed = true;
                break;
            }
        }
        assert!(
            closed || closed_within(&mut stream, Duration::from_secs(5)).await,
            "trickled headers hold the connection"
        );
    }

    #[tokio::test]
    async fn a_trickled_body_is_answered_408_and_the_connection_closes() {
        let app = app_with(&[("CAREWIRE_HTTP_BODY_TIMEOUT_MS", "400")])
            .spawn()
            .await;
        let mut stream = connect(&app).await;
        stream
            .write_all(
                b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"email\":",
            )
            .await
            .unwrap();
        let res = read_response(&mut stream).await;
        assert_eq!(res.status, 408, "{}", res.head);
        assert_eq!(problem_type(&res.problem()), "request-timeout");
        assert_eq!(res.header("connection").as_deref(), Some("close"));
        assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn an_idle_connection_closes_after_the_keep_alive_timeout_which_may_exceed_the_header_timeout() {
        let app = app_with(&[
            ("CAREWIRE_HTTP_HEADER_TIMEOUT_MS", "300"),
            ("CAREWIRE_HTTP_KEEP_ALIVE_TIMEOUT_SECS", "2"),
        ])
        .spawn()
        .await;
        let mut stream = connect(&app).await;
        let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        stream.write_all(request).await.unwrap();
        assert_eq!(read_response(&mut stream).await.status, 200);
        // Idle for longer than the header timeout, less than the keep-alive one: the
        // connection still carries the next request.
        tokio::time::sleep(Duration::from_millis(800)).await;
        stream.write_all(request).await.unwrap();
        assert_eq!(read_response(&mut stream).await.status, 200);
        // Then idle past the keep-alive timeout: closed.
        assert!(
            !closed_within(&mut stream, Duration::from_millis(1200)).await,
            "closed before its time"
        );
        assert!(
            closed_within(&mut stream, Duration::from_secs(5)).await,
            "an idle connection stays open"
        );
    }

    #[tokio::test]
    async fn two_hundred_slow_connections_do_not_stop_a_normal_client() {
        let app = TestApp::spawn().await;
        let mut slow = Vec::new();
        for _ in 0..200 {
            let mut stream = connect(&app).await;
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Wait: ")
                .await
                .unwrap();
            slow.push(stream);
        }
        let res = tokio::time::timeout(Duration::from_secs(5), app.get("/healthz"))
            .await
            .expect("a normal client is served while 200 slow ones wait");
        assert_eq!(res.status(), reqwest::StatusCode::OK);
        drop(slow);
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_refused_at_once_with_a_503() {
        let app = app_with(&[("CAREWIRE_HTTP_MAX_CONNECTIONS", "5")]).spawn().await;
        let mut held = Vec::new();
        for _ in 0..5 {
            let mut stream = connect(&app).await;
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            assert_eq!(read_response(&mut stream).await.status, 200);
            held.push(stream);
        }
        let mut extra = connect(&app).await;
        let res = read_response(&mut extra).await;
        assert_eq!(res.status, 503);
        assert_eq!(res.header("retry-after").as_deref(), Some("1"));
        assert_eq!(problem_type(&res.problem()), "service-unavailable");
        assert!(closed_within(&mut extra, Duration::from_secs(2)).await);
        // Once the held ones go, new connections are served again.
        drop(held);
        let mut served = false;
        for _ in 0..50 {
            if app.get("/healthz").await.status() == reqwest::StatusCode::OK {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(served, "the freed places are not reused");
    }

    #[tokio::test]
    async fn request_targets_that_are_not_a_path_are_a_400_problem() {
        let app = TestApp::spawn().await;
        for line in [
            "CONNECT example.org:443 HTTP/1.1",
            "GET healthz HTTP/1.1",
            "GET example.org:443 HTTP/1.1",
            "OPTIONS * HTTP/1.1",
        ] {
            let mut stream = connect(&app).await;
            stream
                .write_all(format!("{line}\r\nHost: example.org\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let res = read_response(&mut stream).await;
            assert_eq!(res.status, 400, "{line}: {}", res.head);
            assert_eq!(problem_type(&res.problem()), "bad-request", "{line}");
        }
        // The absolute form, which proxies send, names a path: served.
        let mut stream = connect(&app).await;
        stream
            .write_all(b"GET http://example.org/healthz HTTP/1.1\r\nHost: example.org\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut stream).await.status, 200);
    }

    #[tokio::test]
    async fn upgrade_is_read_as_a_token_list_by_the_edge_and_the_handshake_alike() {
        let app = TestApp::spawn().await;
        let user = app.patient().await;
        let handshake = |upgrade: &str, version: &str| {
            format!(
                "GET /v1/ws HTTP/{version}\r\nHost: x\r\n{upgrade}Connection: keep-alive, Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Protocol: carewire.v1, bearer.{}\r\n\r\n",
                user.tokens.access
            )
        };
        for upgrade in [
            "Upgrade: foo, websocket\r\n",
            "Upgrade: foo\r\nUpgrade: websocket\r\n",
            "Upgrade: WebSocket/13\r\n",
        ] {
            let mut stream = connect(&app).await;
            stream
                .write_all(handshake(upgrade, "1.1").as_bytes())
                .await
                .unwrap();
            let res = read_response(&mut stream).await;
            assert_eq!(res.status, 101, "{upgrade:?}: {} {}", res.head, res.body);
        }
        // HTTP/1.0 has no upgrade: a plain 400, not a 5xx.
        let mut stream = connect(&app).await;
        stream
            .write_all(handshake("Upgrade: websocket\r\n", "1.0").as_bytes())
            .await
            .unwrap();
        let res = read_response(&mut stream).await;
        assert_eq!(res.status, 400, "{}", res.head);
    }

    #[tokio::test]
    async fn an_early_refusal_says_connection_close_when_the_body_was_not_read() {
        let app = TestApp::spawn().await;
        // No credentials: 401 before the body is read. The client sends the body in a
        // second segment, after the answer, as a client waiting on `100-continue`
        // might; the server must not leave it guessing whether to reuse the connection.
        let body = br#"{"provider_id":"x"}"#;
        let mut stream = connect(&app).await;
        stream
            .write_all(
                format!(
                    "POST /v1/appointments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let res = read_response(&mut stream).await;
        assert_eq!(res.status, 401);
        let _ = stream.write_all(body).await;
        let keeps_alive = res
            .header("connection")
            .is_none_or(|v| !v.eq_ignore_ascii_case("close"));
        if keeps_alive {
            // Then the connection must really carry the next request.
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            assert_eq!(read_response(&mut stream).await.status, 200);
        } else {
            assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
        }
        // A refusal after the body was read keeps the connection for the next request
        // (the token refresh that follows a 401).
        let mut stream = connect(&app).await;
        let login = br#"{"email":"nobody@example.test","password":"not the password at all"}"#;
        stream
            .write_all(
                format!(
                    "POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    login.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        stream.write_all(login).await.unwrap();
        let res = read_response(&mut stream).await;
        assert_eq!(res.status, 401);
        assert_eq!(res.header("connection"), None);
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut stream).await.status, 200);
    }
}
