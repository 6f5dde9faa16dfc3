//! The OpenAPI 3.1 document, generated from the route annotations beside each route
//! (utoipa), served at `GET /openapi.json`. The edge's route table
//! ([`crate::http::routes::RouteTable`]) is read from it, so a route is documented
//! exactly when the edge knows it; a test checks that each is really served.

use http::StatusCode;
use serde_json::{Map, Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::routes::{RouteDef, RouteTable};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from POST /v1/auth/login"))
                    .build(),
            ),
        );
    }
}

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Carewire",
        description = "Real-time backend for healthcare scheduling and telemedicine. Errors are RFC 9457 problem documents.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    paths(
        crate::http::health::healthz,
        crate::http::health::readyz,
        crate::http::health::metrics,
        openapi_json,
        crate::accounts::session_routes::register,
        crate::accounts::session_routes::login,
        crate::accounts::session_routes::refresh,
        crate::accounts::session_routes::logout,
        crate::accounts::routes::me,
        crate::accounts::routes::create_user,
        crate::accounts::routes::get_user,
        crate::accounts::routes::disable_user,
        crate::records::audit_routes::admin_search,
        crate::records::audit_routes::me_access_log,
        crate::records::routes::create,
        crate::records::routes::search,
        crate::records::routes::read,
        crate::records::routes::update,
        crate::records::routes::open_break_glass,
        crate::records::routes::review_break_glass,
        crate::records::note_routes::create,
        crate::records::note_routes::list,
        crate::records::note_routes::read,
        crate::records::note_routes::edit,
        crate::records::note_routes::versions,
        crate::records::note_routes::sign,
        crate::records::note_routes::amend,
        crate::scheduling::provider_routes::create_provider,
        crate::scheduling::provider_routes::list_providers,
        crate::scheduling::provider_routes::get_provider,
        crate::scheduling::provider_routes::update_provider,
        crate::scheduling::provider_routes::list_types,
        crate::scheduling::provider_routes::create_type,
        crate::scheduling::provider_routes::update_type,
        crate::scheduling::provider_routes::get_availability,
        crate::scheduling::provider_routes::put_weekly,
        crate::scheduling::provider_routes::add_override,
        crate::scheduling::provider_routes::delete_override,
        crate::scheduling::provider_routes::slots,
        crate::scheduling::appointment_routes::create,
        crate::scheduling::appointment_routes::list,
        crate::scheduling::appointment_routes::read,
        crate::scheduling::appointment_routes::confirm,
        crate::scheduling::appointment_routes::cancel,
        crate::scheduling::appointment_routes::reschedule,
        crate::scheduling::appointment_routes::check_in,
        crate::scheduling::appointment_routes::no_show,
        crate::scheduling::appointment_routes::complete,
        crate::scheduling::appointment_routes::entered_in_error,
        crate::scheduling::appointment_routes::accept,
        crate::realtime::gateway::ticket,
        crate::realtime::gateway::ws,
        crate::notifications::routes::list,
        crate::notifications::routes::read,
        crate::consult::routes::socket,
        crate::consult::routes::ice_servers,
    ),
    tags(
        (name = "health", description = "Liveness, readiness, metrics"),
        (name = "auth", description = "Registration, sign-in, tokens"),
        (name = "accounts", description = "Accounts and administration"),
        (name = "audit", description = "The audit log"),
        (name = "patients", description = "Patient records (PHI, encrypted, audited)"),
        (name = "notes", description = "Clinical notes"),
        (name = "providers", description = "Providers, appointment types, availability, slots"),
        (name = "appointments", description = "Holding, booking and managing appointments"),
        (name = "realtime", description = "The WebSocket gateway (protocol carewire.v1)"),
        (name = "notifications", description = "Reminders and other notifications"),
        (name = "consultations", description = "Video consultations: signaling WebSocket (protocol carewire.consult.v1) and ICE servers"),
    )
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> String {
    let Ok(mut doc) = serde_json::to_value(ApiDoc::openapi()) else {
        return "{}".into();
    };
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        merge_flattened(schemas);
    }
    super::responses::derive(&mut doc);
    super::links::add(&mut doc);
    doc.to_string()
}

/// utoipa documents a `#[serde(flatten)]` field as an `allOf` of the flattened type
/// and the rest. When the flattened type is closed (`deny_unknown_fields`, so
/// `additionalProperties: false`), that `allOf` forbids the other half's fields and no
/// value satisfies it. serde reads and writes such a struct as one object, so that is
/// what it is documented as: the members' properties and required fields merged, closed
/// when any member was.
fn merge_flattened(schemas: &mut Map<String, Value>) {
    let snapshot = schemas.clone();
    for schema in schemas.values_mut() {
        let Some(members) = schema.get("allOf").and_then(Value::as_array) else {
            continue;
        };
        let resolved: Vec<&Value> = members
            .iter()
            .map(|m| {
                m.get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    .and_then(|name| snapshot.get(name))
                    .unwrap_or(m)
            })
            .collect();
        let objects = resolved.iter().all(|m| {
            m.get("type") == Some(&json!("object")) && !m.as_object().is_some_and(|o| o.contains_key("allOf"))
        });
        let closed = resolved
            .iter()
            .any(|m| m.get("additionalProperties") == Some(&json!(false)));
        if !objects || !closed {
            continue;
        }
        let mut properties = Map::new();
        let mut required: Vec<Value> = Vec::new();
        for member in &resolved {
            if let Some(p) = member.get("properties").and_then(Value::as_object) {
                properties.extend(p.clone());
            }
            for field in member
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !required.contains(field) {
                    required.push(field.clone());
                }
            }
        }
        let description = schema.get("description").cloned();
        let mut merged = json!({
            "type": "object",
            "required": required,
            "properties": properties,
            "additionalProperties": false,
        });
        if let Some(description) = description {
            merged["description"] = description;
        }
        *schema = merged;
    }
}

/// Every operation the document lists, as the edge's route table.
pub fn route_table() -> RouteTable {
    let doc = ApiDoc::openapi();
    let mut routes = Vec::new();
    for (path, item) in &doc.paths.paths {
        let Ok(Value::Object(operations)) = serde_json::to_value(item) else {
            continue;
        };
        // A path item's other keys (summary, parameters, ...) are not operations.
        const METHODS: [&str; 8] = [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ];
        for method in operations.keys().filter(|k| METHODS.contains(&k.as_str())) {
            routes.push(RouteDef {
                method: method.to_ascii_uppercase(),
                path: path.as_str().into(),
            });
        }
    }
    RouteTable::new(routes)
}

/// GET /openapi.json: this API, as OpenAPI 3.1.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub(crate) fn openapi_json() -> BoxedFilter<(Response,)> {
    let body = std::sync::Arc::new(document());
    warp::path!("openapi.json")
        .and(warp::get())
        .map(move || {
            let mut res = Response::new(body.as_str().to_owned().into());
            *res.status_mut() = StatusCode::OK;
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            res
        })
        .boxed()
}
