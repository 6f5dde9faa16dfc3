//! Scheduling against a real server: providers, types, availability and slots (DST
//! included), booking and holds, the state machine over HTTP, no double booking under
//! concurrency, idempotent retries, the access matrix, and the outbox.

use crate::support;
use crate::support::booking::{
    act, add_type, book, book_ok, clinic, count, free_slot, patient, patient_body, provider_with_profile,
    set_weekly, slots,
};
use crate::support::{TestApp, User, problem, problem_type};
use carewire::context::Role;
use chrono::{DateTime, Duration, Utc};
use diesel::RunQueryDsl;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn providers_are_created_by_admins_public_and_edited_by_themselves() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let provider = provider_with_profile(&app, &admin, "Europe/Berlin").await;
    let listed: Value = app.get("/v1/providers").await.json().await.unwrap();
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == provider.id.as_str())
    );
    let res = app.get(&format!("/v1/providers/{}", provider.id)).await;
    assert_eq!(res.headers()["etag"], "\"1\"");
    assert_eq!(res.json::<Value>().await.unwrap()["time_zone"], "Europe/Berlin");

    let patch = |token: String, tag: &'static str| {
        app.request(Method::PATCH, &format!("/v1/providers/{}", provider.id))
            .bearer_auth(token)
            .header("if-match", tag)
            .json(&json!({ "bio": "Family medicine" }))
            .send()
    };
    let other = provider_with_profile(&app, &admin, "UTC").await;
    let res = patch(other.tokens.access.clone(), "\"1\"").await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem(res).await["code"], "not_own_calendar");
    assert_eq!(
        patch(provider.tokens.access.clone(), "\"1\"")
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        patch(provider.tokens.access.clone(), "\"1\"")
            .await
            .unwrap()
            .status(),
        StatusCode::PRECONDITION_FAILED
    );

    // Only provider accounts get profiles, once; time zones must be real.
    let res = app
        .post_as(
            "/v1/providers",
            &admin.tokens.access,
            &json!({ "account_id": admin.id, "display_name": "X", "time_zone": "UTC" }),
        )
        .await;
    assert_eq!(problem(res).await["errors"][0]["field"], "account_id");
    let res = app
        .post_as(
            "/v1/providers",
            &admin.tokens.access,
            &json!({ "account_id": provider.id, "display_name": "X", "time_zone": "UTC" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let fresh = app.user_with_role(Role::Provider).await;
    let res = app
        .post_as(
            "/v1/providers",
            &admin.tokens.access,
            &json!({ "account_id": fresh.id, "display_name": "X", "time_zone": "Mars/Olympus" }),
        )
        .await;
    assert_eq!(problem(res).await["errors"][0]["field"], "time_zone");
}

#[tokio::test]
async fn free_text_with_nul_or_control_characters_is_a_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let account = app.user_with_role(Role::Provider).await;
    let create = |body: Value| {
        let (app, token) = (&app, c.admin.tokens.access.clone());
        async move { app.post_as("/v1/providers", &token, &body).await }
    };
    for (field, body) in [
        (
            "display_name",
            json!({ "account_id": account.id, "display_name": "Dr\u{0}Lee", "time_zone": "UTC" }),
        ),
        (
            "display_name",
            json!({ "account_id": account.id, "display_name": "Dr\nLee", "time_zone": "UTC" }),
        ),
        (
            "bio",
            json!({ "account_id": account.id, "display_name": "Dr Lee", "time_zone": "UTC", "bio": "x\u{0}y" }),
        ),
        (
            "specialty",
            json!({ "account_id": account.id, "display_name": "Dr Lee", "time_zone": "UTC", "specialty": "\u{1b}[31mred" }),
        ),
    ] {
        let res = create(body).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        let body = problem(res).await;
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    // Nothing was created, and a bio may have several lines.
    let res = create(json!({ "account_id": account.id, "display_name": "Dr Lee", "time_zone": "UTC", "bio": "Line one.\n\tLine two." })).await;
    assert_eq!(res.status(), StatusCode::CREATED);

    let patch = |path: String, body: Value| {
        app.request(Method::PATCH, &path)
            .bearer_auth(&c.provider.tokens.access)
            .header("if-match", "\"1\"")
            .json(&body)
            .send()
    };
    let res = patch(
        format!("/v1/providers/{}", c.provider.id),
        json!({ "bio": "nul\u{0}here" }),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(res).await["errors"][0]["field"], "bio");
    let res = patch(
        format!("/v1/providers/{}/appointment-types/{}", c.provider.id, c.type_id),
        json!({ "name": "Check\u{0}up" }),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(res).await["errors"][0]["field"], "name");
    let res = app
        .post_as(
            &format!("/v1/providers/{}/appointment-types", c.provider.id),
            &c.provider.tokens.access,
            &json!({ "name": "Tele\u{0}visit", "duration_minutes": 30, "modality": "video" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(res).await["errors"][0]["field"], "name");

    // A reason for visit with NUL is refused, and nothing is booked.
    let (patient, _) = patient(&app).await;
    let start = free_slot(&app, &c, 2).await;
    let before = count(&app, "SELECT count(*) AS n FROM appointments");
    let res = book(&app, &patient.tokens.access, json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": start, "reason": "pain\u{0}" })).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(res).await["errors"][0]["field"], "reason");
    assert_eq!(count(&app, "SELECT count(*) AS n FROM appointments"), before);
}

#[tokio::test]
async fn a_weekly_window_from_midnight_to_midnight_is_the_whole_day() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let provider = provider_with_profile(&app, &admin, "UTC").await;
    set_weekly(&app, &provider, "00:00", "00:00").await;
    let type_id = add_type(&app, &provider, json!({ "duration_minutes": 60 })).await;
    let day = (Utc::now() + Duration::days(3)).date_naive();
    let from = day.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let found = slots(&app, &provider.id, &type_id, from, from + Duration::days(1)).await;
    let starts: Vec<&str> = found.iter().map(|s| s["starts_at"].as_str().unwrap()).collect();
    assert_eq!(starts.len(), 24, "{starts:?}");
    assert!(
        starts[0].contains("T00:00:00") && starts[23].contains("T23:00:00"),
        "{starts:?}"
    );
}

#[tokio::test]
async fn slots_follow_the_rules_overrides_and_range_cap() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let provider = provider_with_profile(&app, &admin, "UTC").await;
    set_weekly(&app, &provider, "09:00", "12:00").await;
    let type_id = add_type(&app, &provider, json!({ "duration_minutes": 60 })).await;
    let day = (Utc::now() + Duration::days(3)).date_naive();
    let from = day.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let found = slots(&app, &provider.id, &type_id, from, from + Duration::days(1)).await;
    let starts: Vec<&str> = found.iter().map(|s| s["starts_at"].as_str().unwrap()).collect();
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert!(starts[0].contains("T09:00:00"));

    // Block 10:00-11:00 that day.
    let res = app
        .post_as(
            &format!("/v1/providers/{}/availability/overrides", provider.id),
            &provider.tokens.access,
            &json!({ "kind": "blocked", "starts_local": format!("{day}T10:00"), "ends_local": format!("{day}T11:00") }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let found = slots(&app, &provider.id, &type_id, from, from + Duration::days(1)).await;
    assert_eq!(found.len(), 2);
    assert!(
        !found
            .iter()
            .any(|s| s["starts_at"].as_str().unwrap().contains("T10:00"))
    );

    let too_long = app
        .get(&format!(
            "/v1/providers/{}/slots?type={type_id}&from={}&to={}",
            provider.id,
            from.to_rfc3339().replace('+', "%2B"),
            (from + Duration::days(63)).to_rfc3339().replace('+', "%2B")
        ))
        .await;
    assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);
    assert!(
        problem(too_long).await["detail"]
            .as_str()
            .unwrap()
            .contains("62 days")
    );
    let res = app.get(&format!("/v1/providers/{}/slots", provider.id)).await;
    assert_eq!(problem(res).await["errors"][0]["field"], "query.type");
}

#[tokio::test]
async fn nine_oclock_is_nine_oclock_local_across_dst_in_new_york_and_berlin() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    for (zone, before, after, offsets) in [
        // 2027-03-14: New York springs forward; 2027-11-07: it falls back.
        (
            "America/New_York",
            "2027-03-13T00:00:00Z",
            "2027-03-16T00:00:00Z",
            ["14:00", "13:00", "13:00"],
        ),
        (
            "America/New_York",
            "2027-11-06T00:00:00Z",
            "2027-11-09T00:00:00Z",
            ["13:00", "14:00", "14:00"],
        ),
        // 2027-03-28: Berlin springs forward; 2027-10-31: it falls back.
        (
            "Europe/Berlin",
            "2027-03-27T00:00:00Z",
            "2027-03-30T00:00:00Z",
            ["08:00", "07:00", "07:00"],
        ),
        (
            "Europe/Berlin",
            "2027-10-30T00:00:00Z",
            "2027-11-02T00:00:00Z",
            ["07:00", "08:00", "08:00"],
        ),
    ] {
        let provider = provider_with_profile(&app, &admin, zone).await;
        set_weekly(&app, &provider, "09:00", "10:00").await;
        let type_id = add_type(&app, &provider, json!({ "duration_minutes": 60 })).await;
        let from = DateTime::parse_from_rfc3339(before).unwrap().with_timezone(&Utc);
        let to = DateTime::parse_from_rfc3339(after).unwrap().with_timezone(&Utc);
        let found = slots(&app, &provider.id, &type_id, from, to).await;
        assert_eq!(found.len(), 3, "{zone}: {found:?}");
        for (slot, utc) in found.iter().zip(offsets) {
            assert!(
                slot["local_start"].as_str().unwrap().contains("T09:00:00"),
                "{zone}: {slot}"
            );
            assert!(
                slot["starts_at"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("T{utc}:00")),
                "{zone}: {slot}"
            );
        }
    }
}

#[tokio::test]
async fn a_patient_books_and_the_slot_is_no_longer_offered() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let (patient, patient_id) = patient(&app).await;
    let start = free_slot(&app, &c, 2).await;
    let res = book(&app, &patient.tokens.access, json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": start, "reason": "persistent cough" })).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let booked: Value = res.json().await.unwrap();
    assert_eq!(booked["status"], "booked");
    assert_eq!(booked["patient_id"], patient_id.as_str());
    assert_eq!(booked["reason"], "persistent cough");
    assert_eq!(
        location,
        format!("/v1/appointments/{}", booked["id"].as_str().unwrap())
    );

    let day = DateTime::parse_from_rfc3339(&start).unwrap().with_timezone(&Utc);
    let found = slots(
        &app,
        &c.provider.id,
        &c.type_id,
        day - Duration::hours(1),
        day + Duration::hours(1),
    )
    .await;
    assert!(
        !found
            .iter()
            .any(|s| s["starts_at"].as_str().unwrap() == start.as_str()),
        "the booked slot is still offered"
    );

    // The same slot again: taken. The same patient at that time with another provider: busy.
    let (other, _) = support_patient(&app).await;
    let res = book(
        &app,
        &other.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": start }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(problem(res).await["code"], "slot_taken");
    let second = provider_with_profile(&app, &c.admin, "UTC").await;
    set_weekly(&app, &second, "00:00", "23:59").await;
    let second_type = add_type(&app, &second, json!({})).await;
    let res = book(
        &app,
        &patient.tokens.access,
        json!({ "provider_id": second.id, "type_id": second_type, "starts_at": start }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(problem(res).await["code"], "patient_busy");

    // Not a slot at all: 22 minutes past the hour.
    let odd = (day + Duration::minutes(22)).to_rfc3339();
    let res = book(
        &app,
        &patient.tokens.access,
        json!({ "provider_id": second.id, "type_id": second_type, "starts_at": odd }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Staff booking for a patient, provider or type that does not exist: 422 naming
    // the field, and nothing written.
    let before = count(&app, "SELECT count(*) AS n FROM appointments");
    let free = free_slot(&app, &c, 5).await;
    let unknown = "0190a1b2-0000-7000-8000-000000000000";
    for (field, body) in [
        (
            "patient_id",
            json!({ "provider_id": c.provider.id, "type_id": c.type_id, "patient_id": unknown, "starts_at": free }),
        ),
        (
            "provider_id",
            json!({ "provider_id": unknown, "type_id": c.type_id, "patient_id": patient_id, "starts_at": free }),
        ),
        (
            "type_id",
            json!({ "provider_id": c.provider.id, "type_id": second_type, "patient_id": patient_id, "starts_at": free }),
        ),
    ] {
        let res = book(&app, &c.admin.tokens.access, body).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        let body = problem(res).await;
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    assert_eq!(count(&app, "SELECT count(*) AS n FROM appointments"), before);

    // The reason for visit is stored only encrypted, and is not in the outbox.
    let mut conn = app.db.connect();
    #[derive(diesel::QueryableByName)]
    struct Text {
        #[diesel(sql_type = diesel::sql_types::Text)]
        t: String,
    }
    let rows: Vec<Text> = diesel::sql_query(
        "SELECT appointments::text AS t FROM appointments UNION ALL SELECT events::text FROM events",
    )
    .load(&mut conn)
    .unwrap();
    assert!(rows.iter().all(|r| !r.t.contains("persistent cough")));
}

async fn support_patient(app: &TestApp) -> (User, String) {
    patient(app).await
}

#[tokio::test]
async fn fifty_concurrent_bookings_of_one_slot_give_exactly_one_appointment() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let start = free_slot(&app, &c, 5).await;
    let mut patients = Vec::new();
    for i in 0..50 {
        let res = app
            .post_as(
                "/v1/patients",
                &c.admin.tokens.access,
                &patient_body(&format!("race{i}")),
            )
            .await;
        patients.push(
            res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let attempts = patients.iter().map(|patient| {
        book(&app, &c.admin.tokens.access, json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": start, "patient_id": patient }))
    });
    let results = futures_util::future::join_all(attempts).await;
    let statuses: Vec<StatusCode> = results.iter().map(reqwest::Response::status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::CREATED).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count(),
        49,
        "{statuses:?}"
    );
    assert_eq!(count(&app, "SELECT count(*) AS n FROM appointments"), 1);
}

#[tokio::test]
async fn a_reschedule_racing_a_booking_never_double_books() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let (first, _) = patient(&app).await;
    let (second, _) = patient(&app).await;
    let from = Utc::now() + Duration::days(4);
    let found = slots(&app, &c.provider.id, &c.type_id, from, from + Duration::days(1)).await;
    let (slot_a, slot_b) = (
        found[0]["starts_at"].as_str().unwrap(),
        found[1]["starts_at"].as_str().unwrap(),
    );
    let a = book_ok(
        &app,
        &first.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": slot_a }),
    )
    .await;

    let (moved, taken) = tokio::join!(
        act(
            &app,
            &first.tokens.access,
            &a,
            "reschedule",
            Some(json!({ "starts_at": slot_b }))
        ),
        book(
            &app,
            &second.tokens.access,
            json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": slot_b })
        ),
    );
    let (moved, taken) = (moved.status(), taken.status());
    assert!(
        (moved == StatusCode::OK && taken == StatusCode::CONFLICT)
            || (moved == StatusCode::CONFLICT && taken == StatusCode::CREATED),
        "reschedule {moved}, booking {taken}"
    );
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT count(*) AS n FROM appointments WHERE starts_at = '{slot_b}' AND status = 'booked'"
            )
        ),
        1
    );
    let a_now: Value = app
        .get_as(
            &format!("/v1/appointments/{}", a["id"].as_str().unwrap()),
            &first.tokens.access,
        )
        .await
        .json()
        .await
        .unwrap();
    let expected = if moved == StatusCode::OK { slot_b } else { slot_a };
    assert_eq!(
        DateTime::parse_from_rfc3339(a_now["starts_at"].as_str().unwrap()).unwrap(),
        DateTime::parse_from_rfc3339(expected).unwrap()
    );
}

#[tokio::test]
async fn a_hold_is_confirmed_or_lapses_and_a_lapsed_hold_never_blocks() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let (patient, _) = patient(&app).await;
    let (other, _) = support_patient(&app).await;
    let from = Utc::now() + Duration::days(6);
    let found = slots(&app, &c.provider.id, &c.type_id, from, from + Duration::days(1)).await;
    let (one, two) = (
        found[0]["starts_at"].as_str().unwrap(),
        found[1]["starts_at"].as_str().unwrap(),
    );

    let held = book_ok(
        &app,
        &patient.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": one, "hold": true }),
    )
    .await;
    assert_eq!(held["status"], "pending");
    assert!(held["hold_expires_at"].is_string());
    let res = book(
        &app,
        &other.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": one }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT, "a live hold blocks");
    let confirmed: Value = act(&app, &patient.tokens.access, &held, "confirm", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(confirmed["status"], "booked");

    // A second hold lapses: it blocks no one, whatever writes next.
    let lapsing = book_ok(
        &app,
        &patient.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": two, "hold": true }),
    )
    .await;
    diesel::sql_query(format!(
        "UPDATE appointments SET hold_expires_at = now() - interval '1 second' WHERE id = '{}'",
        lapsing["id"].as_str().unwrap()
    ))
    .execute(&mut app.db.connect())
    .unwrap();
    let offered = slots(&app, &c.provider.id, &c.type_id, from, from + Duration::days(1)).await;
    assert!(
        offered.iter().any(|s| s["starts_at"].as_str().unwrap() == two),
        "a lapsed hold is offered again"
    );
    let res = book(
        &app,
        &other.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": two }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let lapsed: Value = app
        .get_as(
            &format!("/v1/appointments/{}", lapsing["id"].as_str().unwrap()),
            &patient.tokens.access,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(lapsed["status"], "cancelled");
    assert_eq!(lapsed["cancellation"]["code"], "hold_expired");
    let res = act(&app, &patient.tokens.access, &lapsed, "confirm", None).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT count(*) AS n FROM events WHERE kind = 'slot.released' AND appointment_id = '{}'",
                lapsing["id"].as_str().unwrap()
            )
        ),
        1
    );

    // The sweeper lapses holds nobody competes for.
    let third = found[2]["starts_at"].as_str().unwrap();
    let idle = book_ok(
        &app,
        &patient.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": third, "hold": true }),
    )
    .await;
    diesel::sql_query(format!(
        "UPDATE appointments SET hold_expires_at = now() - interval '1 second' WHERE id = '{}'",
        idle["id"].as_str().unwrap()
    ))
    .execute(&mut app.db.connect())
    .unwrap();
    diesel::sql_query("SELECT expire_holds()")
        .execute(&mut app.db.connect())
        .unwrap();
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT count(*) AS n FROM appointments WHERE id = '{}' AND status = 'cancelled'",
                idle["id"].as_str().unwrap()
            )
        ),
        1
    );
}

#[tokio::test]
async fn the_state_machine_holds_over_http() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let cutoff_type = add_type(
        &app,
        &c.provider,
        json!({ "name": "Strict", "cancellation_cutoff_minutes": 7 * 24 * 60 }),
    )
    .await;
    let (patient, _) = patient(&app).await;
    let from = Utc::now() + Duration::hours(2);
    let found = slots(&app, &c.provider.id, &cutoff_type, from, from + Duration::days(1)).await;
    let appt = book_ok(
        &app,
        &patient.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": cutoff_type, "starts_at": found[0]["starts_at"] }),
    )
    .await;

    // Cancelling needs a reason, If-Match, and (for the patient) the cutoff not passed.
    let res = act(
        &app,
        &patient.tokens.access,
        &appt,
        "cancel",
        Some(json!({ "reason": "" })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .request(
            Method::POST,
            &format!("/v1/appointments/{}/cancel", appt["id"].as_str().unwrap()),
        )
        .bearer_auth(&patient.tokens.access)
        .json(&json!({ "reason": "feeling better" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PRECONDITION_REQUIRED);
    let res = act(
        &app,
        &patient.tokens.access,
        &appt,
        "cancel",
        Some(json!({ "reason": "feeling better" })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(problem(res).await["code"], "cancellation_cutoff");

    // The patient checks in; only staff complete; a no-show needs the start to have passed.
    let res = act(&app, &c.provider.tokens.access, &appt, "no-show", None).await;
    assert_eq!(problem(res).await["code"], "not_started");
    let arrived: Value = act(&app, &patient.tokens.access, &appt, "check-in", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(arrived["status"], "arrived");
    let res = act(&app, &patient.tokens.access, &arrived, "complete", None).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem(res).await["code"], "not_allowed_for_role");
    let stale = act(&app, &c.provider.tokens.access, &appt, "complete", None).await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let done: Value = act(&app, &c.provider.tokens.access, &arrived, "complete", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], "fulfilled");

    // From fulfilled, only an admin's correction.
    let res = act(
        &app,
        &c.provider.tokens.access,
        &done,
        "cancel",
        Some(json!({ "reason": "oops" })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body = problem(res).await;
    assert_eq!(body["code"], "invalid_transition");
    assert!(
        body["detail"].as_str().unwrap().contains("fulfilled"),
        "the problem says the current status"
    );
    let corrected: Value = act(&app, &c.admin.tokens.access, &done, "entered-in-error", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(corrected["status"], "entered-in-error");

    // Staff may cancel inside the cutoff.
    let other = book_ok(
        &app,
        &patient.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": cutoff_type, "starts_at": found[2]["starts_at"] }),
    )
    .await;
    let cancelled: Value = act(
        &app,
        &c.provider.tokens.access,
        &other,
        "cancel",
        Some(json!({ "reason": "provider unwell" })),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancellation"]["code"], "cancelled_by_provider");
    assert_eq!(cancelled["cancellation"]["reason"], "provider unwell");
}

#[tokio::test]
async fn a_retried_booking_with_the_same_key_returns_the_first_answer() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let (patient, _) = patient(&app).await;
    let start = free_slot(&app, &c, 3).await;
    let body = json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": start, "reason": "check-up" });
    let send = |body: Value, key: &'static str| {
        app.request(Method::POST, "/v1/appointments")
            .bearer_auth(&patient.tokens.access)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = send(body.clone(), "booking-123").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = send(body.clone(), "booking-123").await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert!(again.headers().contains_key("location"));
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["reason"], "check-up");
    assert_eq!(count(&app, "SELECT count(*) AS n FROM appointments"), 1);

    let mut changed = body.clone();
    changed["reason"] = json!("something else");
    let res = send(changed, "booking-123").await.unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(res).await["errors"][0]["field"], "Idempotency-Key");
    // The stored answer holds PHI, so it is sealed.
    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM idempotency_keys WHERE position('check-up'::bytea in response_enc) > 0"
        ),
        0
    );
}

#[tokio::test]
async fn appointments_are_hidden_from_everyone_but_their_patient_provider_and_admins() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let (owner, _) = patient(&app).await;
    let (stranger, _) = patient(&app).await;
    let other_provider = provider_with_profile(&app, &c.admin, "UTC").await;
    let start = free_slot(&app, &c, 2).await;
    let appt = book_ok(
        &app,
        &owner.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": start }),
    )
    .await;
    let url = format!("/v1/appointments/{}", appt["id"].as_str().unwrap());

    for token in [
        &owner.tokens.access,
        &c.provider.tokens.access,
        &c.admin.tokens.access,
    ] {
        assert_eq!(app.get_as(&url, token).await.status(), StatusCode::OK);
    }
    for token in [&stranger.tokens.access, &other_provider.tokens.access] {
        assert_eq!(app.get_as(&url, token).await.status(), StatusCode::NOT_FOUND);
        for action in ["confirm", "check-in", "complete", "no-show"] {
            assert_eq!(
                act(&app, token, &appt, action, None).await.status(),
                StatusCode::NOT_FOUND,
                "{action}"
            );
        }
        assert_eq!(
            act(&app, token, &appt, "cancel", Some(json!({ "reason": "x" })))
                .await
                .status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            act(
                &app,
                token,
                &appt,
                "reschedule",
                Some(json!({ "starts_at": start }))
            )
            .await
            .status(),
            StatusCode::NOT_FOUND
        );
    }
    let mine: Value = app
        .get_as("/v1/appointments", &owner.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    let theirs: Value = app
        .get_as("/v1/appointments", &stranger.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["items"].as_array().unwrap().len(), 0);
    let nosy: Value = app
        .get_as(
            &format!("/v1/appointments?provider={}", c.provider.id),
            &other_provider.tokens.access,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(nosy["items"].as_array().unwrap().len(), 0);
    let all: Value = app
        .get_as("/v1/appointments?status=booked", &c.admin.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 1);

    // Every probe is in the audit log.
    let events: Value = app
        .get_as(
            &format!("/v1/admin/audit?action=access_denied&actor={}", stranger.id),
            &c.admin.tokens.access,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(events["items"].as_array().unwrap().len() >= 7);
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["failure_reason"] == "not_own_appointment")
    );
    assert_eq!(
        problem_type(&support::problem(app.get_as(&url, &stranger.tokens.access).await).await),
        "not-found"
    );
}

#[tokio::test]
async fn the_care_team_sees_the_reason_for_visit_in_listings_and_each_showing_is_audited() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let (owner, patient_id) = patient(&app).await;
    let other_provider = provider_with_profile(&app, &c.admin, "UTC").await;
    let start = free_slot(&app, &c, 2).await;
    let appt = book_ok(
        &app,
        &owner.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": start, "reason": "knee pain after a fall" }),
    )
    .await;
    let id = appt["id"].as_str().unwrap();
    let reads_by = |actor: &str| {
        count(
            &app,
            &format!(
                "SELECT count(*) AS n FROM audit_events WHERE action = 'read' AND resource_type = 'appointment' \
                 AND resource_id = '{id}' AND actor_id = '{actor}' AND patient_id = '{patient_id}'"
            ),
        )
    };
    // The patient, their provider (whose calendar it is) and admins see it in the list,
    // as in the single read, and each showing is a read of that appointment.
    for who in [&owner, &c.provider, &c.admin] {
        let before = reads_by(&who.id);
        let list: Value = app
            .get_as("/v1/appointments", &who.tokens.access)
            .await
            .json()
            .await
            .unwrap();
        let item = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("{} does not see the appointment: {list}", who.email));
        assert_eq!(item["reason"], "knee pain after a fall", "{item}");
        assert_eq!(
            reads_by(&who.id),
            before + 1,
            "the listing by {} is audited",
            who.email
        );
    }
    // A cancellation's reason shows the same way.
    let current: Value = app
        .get_as(&format!("/v1/appointments/{id}"), &c.provider.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    let res = act(
        &app,
        &c.provider.tokens.access,
        &current,
        "cancel",
        Some(json!({ "reason": "clinic closed for the storm" })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let list: Value = app
        .get_as("/v1/appointments", &owner.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["items"][0]["cancellation"]["reason"], "clinic closed for the storm",
        "{list}"
    );
    // Nobody else sees it: another provider's listing is empty, and nothing public
    // (slots, provider profiles) carries it.
    let nosy = app
        .get_as(
            &format!("/v1/appointments?patient={patient_id}"),
            &other_provider.tokens.access,
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(!nosy.contains("knee pain"), "{nosy}");
    for path in [
        format!("/v1/providers/{}/slots?type={}", c.provider.id, c.type_id),
        format!("/v1/providers/{}", c.provider.id),
        "/v1/providers".to_owned(),
    ] {
        let body = app.get(&path).await.text().await.unwrap();
        assert!(
            !body.contains("knee pain") && !body.contains("storm"),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn every_change_writes_its_outbox_event_and_an_appointment_makes_a_care_relationship() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let (patient, patient_id) = patient(&app).await;
    // Before any appointment, the provider cannot read the record.
    assert_eq!(
        app.get_as(&format!("/v1/patients/{patient_id}"), &c.provider.tokens.access)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    let from = Utc::now() + Duration::days(2);
    let found = slots(&app, &c.provider.id, &c.type_id, from, from + Duration::days(1)).await;
    let held = book_ok(&app, &patient.tokens.access, json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": found[0]["starts_at"], "hold": true })).await;
    let booked: Value = act(&app, &patient.tokens.access, &held, "confirm", None)
        .await
        .json()
        .await
        .unwrap();
    let moved: Value = act(
        &app,
        &patient.tokens.access,
        &booked,
        "reschedule",
        Some(json!({ "starts_at": found[3]["starts_at"] })),
    )
    .await
    .json()
    .await
    .unwrap();
    act(
        &app,
        &patient.tokens.access,
        &moved,
        "cancel",
        Some(json!({ "reason": "travel" })),
    )
    .await;

    #[derive(diesel::QueryableByName)]
    struct Kind {
        #[diesel(sql_type = diesel::sql_types::Text)]
        kind: String,
    }
    let kinds: Vec<String> = diesel::sql_query(format!(
        "SELECT kind FROM events WHERE appointment_id = '{}' ORDER BY id",
        held["id"].as_str().unwrap()
    ))
    .load::<Kind>(&mut app.db.connect())
    .unwrap()
    .into_iter()
    .map(|k| k.kind)
    .collect();
    assert_eq!(
        kinds,
        vec![
            "slot.held",
            "appointment.booked",
            "appointment.rescheduled",
            "slot.released",
            "appointment.cancelled",
            "slot.released"
        ]
    );

    // The booking made a care relationship: now the provider may read the record.
    let again = book_ok(
        &app,
        &patient.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": found[5]["starts_at"] }),
    )
    .await;
    assert_eq!(again["status"], "booked");
    assert_eq!(
        app.get_as(&format!("/v1/patients/{patient_id}"), &c.provider.tokens.access)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_daily_limit_caps_bookings_of_a_type_per_local_day() {
    let app = TestApp::spawn().await;
    let c = clinic(&app).await;
    let limited = add_type(&app, &c.provider, json!({ "name": "Limited", "max_per_day": 1 })).await;
    let (first, _) = patient(&app).await;
    let (second, _) = patient(&app).await;
    let day = (Utc::now() + Duration::days(3))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let found = slots(&app, &c.provider.id, &limited, day, day + Duration::days(1)).await;
    book_ok(
        &app,
        &first.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": limited, "starts_at": found[0]["starts_at"] }),
    )
    .await;
    assert!(
        slots(&app, &c.provider.id, &limited, day, day + Duration::days(1))
            .await
            .is_empty(),
        "the day is full"
    );
    let res = book(
        &app,
        &second.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": limited, "starts_at": found[4]["starts_at"] }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
}

/// Issue 14, item 7: a patient booking for themselves holds at most
/// CAREWIRE_MAX_HOLDS_PER_PATIENT slots and has at most
/// CAREWIRE_MAX_FUTURE_APPOINTMENTS_PER_PATIENT upcoming appointments, even when
/// their requests race; staff bookings are not limited.
#[tokio::test]
async fn a_patient_holds_and_books_only_up_to_the_limits_even_racing() {
    let app = TestApp::builder()
        .setting("CAREWIRE_MAX_HOLDS_PER_PATIENT", "2")
        .setting("CAREWIRE_MAX_FUTURE_APPOINTMENTS_PER_PATIENT", "3")
        .spawn()
        .await;
    let c = clinic(&app).await;
    let (pat, pat_id) = patient(&app).await;
    let from = Utc::now() + Duration::days(2);
    let free = slots(&app, &c.provider.id, &c.type_id, from, from + Duration::days(1)).await;
    let start = |i: usize| free[i * 3]["starts_at"].as_str().unwrap().to_owned();
    let body = |i: usize, hold: bool| json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": start(i), "hold": hold });
    // Eight holds at once: exactly two are taken.
    let racing: Vec<_> = (0..8)
        .map(|i| {
            let (app, token, body) = (&app, pat.tokens.access.clone(), body(i, true));
            async move { book(app, &token, body).await }
        })
        .collect();
    let answers = futures_util::future::join_all(racing).await;
    let mut held = 0;
    for res in answers {
        match res.status() {
            StatusCode::CREATED => held += 1,
            StatusCode::CONFLICT => assert_eq!(problem(res).await["code"], "too_many_holds"),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(held, 2);
    // A booking is still allowed (3 upcoming in all), then nothing more.
    let booked = book_ok(&app, &pat.tokens.access, body(10, false)).await;
    let res = book(&app, &pat.tokens.access, body(11, false)).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(problem(res).await["code"], "too_many_appointments");
    assert_eq!(
        count(
            &app,
            &format!("SELECT count(*) AS n FROM appointments WHERE patient_id = '{pat_id}'")
        ),
        3
    );
    // Staff book for the patient regardless, and that booking counts too.
    let res = book(
        &app,
        &c.provider.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": start(12), "patient_id": pat_id }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = act(
        &app,
        &pat.tokens.access,
        &booked,
        "cancel",
        Some(json!({ "reason": "can't come" })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = book(&app, &pat.tokens.access, body(13, false)).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(problem(res).await["code"], "too_many_appointments");
    // Cancelling a hold frees a place.
    let holds: Value = app
        .get_as("/v1/appointments?status=pending", &pat.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    let hold = holds["items"][0].clone();
    let res = act(
        &app,
        &pat.tokens.access,
        &hold,
        "cancel",
        Some(json!({ "reason": "can't come" })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    book_ok(&app, &pat.tokens.access, body(13, false)).await;
}
