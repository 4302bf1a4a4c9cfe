//! Request and response heads as they travel in frames, and the header
//! rules of a forwarding proxy: which headers are hop-by-hop and are
//! dropped, and which `X-Forwarded-*` headers the server adds.
//!
//! Heads carry an [`http::HeaderMap`], which keeps every value byte for
//! byte and repeated fields in their order.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

/// What the server sends to open a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The id the visitor sees in `X-Relay-Request-Id`.
    pub id: String,
    pub method: Method,
    /// Path and query as the local app must see them (the `/t/NAME` prefix
    /// already removed).
    pub target: String,
    pub headers: HeaderMap,
}

/// What the client sends back once the local app answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus the proxy ones; none is forwarded.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Also hop-by-hop, but not in `http`'s constant list.
const HOP_BY_HOP_EXTRA: &[&str] = &["keep-alive", "proxy-connection"];

/// Whether a message asks to switch protocols (WebSocket and friends):
/// `Connection: upgrade` plus an `Upgrade` header.
/// Whether a URL's host is this machine (`localhost`, `127.0.0.1`, `[::1]`):
/// where plain `http://` may carry a secret or key set, since it never
/// leaves the machine.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| connection_tokens(v).any(|t| t.eq_ignore_ascii_case("upgrade")))
}

fn connection_tokens(v: &HeaderValue) -> impl Iterator<Item = &str> {
    v.to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The message's declared body length, if it carries a valid one.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Whether `name` is hop-by-hop whatever `Connection` says.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || HOP_BY_HOP_EXTRA.contains(&name.as_str())
}

/// Removes hop-by-hop headers, including every header `Connection` names.
/// With `keep_upgrade`, `Upgrade` and a `Connection: upgrade` survive, so a
/// protocol switch can pass through the tunnel end to end.
///
/// One pass over the names finds what to drop; the common message has
/// none or only `Connection: keep-alive`, so this runs on every request
/// and response without a lookup per hop-by-hop name.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if is_hop_by_hop(name)
            && !(keep_upgrade && (name == header::UPGRADE || name == header::CONNECTION))
        {
            doomed.push(name.clone());
        }
    }
    // With Transfer-Encoding the body's length is not Content-Length's
    // (RFC 9112 §6.3), and the message is re-framed on the next hop: a
    // stale Content-Length forwarded beside a re-framed body would let the
    // two ends disagree on where the message ends.
    if headers.contains_key(header::TRANSFER_ENCODING) && !keep_upgrade {
        doomed.push(header::CONTENT_LENGTH);
    }
    if headers.contains_key(header::CONNECTION) {
        doomed.extend(
            headers
                .get_all(header::CONNECTION)
                .iter()
                .flat_map(connection_tokens)
                .filter(|t| !(keep_upgrade && t.eq_ignore_ascii_case("upgrade")))
                .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()),
        );
    }
    for name in doomed {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// `X-Forwarded-For` / `-Proto` / `-Host` for one visitor.
///
/// From a `trusted` peer (a reverse proxy in front of relay) the chain is
/// kept: `X-Forwarded-For` is extended with the peer, and `-Proto` and
/// `-Host` stay as the proxy sent them (they describe the visitor's hop to
/// the proxy), filled in only when missing. From anyone else all three are
/// replaced with what relay saw, so a visitor cannot claim another address
/// or scheme. `peer_ip` is a header value so a connection formats its
/// address once, not once per request.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    peer_ip: &HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
    trusted: bool,
) {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
    if !trusted {
        headers.insert(XFF, peer_ip.clone());
        headers.insert(XFP, HeaderValue::from_static(proto));
        match host {
            Some(v) => headers.insert(XFH, v),
            None => headers.remove(XFH),
        };
        return;
    }
    if headers.contains_key(&XFF) {
        let prior: Vec<&[u8]> = headers.get_all(&XFF).iter().map(|v| v.as_bytes()).collect();
        let mut chain = prior.join(&b", "[..]);
        chain.extend_from_slice(b", ");
        chain.extend_from_slice(peer_ip.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&chain) {
            headers.insert(XFF, v);
        }
    } else {
        headers.insert(XFF, peer_ip.clone());
    }
    if !headers.contains_key(&XFP) {
        headers.insert(XFP, HeaderValue::from_static(proto));
    }
    if let Some(v) = host.filter(|_| !headers.contains_key(&XFH)) {
        headers.insert(XFH, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).expect("test name"),
                HeaderValue::from_str(v).expect("test value"),
            );
        }
        m
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("x-kept", "a"),
            ("x-kept", "b"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2);
        let kept: Vec<_> = h.get_all("x-kept").iter().collect();
        assert_eq!(kept, ["a", "b"]);
    }

    #[test]
    fn content_length_beside_transfer_encoding_is_dropped() {
        let mut h = map(&[
            ("transfer-encoding", "chunked"),
            ("content-length", "100"),
            ("x-kept", "a"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("content-length"));
        assert_eq!(h.len(), 1);
        let mut alone = map(&[("content-length", "5")]);
        strip_hop_by_hop(&mut alone, false);
        assert_eq!(alone["content-length"], "5");
    }

    #[test]
    fn keeps_upgrade_when_asked() {
        let mut h = map(&[
            ("connection", "Upgrade, keep-alive"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["sec-websocket-key"], "k");
        strip_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("upgrade"));
    }

    #[test]
    fn a_trusted_proxy_chain_is_kept_and_extended() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.relay.example.com"),
        ]);
        add_forwarded(
            &mut h,
            &HeaderValue::from_static("127.0.0.1"),
            "http",
            Some(HeaderValue::from_static("app.localhost:8080")),
            true,
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "app.relay.example.com");
        // A trusted proxy that sent none gets them filled in.
        let mut fresh = HeaderMap::new();
        let host = Some(HeaderValue::from_static("a.localhost"));
        add_forwarded(
            &mut fresh,
            &HeaderValue::from_static("::1"),
            "https",
            host,
            true,
        );
        assert_eq!(fresh["x-forwarded-for"], "::1");
        assert_eq!(fresh["x-forwarded-proto"], "https");
        assert_eq!(fresh["x-forwarded-host"], "a.localhost");
    }

    #[test]
    fn anyone_else_gets_them_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "bank.example"),
        ]);
        add_forwarded(
            &mut h,
            &HeaderValue::from_static("127.0.0.1"),
            "http",
            Some(HeaderValue::from_static("app.localhost:8080")),
            false,
        );
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.localhost:8080");
        let mut no_host = map(&[("x-forwarded-host", "bank.example")]);
        add_forwarded(
            &mut no_host,
            &HeaderValue::from_static("::1"),
            "https",
            None,
            false,
        );
        assert!(!no_host.contains_key("x-forwarded-host"));
    }
}
