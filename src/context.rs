//! What every layer needs to name about a request: who the caller is, their role, and
//! where the request came from. A leaf: it imports nothing of the crate, so the audit
//! log, the access rules and the features can all speak of a caller without depending
//! on authentication or on the HTTP layer.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What an account is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Patient,
    Provider,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Provider => "provider",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Role, ()> {
        match s {
            "patient" => Ok(Role::Patient),
            "provider" => Ok(Role::Provider),
            "admin" => Ok(Role::Admin),
            _ => Err(()),
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub account_id: Uuid,
    pub role: Role,
    pub session_id: Uuid,
}

/// Who is asking from where, as far as the edge knows.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub request_id: String,
    pub client_ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [Role::Patient, Role::Provider, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
