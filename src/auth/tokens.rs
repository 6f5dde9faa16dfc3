//! Access tokens (JWT) and refresh tokens (opaque).
//!
//! Access tokens are HS256 JWTs that live 15 minutes by default. Verification accepts
//! exactly one algorithm (HS256; `none` and every other algorithm are refused before
//! the signature is looked at) and requires `iss`, `aud`, `exp`, `nbf`, `sub`, `role`,
//! `sid` and `jti`. The token names its sign-in session (`sid`), so revoking the
//! session (logout, reuse detection, a disabled account) ends the token too.
//!
//! Refresh tokens are 256 random bits, handed out once and stored only as SHA-256.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::config::{Environment, Settings};
use crate::context::Role;
use crate::error::Error;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;
/// Prefix that makes a leaked refresh token recognisable to secret scanners.
const REFRESH_PREFIX: &str = "cwr_";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub role: Role,
    pub sid: Uuid,
    pub jti: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

/// Signs and verifies access tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from settings; in development a missing secret is generated into
    /// `data_dir/keys/jwt-secret` with a warning.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<TokenKeys> {
        let secret: Zeroizing<Vec<u8>> = match &settings.auth.jwt_secret {
            Some(secret) => Zeroizing::new(secret.expose_secret().clone()),
            None => {
                anyhow::ensure!(
                    settings.environment != Environment::Production,
                    "CAREWIRE_JWT_SECRET is required in production"
                );
                let path = settings.data_dir.join("keys").join("jwt-secret");
                let (bytes, generated) = crate::crypto::secrets::load_or_generate(&path, 32)?;
                if generated {
                    tracing::warn!(
                        path = %path.display(),
                        "generated a development token-signing secret; set CAREWIRE_JWT_SECRET in production"
                    );
                }
                bytes
            }
        };
        Ok(TokenKeys::new(&secret, settings))
    }

    fn new(secret: &[u8], settings: &Settings) -> TokenKeys {
        let auth = &settings.auth;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&auth.issuer]);
        validation.set_audience(&[&auth.audience]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            access_ttl: auth.access_token_ttl,
            refresh_ttl: auth.refresh_token_ttl,
        }
    }

    /// A new access token for `account` in `session`.
    pub fn issue_access(&self, account: Uuid, role: Role, session: Uuid) -> Result<String, Error> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: account,
            role,
            sid: session,
            jti: Uuid::new_v4(),
            iat: now,
            nbf: now,
            exp: now + self.access_ttl.as_secs() as i64,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(anyhow::anyhow!("signing an access token failed: {e}")))
    }

    /// The claims of a valid access token. Every failure is the same 401 to the
    /// client; the reason is only logged at debug level.
    pub fn verify(&self, token: &str) -> Result<Claims, Error> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                tracing::debug!(reason = ?e.kind(), "access token rejected");
                Error::Unauthorized {
                    reason: "the access token is invalid or expired",
                }
            })
    }
}

/// A new refresh token and the hash to store.
pub fn new_refresh_token() -> Result<(String, [u8; 32]), Error> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    crate::crypto::random_bytes(&mut *bytes)?;
    let token = format!(
        "{REFRESH_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*bytes)
    );
    let hash = refresh_token_hash(&token);
    Ok((token, hash))
}

/// What is stored for a refresh token: SHA-256 of the whole token string.
pub fn refresh_token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn keys() -> TokenKeys {
        let vars: HashMap<&str, &str> = HashMap::new();
        let settings = Settings::load(|n| vars.get(n).map(|s| s.to_string()), None).unwrap();
        TokenKeys::new(b"0123456789abcdef0123456789abcdef", &settings)
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let keys = keys();
        let (account, session) = (Uuid::new_v4(), Uuid::new_v4());
        let token = keys.issue_access(account, Role::Provider, session).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!(claims.sub, account);
        assert_eq!(claims.sid, session);
        assert_eq!(claims.role, Role::Provider);
        assert_eq!(claims.exp - claims.iat, 900);
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = keys()
            .issue_access(Uuid::new_v4(), Role::Admin, Uuid::new_v4())
            .unwrap();
        let mut settings = Settings::load(|_| None, None).unwrap();
        settings.auth.issuer = "carewire".into();
        let other = TokenKeys::new(b"another-secret-another-secret-xx", &settings);
        assert!(other.verify(&token).is_err());
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, hash_a) = new_refresh_token().unwrap();
        let (b, _) = new_refresh_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("cwr_"));
        assert_eq!(a.len(), 4 + 43);
        assert_eq!(refresh_token_hash(&a), hash_a);
    }
}
