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
