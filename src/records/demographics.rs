//! A patient's demographics as input and as held in memory: parsed once, validated,
//! never printed.

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// `Debug` that prints only the type's name: these hold PHI.
macro_rules! redacted_debug {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}([redacted])", stringify!($t))
            }
        }
    )*};
}

redacted_debug!(LegalName, Address, EmergencyContact, Demographics);

/// Legal name.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegalName {
    pub given: String,
    pub family: String,
}

/// Postal address.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub lines: Vec<String>,
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// Someone to call.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmergencyContact {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship: Option<String>,
    pub phone: String,
}

/// Administrative sex (FHIR `AdministrativeGender`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    Female,
    Male,
    Other,
    Unknown,
}

impl Sex {
    pub fn as_str(self) -> &'static str {
        match self {
            Sex::Female => "female",
            Sex::Male => "male",
            Sex::Other => "other",
            Sex::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Sex> {
        match s {
            "female" => Some(Sex::Female),
            "male" => Some(Sex::Male),
            "other" => Some(Sex::Other),
            "unknown" => Some(Sex::Unknown),
            _ => None,
        }
    }
}

/// Everything the profile holds. Its `Debug` shows nothing.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Demographics {
    pub legal_name: LegalName,
    #[serde(default)]
    pub preferred_name: Option<String>,
    pub birth_date: NaiveDate,
    #[serde(default)]
    pub sex: Option<Sex>,
    #[serde(default)]
    pub gender_identity: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub address: Option<Address>,
    #[serde(default)]
    pub mrn: Option<String>,
    #[serde(default)]
    pub insurance_id: Option<String>,
    #[serde(default)]
    pub emergency_contact: Option<EmergencyContact>,
}

/// The names of the fields, as the API and the merge patch spell them.
pub const FIELDS: &[&str] = &[
    "legal_name",
    "preferred_name",
    "birth_date",
    "sex",
    "gender_identity",
    "phone",
    "email",
    "address",
    "mrn",
    "insurance_id",
    "emergency_contact",
];

fn text(field: &str, value: &str, max: usize) -> Result<(), Error> {
    crate::text::check(field.to_owned(), value, crate::text::Rules::line(max))
}

fn opt_text(field: &str, value: &Option<String>, max: usize) -> Result<(), Error> {
    value.as_deref().map_or(Ok(()), |v| text(field, v, max))
}

/// Digits with an optional leading `+`, 6 to 16 digits: what a phone number is for
/// matching. Spaces, dashes, dots and parentheses are dropped.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let plus = trimmed.starts_with('+');
    let mut digits = String::new();
    for c in trimmed.chars().skip(usize::from(plus)) {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    (6..=16)
        .contains(&digits.len())
        .then(|| if plus { format!("+{digits}") } else { digits })
}

/// An MRN for matching: trimmed, upper case.
pub fn normalize_mrn(raw: &str) -> String {
    raw.trim().to_uppercase()
}

