//! ICE candidates: the browser's `RTCIceCandidateInit`, checked against the
//! candidate-attribute grammar of RFC 8839 §5.1 before it is relayed.
//!
//! ```text
//! candidate:<foundation> <component> <transport> <priority> <address> <port>
//!           typ <host|srflx|prflx|relay> [raddr <address> rport <port>]
//!           *(<extension-name> <extension-value>)
//! ```
//!
//! Parsed by hand on purpose: the grammar is one line long, and the parser inside the
//! WebRTC stack is lenient (it skips the `typ` keyword and stops at the first
//! extension), which is right for a peer that must interoperate and wrong for a relay
//! whose job is to refuse garbage early. Nothing is rewritten: the text is relayed as
//! the browser produced it.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, Rejection};

/// The longest candidate line accepted. Browsers write 100 to 250 bytes.
pub const MAX_CANDIDATE_BYTES: usize = 512;

/// The longest `sdp_mid` accepted; browsers use "0", "1", … or short names.
const MAX_MID_BYTES: usize = 64;

/// What a browser hands to `addIceCandidate`, with the field names in snake_case.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CandidateInit {
    pub candidate: String,
    #[serde(default)]
    pub sdp_mid: Option<String>,
    #[serde(default)]
    pub sdp_mline_index: Option<u16>,
    #[serde(default)]
    pub username_fragment: Option<String>,
}

impl fmt::Debug for CandidateInit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CandidateInit")
            .field("bytes", &self.candidate.len())
            .field("sdp_mid", &self.sdp_mid)
            .field("sdp_mline_index", &self.sdp_mline_index)
            .finish_non_exhaustive()
    }
}

/// The kind of address a candidate offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateType {
    Host,
    Srflx,
    Prflx,
    Relay,
}

/// A candidate that follows the grammar, with a consistent ufrag.
#[derive(Clone, PartialEq, Eq)]
pub struct IceCandidate {
    init: CandidateInit,
    kind: CandidateType,
    /// `username_fragment`, or else the line's own `ufrag` extension.
    ufrag: Option<String>,
}

impl IceCandidate {
    pub fn parse(init: CandidateInit) -> Result<IceCandidate, Rejection> {
        let line = parse_line(&init.candidate)?;
        if init.sdp_mid.is_none() && init.sdp_mline_index.is_none() {
            return Err(bad("a candidate needs sdp_mid or sdp_mline_index"));
        }
        if let Some(mid) = &init.sdp_mid
            && (mid.is_empty() || mid.len() > MAX_MID_BYTES || !mid.bytes().all(is_token_char))
        {
            return Err(bad("sdp_mid must be an SDP token of 1 to 64 characters"));
        }
        if let Some(ufrag) = &init.username_fragment {
            check_ufrag(ufrag)?;
        }
        if let (Some(field), Some(inline)) = (&init.username_fragment, line.ufrag)
            && field != inline
        {
            return Err(bad("username_fragment disagrees with the candidate's ufrag"));
        }
        let ufrag = init
            .username_fragment
            .clone()
            .or_else(|| line.ufrag.map(str::to_owned));
        Ok(IceCandidate {
            kind: line.kind,
            ufrag,
            init,
        })
    }

    pub fn kind(&self) -> CandidateType {
        self.kind
    }

    /// The ICE generation this candidate belongs to, when the browser said.
    pub fn ufrag(&self) -> Option<&str> {
        self.ufrag.as_deref()
    }

    pub fn init(&self) -> &CandidateInit {
        &self.init
    }

    pub fn into_init(self) -> CandidateInit {
        self.init
    }
}

/// Candidates carry addresses; logs get the type and the size.
impl fmt::Debug for IceCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceCandidate")
            .field("kind", &self.kind)
            .field("bytes", &self.init.candidate.len())
            .finish_non_exhaustive()
    }
}

/// Checks an ICE username fragment: 4 to 256 ice-chars (RFC 8839 §5.4).
pub(crate) fn check_ufrag(ufrag: &str) -> Result<(), Rejection> {
    if (4..=256).contains(&ufrag.len()) && ufrag.bytes().all(is_ice_char) {
        Ok(())
    } else {
        Err(bad("username_fragment must be 4 to 256 of A-Z a-z 0-9 + /"))
    }
}

struct Line<'a> {
    kind: CandidateType,
    ufrag: Option<&'a str>,
}

