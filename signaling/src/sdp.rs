//! Session descriptions: size-capped, parsed by `webrtc`, and read for the one thing
//! the room needs from them, the sender's ICE username fragment.
//!
//! The room relays descriptions verbatim; it never rewrites SDP. Parsing is there to
//! refuse garbage before it reaches the other browser (whose error would be far from
//! the cause) and to learn the ufrag, which tells the room which candidates belong to
//! which description, including after an ICE restart.

use std::fmt;

use serde::{Deserialize, Serialize};
use webrtc::peer_connection::RTCSessionDescription;

use crate::error::{ErrorCode, Rejection};

/// The largest description accepted, in bytes. A browser's offer with audio, video and
/// a data channel is 4 to 8 KiB; simulcast with many codecs stays well under 32 KiB.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Whether a description is an offer or an answer. Rollback and provisional answers
/// never cross the wire: perfect negotiation rolls back locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SdpKind {
    Offer,
    Answer,
}

/// A description that parsed as `kind` and carries ICE credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionDescription {
    kind: SdpKind,
    text: String,
    ice_ufrag: String,
}

impl SessionDescription {
    /// Parses `text` with `webrtc`'s `RTCSessionDescription::offer` / `::answer`.
    pub fn parse(kind: SdpKind, text: String) -> Result<SessionDescription, Rejection> {
        if text.len() > MAX_SDP_BYTES {
            return Err(Rejection::new(
                ErrorCode::BadSdp,
                "description is larger than 64 KiB",
            ));
        }
        if text.trim().is_empty() {
            return Err(Rejection::new(ErrorCode::BadSdp, "description is empty"));
        }
        let described = match kind {
            SdpKind::Offer => RTCSessionDescription::offer(text),
            SdpKind::Answer => RTCSessionDescription::answer(text),
        }
        .map_err(|_| Rejection::new(ErrorCode::BadSdp, "description is not valid SDP"))?;
        let ice_ufrag = ice_ufrag(&described).ok_or_else(|| {
            Rejection::new(
                ErrorCode::BadSdp,
                "description has no a=ice-ufrag; a WebRTC description always carries ICE credentials",
            )
        })?;
        Ok(SessionDescription {
            kind,
            text: described.sdp,
            ice_ufrag,
        })
    }

    pub fn kind(&self) -> SdpKind {
        self.kind
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The sender's ICE username fragment. A new one in an offer means an ICE restart.
    pub fn ice_ufrag(&self) -> &str {
        &self.ice_ufrag
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

/// Addresses live in SDP; logs get the kind and the size only.
impl fmt::Debug for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionDescription")
            .field("kind", &self.kind)
            .field("bytes", &self.text.len())
            .finish_non_exhaustive()
    }
}

/// The ufrag as ICE resolves it: a session-level `a=ice-ufrag` wins, otherwise the
/// first media section that has one. Browsers bundle every section on one transport,
/// so every section carries the same value.
///
/// A scan of the lines, not a second parse: the text has just been parsed by webrtc,
/// and session-level attributes precede the first `m=` line, so the first
/// `a=ice-ufrag` in the text is the one ICE uses. Parsing a 3 KB description again
/// cost as much as the validating parse (about 80 µs, 20% of a busy server's CPU).
fn ice_ufrag(described: &RTCSessionDescription) -> Option<String> {
    described
        .sdp
        .lines()
        .find_map(|line| line.trim_end_matches('\r').strip_prefix("a=ice-ufrag:"))
        .and_then(non_empty)
}

fn non_empty(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
pub(crate) mod fixtures {
    /// A small but complete browser-style description: one bundled audio section with
    /// the ICE credentials and DTLS fingerprint every WebRTC description carries.
    pub fn description(session_id: u64, ufrag: &str) -> String {
        format!(
            "v=0\r\n\
             o=- {session_id} 2 IN IP4 127.0.0.1\r\n\
             s=-\r\n\
             t=0 0\r\n\
             a=group:BUNDLE 0\r\n\
             a=msid-semantic: WMS\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
             c=IN IP4 0.0.0.0\r\n\
             a=rtcp:9 IN IP4 0.0.0.0\r\n\
             a=ice-ufrag:{ufrag}\r\n\
             a=ice-pwd:aSecretIcePasswordOf24Ch\r\n\
             a=ice-options:trickle\r\n\
             a=fingerprint:sha-256 0F:74:31:25:CB:A2:13:EC:28:6F:6D:2C:61:FF:5D:C2:BC:B9:DB:3D:98:14:8D:1A:BB:EA:33:0C:A4:60:A8:8E\r\n\
             a=setup:actpass\r\n\
             a=mid:0\r\n\
             a=sendrecv\r\n\
             a=rtcp-mux\r\n\
             a=rtpmap:111 opus/48000/2\r\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::description;
    use super::*;

    #[test]
    fn a_browser_style_offer_parses_and_yields_its_ufrag() {
        let offer = SessionDescription::parse(SdpKind::Offer, description(1, "Ab3d")).unwrap();
        assert_eq!(offer.kind(), SdpKind::Offer);
        assert_eq!(offer.ice_ufrag(), "Ab3d");
    }

    #[test]
    fn an_answer_parses_as_an_answer() {
        let answer = SessionDescription::parse(SdpKind::Answer, description(2, "zz99")).unwrap();
        assert_eq!(answer.kind(), SdpKind::Answer);
    }

    #[test]
    fn a_description_over_64_kib_is_rejected_before_parsing() {
        let mut text = description(3, "Ab3d");
        while text.len() <= MAX_SDP_BYTES {
            text.push_str("a=x-padding:0123456789abcdef0123456789abcdef\r\n");
        }
        let err = SessionDescription::parse(SdpKind::Offer, text).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadSdp);
    }

    #[test]
    fn text_that_is_not_sdp_is_rejected() {
        for garbage in [
            "hello",
            "v=0\r\nthis is not sdp\r\n",
            "{\"type\":\"offer\"}",
            "   ",
        ] {
            let err = SessionDescription::parse(SdpKind::Offer, garbage.to_owned()).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadSdp, "{garbage:?}");
        }
    }

    #[test]
    fn a_description_without_ice_credentials_is_rejected() {
        let text = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        let err = SessionDescription::parse(SdpKind::Offer, text.to_owned()).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadSdp);
    }

    #[test]
    fn a_session_level_ufrag_wins_over_the_media_sections() {
        let text = description(4, "media1").replacen(
            "a=group:BUNDLE 0\r\n",
            "a=group:BUNDLE 0\r\na=ice-ufrag:sess\r\n",
            1,
        );
        let offer = SessionDescription::parse(SdpKind::Offer, text).unwrap();
        assert_eq!(offer.ice_ufrag(), "sess");
    }

    #[test]
    fn an_empty_ufrag_is_no_ufrag() {
        let text = description(5, "");
        let err = SessionDescription::parse(SdpKind::Offer, text).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadSdp);
    }

    #[test]
    fn debug_output_shows_the_size_but_not_the_text() {
        let offer = SessionDescription::parse(SdpKind::Offer, description(4, "Ab3d")).unwrap();
        let shown = format!("{offer:?}");
        assert!(!shown.contains("127.0.0.1"));
        assert!(shown.contains("bytes"));
    }
}
