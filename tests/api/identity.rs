//! Identity and access: registration, login, refresh-token rotation and theft
//! detection, logout, roles, disabling accounts, throttling, the JWT attack matrix,
//! and the CLI that bootstraps the first admin.

use crate::support;
use crate::support::{PASSWORD, TestApp, problem, problem_type, unique_email};
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn a_patient_registers_signs_in_and_sees_their_account() {
    let app = TestApp::spawn().await;
    let email = unique_email("ada");
    let account = app.register(&email.to_uppercase()).await;
    assert_eq!(account["email"], email, "emails are stored normalized");
    assert_eq!(account["role"], "patient");

    let res = app.login(&email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let tokens: Value = res.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert!(tokens["refresh_token"].as_str().unwrap().starts_with("cwr_"));

    let me: Value = app
        .get_as("/v1/me", tokens["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], account["id"]);
    assert_eq!(me["email"], email);
}

#[tokio::test]
async fn an_email_can_register_only_once_whatever_its_case() {
    let app = TestApp::spawn().await;
    let email = unique_email("twice");
    app.register(&email).await;
    let res = app
        .post_json(
            "/v1/auth/register",
            &json!({ "email": email.to_uppercase(), "password": PASSWORD }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(problem(res).await["code"], "email_taken");
}

#[tokio::test]
async fn a_weak_or_common_password_is_refused() {
    let app = TestApp::spawn().await;
    for weak in ["short", "password1234", "qwertyuiopasdf"] {
        let res = app
            .post_json(
                "/v1/auth/register",
                &json!({ "email": unique_email("weak"), "password": weak }),
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{weak} was accepted"
        );
        assert_eq!(problem(res).await["errors"][0]["field"], "password");
    }
}

#[tokio::test]
async fn the_email_is_stored_only_encrypted() {
    use diesel::RunQueryDsl;
    use diesel::sql_types::Bytea;

    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bytea)]
        email_enc: Vec<u8>,
        #[diesel(sql_type = Bytea)]
        email_bidx: Vec<u8>,
    }

    let app = TestApp::spawn().await;
    let email = unique_email("secret");
    app.register(&email).await;
    let rows: Vec<Row> = diesel::sql_query("SELECT email_enc, email_bidx FROM accounts")
        .load(&mut app.db.connect())
        .unwrap();
    assert_eq!(rows.len(), 1);
    let needle = email.as_bytes();
    for bytes in [&rows[0].email_enc, &rows[0].email_bidx] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the email is stored in clear"
        );
    }
    assert_eq!(rows[0].email_enc[0], 1, "sealed-field format version");
}

#[tokio::test]
async fn an_unknown_email_and_a_wrong_password_get_the_same_answer() {
    let app = TestApp::spawn().await;
    let email = unique_email("known");
    app.register(&email).await;
    let wrong = app.login(&email, "not the right password at all").await;
    let unknown = app.login(&unique_email("nobody"), PASSWORD).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.headers()["www-authenticate"],
        unknown.headers()["www-authenticate"]
    );
    assert_eq!(problem(wrong).await, problem(unknown).await);
}