fn parse_line(text: &str) -> Result<Line<'_>, Rejection> {
    if text.is_empty() {
        return Err(bad("empty candidate; send end_of_candidates instead"));
    }
    if text.len() > MAX_CANDIDATE_BYTES {
        return Err(bad("candidate is longer than 512 bytes"));
    }
    let body = text
        .strip_prefix("candidate:")
        .ok_or_else(|| bad("a candidate starts with \"candidate:\""))?;
    let fields: Vec<&str> = body.split(' ').collect();
    if fields.iter().any(|field| field.is_empty()) {
        return Err(bad("candidate fields are separated by single spaces"));
    }
    let [
        foundation,
        component,
        transport,
        priority,
        address,
        port,
        typ,
        kind,
        rest @ ..,
    ] = fields.as_slice()
    else {
        return Err(bad("a candidate has at least 8 fields"));
    };

    if foundation.len() > 32 || !foundation.bytes().all(is_ice_char) {
        return Err(bad("foundation must be 1 to 32 of A-Z a-z 0-9 + /"));
    }
    match number::<u16>(component, 3) {
        Some(1..=256) => {}
        _ => return Err(bad("component must be 1 to 256")),
    }
    let tcp = if transport.eq_ignore_ascii_case("udp") {
        false
    } else if transport.eq_ignore_ascii_case("tcp") {
        true
    } else {
        return Err(bad("transport must be udp or tcp"));
    };
    match number::<u32>(priority, 10) {
        Some(1..) => {}
        _ => return Err(bad("priority must be a positive 32-bit integer")),
    }
    check_address(address)?;
    check_port(port)?;
    if *typ != "typ" {
        return Err(bad("the candidate type follows the keyword \"typ\""));
    }
    let kind = match *kind {
        "host" => CandidateType::Host,
        "srflx" => CandidateType::Srflx,
        "prflx" => CandidateType::Prflx,
        "relay" => CandidateType::Relay,
        _ => return Err(bad("type must be host, srflx, prflx or relay")),
    };

    let mut rest = rest;
    if let ["raddr", related_address, "rport", related_port, tail @ ..] = rest {
        check_address(related_address)?;
        check_port(related_port)?;
        rest = tail;
    }
    let mut ufrag = None;
    let mut tcptype = None;
    let mut pairs = rest.chunks_exact(2);
    for pair in &mut pairs {
        let [name, value] = pair else { continue };
        if !name.bytes().all(is_token_char) || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("extensions are name-value pairs of printable characters"));
        }
        match *name {
            "ufrag" => {
                check_ufrag(value)?;
                ufrag = Some(*value);
            }
            "tcptype" => tcptype = Some(*value),
            "raddr" | "rport" => {
                return Err(bad("raddr and rport come together, once, right after the type"));
            }
            _ => {}
        }
    }
    if !pairs.remainder().is_empty() {
        return Err(bad("extensions are name-value pairs"));
    }
    match (tcp, tcptype) {
        (true, Some("active" | "passive" | "so")) | (false, None) => {}
        (true, _) => return Err(bad("a tcp candidate has tcptype active, passive or so")),
        (false, Some(_)) => return Err(bad("tcptype belongs to tcp candidates only")),
    }
    Ok(Line { kind, ufrag })
}

/// An IP literal, or a host name (browsers hide host addresses behind mDNS names such
/// as `0b6a7f3e-….local`).
fn check_address(address: &str) -> Result<(), Rejection> {
    if address.parse::<IpAddr>().is_ok() || is_host_name(address) {
        Ok(())
    } else {
        Err(bad("address must be an IP address or a host name"))
    }
}

fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn check_port(port: &str) -> Result<(), Rejection> {
    number::<u16>(port, 5)
        .map(|_| ())
        .ok_or_else(|| bad("port must be 0 to 65535"))
}

/// Decimal digits only (no sign, no spaces), at most `max_digits` of them.
fn number<T: std::str::FromStr>(text: &str, max_digits: usize) -> Option<T> {
    let digits_only =
        !text.is_empty() && text.len() <= max_digits && text.bytes().all(|b| b.is_ascii_digit());
    if digits_only { text.parse().ok() } else { None }
}

fn is_ice_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// SDP `token-char` (RFC 8866 §9).
pub(crate) fn is_token_char(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x27 | 0x2A..=0x2B | 0x2D..=0x2E | 0x30..=0x39 | 0x41..=0x5A | 0x5E..=0x7E)
}

