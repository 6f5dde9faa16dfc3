//! Reading RFC 9110 token-list headers (`Connection`, `Upgrade`) one way, so that the
//! edge and the WebSocket handshake never disagree about what a request asks for.

use http::Version;
use http::header::{self, HeaderMap, HeaderName};

/// The tokens of every `name` header, in order: the values are comma-separated lists
/// (RFC 9110 §5.6.1), and a field sent twice is the same as one with both lists.
pub fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether the `name` headers hold `token` (case-insensitively).
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token))
}

/// Whether the request asks to switch to `protocol` (RFC 9110 §7.8): `Upgrade` names
/// it (with or without a `/version`), `Connection` names `upgrade`, and the request is
/// HTTP/1.1; an HTTP/1.0 request's `Upgrade` is ignored.
pub fn wants_upgrade(version: Version, headers: &HeaderMap, protocol: &str) -> bool {
    version == Version::HTTP_11
        && has_token(headers, &header::CONNECTION, "upgrade")
        && tokens(headers, &header::UPGRADE).any(|t| {
            let name = t.split('/').next().unwrap_or("").trim();
            name.eq_ignore_ascii_case(protocol)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn upgrade_is_a_token_list_in_one_field_or_several() {
        for h in [
            headers(&[("upgrade", "websocket"), ("connection", "Upgrade")]),
            headers(&[
                ("upgrade", "foo, websocket"),
                ("connection", "keep-alive, upgrade"),
            ]),
            headers(&[
                ("upgrade", "foo"),
                ("upgrade", "WebSocket"),
                ("connection", "upgrade"),
            ]),
            headers(&[("upgrade", "websocket/13"), ("connection", "upgrade")]),
        ] {
            assert!(wants_upgrade(Version::HTTP_11, &h, "websocket"), "{h:?}");
        }
    }

    #[test]
    fn no_upgrade_without_the_connection_token_or_on_http_1_0() {
        let without = headers(&[("upgrade", "websocket"), ("connection", "keep-alive")]);
        assert!(!wants_upgrade(Version::HTTP_11, &without, "websocket"));
        let h = headers(&[("upgrade", "websocket"), ("connection", "upgrade")]);
        assert!(!wants_upgrade(Version::HTTP_10, &h, "websocket"));
        let other = headers(&[("upgrade", "websocketx, h2c"), ("connection", "upgrade")]);
        assert!(!wants_upgrade(Version::HTTP_11, &other, "websocket"));
    }
}