#[tokio::test]
async fn refreshing_rotates_the_refresh_token() {
    let app = TestApp::spawn().await;
    let patient = app.patient().await;
    let res = app
        .post_json(
            "/v1/auth/refresh",
            &json!({ "refresh_token": patient.tokens.refresh }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let fresh: Value = res.json().await.unwrap();
    assert_ne!(fresh["refresh_token"], patient.tokens.refresh.as_str());
    let access = fresh["access_token"].as_str().unwrap();
    assert_eq!(app.get_as("/v1/me", access).await.status(), StatusCode::OK);

    let res = app
        .post_json(
            "/v1/auth/refresh",
            &json!({ "refresh_token": fresh["refresh_token"] }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK, "the new refresh token works once");
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_family() {
    let app = TestApp::spawn().await;
    let patient = app.patient().await;
    let stolen = patient.tokens.refresh.clone();
    let fresh: Value = app
        .post_json("/v1/auth/refresh", &json!({ "refresh_token": stolen }))
        .await
        .json()
        .await
        .unwrap();

    // The thief (or the victim) presents the already-rotated token.
    let res = app
        .post_json("/v1/auth/refresh", &json!({ "refresh_token": stolen }))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Every token of the family is dead: the newest refresh token and the access tokens.
    let res = app
        .post_json(
            "/v1/auth/refresh",
            &json!({ "refresh_token": fresh["refresh_token"] }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let access = fresh["access_token"].as_str().unwrap();
    assert_eq!(
        app.get_as("/v1/me", access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get_as("/v1/me", &patient.tokens.access).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Other sessions of the same account are unaffected.
    let other = app.tokens(&patient.email).await;
    assert_eq!(app.get_as("/v1/me", &other.access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_let_at_most_one_through() {
    let app = TestApp::spawn().await;
    let patient = app.patient().await;
    let body = json!({ "refresh_token": patient.tokens.refresh });
    let (a, b) = tokio::join!(
        app.post_json("/v1/auth/refresh", &body),
        app.post_json("/v1/auth/refresh", &body)
    );
    let ok = [a.status(), b.status()]
        .iter()
        .filter(|s| **s == StatusCode::OK)
        .count();
    assert!(ok <= 1, "both refreshes succeeded");
}

#[tokio::test]
async fn logout_ends_the_session_and_its_tokens() {
    let app = TestApp::spawn().await;
    let patient = app.patient().await;
    let res = app
        .post_as("/v1/auth/logout", &patient.tokens.access, &json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    app.assert_signed_out(&patient).await;
}

#[tokio::test]
async fn only_admins_create_accounts_and_they_can_create_providers() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let patient = app.patient().await;
    let email = unique_email("dr.house");
    let body = json!({ "email": email, "password": PASSWORD, "role": "provider" });

    let res = app.post_json("/v1/admin/users", &body).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app
        .post_as("/v1/admin/users", &patient.tokens.access, &body)
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem_type(&problem(res).await), "forbidden");

    let res = app.post_as("/v1/admin/users", &admin.tokens.access, &body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["role"], "provider");
    let provider = app.tokens(&email).await;
    let me: Value = app.get_as("/v1/me", &provider.access).await.json().await.unwrap();
    assert_eq!(me["role"], "provider");

    let res = app
        .post_as(
            "/v1/admin/users",
            &admin.tokens.access,
            &json!({ "email": unique_email("x"), "password": PASSWORD, "role": "superuser" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(res).await["errors"][0]["field"], "role");
}

async fn me(app: &TestApp, token: &str) -> Value {
    let res = app.get_as("/v1/me", token).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

#[tokio::test]
async fn me_names_the_patients_own_record_once_they_have_created_it() {
    let app = TestApp::spawn().await;
    let patient = app.patient().await;
    let before = me(&app, &patient.tokens.access).await;
    assert_eq!(before["id"], patient.id.as_str());
    // No record yet: the client knows the patient must create one before booking.
    assert!(before.get("patient_id").is_none(), "{before}");
    assert!(before.get("provider_id").is_none(), "{before}");

    let res = app
        .post_as(
            "/v1/patients",
            &patient.tokens.access,
            &support::booking::patient_body("me"),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let record: Value = res.json().await.unwrap();
    let after = me(&app, &patient.tokens.access).await;
    assert_eq!(after["patient_id"], record["id"]);
    assert_ne!(
        after["patient_id"], after["id"],
        "the record's id, not the account's"
    );
    // ...and it is the id that reads their record.
    let res = app
        .get_as(
            &format!("/v1/patients/{}", after["patient_id"].as_str().unwrap()),
            &patient.tokens.access,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);

    // A record a provider creates for someone else is not the provider's own.
    let provider = app.user_with_role(carewire::context::Role::Provider).await;
    let res = app
        .post_as(
            "/v1/patients",
            &provider.tokens.access,
            &support::booking::patient_body("other"),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(
        me(&app, &provider.tokens.access)
            .await
            .get("patient_id")
            .is_none()
    );
}

#[tokio::test]
async fn me_names_a_providers_public_profile_once_it_exists() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let provider = app.user_with_role(carewire::context::Role::Provider).await;
    let before = me(&app, &provider.tokens.access).await;
    assert_eq!(before["role"], "provider");
    assert!(before.get("provider_id").is_none(), "no profile yet: {before}");

    let res = app
        .post_as(
            "/v1/providers",
            &admin.tokens.access,
            &json!({ "account_id": provider.id, "display_name": "Dr Who", "time_zone": "UTC" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let after = me(&app, &provider.tokens.access).await;
    let provider_id = after["provider_id"].as_str().unwrap();
    assert!(after.get("patient_id").is_none(), "{after}");
    // It is the id the provider directory and calendar use.
    let res = app.get(&format!("/v1/providers/{provider_id}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["display_name"], "Dr Who");

    // Admins have neither.
    let admin_me = me(&app, &admin.tokens.access).await;
    assert!(admin_me.get("patient_id").is_none() && admin_me.get("provider_id").is_none());

    // The OpenAPI document describes both.
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let schema = spec["components"]["schemas"]["MeView"].to_string();
    assert!(
        schema.contains("patient_id") && schema.contains("provider_id"),
        "{schema}"
    );
    let me_ref = spec["paths"]["/v1/me"]["get"]["responses"]["200"].to_string();
    assert!(me_ref.contains("MeView"), "{me_ref}");
}

#[tokio::test]
async fn disabling_an_account_stops_its_tokens_at_once_and_its_logins() {
    let app = TestApp::builder()
        .setting("CAREWIRE_SESSION_CHECK_TTL_MS", "60000")
        .spawn()
        .await;
    let admin = app.admin().await;
    let patient = app.patient().await;
    // Warm the session cache: the revocation must beat it.
    assert_eq!(
        app.get_as("/v1/me", &patient.tokens.access).await.status(),
        StatusCode::OK
    );

    let res = app
        .post_as(
            &format!("/v1/admin/users/{}/disable", patient.id),
            &admin.tokens.access,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.json::<Value>().await.unwrap()["disabled_at"].is_string());

    app.assert_signed_out(&patient).await;
    assert_eq!(
        app.login(&patient.email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_admin_cannot_disable_themselves_and_unknown_accounts_are_404() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let res = app
        .post_as(
            &format!("/v1/admin/users/{}/disable", admin.id),
            &admin.tokens.access,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(problem(res).await["code"], "cannot_disable_self");
    let res = app
        .post_as(
            &format!("/v1/admin/users/{}/disable", uuid::Uuid::new_v4()),
            &admin.tokens.access,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn too_many_login_attempts_are_throttled_with_retry_after() {
    let app = TestApp::builder()
        .setting("CAREWIRE_LOGIN_MAX_PER_ACCOUNT", "3")
        .setting("CAREWIRE_LOGIN_WINDOW_SECS", "600")
        .spawn()
        .await;
    let email = unique_email("target");
    app.register(&email).await;
    for _ in 0..3 {
        assert_eq!(
            app.login(&email, "wrong password attempt").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let res = app.login(&email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry_after));
    assert_eq!(problem_type(&problem(res).await), "too-many-requests");
    // Unknown emails are throttled the same way, so throttling reveals nothing.
    let ghost = unique_email("ghost");
    for _ in 0..3 {
        app.login(&ghost, PASSWORD).await;
    }
    assert_eq!(
        app.login(&ghost, PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn too_many_attempts_from_one_address_are_throttled() {
    let app = TestApp::builder()
        .setting("CAREWIRE_LOGIN_MAX_PER_IP", "4")
        .spawn()
        .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(app.login(&unique_email("spray"), PASSWORD).await.status());
    }
    assert_eq!(statuses[..4], [StatusCode::UNAUTHORIZED; 4]);
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS);
}

mod jwt_attacks {
    //! Every forged or unusable access token is a 401, never a 200 or a 500.

    use super::*;

    fn b64(data: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
    }

    fn hmac_sign(alg: &str, secret: &[u8], header: &Value, claims: &Value) -> String {
        use hmac::{KeyInit, Mac};
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = match alg {
            "HS512" => {
                let mut mac = <hmac::Hmac<sha2::Sha512> as KeyInit>::new_from_slice(secret).unwrap();
                mac.update(signing_input.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            _ => {
                let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).unwrap();
                mac.update(signing_input.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
        };
        format!("{signing_input}.{}", b64(&signature))
    }

    /// The claims of `valid`, with `change` applied.
    fn claims_of(valid: &str, change: impl FnOnce(&mut Value)) -> Value {
        let payload = valid.split('.').nth(1).unwrap();
        let mut claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        change(&mut claims);
        claims
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[tokio::test]
    async fn forged_and_unusable_tokens_are_all_401() {
        let app = TestApp::spawn().await;
        let patient = app.patient().await;
        let valid = patient.tokens.access.clone();
        let secret = support::JWT_SECRET.as_bytes();
        let hs256 = json!({ "alg": "HS256", "typ": "JWT" });
        let same = claims_of(&valid, |_| {});

        let cases: Vec<(&str, String)> = vec![
            ("alg none", {
                let header = json!({ "alg": "none", "typ": "JWT" });
                format!(
                    "{}.{}.",
                    b64(header.to_string().as_bytes()),
                    b64(same.to_string().as_bytes())
                )
            }),
            (
                "algorithm swap to HS512 with the right secret",
                hmac_sign("HS512", secret, &json!({ "alg": "HS512", "typ": "JWT" }), &same),
            ),
            (
                "RS256 header over an HMAC signature",
                hmac_sign("HS256", secret, &json!({ "alg": "RS256", "typ": "JWT" }), &same),
            ),
            ("bad signature", {
                let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
                parts[2] = b64(&[0u8; 32]);
                parts.join(".")
            }),
            (
                "signed with another secret",
                hmac_sign("HS256", b"another-secret-another-secret-another", &hs256, &same),
            ),
            (
                "elevated role with a forged signature",
                hmac_sign(
                    "HS256",
                    b"guess",
                    &hs256,
                    &claims_of(&valid, |c| c["role"] = json!("admin")),
                ),
            ),
            (
                "expired",
                hmac_sign(
                    "HS256",
                    secret,
                    &hs256,
                    &claims_of(&valid, |c| {
                        c["exp"] = json!(now() - 120);
                        c["iat"] = json!(now() - 1000);
                        c["nbf"] = json!(now() - 1000);
                    }),
                ),
            ),
            (
                "not yet valid",
                hmac_sign(
                    "HS256",
                    secret,
                    &hs256,
                    &claims_of(&valid, |c| c["nbf"] = json!(now() + 600)),
                ),
            ),
            (
                "wrong audience",
                hmac_sign(
                    "HS256",
                    secret,
                    &hs256,
                    &claims_of(&valid, |c| c["aud"] = json!("someone-else")),
                ),
            ),
            (
                "wrong issuer",
                hmac_sign(
                    "HS256",
                    secret,
                    &hs256,
                    &claims_of(&valid, |c| c["iss"] = json!("evil")),
                ),
            ),
            (
                "missing exp",
                hmac_sign(
                    "HS256",
                    secret,
                    &hs256,
                    &claims_of(&valid, |c| {
                        c.as_object_mut().unwrap().remove("exp");
                    }),
                ),
            ),
            (
                "unknown session",
                hmac_sign(
                    "HS256",
                    secret,
                    &hs256,
                    &claims_of(&valid, |c| c["sid"] = json!(uuid::Uuid::new_v4())),
                ),
            ),
            ("garbage", "not.a.jwt".to_owned()),
            ("empty", String::new()),
        ];
        for (name, token) in cases {
            let res = app
                .request(reqwest::Method::GET, "/v1/me")
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{name}");
            assert_eq!(problem_type(&problem(res).await), "unauthorized", "{name}");
        }
        // The genuine token still works: the cases failed for their flaw alone.
        assert_eq!(app.get_as("/v1/me", &valid).await.status(), StatusCode::OK);
        // A signature over the genuine claims with the real secret is accepted, which
        // shows the forging helper itself is sound.
        let resigned = hmac_sign("HS256", secret, &hs256, &same);
        assert_eq!(app.get_as("/v1/me", &resigned).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_missing_or_malformed_authorization_header_is_401() {
        let app = TestApp::spawn().await;
        assert_eq!(app.get("/v1/me").await.status(), StatusCode::UNAUTHORIZED);
        let res = app
            .request(reqwest::Method::GET, "/v1/me")
            .header("authorization", "Basic YWRhOnB3")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(
            res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }
}

mod cli {
    //! `carewire user create` bootstraps accounts without the API.

    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::*;

    fn user_create(app: &TestApp, email: &str, role: &str, password: &str) -> std::process::Output {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_carewire"))
            .args(["user", "create", "--email", email, "--role", role])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &app.db.url)
            .env("CAREWIRE_KEK", support::KEK)
            .env("CAREWIRE_JWT_SECRET", support::JWT_SECRET)
            .env("CAREWIRE_DATA_DIR", data.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    }

    #[tokio::test]
    async fn the_first_admin_is_created_from_the_command_line_and_can_sign_in() {
        let app = TestApp::spawn().await;
        let email = unique_email("root");
        let output = user_create(&app, &email, "admin", PASSWORD);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("Created admin account"));

        let tokens = app.tokens(&email).await;
        let me: Value = app.get_as("/v1/me", &tokens.access).await.json().await.unwrap();
        assert_eq!(me["role"], "admin");

        let again = user_create(&app, &email, "provider", PASSWORD);
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    }

    #[tokio::test]
    async fn a_weak_password_on_the_command_line_is_refused() {
        let app = TestApp::spawn().await;
        let output = user_create(&app, &unique_email("weak"), "provider", "password");
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("password"));
        assert!(
            output.stdout.is_empty(),
            "nothing is created, so nothing is reported"
        );
    }
}