fn bad(message: &'static str) -> Rejection {
    Rejection::new(ErrorCode::BadCandidate, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(candidate: &str) -> CandidateInit {
        CandidateInit {
            candidate: candidate.to_owned(),
            sdp_mid: Some("0".to_owned()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        }
    }

    fn parse(candidate: &str) -> Result<IceCandidate, Rejection> {
        IceCandidate::parse(init(candidate))
    }

    #[test]
    fn browser_candidates_of_every_type_are_accepted() {
        let lines = [
            "candidate:1467250027 1 udp 2122260223 192.168.1.20 54321 typ host generation 0 ufrag Ab3d network-id 1",
            "candidate:3 1 udp 2122262783 2001:db8::1 50000 typ host",
            "candidate:842163049 1 udp 1677729535 203.0.113.7 61000 typ srflx raddr 0.0.0.0 rport 0 generation 0",
            "candidate:4 1 udp 41885695 198.51.100.9 3478 typ relay raddr 203.0.113.7 rport 61000",
            "candidate:5 1 udp 1845501695 203.0.113.8 9 typ prflx raddr 192.168.1.20 rport 54321",
            "candidate:6 1 tcp 1518280447 192.168.1.20 9 typ host tcptype active generation 0",
            "candidate:7 1 UDP 2122194687 0b6a7f3e-4d1c-4a5e-9f0e-2b1d3c4e5f60.local 61234 typ host",
        ];
        for line in lines {
            assert!(parse(line).is_ok(), "{line}");
        }
    }

    #[test]
    fn the_candidate_type_is_read_from_the_line() {
        let relay =
            parse("candidate:4 1 udp 41885695 198.51.100.9 3478 typ relay raddr 0.0.0.0 rport 0").unwrap();
        assert_eq!(relay.kind(), CandidateType::Relay);
    }

    #[test]
    fn garbage_lines_are_rejected() {
        let lines = [
            "",
            "hello",
            "a=candidate:1 1 udp 1 10.0.0.1 1 typ host",
            "candidate:1 1 udp 1 10.0.0.1 1 host",
            "candidate:1 1 udp 1 10.0.0.1 1 typ banana",
            "candidate:1 1 sctp 1 10.0.0.1 1 typ host",
            "candidate:1 0 udp 1 10.0.0.1 1 typ host",
            "candidate:1 1 udp 0 10.0.0.1 1 typ host",
            "candidate:1 1 udp 99999999999 10.0.0.1 1 typ host",
            "candidate:1 1 udp 1 10.0.0.1 65536 typ host",
            "candidate:1 1 udp 1 10.0.0.1 -1 typ host",
            "candidate:1 1 udp 1 not_an_address! 1 typ host",
            "candidate:1  1 udp 1 10.0.0.1 1 typ host",
            "candidate:f@undation 1 udp 1 10.0.0.1 1 typ host",
            "candidate:1 1 udp 1 10.0.0.1 1 typ host generation",
            "candidate:1 1 tcp 1 10.0.0.1 9 typ host",
            "candidate:1 1 udp 1 10.0.0.1 1 typ host tcptype active",
            "candidate:1 1 udp 1 10.0.0.1 1 typ srflx raddr 10.0.0.2",
            "candidate:1 1 udp 1 10.0.0.1 1 typ host ufrag no",
        ];
        for line in lines {
            let err = parse(line).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadCandidate, "{line:?}");
        }
    }

    #[test]
    fn a_candidate_longer_than_512_bytes_is_rejected() {
        let mut line = "candidate:1 1 udp 1 10.0.0.1 1 typ host".to_owned();
        while line.len() <= MAX_CANDIDATE_BYTES {
            line.push_str(" x-pad 0123456789");
        }
        assert_eq!(parse(&line).unwrap_err().code, ErrorCode::BadCandidate);
    }

    #[test]
    fn a_candidate_without_mid_or_line_index_is_rejected() {
        let mut bare = init("candidate:1 1 udp 1 10.0.0.1 1 typ host");
        bare.sdp_mid = None;
        bare.sdp_mline_index = None;
        assert_eq!(
            IceCandidate::parse(bare).unwrap_err().code,
            ErrorCode::BadCandidate
        );
    }

    #[test]
    fn the_ufrag_comes_from_the_field_or_else_from_the_line() {
        let inline = parse("candidate:1 1 udp 1 10.0.0.1 1 typ host ufrag Ab3d").unwrap();
        assert_eq!(inline.ufrag(), Some("Ab3d"));

        let mut field = init("candidate:1 1 udp 1 10.0.0.1 1 typ host");
        field.username_fragment = Some("Zx9y".to_owned());
        assert_eq!(IceCandidate::parse(field).unwrap().ufrag(), Some("Zx9y"));
    }

    #[test]
    fn a_ufrag_field_that_contradicts_the_line_is_rejected() {
        let mut both = init("candidate:1 1 udp 1 10.0.0.1 1 typ host ufrag Ab3d");
        both.username_fragment = Some("Zx9y".to_owned());
        assert_eq!(
            IceCandidate::parse(both).unwrap_err().code,
            ErrorCode::BadCandidate
        );
    }

    #[test]
    fn debug_output_hides_the_address() {
        let shown = format!("{:?}", parse("candidate:1 1 udp 1 10.9.8.7 1 typ host").unwrap());
        assert!(!shown.contains("10.9.8.7"));
    }
}
