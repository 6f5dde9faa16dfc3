//! The OpenAPI document against the server that serves it: a session that walks
//! through the API as clients do (sign-up, records, calendar, booking, notes, the
//! admin's log, and the usual mistakes) and holds every answer to the document. Each
//! response's status must be documented for its operation, its content type listed
//! for that status, and its body valid against that schema (JSON Schema 2020-12, with
//! the document's components).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::booking::{self, Clinic};
use crate::support::{TestApp, User};

/// The served document and what the session found wrong with the answers.
struct Contract<'a> {
    app: &'a TestApp,
    doc: Value,
    checked: usize,
    findings: Vec<String>,
}

/// One request of the session.
struct Call<'a> {
    method: Method,
    /// The operation's path template, as the document names it.
    template: &'a str,
    /// The concrete path and query.
    path: String,
    token: Option<&'a str>,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
}

fn call(method: Method, template: &str) -> Call<'_> {
    Call {
        method,
        template,
        path: template.to_owned(),
        token: None,
        headers: Vec::new(),
        body: None,
    }
}

impl<'a> Call<'a> {
    fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }
    fn token(mut self, token: &'a str) -> Self {
        self.token = Some(token);
        self
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

impl<'a> Contract<'a> {
    async fn load(app: &'a TestApp) -> Contract<'a> {
        let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
        Contract {
            app,
            doc,
            checked: 0,
            findings: Vec::new(),
        }
    }

    /// Sends `call`, holds the answer to the document, and returns status and body.
    async fn send(&mut self, call: Call<'_>) -> (StatusCode, Value) {
        let mut request = self.app.request(call.method.clone(), &call.path);
        if let Some(token) = call.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let res = request.send().await.unwrap();
        let status = res.status();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_owned());
        let text = res.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let what = format!("{} {} → {status}", call.method, call.path);
        if let Err(finding) = self.holds(&call, status, content_type.as_deref(), &text, &body) {
            self.findings.push(format!("{what}: {finding}"));
        }
        self.checked += 1;
        (status, body)
    }

    fn holds(
        &self,
        call: &Call<'_>,
        status: StatusCode,
        content_type: Option<&str>,
        text: &str,
        body: &Value,
    ) -> Result<(), String> {
        let method = call.method.as_str().to_ascii_lowercase();
        let operation = self
            .doc
            .pointer(&format!("/paths/{}/{method}", call.template.replace('/', "~1")))
            .ok_or("the operation is not documented")?;
        // A body the server took must be one the document allows (a schema no value
        // satisfies, such as an allOf over closed objects, shows here).
        if let (true, Some(sent)) = (status.is_success(), &call.body)
            && let Some(schema) = operation.pointer("/requestBody/content/application~1json/schema")
        {
            self.validate(schema, sent)
                .map_err(|e| format!("the server accepted a request body the document forbids: {e}"))?;
        }
        let mut response = operation["responses"]
            .get(status.as_str())
            .or_else(|| operation["responses"].get("default"))
            .ok_or("the status is not documented")?;
        if let Some(reference) = response.get("$ref").and_then(Value::as_str) {
            response = self
                .doc
                .pointer(reference.trim_start_matches('#'))
                .ok_or_else(|| format!("{reference} does not resolve"))?;
        }
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            return match text.is_empty() {
                true => Ok(()),
                false => Err(format!(
                    "a body was sent where none is documented ({content_type:?})"
                )),
            };
        };
        let content_type = content_type.ok_or("no content type")?;
        let media = content.get(content_type).ok_or_else(|| {
            format!(
                "{content_type} is not documented (only {:?})",
                content.keys().collect::<Vec<_>>()
            )
        })?;
        let Some(schema) = media.get("schema") else {
            return Ok(());
        };
        self.validate(schema, body)
            .map_err(|e| format!("the body breaks the schema: {e}"))
    }

    /// Checks `value` against `schema`, a schema of the document.
    fn validate(&self, schema: &Value, value: &Value) -> Result<(), String> {
        let mut wrapped = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"].clone(),
        });
        if let (Some(target), Some(schema)) = (wrapped.as_object_mut(), schema.as_object()) {
            target.extend(schema.clone());
        }
        let validator =
            jsonschema::validator_for(&wrapped).map_err(|e| format!("the schema does not compile: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        match errors.is_empty() {
            true => Ok(()),
            false => Err(errors.join("; ")),
        }
    }
}

