//! The shapes every route's OpenAPI annotation names: problem documents, lists and
//! pages. The document itself is assembled above the features, in
//! `api::openapi`.

use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemDoc {
    /// Stable identifier of the kind of problem.
    #[serde(rename = "type")]
    #[schema(example = "https://carewire.dev/problems/validation-failed")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// Never holds patient data or internals.
    pub detail: Option<String>,
    /// For conflicts and refusals: what exactly (`slot_taken`, `no_care_relationship`, …).
    pub code: Option<String>,
    /// For validation failures: which fields and why.
    pub errors: Option<Vec<FieldError>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

/// A list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Items<T: ToSchema> {
    pub items: Vec<T>,
}

/// A page of a longer list; pass `next_cursor` as `cursor` for the next one.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The problem responses routes share, each described once. A route lists the ones it
/// can answer after its own success responses:
/// `responses((status = 200, …), Unauthorized, NotFound)`.
pub mod problems {
    use std::collections::BTreeMap;

    use utoipa::IntoResponses;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, response::Response};

    /// One problem response: `status`, described as `description`, with a
    /// [`ProblemDoc`](super::ProblemDoc) body.
    fn problem(status: u16, description: &str) -> BTreeMap<String, RefOr<Response>> {
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ProblemDoc")))
            .build();
        let response = ResponseBuilder::new()
            .description(description)
            .content("application/problem+json", content)
            .build();
        BTreeMap::from([(status.to_string(), RefOr::T(response))])
    }

    macro_rules! problems {
        ($($(#[$doc:meta])* $name:ident = $status:literal, $description:literal;)*) => {$(
            $(#[$doc])*
            #[derive(Debug)]
            pub struct $name;

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    problem($status, $description)
                }
            }
        )*};
    }

    problems! {
        /// Malformed request line, headers or body.
        BadRequest = 400, "Malformed request";
        /// No valid access token.
        Unauthorized = 401, "No valid access token";
        /// The caller may not (their role, or a rule of the resource).
        Forbidden = 403, "Not allowed";
        /// Missing, or not the caller's to see.
        NotFound = 404, "Not found";
        /// Conflicts with the resource's current state.
        Conflict = 409, "Conflicts with the current state";
        /// `If-Match` names a version that is no longer current.
        PreconditionFailed = 412, "If-Match is stale";
        /// Input that breaks a field's rules.
        Invalid = 422, "Invalid input";
        /// A change that needs `If-Match` came without it.
        PreconditionRequired = 428, "If-Match is required";
        /// Throttled.
        TooManyAttempts = 429, "Too many attempts";
    }

    /// `If-Match` refused, stale (412) or missing (428): every change of a versioned
    /// resource answers both.
    #[derive(Debug)]
    pub struct IfMatchRefused;

    impl IntoResponses for IfMatchRefused {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            let mut responses = PreconditionFailed::responses();
            responses.extend(PreconditionRequired::responses());
            responses
        }
    }
}
