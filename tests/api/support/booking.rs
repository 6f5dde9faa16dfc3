//! Arranging scheduling data through the public API: a clinic (admin, provider with
//! weekly hours and a type), patients with records, slots and bookings.

use chrono::{DateTime, Duration, Utc};
use diesel::RunQueryDsl;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{TestApp, User};
use carewire::context::Role;

/// A provider with a profile, weekly hours and one appointment type, and an admin.
pub struct Clinic {
    pub admin: User,
    pub provider: User,
    pub type_id: String,
}

pub fn patient_body(tag: &str) -> Value {
    json!({
        "legal_name": { "given": format!("Pat{tag}"), "family": format!("Doe{tag}") },
        "birth_date": "1990-04-01",
    })
}

pub async fn provider_with_profile(app: &TestApp, admin: &User, zone: &str) -> User {
    let provider = app.user_with_role(Role::Provider).await;
    let res = app
        .post_as(
            "/v1/providers",
            &admin.tokens.access,
            &json!({ "account_id": provider.id, "display_name": "Dr Calendar", "specialty": "General practice", "time_zone": zone }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    provider
}

pub async fn set_weekly(app: &TestApp, provider: &User, start: &str, end: &str) {
    let windows = carewire::scheduling::availability::every_day(start, end);
    let res = app
        .request(
            Method::PUT,
            &format!("/v1/providers/{}/availability/weekly", provider.id),
        )
        .bearer_auth(&provider.tokens.access)
        .json(&json!({ "windows": windows }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

pub async fn add_type(app: &TestApp, provider: &User, extra: Value) -> String {
    let mut body = json!({ "name": "Consultation", "duration_minutes": 30, "modality": "video", "booking_horizon_days": 730 });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let res = app
        .post_as(
            &format!("/v1/providers/{}/appointment-types", provider.id),
            &provider.tokens.access,
            &body,
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub async fn clinic(app: &TestApp) -> Clinic {
    let admin = app.admin().await;
    let provider = provider_with_profile(app, &admin, "UTC").await;
    set_weekly(app, &provider, "00:00", "23:59").await;
    let type_id = add_type(app, &provider, json!({})).await;
    Clinic {
        admin,
        provider,
        type_id,
    }
}

/// A patient with an account and their own record.
pub async fn patient(app: &TestApp) -> (User, String) {
    let user = app.patient().await;
    let res = app
        .post_as("/v1/patients", &user.tokens.access, &patient_body(&user.id[..8]))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (user, id)
}

pub async fn slots(
    app: &TestApp,
    provider: &str,
    type_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Value> {
    let res = app
        .get(&format!(
            "/v1/providers/{provider}/slots?type={type_id}&from={}&to={}",
            from.to_rfc3339().replace('+', "%2B"),
            to.to_rfc3339().replace('+', "%2B")
        ))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["slots"]
        .as_array()
        .unwrap()
        .clone()
}

/// A free slot start, a few days ahead.
pub async fn free_slot(app: &TestApp, c: &Clinic, days_ahead: i64) -> String {
    let from = Utc::now() + Duration::days(days_ahead);
    let found = slots(app, &c.provider.id, &c.type_id, from, from + Duration::days(1)).await;
    found[0]["starts_at"].as_str().unwrap().to_owned()
}

pub async fn book(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.post_as("/v1/appointments", token, &body).await
}

pub async fn book_ok(app: &TestApp, token: &str, body: Value) -> Value {
    let res = book(app, token, body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

pub async fn act(
    app: &TestApp,
    token: &str,
    appointment: &Value,
    action: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app
        .request(
            Method::POST,
            &format!(
                "/v1/appointments/{}/{action}",
                appointment["id"].as_str().unwrap()
            ),
        )
        .bearer_auth(token)
        .header("if-match", format!("\"{}\"", appointment["version"]));
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

pub fn count(app: &TestApp, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql)
        .get_result::<N>(&mut app.db.connect())
        .unwrap()
        .n
}
