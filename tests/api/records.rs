//! Patient records against a real server: profiles and notes, the access matrix,
//! break-glass, encryption at rest (nothing readable in the database, its dump or
//! the logs; tampered or moved ciphertexts refused), and key rotation end to end.

use crate::support;
use crate::support::{TestApp, User, problem, problem_type};
use carewire::context::Role;
use diesel::RunQueryDsl;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A patient profile with values unique to this call, so any leak is attributable.
struct Person {
    given: String,
    family: String,
    email: String,
    phone: String,
    mrn: String,
    body: Value,
}

fn person() -> Person {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let digits: String = tag.chars().map(|c| char::from(b'0' + (c as u8 % 10))).collect();
    let given = format!("Augusta{tag}");
    let family = format!("Byron{tag}");
    let email = format!("augusta.{tag}@example.test");
    let phone = format!("+44{digits}");
    let mrn = format!("MRN-{tag}").to_uppercase();
    let body = json!({
        "legal_name": { "given": given, "family": family },
        "preferred_name": "Ada",
        "birth_date": "1985-12-10",
        "sex": "female",
        "phone": phone,
        "email": email,
        "address": { "lines": [format!("{tag} Marylebone Road")], "city": "London", "postal_code": "NW1 5LR", "country": "GB" },
        "mrn": mrn,
        "insurance_id": format!("INS{digits}"),
        "emergency_contact": { "name": format!("Mary{tag}"), "relationship": "mother", "phone": "+442079460000" },
    });
    Person {
        given,
        family,
        email,
        phone,
        mrn,
        body,
    }
}

async fn create(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.post_as("/v1/patients", token, body).await
}

