//! OpenAPI links: from each response that creates something to the operations that
//! can follow it, so that a client generator or a stateful tester can go from
//! "created" to "read, change, act on it". Each names its target by path and method
//! (`operationRef`) and fills the target's path ids, and `If-Match` from the
//! response's `ETag` where the target needs one.

use serde_json::{Map, Value, json};

/// A parameter of the target and the runtime expression that fills it.
type Fill = (&'static str, &'static str);

/// A link's name, its target's path and method, and what fills the target.
type Link = (&'static str, &'static str, &'static str, &'static [Fill]);

const ID: Fill = ("path.id", "$response.body#/id");
const ETAG: Fill = ("header.If-Match", "$response.header.ETag");

/// The links, by the response they start from: (path, method, status, links).
const LINKS: &[(&str, &str, &str, &[Link])] = &[
    (
        "/v1/patients",
        "post",
        "201",
        &[
            ("ReadPatient", "/v1/patients/{id}", "get", &[ID]),
            ("UpdatePatient", "/v1/patients/{id}", "patch", &[ID, ETAG]),
            ("ListNotes", "/v1/patients/{id}/notes", "get", &[ID]),
            ("StartNote", "/v1/patients/{id}/notes", "post", &[ID]),
        ],
    ),
    (
        "/v1/patients/{id}/notes",
        "post",
        "201",
        &[
            ("ReadNote", "/v1/patients/{id}/notes/{note_id}", "get", NOTE),
            ("EditNote", "/v1/patients/{id}/notes/{note_id}", "put", NOTE_ETAG),
            (
                "SignNote",
                "/v1/patients/{id}/notes/{note_id}/sign",
                "post",
                NOTE_ETAG,
            ),
            (
                "NoteVersions",
                "/v1/patients/{id}/notes/{note_id}/versions",
                "get",
                NOTE,
            ),
        ],
    ),
    (
        "/v1/providers",
        "post",
        "201",
        &[
            ("ReadProvider", "/v1/providers/{id}", "get", &[ID]),
            ("UpdateProvider", "/v1/providers/{id}", "patch", &[ID, ETAG]),
            ("ListTypes", "/v1/providers/{id}/appointment-types", "get", &[ID]),
            (
                "CreateType",
                "/v1/providers/{id}/appointment-types",
                "post",
                &[ID],
            ),
            (
                "ReadAvailability",
                "/v1/providers/{id}/availability",
                "get",
                &[ID],
            ),
            (
                "SetWeekly",
                "/v1/providers/{id}/availability/weekly",
                "put",
                &[ID],
            ),
            (
                "AddOverride",
                "/v1/providers/{id}/availability/overrides",
                "post",
                &[ID],
            ),
            ("Slots", "/v1/providers/{id}/slots", "get", &[ID]),
        ],
    ),
    (
        "/v1/providers/{id}/appointment-types",
        "post",
        "201",
        &[(
            "UpdateType",
            "/v1/providers/{id}/appointment-types/{type_id}",
            "patch",
            &[
                ("path.id", "$response.body#/provider_id"),
                ("path.type_id", "$response.body#/id"),
                ETAG,
            ],
        )],
    ),
    (
        "/v1/providers/{id}/availability/overrides",
        "post",
        "201",
        &[(
            "DeleteOverride",
            "/v1/providers/{id}/availability/overrides/{override_id}",
            "delete",
            &[
                ("path.id", "$request.path.id"),
                ("path.override_id", "$response.body#/id"),
            ],
        )],
    ),
    (
        "/v1/appointments",
        "post",
        "201",
        &[
            ("ReadAppointment", "/v1/appointments/{id}", "get", &[ID]),
            ("Confirm", "/v1/appointments/{id}/confirm", "post", &[ID, ETAG]),
            ("Cancel", "/v1/appointments/{id}/cancel", "post", &[ID, ETAG]),
            (
                "Reschedule",
                "/v1/appointments/{id}/reschedule",
                "post",
                &[ID, ETAG],
            ),
            ("CheckIn", "/v1/appointments/{id}/check-in", "post", &[ID, ETAG]),
            ("Accept", "/v1/appointments/{id}/accept", "post", &[ID, ETAG]),
            ("IceServers", "/v1/consultations/{id}/ice-servers", "get", &[ID]),
        ],
    ),
    (
        "/v1/admin/users",
        "post",
        "201",
        &[
            ("ReadUser", "/v1/admin/users/{id}", "get", &[ID]),
            ("DisableUser", "/v1/admin/users/{id}/disable", "post", &[ID]),
        ],
    ),
];

const NOTE: &[Fill] = &[
    ("path.id", "$response.body#/patient_id"),
    ("path.note_id", "$response.body#/id"),
];
const NOTE_ETAG: &[Fill] = &[
    ("path.id", "$response.body#/patient_id"),
    ("path.note_id", "$response.body#/id"),
    ETAG,
];

/// `#/paths/…/method` for a path and method (JSON pointer: `/` is `~1`).
fn operation_ref(path: &str, method: &str) -> String {
    format!("#/paths/{}/{method}", path.replace('~', "~0").replace('/', "~1"))
}

/// Adds [`LINKS`] to the responses they start from. A link whose source or target
/// the document does not have is a mistake in the table: debug builds panic on it
/// (the OpenAPI tests would catch it), release builds leave it out.
pub fn add(doc: &mut Value) {
    for (path, method, status, links) in LINKS {
        let mut named = Map::new();
        for (name, target, target_method, fills) in *links {
            debug_assert!(
                doc.pointer(&operation_ref(target, target_method)[1..]).is_some(),
                "link {name} targets {target_method} {target}, which the document lacks"
            );
            let parameters: Map<String, Value> = fills
                .iter()
                .map(|(param, expr)| ((*param).to_owned(), json!(expr)))
                .collect();
            named.insert(
                (*name).to_owned(),
                json!({ "operationRef": operation_ref(target, target_method), "parameters": parameters }),
            );
        }
        let pointer = format!("{}/responses/{status}", &operation_ref(path, method)[1..]);
        match doc.pointer_mut(&pointer).and_then(Value::as_object_mut) {
            Some(response) => {
                response.insert("links".into(), Value::Object(named));
            }
            None => debug_assert!(false, "no response {status} of {method} {path} to link from"),
        }
    }
}
