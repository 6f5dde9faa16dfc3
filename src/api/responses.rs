//! The problem responses an operation can answer because of its shape, added to
//! every operation of the document so that it lists each status the server really
//! sends. A route's annotation names what its own rules answer (403, 404, 409, 412,
//! …); what follows from how a request reaches it is derived here, once:
//!
//! | the operation … | can also answer |
//! |---|---|
//! | any (the edge reads every request line and header) | 400 |
//! | any that reaches the database (all but `health`) | 503 |
//! | needs a bearer token | 401 |
//! | has query or header parameters | 422 (a bad value, an unknown parameter) |
//! | has a path parameter | 404 (a value of the wrong form matches no route) |
//! | takes a body | 408 (too slow), 413 (too large), 415 (not JSON), 422 |
//! | takes an `Idempotency-Key` | 422 (the key reused for another request) |
//!
//! Each is a problem document (`application/problem+json`), described once under
//! `components/responses`.

use serde_json::{Map, Value, json};

/// (status, name under components/responses, description).
const SHARED: &[(&str, &str, &str)] = &[
    (
        "400",
        "BadRequest",
        "Malformed request line, header, query or body",
    ),
    ("401", "Unauthorized", "No valid access token"),
    ("404", "NotFound", "Not found"),
    ("408", "RequestTimeout", "The body did not arrive in time"),
    ("413", "PayloadTooLarge", "The body is larger than the limit"),
    ("415", "UnsupportedMediaType", "The body is not application/json"),
    ("422", "Invalid", "Invalid input"),
    ("503", "Unavailable", "The database is unavailable; retry later"),
];

/// Adds the shared responses to `doc` and to each of its operations, keeping any an
/// operation documents itself.
pub fn derive(doc: &mut Value) {
    let components = doc
        .as_object_mut()
        .map(|d| d.entry("components").or_insert_with(|| json!({})));
    if let Some(Value::Object(components)) = components {
        let responses = components.entry("responses").or_insert_with(|| json!({}));
        if let Value::Object(responses) = responses {
            for (_, name, description) in SHARED {
                responses.insert((*name).to_owned(), problem(description));
            }
        }
    }
    let Some(Value::Object(paths)) = doc.get_mut("paths") else {
        return;
    };
    for item in paths.values_mut() {
        let Value::Object(item) = item else { continue };
        for (method, operation) in item.iter_mut() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let Value::Object(operation) = operation else {
                continue;
            };
            let statuses = statuses_for(operation);
            let responses = operation.entry("responses").or_insert_with(|| json!({}));
            let Value::Object(responses) = responses else {
                continue;
            };
            for status in statuses {
                if let Some((_, name, _)) = SHARED.iter().find(|(s, _, _)| *s == status) {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| json!({ "$ref": format!("#/components/responses/{name}") }));
                }
            }
        }
    }
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A problem response described as `description`.
pub fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/ProblemDoc" } } },
    })
}

/// The statuses an operation answers because of its shape (the table above).
fn statuses_for(operation: &Map<String, Value>) -> Vec<&'static str> {
    let parameters: Vec<&Value> = operation
        .get("parameters")
        .and_then(Value::as_array)
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    let located = |place: &str| parameters.iter().any(|p| p["in"] == place);
    let secured = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let health = operation
        .get("tags")
        .and_then(Value::as_array)
        .is_some_and(|tags| tags.iter().any(|t| t == "health"));
    let mut statuses = vec!["400"];
    if !health {
        statuses.push("503");
    }
    if secured {
        statuses.push("401");
    }
    if located("query") || located("header") {
        statuses.push("422");
    }
    if located("path") {
        statuses.push("404");
    }
    if operation.contains_key("requestBody") {
        statuses.extend(["408", "413", "415", "422"]);
    }
    statuses
}
