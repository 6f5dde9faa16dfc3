//! Free text from clients, parsed once at the edge: names, bios, reasons, notes.
//!
//! Every free-text field goes through [`parse`] with the rules of its kind, so that no
//! field can carry what PostgreSQL refuses (NUL) or what turns a log line, a CSV export
//! or a screen into something else (other control characters). Line breaks and tabs
//! are allowed only where the field is prose ([`Lines::Multi`]). The refusal is a 422
//! naming the field and the rule, never the value.

use std::borrow::Cow;

use crate::error::Error;

/// Whether a field may hold several lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// A name, a title: no line breaks, no tabs.
    Single,
    /// Prose (a bio, a reason, a note): line breaks (`\n`, `\r\n`) and tabs allowed.
    Multi,
}

/// The rules of one kind of field.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// At least this many characters after trimming (0: may be empty).
    pub min_chars: usize,
    /// At most this many characters (Unicode scalar values) after trimming.
    pub max_chars: usize,
    pub lines: Lines,
}

impl Rules {
    /// A required single line of at most `max_chars`.
    pub const fn line(max_chars: usize) -> Rules {
        Rules {
            min_chars: 1,
            max_chars,
            lines: Lines::Single,
        }
    }

    /// Required prose of at most `max_chars`.
    pub const fn prose(max_chars: usize) -> Rules {
        Rules {
            min_chars: 1,
            max_chars,
            lines: Lines::Multi,
        }
    }

    /// The same rules with another minimum length.
    pub const fn at_least(self, min_chars: usize) -> Rules {
        Rules { min_chars, ..self }
    }
}

/// `value`, trimmed, if it follows `rules`; else a 422 naming `field`.
pub fn parse(field: impl Into<Cow<'static, str>>, value: &str, rules: Rules) -> Result<String, Error> {
    let trimmed = value.trim();
    if let Some(reason) = refusal(trimmed, rules) {
        return Err(Error::validation(field, reason));
    }
    Ok(trimmed.to_owned())
}

/// Checks `value` as [`parse`] does, for a field stored as given (a note keeps its
/// author's spacing).
pub fn check(field: impl Into<Cow<'static, str>>, value: &str, rules: Rules) -> Result<(), Error> {
    match refusal(value.trim(), rules) {
        Some(reason) => Err(Error::validation(field, reason)),
        None => Ok(()),
    }
}

/// Why `value` (already trimmed) breaks `rules`, if it does.
fn refusal(value: &str, rules: Rules) -> Option<Cow<'static, str>> {
    if value.contains('\0') {
        return Some("must not contain NUL characters".into());
    }
    let allowed = |c: char| match rules.lines {
        Lines::Single => false,
        Lines::Multi => matches!(c, '\n' | '\r' | '\t'),
    };
    if value.chars().any(|c| c.is_control() && !allowed(c)) {
        return Some(match rules.lines {
            Lines::Single => "must be one line without control characters".into(),
            Lines::Multi => "must not contain control characters other than line breaks and tabs".into(),
        });
    }
    if rules.lines == Lines::Multi && value.replace("\r\n", "\n").contains('\r') {
        return Some("line breaks must be \\n or \\r\\n".into());
    }
    let chars = value.chars().count();
    if chars < rules.min_chars || chars > rules.max_chars {
        return Some(match rules.min_chars {
            0 => format!("must be at most {} characters", rules.max_chars).into(),
            1 => format!("must be 1 to {} characters", rules.max_chars).into(),
            min => format!("must be {min} to {} characters", rules.max_chars).into(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(value: &str, rules: Rules) -> Option<String> {
        match parse("field", value, rules) {
            Ok(_) => None,
            Err(Error::Validation { field, reason }) => {
                assert_eq!(field, "field");
                Some(reason.into_owned())
            }
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn nul_is_refused_everywhere() {
        for rules in [Rules::line(100), Rules::prose(100)] {
            assert!(reason("Dr\0Lee", rules).unwrap().contains("NUL"));
        }
    }

    #[test]
    fn a_single_line_refuses_line_breaks_tabs_and_other_controls() {
        for bad in [
            "Dr\nLee",
            "Dr\tLee",
            "Dr\u{1b}[31mLee",
            "Dr\u{7f}Lee",
            "Dr\u{85}Lee",
        ] {
            assert!(reason(bad, Rules::line(100)).is_some(), "{bad:?}");
        }
        assert_eq!(parse("f", "  Dr Lee  ", Rules::line(100)).unwrap(), "Dr Lee");
    }

    #[test]
    fn prose_allows_line_breaks_and_tabs_but_no_other_controls() {
        assert!(reason("line one\nline two\r\n\tindented", Rules::prose(100)).is_none());
        assert!(reason("bell\u{7}", Rules::prose(100)).is_some());
        assert!(reason("lone\rreturn", Rules::prose(100)).is_some());
    }

    #[test]
    fn lengths_count_characters_after_trimming() {
        assert!(reason("   ", Rules::line(10)).is_some());
        assert!(reason("é".repeat(10).as_str(), Rules::line(10)).is_none());
        assert!(reason("é".repeat(11).as_str(), Rules::line(10)).is_some());
        assert_eq!(
            reason("short", Rules::prose(500).at_least(10)).unwrap(),
            "must be 10 to 500 characters"
        );
        assert!(reason("", Rules::line(10).at_least(0)).is_none());
    }
}