/// A family name for matching: lower case, inner white space collapsed.
pub fn normalize_family(raw: &str) -> String {
    raw.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

impl Demographics {
    /// Checks every rule and normalises what is matched on (email, phone, MRN).
    pub fn validated(mut self) -> Result<Demographics, Error> {
        text("legal_name.given", &self.legal_name.given, 100)?;
        text("legal_name.family", &self.legal_name.family, 100)?;
        self.legal_name.given = self.legal_name.given.trim().to_owned();
        self.legal_name.family = self.legal_name.family.trim().to_owned();
        opt_text("preferred_name", &self.preferred_name, 100)?;
        opt_text("gender_identity", &self.gender_identity, 100)?;
        let today = Utc::now().date_naive();
        let earliest = NaiveDate::from_ymd_opt(1880, 1, 1).unwrap_or(NaiveDate::MIN);
        if self.birth_date > today || self.birth_date < earliest {
            return Err(Error::validation("birth_date", "must be a past date after 1880"));
        }
        if let Some(phone) = &self.phone {
            self.phone = Some(
                normalize_phone(phone)
                    .ok_or_else(|| Error::validation("phone", "must be a phone number of 6 to 16 digits"))?,
            );
        }
        if let Some(email) = &self.email {
            let parsed = crate::accounts::Email::parse(email)?;
            self.email = Some(parsed.as_str().to_owned());
        }
        if let Some(mrn) = &self.mrn {
            text("mrn", mrn, 64)?;
            self.mrn = Some(normalize_mrn(mrn));
        }
        opt_text("insurance_id", &self.insurance_id, 64)?;
        if let Some(address) = &self.address {
            if address.lines.is_empty() || address.lines.len() > 4 {
                return Err(Error::validation("address.lines", "must have 1 to 4 lines"));
            }
            for line in &address.lines {
                text("address.lines", line, 200)?;
            }
            text("address.city", &address.city, 100)?;
            opt_text("address.region", &address.region, 100)?;
            opt_text("address.postal_code", &address.postal_code, 20)?;
            if address.country.len() != 2 || !address.country.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(Error::validation(
                    "address.country",
                    "must be an ISO 3166-1 alpha-2 code such as US",
                ));
            }
        }
        if let Some(contact) = &mut self.emergency_contact {
            text("emergency_contact.name", &contact.name, 100)?;
            opt_text("emergency_contact.relationship", &contact.relationship, 50)?;
            contact.phone = normalize_phone(&contact.phone).ok_or_else(|| {
                Error::validation(
                    "emergency_contact.phone",
                    "must be a phone number of 6 to 16 digits",
                )
            })?;
        }
        Ok(self)
    }

    /// Applies a JSON merge patch (RFC 7396) and validates the result. A field set to
    /// `null` is cleared (the required ones cannot be).
    pub fn patched(&self, patch: &serde_json::Map<String, serde_json::Value>) -> Result<Demographics, Error> {
        for key in patch.keys() {
            if !FIELDS.contains(&key.as_str()) {
                return Err(Error::validation(key.clone(), "is not a known field"));
            }
        }
        let mut merged = serde_json::to_value(self).map_err(|e| Error::Internal(e.into()))?;
        if let Some(object) = merged.as_object_mut() {
            for (key, value) in patch {
                if value.is_null() {
                    if matches!(key.as_str(), "legal_name" | "birth_date") {
                        return Err(Error::validation(
                            key.clone(),
                            "is required and cannot be cleared",
                        ));
                    }
                    object.insert(key.clone(), serde_json::Value::Null);
                } else {
                    object.insert(key.clone(), value.clone());
                }
            }
        }
        let parsed: Demographics = crate::http::body::parse(merged.to_string().as_bytes())?;
        parsed.validated()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ada() -> Demographics {
        Demographics {
            legal_name: LegalName {
                given: "Ada".into(),
                family: "Lovelace".into(),
            },
            preferred_name: None,
            birth_date: NaiveDate::from_ymd_opt(1815, 12, 10).unwrap(),
            sex: Some(Sex::Female),
            gender_identity: None,
            phone: Some("+44 (20) 7946-0958".into()),
            email: Some("Ada@Example.org".into()),
            address: None,
            mrn: Some(" mrn-001 ".into()),
            insurance_id: None,
            emergency_contact: None,
        }
    }

    #[test]
    fn a_birth_date_before_1880_or_in_the_future_is_refused() {
        assert!(ada().validated().is_err());
        let mut modern = ada();
        modern.birth_date = NaiveDate::from_ymd_opt(1990, 1, 1).unwrap();
        assert!(modern.clone().validated().is_ok());
        modern.birth_date = Utc::now().date_naive() + chrono::Duration::days(1);
        assert!(modern.validated().is_err());
    }

    #[test]
    fn matching_fields_are_normalised() {
        let mut d = ada();
        d.birth_date = NaiveDate::from_ymd_opt(1990, 1, 1).unwrap();
        let d = d.validated().unwrap();
        assert_eq!(d.phone.as_deref(), Some("+442079460958"));
        assert_eq!(d.email.as_deref(), Some("ada@example.org"));
        assert_eq!(d.mrn.as_deref(), Some("MRN-001"));
    }

    #[test]
    fn a_merge_patch_changes_clears_and_refuses_the_right_things() {
        let mut d = ada();
        d.birth_date = NaiveDate::from_ymd_opt(1990, 1, 1).unwrap();
        let d = d.validated().unwrap();
        let patch = serde_json::json!({ "preferred_name": "Countess", "phone": null });
        let patched = d.patched(patch.as_object().unwrap()).unwrap();
        assert_eq!(patched.preferred_name.as_deref(), Some("Countess"));
        assert_eq!(patched.phone, None);
        assert!(
            d.patched(serde_json::json!({ "birth_date": null }).as_object().unwrap())
                .is_err()
        );
        assert!(
            d.patched(serde_json::json!({ "shoe_size": 9 }).as_object().unwrap())
                .is_err()
        );
    }

    #[test]
    fn demographics_never_print() {
        assert!(!format!("{:?}", ada()).contains("Lovelace"));
    }
}
