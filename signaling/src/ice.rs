//! ICE server lists for browsers, with short-lived TURN credentials in coturn's
//! `use-auth-secret` scheme (the "TURN REST API" draft):
//!
//! ```text
//! username = "<expiry, unix seconds>:<user id>"
//! password = base64(HMAC-SHA1(shared secret, username))
//! ```
//!
//! The TURN server shares the secret and recomputes the password, so nothing is
//! stored per user and a leaked credential dies at its expiry. The expiry must outlast
//! the call: TURN checks it on every allocation refresh, not only the first. Time is an
//! input here too; the caller reads the wall clock.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;

/// One entry of `RTCConfiguration.iceServers`, in the browser's own shape.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &self.credential.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The secret shared with the TURN server (`static-auth-secret` in coturn).
#[derive(Clone)]
pub struct TurnSecret(Vec<u8>);

impl TurnSecret {
    pub fn new(secret: impl Into<Vec<u8>>) -> TurnSecret {
        TurnSecret(secret.into())
    }
}

impl fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TurnSecret(<redacted>)")
    }
}

/// A username and password a TURN server with the same secret accepts until
/// `expires_at`.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
    /// Unix seconds.
    pub expires_at: u64,
}

impl fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("username", &self.username)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why an ICE configuration or a credential request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IceConfigError {
    #[error("ICE server URL {0:?} is not a stun:, stuns:, turn: or turns: URL")]
    BadUrl(String),
    #[error("TURN URLs need a shared secret to mint credentials")]
    TurnWithoutSecret,
    #[error("the TURN shared secret is empty")]
    EmptySecret,
    #[error("a TURN user id is 1 to 128 printable characters without ':'")]
    BadUser,
}

/// Mints credentials for `user` valid for `ttl` from `now_unix` (unix seconds).
///
/// `user` must not contain ':' — coturn splits the username at the first one to find
/// the expiry — and is an opaque id (an account or appointment UUID), never a name.
pub fn turn_credentials(
    secret: &TurnSecret,
    user: &str,
    now_unix: u64,
    ttl: Duration,
) -> Result<TurnCredentials, IceConfigError> {
    if secret.0.is_empty() {
        return Err(IceConfigError::EmptySecret);
    }
    if user.is_empty() || user.len() > 128 || !user.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(IceConfigError::BadUser);
    }
    let expires_at = now_unix.saturating_add(ttl.as_secs());
    let username = format!("{expires_at}:{user}");
    let mut mac = Hmac::<Sha1>::new_from_slice(&secret.0).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Ok(TurnCredentials {
        username,
        password,
        expires_at,
    })
}

/// The STUN and TURN servers a deployment offers, checked once at start-up.
#[derive(Debug, Clone)]
pub struct IceConfig {
    stun: Vec<String>,
    turn: Vec<String>,
    secret: Option<TurnSecret>,
    ttl: Duration,
}

impl IceConfig {
    /// Long enough for any consultation and its overrun; short enough that a leaked
    /// credential is useless by tomorrow.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(6 * 60 * 60);

    pub fn new(
        stun: Vec<String>,
        turn: Vec<String>,
        secret: Option<TurnSecret>,
        ttl: Duration,
    ) -> Result<IceConfig, IceConfigError> {
        for url in &stun {
            check_url(url, &["stun:", "stuns:"])?;
        }
        for url in &turn {
            check_url(url, &["turn:", "turns:"])?;
        }
        match &secret {
            Some(secret) if secret.0.is_empty() => return Err(IceConfigError::EmptySecret),
            None if !turn.is_empty() => return Err(IceConfigError::TurnWithoutSecret),
            _ => {}
        }
        Ok(IceConfig {
            stun,
            turn,
            secret,
            ttl,
        })
    }

    /// The `iceServers` for `user` at `now_unix`: one STUN entry without credentials,
    /// one TURN entry with fresh ones, each omitted when not configured.
    pub fn servers_for(&self, user: &str, now_unix: u64) -> Result<Vec<IceServer>, IceConfigError> {
        let mut servers = Vec::with_capacity(2);
        if !self.stun.is_empty() {
            servers.push(IceServer {
                urls: self.stun.clone(),
                username: None,
                credential: None,
            });
        }
        if let (false, Some(secret)) = (self.turn.is_empty(), &self.secret) {
            let credentials = turn_credentials(secret, user, now_unix, self.ttl)?;
            servers.push(IceServer {
                urls: self.turn.clone(),
                username: Some(credentials.username),
                credential: Some(credentials.password),
            });
        }
        Ok(servers)
    }
}

