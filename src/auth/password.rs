//! Passwords: the policy a new password must meet, and argon2id hashing.
//!
//! Hashing and verifying are deliberately slow (argon2id with OWASP's parameters:
//! 19 MiB, 2 passes, 1 lane), so callers run them on the blocking pool, never on a
//! tokio worker and never while holding a database connection.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

use crate::error::Error;

pub const MIN_LENGTH: usize = 12;
pub const MAX_LENGTH: usize = 128;

/// The hasher, with OWASP's argon2id parameters spelled out so that a library default
/// changing under us cannot weaken them.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, Some(32)).unwrap_or(Params::DEFAULT);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks a new password: 12 to 128 characters, and not common or guessable (zxcvbn
/// score 3 or more, which also rejects passwords built from the user's own email).
pub fn check_policy(password: &SecretString, user_inputs: &[&str]) -> Result<(), Error> {
    let password = password.expose_secret();
    let chars = password.chars().count();
    if chars < MIN_LENGTH {
        return Err(Error::validation(
            "password",
            format!("must be at least {MIN_LENGTH} characters long"),
        ));
    }
    if chars > MAX_LENGTH {
        return Err(Error::validation(
            "password",
            format!("must be at most {MAX_LENGTH} characters long"),
        ));
    }
    let strength = zxcvbn::zxcvbn(password, user_inputs);
    if (strength.score() as u8) < 3 {
        return Err(Error::validation(
            "password",
            "is too common or too easy to guess; use a longer passphrase",
        ));
    }
    Ok(())
}

/// The PHC string of a new argon2id hash of `password`.
pub fn hash(password: &SecretString) -> Result<String, Error> {
    argon2()
        .hash_password(password.expose_secret().as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(anyhow::anyhow!("hashing a password failed: {e}")))
}

/// Whether `password` matches the PHC string `phc`. A malformed hash never matches.
pub fn verify(password: &SecretString, phc: &str) -> bool {
    argon2()
        .verify_password(password.expose_secret().as_bytes(), phc)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn a_short_password_is_rejected() {
        assert!(check_policy(&secret("Tr0ub4dor&3"), &[]).is_err());
    }

    #[test]
    fn a_common_password_is_rejected_even_when_long() {
        assert!(check_policy(&secret("passwordpassword"), &[]).is_err());
        assert!(check_policy(&secret("123456789012"), &[]).is_err());
    }

    #[test]
    fn a_password_made_of_the_email_is_rejected() {
        assert!(check_policy(&secret("ada.lovelace2024"), &["ada.lovelace", "example.org"]).is_err());
    }

    #[test]
    fn a_long_passphrase_is_accepted() {
        assert!(check_policy(&secret("correct horse battery staple"), &[]).is_ok());
    }

    #[test]
    fn a_hash_verifies_its_password_and_nothing_else() {
        let phc = hash(&secret("correct horse battery staple")).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify(&secret("correct horse battery staple"), &phc));
        assert!(!verify(&secret("correct horse battery stapler"), &phc));
        assert!(!verify(&secret("anything"), "not a hash"));
    }
}
