//! The audit event: who did what to which resource, for which patient, with what
//! outcome, why, and from where.
//!
//! Nothing in an event can carry free text that might hold patient data: actions,
//! resource types, reasons and purposes are [`Code`]s (short tokens that application
//! code can only write as literals), identifiers are UUIDs, and the `details` map holds
//! only ids, codes and counts. The request id, client address and user agent come from
//! the HTTP edge, already sanitised and bounded.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A short machine-readable token: `[A-Za-z0-9_.:-]`, 1 to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Code(Cow<'static, str>);

/// A string that is not a valid [`Code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid audit code (1 to 64 of A-Z a-z 0-9 _ . : -)")]
pub struct InvalidCode;

const fn valid_code(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() > 64 {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b':' || b == b'-') {
            return false;
        }
        i += 1;
    }
    true
}

impl Code {
    /// A code written in the source. Used in a `const`, an invalid code does not
    /// compile; that is the point: application code cannot turn input into a code.
    pub const fn new(code: &'static str) -> Code {
        assert!(valid_code(code), "invalid audit code");
        Code(Cow::Borrowed(code))
    }

    /// A code read back from storage.
    pub fn parse(code: impl Into<String>) -> Result<Code, InvalidCode> {
        let code = code.into();
        if valid_code(&code) {
            Ok(Code(Cow::Owned(code)))
        } else {
            Err(InvalidCode)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Code, D::Error> {
        let s = String::deserialize(deserializer)?;
        Code::parse(s).map_err(serde::de::Error::custom)
    }
}

/// Actions. Others may be added; verification treats codes as opaque.
pub mod action {
    use super::Code;
    pub const CREATE: Code = Code::new("create");
    pub const READ: Code = Code::new("read");
    pub const UPDATE: Code = Code::new("update");
    pub const DELETE: Code = Code::new("delete");
    pub const EXECUTE: Code = Code::new("execute");
    pub const LOGIN: Code = Code::new("login");
    pub const LOGIN_FAILED: Code = Code::new("login_failed");
    pub const LOGOUT: Code = Code::new("logout");
    pub const TOKEN_REFRESH: Code = Code::new("token_refresh");
    pub const ACCESS_DENIED: Code = Code::new("access_denied");
    pub const BREAK_GLASS_START: Code = Code::new("break_glass_start");
    pub const BREAK_GLASS_END: Code = Code::new("break_glass_end");
}

/// Resource types.
pub mod resource {
    use super::Code;
    pub const ACCOUNT: Code = Code::new("account");
    pub const SESSION: Code = Code::new("session");
    pub const AUDIT_LOG: Code = Code::new("audit_log");
    pub const PATIENT: Code = Code::new("patient");
    pub const NOTE: Code = Code::new("note");
    pub const APPOINTMENT: Code = Code::new("appointment");
    pub const ROUTE: Code = Code::new("route");
}

/// Purposes of use, from HL7 v3 ActReason (the codes FHIR's AuditEvent uses).
pub mod purpose {
    use super::Code;
    /// Treatment.
    pub const TREATMENT: Code = Code::new("TREAT");
    /// Emergency treatment: break-glass access.
    pub const EMERGENCY: Code = Code::new("ETREAT");
    /// Healthcare operations (scheduling, administration of care).
    pub const OPERATIONS: Code = Code::new("HOPERAT");
    /// At the patient's request (a patient acting on their own record).
    pub const PATIENT_REQUEST: Code = Code::new("PATRQT");
    /// Security and system administration (sign-in, accounts, the audit log itself).
    pub const SYSTEM_ADMINISTRATION: Code = Code::new("HSYSADMIN");
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A signed-in account.
    User { id: Uuid, role: Code },
    /// Carewire itself (a scheduler, the command line).
    System { component: Code },
    /// Someone not identified (a failed sign-in with an unknown email).
    Anonymous,
}

impl Actor {
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::User { .. } => "user",
            Actor::System { .. } => "system",
            Actor::Anonymous => "anonymous",
        }
    }

    pub fn id(&self) -> Option<Uuid> {
        match self {
            Actor::User { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// The role for a user, the component for the system.
    pub fn role(&self) -> Option<&Code> {
        match self {
            Actor::User { role, .. } => Some(role),
            Actor::System { component } => Some(component),
            Actor::Anonymous => None,
        }
    }
}

/// What came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(Code),
}

/// A value in the details map: never free text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetailValue {
    Id(Uuid),
    Code(Code),
    Count(i64),
}

pub type Details = BTreeMap<Code, DetailValue>;

/// An event as a writer records it. Sequence number, time and hashes are added when
/// it is stored and sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub actor: Actor,
    pub action: Code,
    pub resource_type: Code,
    pub resource_id: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    pub outcome: Outcome,
    pub purpose: Code,
    pub request_id: Option<String>,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub details: Details,
}

/// Longest user agent kept.
pub const MAX_USER_AGENT: usize = 256;
/// Longest request id kept.
pub const MAX_REQUEST_ID: usize = 128;

impl AuditEvent {
    /// An event with a successful outcome and nothing else known yet.
    pub fn new(actor: Actor, action: Code, resource_type: Code, purpose: Code) -> AuditEvent {
        AuditEvent {
            actor,
            action,
            resource_type,
            resource_id: None,
            patient_id: None,
            outcome: Outcome::Success,
            purpose,
            request_id: None,
            client_ip: None,
            user_agent: None,
            details: Details::new(),
        }
    }

    pub fn resource(mut self, id: Uuid) -> Self {
        self.resource_id = Some(id);
        self
    }

    pub fn patient(mut self, id: Uuid) -> Self {
        self.patient_id = Some(id);
        self
    }

    pub fn failed(mut self, reason: Code) -> Self {
        self.outcome = Outcome::Failure(reason);
        self
    }

    pub fn detail(mut self, key: Code, value: DetailValue) -> Self {
        self.details.insert(key, value);
        self
    }

    /// Where the request came from. The request id is kept only if it is a sane
    /// token, the user agent is cut to 256 characters.
    pub fn origin(
        mut self,
        request_id: Option<&str>,
        client_ip: Option<IpAddr>,
        user_agent: Option<&str>,
    ) -> Self {
        self.request_id = request_id
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= MAX_REQUEST_ID
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            })
            .map(str::to_owned);
        self.client_ip = client_ip;
        self.user_agent = user_agent.map(|ua| {
            ua.chars()
                .filter(|c| !c.is_control())
                .take(MAX_USER_AGENT)
                .collect()
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_accept_tokens_and_refuse_text() {
        assert!(Code::parse("login_failed").is_ok());
        assert!(Code::parse("HSYSADMIN").is_ok());
        assert!(Code::parse("Ada Lovelace").is_err());
        assert!(Code::parse("").is_err());
        assert!(Code::parse("x".repeat(65)).is_err());
    }

    #[test]
    fn origin_keeps_sane_request_ids_and_bounds_the_user_agent() {
        let event = AuditEvent::new(
            Actor::Anonymous,
            action::LOGIN,
            resource::SESSION,
            purpose::SYSTEM_ADMINISTRATION,
        )
        .origin(Some("a b"), None, Some(&"x".repeat(1000)));
        assert_eq!(event.request_id, None);
        assert_eq!(event.user_agent.unwrap().len(), MAX_USER_AGENT);
    }
}