/// A body's string member.
fn id(body: &Value) -> String {
    body["id"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn every_answer_of_a_client_session_matches_the_openapi_document() {
    let app = TestApp::spawn().await;
    let mut api = Contract::load(&app).await;
    let Clinic {
        admin,
        provider,
        type_id,
    } = booking::clinic(&app).await;
    let (admin_token, doctor) = (admin.tokens.access.clone(), provider.tokens.access.clone());
    let health = ["/healthz", "/readyz", "/openapi.json"];
    for path in health {
        api.send(call(Method::GET, path)).await;
    }

    // Signing up and in, and the mistakes people make there.
    let email = crate::support::unique_email("contract");
    let (status, _) = api
        .send(
            call(Method::POST, "/v1/auth/register")
                .json(json!({ "email": email, "password": crate::support::PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    api.send(
        call(Method::POST, "/v1/auth/register")
            .json(json!({ "email": email, "password": crate::support::PASSWORD })),
    )
    .await;
    api.send(call(Method::POST, "/v1/auth/register").json(json!({ "email": "nope" })))
        .await;
    api.send(
        call(Method::POST, "/v1/auth/login")
            .json(json!({ "email": email, "password": "wrong password here" })),
    )
    .await;
    let (_, tokens) = api
        .send(
            call(Method::POST, "/v1/auth/login")
                .json(json!({ "email": email, "password": crate::support::PASSWORD })),
        )
        .await;
    let patient_token = tokens["access_token"].as_str().unwrap().to_owned();
    let (_, refreshed) = api
        .send(
            call(Method::POST, "/v1/auth/refresh").json(json!({ "refresh_token": tokens["refresh_token"] })),
        )
        .await;
    let patient_token = refreshed["access_token"]
        .as_str()
        .map_or(patient_token, str::to_owned);
    api.send(call(Method::GET, "/v1/me")).await;
    api.send(call(Method::GET, "/v1/me").token(&patient_token)).await;
    api.send(call(Method::POST, "/v1/ws/ticket").token(&patient_token))
        .await;

    // The patient's record: created, read, changed with and without If-Match.
    let (status, record) = api
        .send(
            call(Method::POST, "/v1/patients")
                .token(&patient_token)
                .json(booking::patient_body("Contract")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let patient_id = id(&record);
    let record_path = format!("/v1/patients/{patient_id}");
    api.send(
        call(Method::GET, "/v1/patients/{id}")
            .path(&record_path)
            .token(&patient_token),
    )
    .await;
    api.send(
        call(Method::PATCH, "/v1/patients/{id}")
            .path(&record_path)
            .token(&patient_token)
            .json(json!({ "preferred_name": "Cee" })),
    )
    .await;
    api.send(
        call(Method::PATCH, "/v1/patients/{id}")
            .path(&record_path)
            .token(&patient_token)
            .header("if-match", "\"99\"")
            .json(json!({ "preferred_name": "Cee" })),
    )
    .await;
    api.send(
        call(Method::PATCH, "/v1/patients/{id}")
            .path(&record_path)
            .token(&patient_token)
            .header("if-match", format!("\"{}\"", record["version"]))
            .json(json!({ "preferred_name": "Cee" })),
    )
    .await;
    api.send(
        call(Method::GET, "/v1/patients/{id}")
            .path(format!("/v1/patients/{}", uuid::Uuid::new_v4()))
            .token(&doctor),
    )
    .await;
    api.send(
        call(Method::GET, "/v1/patients")
            .path(format!("/v1/patients?email={}", email.replace('@', "%40")))
            .token(&doctor),
    )
    .await;
    api.send(
        call(Method::GET, "/v1/patients")
            .path("/v1/patients?colour=blue")
            .token(&doctor),
    )
    .await;
    api.send(call(Method::GET, "/v1/me/access-log").token(&patient_token))
        .await;

    // The calendar and a booking, then its changes.
    let provider_path = format!("/v1/providers/{}", provider.id);
    api.send(call(Method::GET, "/v1/providers")).await;
    api.send(call(Method::GET, "/v1/providers/{id}").path(&provider_path))
        .await;
    api.send(
        call(Method::GET, "/v1/providers/{id}/appointment-types")
            .path(format!("{provider_path}/appointment-types")),
    )
    .await;
    api.send(
        call(Method::GET, "/v1/providers/{id}/availability")
            .path(format!("{provider_path}/availability"))
            .token(&doctor),
    )
    .await;
    let from = chrono::Utc::now() + chrono::Duration::days(2);
    let range = |from: chrono::DateTime<chrono::Utc>| {
        format!(
            "from={}&to={}",
            from.to_rfc3339().replace('+', "%2B"),
            (from + chrono::Duration::hours(6))
                .to_rfc3339()
                .replace('+', "%2B")
        )
    };
    let (_, slots) = api
        .send(
            call(Method::GET, "/v1/providers/{id}/slots")
                .path(format!("{provider_path}/slots?type={type_id}&{}", range(from))),
        )
        .await;
    api.send(call(Method::GET, "/v1/providers/{id}/slots").path(format!("{provider_path}/slots?type=x")))
        .await;
    let starts = slots["slots"][0]["starts_at"].clone();
    let booking_body =
        json!({ "provider_id": provider.id, "type_id": type_id, "starts_at": starts, "reason": "a cough" });
    let (status, booked) = api
        .send(
            call(Method::POST, "/v1/appointments")
                .token(&patient_token)
                .header("idempotency-key", "contract-1")
                .json(booking_body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    api.send(
        call(Method::POST, "/v1/appointments")
            .token(&patient_token)
            .header("idempotency-key", "contract-1")
            .json(booking_body),
    )
    .await;
    api.send(
        call(Method::POST, "/v1/appointments")
            .token(&patient_token)
            .json(json!({ "provider_id": provider.id, "type_id": type_id, "starts_at": starts })),
    )
    .await;
    let appointment = format!("/v1/appointments/{}", id(&booked));
    api.send(call(Method::GET, "/v1/appointments").token(&patient_token))
        .await;
    api.send(
        call(Method::GET, "/v1/appointments/{id}")
            .path(&appointment)
            .token(&patient_token),
    )
    .await;
    api.send(
        call(Method::GET, "/v1/appointments/{id}")
            .path(&appointment)
            .token(&admin_token),
    )
    .await;
    api.send(
        call(Method::POST, "/v1/appointments/{id}/reschedule")
            .path(format!("{appointment}/reschedule"))
            .token(&patient_token)
            .header("if-match", format!("\"{}\"", booked["version"]))
            .json(json!({ "starts_at": "soon" })),
    )
    .await;
    api.send(
        call(Method::POST, "/v1/appointments/{id}/accept")
            .path(format!("{appointment}/accept"))
            .token(&patient_token)
            .header("if-match", format!("\"{}\"", booked["version"])),
    )
    .await;
    api.send(
        call(Method::POST, "/v1/appointments/{id}/no-show")
            .path(format!("{appointment}/no-show"))
            .token(&doctor)
            .header("if-match", format!("\"{}\"", booked["version"])),
    )
    .await;
    api.send(
        call(Method::GET, "/v1/consultations/{id}/ice-servers")
            .path(format!("/v1/consultations/{}/ice-servers", id(&booked)))
            .token(&patient_token),
    )
    .await;

    // Notes by the provider the patient booked, and a refusal for another.
    let notes = format!("{record_path}/notes");
    let (status, note) = api
        .send(
            call(Method::POST, "/v1/patients/{id}/notes")
                .path(&notes)
                .token(&doctor)
                .json(json!({ "subjective": "cough", "appointment_id": booked["id"] })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let note_path = format!("{notes}/{}", id(&note));
    api.send(
        call(Method::GET, "/v1/patients/{id}/notes")
            .path(&notes)
            .token(&doctor),
    )
    .await;
    api.send(
        call(Method::GET, "/v1/patients/{id}/notes/{note_id}")
            .path(&note_path)
            .token(&doctor),
    )
    .await;
    api.send(
        call(Method::POST, "/v1/patients/{id}/notes/{note_id}/sign")
            .path(format!("{note_path}/sign"))
            .token(&doctor)
            .header("if-match", format!("\"{}\"", note["version"])),
    )
    .await;
    api.send(
        call(Method::GET, "/v1/patients/{id}/notes/{note_id}/versions")
            .path(format!("{note_path}/versions"))
            .token(&patient_token),
    )
    .await;
    let stranger: User = app.user_with_role(carewire::context::Role::Provider).await;
    api.send(
        call(Method::GET, "/v1/patients/{id}/notes")
            .path(&notes)
            .token(&stranger.tokens.access),
    )
    .await;
    api.send(
        call(Method::POST, "/v1/patients/{id}/notes")
            .path(&notes)
            .token(&patient_token)
            .json(json!({ "subjective": "mine" })),
    )
    .await;

    // The cancellation, notifications, and the admin's views.
    api.send(
        call(Method::POST, "/v1/appointments/{id}/cancel")
            .path(format!("{appointment}/cancel"))
            .token(&patient_token)
            .header("if-match", format!("\"{}\"", booked["version"]))
            .json(json!({ "reason": "better" })),
    )
    .await;
    api.send(call(Method::GET, "/v1/me/notifications").token(&patient_token))
        .await;
    api.send(
        call(Method::POST, "/v1/me/notifications/{id}/read")
            .path(format!("/v1/me/notifications/{}/read", uuid::Uuid::new_v4()))
            .token(&patient_token),
    )
    .await;
    api.send(
        call(Method::GET, "/v1/admin/audit")
            .path(format!("/v1/admin/audit?patient={patient_id}"))
            .token(&admin_token),
    )
    .await;
    api.send(call(Method::GET, "/v1/admin/audit").token(&patient_token))
        .await;
    api.send(call(Method::GET, "/v1/admin/break-glass").token(&admin_token))
        .await;
    api.send(
        call(Method::GET, "/v1/admin/users/{id}")
            .path(format!("/v1/admin/users/{}", provider.id))
            .token(&admin_token),
    )
    .await;
    // A provider's profile, as the admin creates it.
    let newcomer = app.user_with_role(carewire::context::Role::Provider).await;
    let (status, _) = api
        .send(
            call(Method::POST, "/v1/providers")
                .token(&admin_token)
                .json(json!({ "account_id": newcomer.id, "display_name": "Dr Contract", "specialty": "Family medicine", "time_zone": "Europe/Lisbon" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    api.send(call(Method::POST, "/v1/auth/logout").token(&patient_token))
        .await;

    assert!(api.checked >= 45, "only {} answers checked", api.checked);
    assert!(
        api.findings.is_empty(),
        "{} of {} answers disagree with the document:\n{}",
        api.findings.len(),
        api.checked,
        api.findings.join("\n")
    );
}