/// `scheme:host[:port][?transport=udp|tcp]` (RFC 7064, RFC 7065), checked loosely: the
/// browser parses it again, and a typo should fail at start-up, not in a call.
fn check_url(url: &str, schemes: &[&str]) -> Result<(), IceConfigError> {
    let bad = || IceConfigError::BadUrl(url.to_owned());
    let rest = schemes
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or_else(bad)?;
    let (authority, query) = match rest.split_once('?') {
        Some((authority, query)) => (authority, Some(query)),
        None => (rest, None),
    };
    let host_ok = !authority.is_empty()
        && !authority.starts_with("//")
        && authority
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'@');
    let query_ok = match query {
        None => true,
        // STUN has no transport parameter; TURN may ask for udp or tcp.
        Some(query) => url.starts_with("turn") && matches!(query, "transport=udp" | "transport=tcp"),
    };
    if host_ok && query_ok { Ok(()) } else { Err(bad()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently with Python's standard library:
    ///
    /// ```text
    /// python3 -c 'import hmac, hashlib, base64; u = b"1700003600:8f14e45f-ceea-467f-a0e6-7e0e0e8a6b1c";
    ///   print(base64.b64encode(hmac.new(b"north-wind-shared-secret", u, hashlib.sha1).digest()).decode())'
    /// ```
    #[test]
    fn credentials_match_an_independently_computed_vector() {
        let secret = TurnSecret::new("north-wind-shared-secret");
        let credentials = turn_credentials(
            &secret,
            "8f14e45f-ceea-467f-a0e6-7e0e0e8a6b1c",
            1_700_000_000,
            Duration::from_secs(3600),
        )
        .unwrap();
        assert_eq!(
            credentials.username,
            "1700003600:8f14e45f-ceea-467f-a0e6-7e0e0e8a6b1c"
        );
        assert_eq!(credentials.expires_at, 1_700_003_600);
        assert_eq!(credentials.password, PYTHON_VECTOR);
    }

    const PYTHON_VECTOR: &str = "WbN1JizuRULBAgqy39XRgat0IIE=";

    #[test]
    fn a_user_id_with_a_colon_is_refused() {
        let secret = TurnSecret::new("s");
        let err = turn_credentials(&secret, "a:b", 0, Duration::from_secs(1)).unwrap_err();
        assert_eq!(err, IceConfigError::BadUser);
    }

    #[test]
    fn servers_for_a_user_list_stun_then_turn_with_credentials() {
        let config = IceConfig::new(
            vec!["stun:stun.example.org:3478".to_owned()],
            vec![
                "turn:turn.example.org:3478?transport=udp".to_owned(),
                "turns:turn.example.org:5349?transport=tcp".to_owned(),
            ],
            Some(TurnSecret::new("north-wind-shared-secret")),
            Duration::from_secs(3600),
        )
        .unwrap();
        let servers = config.servers_for("u1", 1_700_000_000).unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].username.as_deref(), Some("1700003600:u1"));
        let json = serde_json::to_string(&servers[0]).unwrap();
        assert_eq!(json, r#"{"urls":["stun:stun.example.org:3478"]}"#);
    }

    #[test]
    fn malformed_urls_and_turn_without_a_secret_are_refused_at_start_up() {
        let ttl = IceConfig::DEFAULT_TTL;
        for url in ["http://x", "stun:", "stun:host?transport=udp", "stun:a b"] {
            let err = IceConfig::new(vec![url.to_owned()], vec![], None, ttl).unwrap_err();
            assert!(matches!(err, IceConfigError::BadUrl(_)), "{url}");
        }
        let err = IceConfig::new(vec![], vec!["turn:t.example.org".to_owned()], None, ttl).unwrap_err();
        assert_eq!(err, IceConfigError::TurnWithoutSecret);
    }

    #[test]
    fn debug_output_never_shows_a_password() {
        let secret = TurnSecret::new("north-wind-shared-secret");
        let credentials = turn_credentials(&secret, "u1", 0, Duration::from_secs(60)).unwrap();
        assert!(!format!("{credentials:?}").contains(&credentials.password));
        assert!(!format!("{secret:?}").contains("north"));
    }
}