async fn create_ok(app: &TestApp, token: &str, body: &Value) -> (String, String) {
    let res = create(app, token, body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let view: Value = res.json().await.unwrap();
    (view["id"].as_str().unwrap().to_owned(), etag)
}

async fn provider(app: &TestApp, name: &str) -> User {
    let user = app.user_with_role(Role::Provider).await;
    diesel::sql_query(format!(
        "UPDATE accounts SET display_name = '{name}' WHERE id = '{}'",
        user.id
    ))
    .execute(&mut app.db.connect())
    .unwrap();
    user
}

async fn note(app: &TestApp, token: &str, patient: &str, text: &str) -> Value {
    let res = app
        .post_as(
            &format!("/v1/patients/{patient}/notes"),
            token,
            &json!({ "subjective": text, "plan": "rest" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

async fn sign(app: &TestApp, token: &str, patient: &str, note: &Value) -> reqwest::Response {
    app.request(
        Method::POST,
        &format!(
            "/v1/patients/{patient}/notes/{}/sign",
            note["id"].as_str().unwrap()
        ),
    )
    .bearer_auth(token)
    .header("if-match", format!("\"{}\"", note["version"]))
    .send()
    .await
    .unwrap()
}

async fn audit_actions(app: &TestApp, admin: &str, patient: &str) -> Vec<Value> {
    let res = app
        .get_as(&format!("/v1/admin/audit?patient={patient}&limit=500"), admin)
        .await;
    res.json::<Value>().await.unwrap()["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_patient_creates_reads_and_updates_their_own_record() {
    support::capture_logs();
    let app = TestApp::spawn().await;
    let patient = app.patient().await;
    let p = person();
    let (id, etag) = create_ok(&app, &patient.tokens.access, &p.body).await;
    assert_eq!(etag, "\"1\"");

    let res = app
        .get_as(&format!("/v1/patients/{id}"), &patient.tokens.access)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["legal_name"]["family"], p.family.as_str());
    assert_eq!(view["email"], p.email.as_str());
    assert_eq!(view["account_id"], patient.id.as_str());
    assert_eq!(view["address"]["city"], "London");

    // One record per account.
    assert_eq!(
        create(&app, &patient.tokens.access, &person().body)
            .await
            .status(),
        StatusCode::CONFLICT
    );

    // Updates need If-Match: none is 428, a stale one 412.
    let url = format!("/v1/patients/{id}");
    let patch = json!({ "preferred_name": "Countess", "phone": null });
    let res = app
        .request(Method::PATCH, &url)
        .bearer_auth(&patient.tokens.access)
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PRECONDITION_REQUIRED);
    let res = app
        .request(Method::PATCH, &url)
        .bearer_auth(&patient.tokens.access)
        .header("if-match", "\"7\"")
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    let res = app
        .request(Method::PATCH, &url)
        .bearer_auth(&patient.tokens.access)
        .header("if-match", etag)
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["preferred_name"], "Countess");
    assert!(view.get("phone").unwrap().is_null());
    assert_eq!(view["email"], p.email.as_str(), "untouched fields stay");

    let res = app
        .request(Method::PATCH, &url)
        .bearer_auth(&patient.tokens.access)
        .header("if-match", "\"2\"")
        .json(&json!({ "birth_date": "2999-01-01" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(res).await["errors"][0]["field"], "birth_date");

    let logs = support::captured_logs();
    for secret in [&p.given, &p.family, &p.email, &p.mrn] {
        assert!(!logs.contains(secret.as_str()), "the logs hold PHI");
    }
}

#[tokio::test]
async fn invalid_demographics_are_refused_with_the_field_named() {
    let app = TestApp::spawn().await;
    let patient = app.patient().await;
    for (field, value, named) in [
        ("phone", json!("call me maybe"), "phone"),
        ("email", json!("not-an-email"), "email"),
        ("sex", json!("sometimes"), "sex"),
        (
            "address",
            json!({ "lines": [], "city": "X", "country": "GB" }),
            "address.lines",
        ),
    ] {
        let mut body = person().body;
        body[field] = value;
        let res = create(&app, &patient.tokens.access, &body).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert_eq!(problem(res).await["errors"][0]["field"], named);
    }
}

/// Issue 14, item 6: booking a patient on one's own calendar does not open their
/// record; the patient accepting the booking does.
#[tokio::test]
async fn a_booking_a_provider_makes_without_a_relationship_opens_the_record_only_once_the_patient_accepts() {
    use support::booking;
    let app = TestApp::spawn().await;
    let c = booking::clinic(&app).await;
    let provider = &c.provider.tokens.access;
    let (patient, patient_id) = booking::patient(&app).await;
    let record = format!("/v1/patients/{patient_id}");
    let notes = format!("/v1/patients/{patient_id}/notes");
    let refused = |res: reqwest::Response| async move {
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(problem(res).await["code"], "no_care_relationship");
    };
    refused(app.get_as(&record, provider).await).await;

    // The provider books the patient: the time is theirs, the record is not.
    let starts = booking::free_slot(&app, &c, 2).await;
    let booked = booking::book_ok(
        &app,
        provider,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "patient_id": patient_id, "starts_at": starts }),
    )
    .await;
    assert_eq!(booked["status"], "booked");
    assert_eq!(booked["opens_record"], false);
    refused(app.get_as(&record, provider).await).await;
    refused(app.get_as(&notes, provider).await).await;
    refused(app.post_as(&notes, provider, &json!({ "subjective": "x" })).await).await;

    // Only the patient accepts: not the provider, and another patient cannot even see it.
    let res = booking::act(&app, provider, &booked, "accept", None).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem(res).await["code"], "not_allowed_for_role");
    let someone = app.patient().await;
    let res = booking::act(&app, &someone.tokens.access, &booked, "accept", None).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = booking::act(&app, &patient.tokens.access, &booked, "accept", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let accepted: Value = res.json().await.unwrap();
    assert_eq!(accepted["opens_record"], true);
    assert_eq!(accepted["version"], booked["version"].as_i64().unwrap() + 1);
    assert_eq!(app.get_as(&record, provider).await.status(), StatusCode::OK);
    assert_eq!(app.get_as(&notes, provider).await.status(), StatusCode::OK);
    // Accepting again changes nothing.
    let again: Value = booking::act(&app, &patient.tokens.access, &accepted, "accept", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["version"], accepted["version"]);

    // Within the relationship the provider's next booking opens the record at once.
    let follow_up = booking::book_ok(
        &app,
        provider,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "patient_id": patient_id, "starts_at": booking::free_slot(&app, &c, 9).await }),
    )
    .await;
    assert_eq!(follow_up["opens_record"], true);
    // A patient's own booking opens it too.
    let (walk_in, walk_in_id) = booking::patient(&app).await;
    let own = booking::book_ok(
        &app,
        &walk_in.tokens.access,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": booking::free_slot(&app, &c, 3).await }),
    )
    .await;
    assert_eq!(own["opens_record"], true);
    assert_eq!(
        app.get_as(&format!("/v1/patients/{walk_in_id}"), provider)
            .await
            .status(),
        StatusCode::OK
    );

    // A cancelled booking cannot be accepted, and leaves the record closed.
    let (third, third_id) = booking::patient(&app).await;
    let unasked = booking::book_ok(
        &app,
        provider,
        json!({ "provider_id": c.provider.id, "type_id": c.type_id, "patient_id": third_id, "starts_at": booking::free_slot(&app, &c, 4).await }),
    )
    .await;
    let cancelled: Value = booking::act(
        &app,
        provider,
        &unasked,
        "cancel",
        Some(json!({ "reason": "clinic closed" })),
    )
    .await
    .json()
    .await
    .unwrap();
    let res = booking::act(&app, &third.tokens.access, &cancelled, "accept", None).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(problem(res).await["code"], "invalid_transition");
    refused(app.get_as(&format!("/v1/patients/{third_id}"), provider).await).await;

    // Bookings a provider made themselves do not carry the record forward: once the
    // registration that opened it is out of the window, the provider's own booking
    // still opens it for its visit, but a new booking built on that one does not.
    let (status, registered) = {
        let res = app
            .post_as("/v1/patients", provider, &booking::patient_body("Registered"))
            .await;
        (res.status(), res.json::<Value>().await.unwrap())
    };
    assert_eq!(status, StatusCode::CREATED);
    let registered_id = registered["id"].as_str().unwrap().to_owned();
    let book_registered = |days: i64| {
        let (app, c, id) = (&app, &c, registered_id.clone());
        async move {
            booking::book_ok(
                app,
                &c.provider.tokens.access,
                json!({ "provider_id": c.provider.id, "type_id": c.type_id, "patient_id": id, "starts_at": booking::free_slot(app, c, days).await }),
            )
            .await
        }
    };
    assert_eq!(book_registered(5).await["opens_record"], true);
    diesel::sql_query(format!(
        "UPDATE patients SET created_at = now() - interval '400 days' WHERE id = '{registered_id}'"
    ))
    .execute(&mut app.db.connect())
    .unwrap();
    assert_eq!(
        app.get_as(&format!("/v1/patients/{registered_id}"), provider)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(book_registered(6).await["opens_record"], false);

    // The log says which booking opened what, and who accepted.
    let events = audit_actions(&app, &c.admin.tokens.access, &patient_id).await;
    let access = |e: &&Value| e["details"]["record_access"]["code"].as_str().map(str::to_owned);
    let created: Vec<Option<String>> = events
        .iter()
        .filter(|e| e["action"] == "create" && e["resource"]["type"] == "appointment")
        .map(|e| access(&e))
        .collect();
    assert!(created.contains(&Some("awaits_patient".into())), "{events:#?}");
    assert!(created.contains(&Some("opens_record".into())), "{events:#?}");
    assert!(events.iter().any(|e| e["action"] == "update"
        && e["details"]["change"]["code"] == "accept"
        && e["actor"]["id"] == patient.id.as_str()
        && access(&e).as_deref() == Some("opens_record")));
}

#[tokio::test]
async fn the_access_matrix_holds() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let owner = app.patient().await;
    let stranger = app.patient().await;
    let treating = provider(&app, "Dr Treating").await;
    let other = provider(&app, "Dr Other").await;

    // The treating provider registers the patient (a care relationship) and writes a
    // signed note; the patient's own record is linked to their account.
    let (own_id, _) = create_ok(&app, &owner.tokens.access, &person().body).await;
    let (registered_id, _) = create_ok(&app, &treating.tokens.access, &person().body).await;
    let signed = note(&app, &treating.tokens.access, &registered_id, "signed note").await;
    assert_eq!(
        sign(&app, &treating.tokens.access, &registered_id, &signed)
            .await
            .status(),
        StatusCode::OK
    );

    let record = |id: &str| format!("/v1/patients/{id}");
    let notes = |id: &str| format!("/v1/patients/{id}/notes");
    let nobody = uuid::Uuid::new_v4().to_string();
    use StatusCode as S;
    #[rustfmt::skip]
    let table: Vec<(&str, &User, String, StatusCode, Option<&str>)> = vec![
        // Patient: own record yes; anyone else's does not exist for them.
        ("owner", &owner, record(&own_id), S::OK, None),
        ("owner", &owner, notes(&own_id), S::OK, None),
        ("stranger", &stranger, record(&own_id), S::NOT_FOUND, None),
        ("stranger", &stranger, notes(&own_id), S::NOT_FOUND, None),
        // Provider with a care relationship: record and notes.
        ("treating", &treating, record(&registered_id), S::OK, None),
        ("treating", &treating, notes(&registered_id), S::OK, None),
        // Provider without one: refused, told why.
        ("other", &other, record(&registered_id), S::FORBIDDEN, Some("no_care_relationship")),
        ("other", &other, notes(&registered_id), S::FORBIDDEN, None),
        ("treating", &treating, record(&own_id), S::FORBIDDEN, None),
        // Admin: demographics yes, notes never.
        ("admin", &admin, record(&registered_id), S::OK, None),
        ("admin", &admin, notes(&registered_id), S::FORBIDDEN, Some("admins_do_not_read_notes")),
        // Unknown patients are 404 for everyone.
        ("treating", &treating, record(&nobody), S::NOT_FOUND, None),
    ];
    for (who, user, path, status, code) in &table {
        let res = app.get_as(path, &user.tokens.access).await;
        assert_eq!(res.status(), *status, "{who} GET {path}");
        if let Some(code) = code {
            assert_eq!(problem(res).await["code"], *code, "{who} GET {path}");
        }
    }
    // Patients never write notes.
    let res = app
        .post_as(
            &notes(&own_id),
            &owner.tokens.access,
            &json!({ "subjective": "x" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // Every refusal is in the audit log, against the patient it concerns.
    let events = audit_actions(&app, &admin.tokens.access, &registered_id).await;
    let denied: Vec<&Value> = events.iter().filter(|e| e["action"] == "access_denied").collect();
    let reasons: Vec<&str> = denied
        .iter()
        .map(|e| e["failure_reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"no_care_relationship"), "{reasons:?}");
    assert!(reasons.contains(&"admins_do_not_read_notes"), "{reasons:?}");
    let events = audit_actions(&app, &admin.tokens.access, &own_id).await;
    assert!(events.iter().any(|e| e["action"] == "access_denied"
        && e["failure_reason"] == "not_own_record"
        && e["actor"]["id"] == stranger.id.as_str()));
}

#[tokio::test]
async fn every_read_and_write_of_a_record_is_audited_naming_the_field_group() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let doctor = provider(&app, "Dr Audit").await;
    let p = person();
    let (id, _) = create_ok(&app, &doctor.tokens.access, &p.body).await;
    app.get_as(&format!("/v1/patients/{id}"), &doctor.tokens.access)
        .await;
    let n = note(&app, &doctor.tokens.access, &id, "audited note").await;
    app.get_as(
        &format!("/v1/patients/{id}/notes/{}", n["id"].as_str().unwrap()),
        &doctor.tokens.access,
    )
    .await;

    let events = audit_actions(&app, &admin.tokens.access, &id).await;
    let summary: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["resource"]["type"].as_str().unwrap().to_owned(),
                e["details"]["fields"]["code"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for expected in [
        ("create", "patient", "demographics"),
        ("read", "patient", "demographics"),
        ("create", "note", "notes"),
        ("read", "note", "notes"),
    ] {
        assert!(
            summary.contains(&(expected.0.into(), expected.1.into(), expected.2.into())),
            "{expected:?} missing from {summary:?}"
        );
    }
    assert!(events.iter().all(|e| e["purpose"] == "TREAT"));
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains(&p.family) && !text.contains("audited note"),
        "values leaked into the audit log"
    );
}

#[tokio::test]
async fn notes_are_versioned_signed_and_amended_and_patients_see_only_signed_ones() {
    let app = TestApp::spawn().await;
    let patient = app.patient().await;
    let doctor = provider(&app, "Dr Notes").await;
    let mut body = person().body;
    body["email"] = json!(patient.email);
    let (id, _) = create_ok(&app, &doctor.tokens.access, &body).await;
    // Link the record to the patient's account, as onboarding would.
    diesel::sql_query(format!(
        "UPDATE patients SET account_id = '{}' WHERE id = '{id}'",
        patient.id
    ))
    .execute(&mut app.db.connect())
    .unwrap();

    let draft = note(&app, &doctor.tokens.access, &id, "first draft").await;
    let note_id = draft["id"].as_str().unwrap().to_owned();
    let note_url = format!("/v1/patients/{id}/notes/{note_id}");
    assert_eq!(draft["status"], "draft");
    assert_eq!(draft["version"], 1);

    // The patient does not see drafts.
    assert_eq!(
        app.get_as(&note_url, &patient.tokens.access).await.status(),
        StatusCode::NOT_FOUND
    );
    let listed: Value = app
        .get_as(&format!("/v1/patients/{id}/notes"), &patient.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 0);

    // An edit is a new version; a stale If-Match is refused.
    let edit = |version: &str, text: &str| {
        app.request(Method::PUT, &note_url)
            .bearer_auth(&doctor.tokens.access)
            .header("if-match", version.to_owned())
            .json(&json!({ "subjective": text, "assessment": "stable" }))
            .send()
    };
    assert_eq!(
        edit("\"7\"", "nope").await.unwrap().status(),
        StatusCode::PRECONDITION_FAILED
    );
    let edited: Value = edit("\"1\"", "second draft").await.unwrap().json().await.unwrap();
    assert_eq!(edited["version"], 2);
    assert_eq!(edited["content"]["subjective"], "second draft");

    // Another provider with access cannot change the author's note.
    let other = provider(&app, "Dr Other").await;
    app.post_as(
        &format!("/v1/patients/{id}/break-glass"),
        &other.tokens.access,
        &json!({ "reason": "covering the ward tonight" }),
    )
    .await;
    let res = app
        .request(Method::PUT, &note_url)
        .bearer_auth(&other.tokens.access)
        .header("if-match", "\"2\"")
        .json(&json!({ "subjective": "hijack" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem(res).await["code"], "not_note_author");

    // Sign; then edits are refused and only amendments go in.
    let signed: Value = sign(&app, &doctor.tokens.access, &id, &edited)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(signed["status"], "signed");
    assert!(signed["signed_at"].is_string());
    let res = edit("\"2\"", "too late").await.unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(problem(res).await["code"], "note_signed");
    let res = app
        .post_as(
            &format!("{note_url}/amendments"),
            &doctor.tokens.access,
            &json!({ "subjective": "second draft", "plan": "follow up in 2 weeks" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let amended: Value = res.json().await.unwrap();
    assert_eq!(amended["version"], 3);

    // Every version stays readable for the provider.
    let versions: Value = app
        .get_as(&format!("{note_url}/versions"), &doctor.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    let kinds: Vec<(i64, &str)> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_i64().unwrap(), v["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, vec![(1, "draft"), (2, "draft"), (3, "amendment")]);
    assert_eq!(versions["items"][0]["content"]["subjective"], "first draft");

    // The patient now sees the note as amended, and only the signed version and later.
    let seen: Value = app
        .get_as(&note_url, &patient.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["content"]["plan"], "follow up in 2 weeks");
    let theirs: Value = app
        .get_as(&format!("{note_url}/versions"), &patient.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    let numbers: Vec<i64> = theirs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, vec![2, 3]);
}

#[tokio::test]
async fn break_glass_needs_a_reason_expires_and_is_seen_by_the_patient_and_admins() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let patient = app.patient().await;
    let (id, _) = create_ok(&app, &patient.tokens.access, &person().body).await;
    let er = provider(&app, "Dr Emergency").await;
    let record = format!("/v1/patients/{id}");
    assert_eq!(
        app.get_as(&record, &er.tokens.access).await.status(),
        StatusCode::FORBIDDEN
    );

    let glass = format!("/v1/patients/{id}/break-glass");
    let res = app
        .post_as(&glass, &er.tokens.access, &json!({ "reason": "short" }))
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app.post_as(&glass, &er.tokens.access, &json!({})).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .post_as(
            &glass,
            &er.tokens.access,
            &json!({ "reason": "unconscious in the emergency room" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let grant: Value = res.json().await.unwrap();
    let grant_id = grant["id"].as_str().unwrap().to_owned();

    // Access now works, audited with the emergency purpose and the grant.
    assert_eq!(
        app.get_as(&record, &er.tokens.access).await.status(),
        StatusCode::OK
    );
    let events = audit_actions(&app, &admin.tokens.access, &id).await;
    assert!(
        events.iter().any(
            |e| e["action"] == "break_glass_start" && e["details"]["grant_id"]["id"] == grant_id.as_str()
        )
    );
    let read = events
        .iter()
        .find(|e| e["action"] == "read" && e["actor"]["id"] == er.id.as_str())
        .unwrap();
    assert_eq!(read["purpose"], "ETREAT");
    assert_eq!(read["details"]["break_glass_grant"]["id"], grant_id.as_str());

    // Admins review grants with their reasons.
    let review: Value = app
        .get_as("/v1/admin/break-glass", &admin.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    let item = review["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == grant_id.as_str())
        .unwrap();
    assert_eq!(item["reason"], "unconscious in the emergency room");
    assert_eq!(item["provider_name"], "Dr Emergency");

    // The patient sees it in their access log, named and flagged.
    let log: Value = app
        .get_as("/v1/me/access-log", &patient.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    let entries = log["items"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["action"] == "break_glass_start"
        && e["accessor"] == "Dr Emergency"
        && e["emergency"] == true));
    assert!(
        entries.iter().any(|e| e["action"] == "read"
            && e["accessor"] == "Dr Emergency"
            && e["fields"] == "demographics")
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "create" && e["accessor"] == "you")
    );
    assert!(
        !serde_json::to_string(&log).unwrap().contains("unconscious"),
        "the reason is not shown to the patient"
    );

    // When the grant expires, access ends and the end is recorded.
    diesel::sql_query(format!(
        "UPDATE break_glass_grants SET started_at = now() - interval '2 hours', expires_at = now() - interval '1 hour' WHERE id = '{grant_id}'"
    ))
    .execute(&mut app.db.connect())
    .unwrap();
    assert_eq!(
        app.get_as(&record, &er.tokens.access).await.status(),
        StatusCode::FORBIDDEN
    );
    let ended = carewire::records::break_glass::end_expired(&mut app.db.connect()).unwrap();
    assert_eq!(ended, 1);
    let events = audit_actions(&app, &admin.tokens.access, &id).await;
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "break_glass_end" && e["details"]["grant_id"]["id"] == grant_id.as_str())
    );
}

#[tokio::test]
async fn another_patients_access_log_is_never_shown() {
    let app = TestApp::spawn().await;
    let first = app.patient().await;
    let second = app.patient().await;
    create_ok(&app, &first.tokens.access, &person().body).await;
    let log: Value = app
        .get_as("/v1/me/access-log", &second.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        log["items"].as_array().unwrap().len(),
        0,
        "a patient without a record has no log"
    );
    let log: Value = app
        .get_as("/v1/me/access-log", &first.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    assert!(!log["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn lookup_by_email_phone_or_mrn_finds_exact_matches_only() {
    let app = TestApp::spawn().await;
    let doctor = provider(&app, "Dr Lookup").await;
    let p = person();
    let (id, _) = create_ok(&app, &doctor.tokens.access, &p.body).await;
    let twin = person();
    create_ok(&app, &doctor.tokens.access, &twin.body).await;

    for query in [
        format!("email={}", p.email.to_uppercase()),
        format!("phone={}", p.phone.replace("+44", "%2B44%20")),
        format!("mrn={}", p.mrn.to_lowercase()),
    ] {
        let res = app
            .get_as(&format!("/v1/patients?{query}"), &doctor.tokens.access)
            .await;
        assert_eq!(res.status(), StatusCode::OK, "{query}");
        let found: Value = res.json().await.unwrap();
        let items = found["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{query}");
        assert_eq!(items[0]["id"], id.as_str());
        assert_eq!(items[0]["legal_name"]["family"], p.family.as_str());
        assert!(items[0].get("email").is_none(), "a lookup shows only who it is");
    }
    let none: Value = app
        .get_as("/v1/patients?email=nobody@example.test", &doctor.tokens.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let res = app
        .get_as(
            &format!("/v1/patients?email={}&mrn=X", p.email),
            &doctor.tokens.access,
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let patient = app.patient().await;
    let res = app
        .get_as(&format!("/v1/patients?email={}", p.email), &patient.tokens.access)
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

mod at_rest {
    //! What the database holds, and what happens when it is tampered with.

    use super::*;

    #[tokio::test]
    async fn no_plaintext_is_stored_and_equal_values_encrypt_differently() {
        let app = TestApp::spawn().await;
        let doctor = provider(&app, "Dr Rest").await;
        let p = person();
        let (first, _) = create_ok(&app, &doctor.tokens.access, &p.body).await;
        let (second, _) = create_ok(&app, &doctor.tokens.access, &p.body).await;

        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            text: String,
            #[diesel(sql_type = diesel::sql_types::Bytea)]
            family: Vec<u8>,
        }
        let rows: Vec<Row> = diesel::sql_query("SELECT patients::text AS text, legal_family_name_enc AS family FROM patients ORDER BY created_at")
            .load(&mut app.db.connect())
            .unwrap();
        for row in &rows {
            for secret in [&p.given, &p.family, &p.email, &p.phone, &p.mrn] {
                assert!(!row.text.contains(secret.as_str()), "plaintext in a row");
            }
        }
        assert_ne!(
            rows[0].family, rows[1].family,
            "the same family name sealed twice must differ"
        );
        assert_ne!(first, second);
    }

    #[tokio::test]
    async fn a_ciphertext_moved_between_patients_or_columns_or_altered_does_not_decrypt() {
        let app = TestApp::spawn().await;
        let admin = app.admin().await;
        let doctor = provider(&app, "Dr Tamper").await;
        let (a, _) = create_ok(&app, &doctor.tokens.access, &person().body).await;
        let (b, _) = create_ok(&app, &doctor.tokens.access, &person().body).await;
        let (c, _) = create_ok(&app, &doctor.tokens.access, &person().body).await;
        let (d, _) = create_ok(&app, &doctor.tokens.access, &person().body).await;
        let mut conn = app.db.connect();
        // a gets b's family name; c's given name moves into c's family name column; d
        // gets one byte flipped.
        for sql in [
            format!(
                "UPDATE patients SET legal_family_name_enc = (SELECT legal_family_name_enc FROM patients WHERE id = '{b}') WHERE id = '{a}'"
            ),
            format!("UPDATE patients SET legal_family_name_enc = legal_given_name_enc WHERE id = '{c}'"),
            format!(
                "UPDATE patients SET mrn_enc = set_byte(mrn_enc, 20, get_byte(mrn_enc, 20) # 1) WHERE id = '{d}'"
            ),
        ] {
            diesel::sql_query(sql).execute(&mut conn).unwrap();
        }
        for id in [&a, &c, &d] {
            let res = app
                .get_as(&format!("/v1/patients/{id}"), &doctor.tokens.access)
                .await;
            assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let body = problem(res).await;
            assert_eq!(problem_type(&body), "internal-error");
            assert!(body.get("detail").is_none(), "no detail for a decryption failure");
        }
        // The untouched record still reads, and the server carries on.
        assert_eq!(
            app.get_as(&format!("/v1/patients/{b}"), &doctor.tokens.access)
                .await
                .status(),
            StatusCode::OK
        );
        let events = audit_actions(&app, &admin.tokens.access, &a).await;
        assert!(
            events
                .iter()
                .any(|e| e["outcome"] == "failure" && e["failure_reason"] == "decryption_failed")
        );
    }

    #[tokio::test]
    async fn every_encrypted_column_is_known_to_key_rotation() {
        let app = TestApp::spawn().await;
        #[derive(diesel::QueryableByName)]
        struct Column {
            #[diesel(sql_type = diesel::sql_types::Text)]
            tbl: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            col: String,
        }
        let columns: Vec<Column> = diesel::sql_query(
            "SELECT table_name::text AS tbl, column_name::text AS col FROM information_schema.columns \
             WHERE table_schema = 'public' AND column_name LIKE '%\\_enc' AND data_type = 'bytea'",
        )
        .load(&mut app.db.connect())
        .unwrap();
        assert!(columns.len() >= 18);
        for c in columns {
            let known = carewire::crypto::fields::ENCRYPTED
                .iter()
                .any(|t| t.table == c.tbl && t.columns.contains(&c.col.as_str()));
            assert!(
                known,
                "{}.{} is encrypted but not in crypto::fields::ENCRYPTED",
                c.tbl, c.col
            );
        }
    }

    #[tokio::test]
    async fn a_dump_of_the_whole_database_holds_no_patient_data() {
        let app = TestApp::spawn().await;
        let doctor = provider(&app, "Dr Dump").await;
        let patient = app.patient().await;
        let p = person();
        let (id, _) = create_ok(&app, &doctor.tokens.access, &p.body).await;
        let n = note(
            &app,
            &doctor.tokens.access,
            &id,
            "patient reports chest pain radiating to the left arm",
        )
        .await;
        sign(&app, &doctor.tokens.access, &id, &n).await;
        app.post_as(
            &format!("/v1/patients/{id}/break-glass"),
            &provider(&app, "Dr B").await.tokens.access,
            &json!({ "reason": "patient collapsed in the lobby" }),
        )
        .await;

        let output = std::process::Command::new("pg_dump")
            .arg("--dbname")
            .arg(&app.db.url)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let dump = String::from_utf8_lossy(&output.stdout);
        assert!(
            dump.contains("COPY public.patients"),
            "the dump has the patients table"
        );
        for secret in [
            p.given.as_str(),
            p.family.as_str(),
            p.email.as_str(),
            p.phone.as_str(),
            p.mrn.as_str(),
            "chest pain",
            "collapsed in the lobby",
            patient.email.as_str(),
        ] {
            assert!(!dump.contains(secret), "the dump holds {secret}");
        }
    }
}

mod keys {
    //! `carewire keys` against a running server: rotate, rewrap, retire, and the
    //! encryption counter.

    use std::process::Command;

    use super::*;

    fn keys(app: &TestApp, args: &[&str]) -> (bool, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_carewire"))
            .arg("keys")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &app.db.url)
            .env("CAREWIRE_KEK", support::KEK)
            .env("CAREWIRE_JWT_SECRET", support::JWT_SECRET)
            .env("CAREWIRE_AUDIT_SIGNING_KEY", support::AUDIT_SIGNING_KEY)
            .env("CAREWIRE_DATA_DIR", app.data_dir())
            .env("CAREWIRE_KEY_RETIRE_GRACE_SECS", "0")
            .env("CAREWIRE_LOG", "warn")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn status_line(status: &str, version: u32) -> Vec<String> {
        status
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&version.to_string()))
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn rotate_rewrap_retire_keeps_every_record_readable() {
        let app = TestApp::builder()
            .setting("CAREWIRE_KEYRING_REFRESH_SECS", "1")
            .spawn()
            .await;
        let doctor = provider(&app, "Dr Keys").await;
        let mut ids = Vec::new();
        for _ in 0..5 {
            let (id, _) = create_ok(&app, &doctor.tokens.access, &person().body).await;
            note(&app, &doctor.tokens.access, &id, "before rotation").await;
            ids.push(id);
        }

        let (ok, out, err) = keys(&app, &["rotate"]);
        assert!(ok, "{out}{err}");
        assert!(out.contains("version 2 is now current"), "{out}");
        // Version 1 still holds data: retiring it is refused.
        let (ok, _, err) = keys(&app, &["retire", "1"]);
        assert!(!ok);
        assert!(err.contains("still use version 1"), "{err}");

        // Writes after the rotation use version 2 once the server reloads its key ring.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let (late, _) = create_ok(&app, &doctor.tokens.access, &person().body).await;
        ids.push(late);

        let (ok, out, err) = keys(&app, &["rewrap", "--batch", "2"]);
        assert!(ok, "{out}{err}");
        let (_, status, _) = keys(&app, &["status"]);
        assert_eq!(
            status_line(&status, 1)[5],
            "0",
            "no field on version 1 after rewrap: {status}"
        );

        let (ok, out, err) = keys(&app, &["retire", "1"]);
        assert!(ok, "{out}{err}");
        let (_, status, _) = keys(&app, &["status"]);
        assert_eq!(status_line(&status, 1)[1], "retired", "{status}");
        assert_eq!(status_line(&status, 2)[1], "current", "{status}");
        #[derive(diesel::QueryableByName)]
        struct Ops {
            #[diesel(sql_type = diesel::sql_types::Text)]
            ops: String,
        }
        let ops: Ops = diesel::sql_query(
            "SELECT string_agg(details->'operation'->>'code', ',' ORDER BY id) AS ops FROM audit_events WHERE resource_type = 'data_key'",
        )
        .get_result(&mut app.db.connect())
        .unwrap();
        assert_eq!(ops.ops, "rotate,rewrap,retire", "key operations are audited");

        // Every record and note reads back after the old key is destroyed.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        for id in &ids {
            let res = app
                .get_as(&format!("/v1/patients/{id}"), &doctor.tokens.access)
                .await;
            assert_eq!(res.status(), StatusCode::OK);
        }
        for id in &ids[..5] {
            let notes: Value = app
                .get_as(&format!("/v1/patients/{id}/notes"), &doctor.tokens.access)
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(notes["items"][0]["content"]["subjective"], "before rotation");
        }
        assert_eq!(
            app.get_as("/v1/me", &doctor.tokens.access).await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn rotating_the_kek_rewraps_the_data_keys() {
        let app = TestApp::spawn().await;
        let doctor = provider(&app, "Dr Kek").await;
        let (id, _) = create_ok(&app, &doctor.tokens.access, &person().body).await;
        let dir = tempfile::tempdir().unwrap();
        let new_kek = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
        std::fs::write(dir.path().join("kek"), new_kek).unwrap();
        let (ok, out, err) = keys(
            &app,
            &[
                "rotate-kek",
                "--new-kek-file",
                dir.path().join("kek").to_str().unwrap(),
            ],
        );
        assert!(ok, "{out}{err}");
        // The old KEK no longer opens the key ring (rotating needs to); the new one does.
        let (ok, _, err) = keys(&app, &["rotate"]);
        assert!(!ok && err.contains("KEK"), "{err}");
        let output = Command::new(env!("CARGO_BIN_EXE_carewire"))
            .args(["keys", "rotate"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &app.db.url)
            .env("CAREWIRE_KEK", new_kek)
            .env("CAREWIRE_JWT_SECRET", support::JWT_SECRET)
            .env("CAREWIRE_AUDIT_SIGNING_KEY", support::AUDIT_SIGNING_KEY)
            .env("CAREWIRE_DATA_DIR", app.data_dir())
            .env("CAREWIRE_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The running server kept its unwrapped keys and keeps serving until restarted.
        assert_eq!(
            app.get_as(&format!("/v1/patients/{id}"), &doctor.tokens.access)
                .await
                .status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn a_key_that_reaches_its_encryption_limit_is_rotated_automatically() {
        let app = TestApp::builder()
            .setting("CAREWIRE_KEY_MAX_ENCRYPTIONS", "64")
            .spawn()
            .await;
        let doctor = provider(&app, "Dr Limit").await;
        let mut ids = Vec::new();
        // Each record seals about a dozen fields.
        for _ in 0..12 {
            let (id, _) = create_ok(&app, &doctor.tokens.access, &person().body).await;
            ids.push(id);
        }
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            n: i32,
        }
        let newest: N = diesel::sql_query("SELECT max(version) AS n FROM data_keys")
            .get_result(&mut app.db.connect())
            .unwrap();
        assert!(
            newest.n >= 3,
            "the key was not rotated at its limit (newest version {})",
            newest.n
        );
        for id in ids {
            assert_eq!(
                app.get_as(&format!("/v1/patients/{id}"), &doctor.tokens.access)
                    .await
                    .status(),
                StatusCode::OK
            );
        }
    }
}

/// Issue 14, item 7: a note documents an appointment of its own patient only.
#[tokio::test]
async fn a_note_links_only_an_appointment_of_its_own_patient() {
    use support::booking;
    let app = TestApp::spawn().await;
    let c = booking::clinic(&app).await;
    let provider = &c.provider.tokens.access;
    let (ada, ada_id) = booking::patient(&app).await;
    let (bob, bob_id) = booking::patient(&app).await;
    let book = |who: User, days: i64| {
        let app = &app;
        let c = &c;
        async move {
            booking::book_ok(
                app,
                &who.tokens.access,
                json!({ "provider_id": c.provider.id, "type_id": c.type_id, "starts_at": booking::free_slot(app, c, days).await }),
            )
            .await
        }
    };
    let adas = book(ada, 2).await;
    let bobs = book(bob, 3).await;
    let notes_of = |id: &str| format!("/v1/patients/{id}/notes");
    let before = booking::count(&app, "SELECT count(*) AS n FROM clinical_notes");
    for (appointment, field) in [
        (
            bobs["id"].as_str().unwrap().to_owned(),
            "another patient's appointment",
        ),
        (uuid::Uuid::new_v4().to_string(), "no appointment at all"),
    ] {
        let res = app
            .post_as(
                &notes_of(&ada_id),
                provider,
                &json!({ "subjective": "x", "appointment_id": appointment }),
            )
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert_eq!(
            problem(res).await["errors"][0]["field"],
            "appointment_id",
            "{field}"
        );
    }
    assert_eq!(
        booking::count(&app, "SELECT count(*) AS n FROM clinical_notes"),
        before
    );
    let res = app
        .post_as(
            &notes_of(&ada_id),
            provider,
            &json!({ "subjective": "x", "appointment_id": adas["id"] }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.json::<Value>().await.unwrap()["appointment_id"], adas["id"]);
    // And the database holds the rule, whoever writes.
    let err = diesel::sql_query(format!(
        "UPDATE clinical_notes SET appointment_id = '{}' WHERE patient_id = '{ada_id}'",
        bobs["id"].as_str().unwrap()
    ))
    .execute(&mut app.db.connect())
    .unwrap_err();
    assert!(err.to_string().contains("clinical_notes_appointment_fk"), "{err}");
    let _ = bob_id;
}

/// Issue 14, item 7: a provider's lookup says what it searched by and why.
#[tokio::test]
async fn a_patient_lookup_is_audited_with_the_field_and_the_stated_purpose() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let doctor = provider(&app, "Dr Lookup").await;
    let someone = person();
    let (id, _) = create_ok(&app, &doctor.tokens.access, &someone.body).await;
    let email = someone.email.clone();
    let search = |query: String| {
        let app = &app;
        let token = doctor.tokens.access.clone();
        async move { app.get_as(&format!("/v1/patients?{query}"), &token).await }
    };
    let res = search(format!("email={}&purpose=operations", urlencoding(&email))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let found: Value = res.json().await.unwrap();
    assert!(
        found["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == id.as_str())
    );
    let res = search(format!("email={}&purpose=curiosity", urlencoding(&email))).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(res).await["errors"][0]["field"], "query.purpose");
    let lookups: Vec<Value> = audit_actions(&app, &admin.tokens.access, &id)
        .await
        .into_iter()
        .filter(|e| e["details"]["via"]["code"] == "lookup")
        .collect();
    assert_eq!(lookups.len(), 1, "{lookups:#?}");
    assert_eq!(lookups[0]["purpose"], "HOPERAT");
    assert_eq!(lookups[0]["details"]["by"]["code"], "email");
    assert_eq!(lookups[0]["actor"]["id"], doctor.id.as_str());
}

fn urlencoding(value: &str) -> String {
    value.replace('@', "%40").replace('+', "%2B")
}
