//! The free text an appointment carries: why the patient comes and why it was
//! cancelled. Both are PHI (sealed when stored, never logged) and are checked once,
//! where the request comes in; past the edge only these types carry them, so the
//! storage code cannot be handed text that breaks the rules. `Debug` shows only the
//! length.

use std::fmt;

use crate::error::Error;
use crate::text::{self, Rules};

/// The reason for a visit, kept as the patient wrote it (spacing included).
#[derive(Clone, PartialEq, Eq)]
pub struct VisitReason(String);

impl VisitReason {
    pub const RULES: Rules = Rules::prose(1000);

    pub fn parse(text: &str) -> Result<VisitReason, Error> {
        text::check("reason", text, Self::RULES)?;
        Ok(VisitReason(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why an appointment was cancelled, trimmed.
#[derive(Clone, PartialEq, Eq)]
pub struct CancellationReason(String);

impl CancellationReason {
    pub const RULES: Rules = Rules::prose(500);

    pub fn parse(text: &str) -> Result<CancellationReason, Error> {
        text::parse("reason", text, Self::RULES).map(CancellationReason)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for VisitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VisitReason({} chars)", self.0.chars().count())
    }
}

impl fmt::Debug for CancellationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CancellationReason({} chars)", self.0.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_follow_their_rules_and_never_show_in_debug() {
        let long = "x".repeat(1001);
        #[rustfmt::skip]
        let visits: &[(&str, Option<&str>)] = &[
            ("  Knee pain\n since May ", Some("  Knee pain\n since May ")),
            ("", None),
            ("   ", None),
            (&long, None),
        ];
        for (input, expected) in visits {
            assert_eq!(
                VisitReason::parse(input).ok().as_ref().map(VisitReason::as_str),
                *expected
            );
        }
        #[rustfmt::skip]
        let cancellations: &[(&str, Option<&str>)] = &[
            ("  Feeling better ", Some("Feeling better")),
            ("", None),
            (&long[..501], None),
            (&long[..500], Some(&long[..500])),
        ];
        for (input, expected) in cancellations {
            assert_eq!(
                CancellationReason::parse(input)
                    .ok()
                    .as_ref()
                    .map(CancellationReason::as_str),
                *expected
            );
        }
        let reason = VisitReason::parse("Chest pain").unwrap_or_else(|_| unreachable!());
        assert_eq!(format!("{reason:?}"), "VisitReason(10 chars)");
    }
}
