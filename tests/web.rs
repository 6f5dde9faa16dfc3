//! The browser client against a real server: the client's files served from the
//! binary at `/` (content types, policies, revalidation, no traversal, the API's 404s
//! untouched, switched off by `CAREWIRE_WEB_CLIENT=false`).

#![allow(clippy::unwrap_used, reason = "tests unwrap: a panic is a failed assertion")]

mod support;

use carewire::http::web::{self, ASSETS};
use reqwest::{Method, StatusCode};
use support::{TestApp, problem, problem_type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn index() -> &'static web::Asset {
    web::find(web::INDEX).expect("web/index.html is embedded")
}

/// One of the client's scripts (the client's files change; the tests should not).
fn script() -> &'static web::Asset {
    web::find("/js/app.js")
        .or_else(|| ASSETS.iter().find(|a| a.path.ends_with(".js")))
        .expect("the client's scripts are embedded")
}

/// Sends `GET <target>` exactly as written: HTTP clients normalize `..` and `%2e%2e`
/// away before sending, which would hide what the server does with them.
async fn raw_get(app: &TestApp, target: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        app.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

#[tokio::test]
async fn the_root_serves_the_client_page_with_its_policies() {
    let app = TestApp::spawn().await;
    let res = app.get("/").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-type"), "text/html; charset=utf-8");
    assert_eq!(
        header(&res, "content-security-policy"),
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
         frame-ancestors 'none'; form-action 'self'"
    );
    assert_eq!(
        header(&res, "permissions-policy"),
        "camera=(self), microphone=(self), display-capture=(), geolocation=()"
    );
    // Always revalidated (the files are not fingerprinted), never `no-store`.
    assert_eq!(header(&res, "cache-control"), "no-cache");
    // The edge's headers are there as on every response.
    assert_eq!(header(&res, "x-content-type-options"), "nosniff");
    assert_eq!(header(&res, "x-frame-options"), "DENY");
    assert!(!header(&res, "x-request-id").is_empty());
    assert_eq!(res.bytes().await.unwrap().as_ref(), index().bytes);

    // The same document under its own name.
    let res = app.get("/index.html").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(!header(&res, "content-security-policy").is_empty());
    assert_eq!(res.bytes().await.unwrap().as_ref(), index().bytes);
}

#[tokio::test]
async fn every_embedded_file_is_served_with_its_content_type() {
    let app = TestApp::spawn().await;
    let _ = (index(), script()); // the page and its scripts are embedded
    for asset in ASSETS {
        let res = app.get(asset.path).await;
        assert_eq!(res.status(), StatusCode::OK, "{}", asset.path);
        let expected = match asset.path.rsplit_once('.').map(|(_, ext)| ext) {
            Some("html") => "text/html; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("js" | "mjs") => "text/javascript; charset=utf-8",
            Some("svg") => "image/svg+xml",
            Some("png") => "image/png",
            Some("json") => "application/json",
            Some("webmanifest") => "application/manifest+json",
            other => panic!(
                "{} has an extension the server should not embed: {other:?}",
                asset.path
            ),
        };
        assert_eq!(header(&res, "content-type"), expected, "{}", asset.path);
        assert_eq!(header(&res, "cache-control"), "no-cache", "{}", asset.path);
        assert!(
            header(&res, "etag").starts_with('"'),
            "{}: a strong ETag",
            asset.path
        );
        // The page's policy is the page's: scripts and styles do not carry it.
        assert_eq!(
            res.headers().contains_key("content-security-policy"),
            expected.starts_with("text/html"),
            "{}",
            asset.path
        );
        assert_eq!(res.bytes().await.unwrap().as_ref(), asset.bytes, "{}", asset.path);
    }
}

#[tokio::test]
async fn a_browser_revalidating_an_unchanged_file_gets_a_304_without_a_body() {
    let app = TestApp::spawn().await;
    let first = app.get(script().path).await;
    assert_eq!(first.status(), StatusCode::OK);
    let etag = header(&first, "etag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );
    assert_eq!(header(&app.get(script().path).await, "etag"), etag, "stable");

    let res = app
        .request(Method::GET, script().path)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&res, "etag"), etag);
    assert_eq!(header(&res, "cache-control"), "no-cache");
    assert!(res.bytes().await.unwrap().is_empty());

    // A tag of other content (an older version) gets the file.
    let res = app
        .request(Method::GET, script().path)
        .header("if-none-match", "\"0123456789abcdef\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().as_ref(), script().bytes);

    // Files with different content have different tags.
    let page = app.get("/").await;
    let page_tag = header(&page, "etag").to_owned();
    assert_ne!(index().bytes, script().bytes);
    assert_ne!(page_tag, etag);
    let res = app
        .request(Method::GET, "/")
        .header("if-none-match", &page_tag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn head_answers_the_headers_without_the_body() {
    let app = TestApp::spawn().await;
    let res = app.request(Method::HEAD, "/").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&res, "content-length"), index().bytes.len().to_string());
    assert!(!header(&res, "etag").is_empty());
    assert!(!header(&res, "content-security-policy").is_empty());
    assert!(res.bytes().await.unwrap().is_empty());

    let res = app.request(Method::HEAD, script().path).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(header(&res, "content-length"), script().bytes.len().to_string());
    assert!(res.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn unknown_paths_folders_and_other_methods_stay_route_not_found() {
    let app = TestApp::spawn().await;
    for path in [
        "/no-such-page.html",
        "/js/no-such.js",
        "/js",
        "/js/",
        "/INDEX.HTML",
        "/index.html/",
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(problem_type(&problem(res).await), "route-not-found", "{path}");
    }
    // The client's files are read-only.
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let res = app.request(method.clone(), "/").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{method} /");
        assert_eq!(problem_type(&problem(res).await), "route-not-found");
    }
}

#[tokio::test]
async fn path_traversal_attempts_find_nothing() {
    let app = TestApp::spawn().await;
    for target in [
        "/js/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/js/%2e%2e/%2e%2e/Cargo.toml",
        "/..%2fCargo.toml",
        "//etc/passwd",
        "/./index.html",
        "/js/./app.js",
        "/%69ndex.html",
        "/js%2fapp.js",
    ] {
        let (status, text) = raw_get(&app, target).await;
        assert_eq!(status, 404, "{target}: {text}");
        assert!(text.contains("application/problem+json"), "{target}: {text}");
        assert!(text.contains("route-not-found"), "{target}: {text}");
        assert!(
            !text.contains("[package]") && !text.contains("root:"),
            "{target} leaked a file"
        );
    }
    // The same client, with a clean path, does get the file.
    let (status, _) = raw_get(&app, script().path).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_api_keeps_its_own_not_found_and_its_no_store() {
    let app = TestApp::spawn().await;
    for path in ["/v1/unknown", "/v1/", "/v1", "/v1/index.html", "/v1/js/app.js"] {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        if path.starts_with("/v1/") {
            assert_eq!(header(&res, "cache-control"), "no-store", "{path}");
        }
        assert!(!res.headers().contains_key("content-security-policy"), "{path}");
        assert_eq!(problem_type(&problem(res).await), "route-not-found", "{path}");
    }
    // API routes are untouched by the client's routes.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/me").await.status(), StatusCode::UNAUTHORIZED);
    let res = app
        .request(Method::DELETE, "/v1/auth/login")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&res, "allow"), "POST");
}

#[tokio::test]
async fn the_clients_files_share_one_metrics_label_never_their_paths() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get(script().path).await.status(), StatusCode::OK);
    assert_eq!(app.get("/").await.status(), StatusCode::OK);
    assert_eq!(
        app.get("/no-such-file-for-metrics.js").await.status(),
        StatusCode::NOT_FOUND
    );
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(&format!(
            r#"http_requests_total{{method="GET",route="{}",status="200"}}"#,
            web::ROUTE_LABEL
        )),
        "{text}"
    );
    assert!(!text.contains(&format!(r#"route="{}""#, script().path)), "{text}");
    assert!(!text.contains("no-such-file-for-metrics"), "{text}");
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="unmatched",status="404"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn with_the_web_client_off_nothing_is_served_but_the_api() {
    let app = TestApp::builder()
        .setting("CAREWIRE_WEB_CLIENT", "false")
        .spawn()
        .await;
    for path in ["/", web::INDEX, script().path] {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(problem_type(&problem(res).await), "route-not-found", "{path}");
    }
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/providers").await.status(), StatusCode::OK);
}
