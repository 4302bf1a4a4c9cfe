//! Which part of the server a request is for, from its Host and path alone,
//! and which host that is ([`request_host`]: RFC 9112's rules for requests
//! whose host is missing or ambiguous). Pure functions: no I/O, so every
//! routing rule is unit-tested here.

use http::uri::{Authority, Scheme};
use http::{header, HeaderMap, Uri, Version};

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// To the tunnel `name`; `prefix` is the `/t/NAME` part to strip, and
    /// `target` the path and query the local app sees.
    Tunnel {
        name: &'a str,
        prefix: Option<&'a str>,
        target: String,
    },
    /// The client endpoint `/_relay/v1/connect`.
    Connect,
    /// `GET /_relay/health`.
    Health,
    /// The JSON API under `/_relay/v1/`.
    Api,
    /// Anything else under `/_relay/` or on the bare domain.
    NotFound,
}

/// Path of the client endpoint.
pub const CONNECT_PATH: &str = "/_relay/v1/connect";
/// Prefix of the JSON API.
pub const API_PREFIX: &str = "/_relay/v1/";
/// Path of the health check.
pub const HEALTH_PATH: &str = "/_relay/health";

/// Strips the port from a Host value (`a.b:8080`, `[::1]:80`) and lowercases
/// nothing: callers compare case-insensitively.
pub fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Routes by Host (`NAME.DOMAIN`) first, then by the `/t/NAME` prefix on any
/// other host (the bare domain, an IP address, an unknown name).
/// `path_and_query` is the request target as received.
pub fn route<'a>(host: Option<&'a str>, path_and_query: &'a str, domain: &str) -> Route<'a> {
    if let Some(name) = host.and_then(|h| subdomain_of(host_without_port(h), domain)) {
        // Zero-hop: a client may connect through its own name's host, so
        // a load balancer hashing on Host sends it where its visitors go.
        if path_and_query == CONNECT_PATH {
            return Route::Connect;
        }
        return Route::Tunnel {
            name,
            prefix: None,
            target: path_and_query.to_owned(),
        };
    }
    let path = path_and_query.split('?').next().unwrap_or("");
    if path == CONNECT_PATH {
        return Route::Connect;
    }
    if path == HEALTH_PATH {
        return Route::Health;
    }
    if path.starts_with(API_PREFIX) {
        return Route::Api;
    }
    if let Some(rest) = path_and_query.strip_prefix("/t/") {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let name = &rest[..end];
        if !name.is_empty() {
            let prefix = &path_and_query[..3 + end];
            let tail = &rest[end..];
            let target = if tail.starts_with('/') {
                tail.to_owned()
            } else {
                format!("/{tail}")
            };
            return Route::Tunnel {
                name,
                prefix: Some(prefix),
                target,
            };
        }
    }
    Route::NotFound
}

/// Why a request's host is missing or ambiguous; the visitor gets 400
/// (RFC 9112 §3.2, RFC 9113 §8.3.1). Routing by one of two hosts would let
/// a request reach a tunnel other than the one a front proxy, a firewall
/// rule or the capture believe it went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// HTTP/1.1 with neither a Host header nor an absolute-form target.
    Missing,
    /// More than one Host header field.
    Repeated,
    /// A Host value that is not `host[:port]`.
    Invalid,
    /// An absolute-form target (or HTTP/2 `:authority`) naming another
    /// host than the Host header.
    Conflicting,
}

impl HostError {
    /// The sentence the visitor reads in the JSON error.
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "an HTTP/1.1 request needs a Host header",
            Self::Repeated => "the request has more than one Host header",
            Self::Invalid => "the Host header is not a valid host[:port]",
            Self::Conflicting => "the request target names another host than the Host header",
        }
    }
}

/// The host a request is routed by: its Host header, or the authority of
/// its target (absolute-form, or HTTP/2 `:authority`) when it has no Host.
/// When both are present they must name the same host and port (the
/// scheme's default port when one leaves it out), compared without case.
/// `None` for an HTTP/1.0 request with neither, which is routed by path.
pub fn request_host<'a>(
    version: Version,
    headers: &'a HeaderMap,
    uri: &'a Uri,
) -> Result<Option<&'a str>, HostError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Repeated);
    }
    let host = host
        .map(|v| v.to_str().map_err(|_| HostError::Invalid))
        .transpose()?;
    // An empty Host is what RFC 9112 asks for when the target has no
    // authority; anything else must parse as one, without userinfo.
    let parsed = match host {
        Some(h) if !h.is_empty() => match h.parse::<Authority>() {
            Ok(a) if !h.contains('@') && valid_port(&h[a.host().len()..]) => Some(a),
            _ => return Err(HostError::Invalid),
        },
        _ => None,
    };
    match (host, uri.authority()) {
        (Some(h), Some(target)) => {
            let same = parsed.is_some_and(|p| same_authority(&p, target, uri.scheme()));
            if same {
                Ok(Some(h))
            } else {
                Err(HostError::Conflicting)
            }
        }
        (Some(h), None) => Ok(Some(h)),
        // The authority without userinfo: what a Host header would say.
        (None, Some(target)) => Ok(Some(
            target
                .as_str()
                .rsplit_once('@')
                .map_or(target.as_str(), |(_, h)| h),
        )),
        (None, None) if version == Version::HTTP_11 => Err(HostError::Missing),
        (None, None) => Ok(None),
    }
}

/// What may follow the host in a Host value: nothing, or `:` and a port
/// (which may be empty, RFC 3986 §3.2.3). `http` parses the port lazily.
fn valid_port(rest: &str) -> bool {
    match rest.strip_prefix(':') {
        None => rest.is_empty(),
        Some(port) => port.is_empty() || port.parse::<u16>().is_ok(),
    }
}

/// Whether a Host value and a target's authority name the same host and
/// port.
fn same_authority(host: &Authority, target: &Authority, scheme: Option<&Scheme>) -> bool {
    let default = match scheme.map(Scheme::as_str) {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    };
    host.host().eq_ignore_ascii_case(target.host())
        && host.port_u16().or(default) == target.port_u16().or(default)
}

/// `NAME` when `host` is exactly one label under `domain`.
fn subdomain_of<'a>(host: &'a str, domain: &str) -> Option<&'a str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.len() <= domain.len() + 1 {
        return None;
    }
    let (label, rest) = host.split_at(host.len() - domain.len() - 1);
    let rest = &rest[1..];
    let dot = host.as_bytes()[label.len()];
    (dot == b'.' && rest.eq_ignore_ascii_case(domain) && !label.contains('.')).then_some(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel<'a>(name: &'a str, prefix: Option<&'a str>, target: &str) -> Route<'a> {
        Route::Tunnel {
            name,
            prefix,
            target: target.into(),
        }
    }

    #[test]
    fn host_routing() {
        assert_eq!(
            route(Some("app.localhost:8080"), "/x?y=1", "localhost"),
            tunnel("app", None, "/x?y=1")
        );
        assert_eq!(
            route(Some("APP.Example.com"), "/", "example.com"),
            tunnel("APP", None, "/")
        );
        assert_eq!(
            route(Some("app.localhost."), "/", "localhost"),
            tunnel("app", None, "/")
        );
        // Everything on a tunnel host goes to the tunnel, even /_relay
        // paths, but the client endpoint (zero-hop: a client connecting
        // through its own name's host).
        assert_eq!(
            route(Some("app.localhost"), HEALTH_PATH, "localhost"),
            tunnel("app", None, HEALTH_PATH)
        );
        assert_eq!(
            route(Some("app.localhost"), CONNECT_PATH, "localhost"),
            Route::Connect
        );
        assert_eq!(
            route(Some("app.localhost"), "/_relay/v1/connect?x=1", "localhost"),
            tunnel("app", None, "/_relay/v1/connect?x=1")
        );
    }

    #[test]
    fn deeper_or_foreign_hosts_are_not_tunnels() {
        assert_eq!(
            route(Some("a.b.localhost"), "/", "localhost"),
            Route::NotFound
        );
        assert_eq!(
            route(Some("applocalhost"), "/", "localhost"),
            Route::NotFound
        );
        assert_eq!(
            route(Some("localhost:8080"), "/", "localhost"),
            Route::NotFound
        );
        assert_eq!(
            route(Some("127.0.0.1:8080"), HEALTH_PATH, "localhost"),
            Route::Health
        );
        assert_eq!(route(None, CONNECT_PATH, "localhost"), Route::Connect);
        assert_eq!(
            route(
                Some("localhost"),
                "/_relay/v1/tunnels/a/requests?limit=1",
                "localhost"
            ),
            Route::Api
        );
    }

    #[test]
    fn path_routing_strips_prefix() {
        assert_eq!(
            route(Some("localhost"), "/t/app", "localhost"),
            tunnel("app", Some("/t/app"), "/")
        );
        assert_eq!(
            route(Some("localhost"), "/t/app/", "localhost"),
            tunnel("app", Some("/t/app"), "/")
        );
        assert_eq!(
            route(Some("localhost"), "/t/app/a/b?c", "localhost"),
            tunnel("app", Some("/t/app"), "/a/b?c")
        );
        assert_eq!(
            route(Some("localhost"), "/t/app?c=1", "localhost"),
            tunnel("app", Some("/t/app"), "/?c=1")
        );
        assert_eq!(
            route(Some("127.0.0.1"), "/t/", "localhost"),
            Route::NotFound
        );
        assert_eq!(
            route(Some("localhost"), "/other", "localhost"),
            Route::NotFound
        );
    }

    fn host_of(
        version: Version,
        target: &str,
        hosts: &[&str],
    ) -> Result<Option<String>, HostError> {
        let uri: Uri = target.parse().expect("test targets parse");
        let mut headers = HeaderMap::new();
        for h in hosts {
            headers.append(
                header::HOST,
                http::HeaderValue::from_str(h).expect("test hosts are valid values"),
            );
        }
        request_host(version, &headers, &uri).map(|h| h.map(str::to_owned))
    }

    #[test]
    fn host_comes_from_the_host_header_or_the_target() {
        let h11 = Version::HTTP_11;
        assert_eq!(
            host_of(h11, "/x", &["app.localhost:8080"]),
            Ok(Some("app.localhost:8080".into()))
        );
        // Absolute-form naming the same host and port (default port
        // spelled out or not, any case) is routed normally.
        for target in ["http://app.localhost:8080/x", "http://APP.localhost:8080/x"] {
            assert_eq!(
                host_of(h11, target, &["app.localhost:8080"]),
                Ok(Some("app.localhost:8080".into())),
                "{target}"
            );
        }
        assert_eq!(
            host_of(h11, "http://app.localhost:80/", &["app.localhost"]),
            Ok(Some("app.localhost".into()))
        );
        assert_eq!(
            host_of(h11, "https://app.localhost/", &["app.localhost:443"]),
            Ok(Some("app.localhost:443".into()))
        );
        // No Host: the target's authority, without userinfo (HTTP/2's
        // :authority arrives this way too).
        assert_eq!(
            host_of(h11, "http://u:p@app.localhost:8080/", &[]),
            Ok(Some("app.localhost:8080".into()))
        );
        assert_eq!(
            host_of(Version::HTTP_2, "http://app.localhost:8080/", &[]),
            Ok(Some("app.localhost:8080".into()))
        );
        // HTTP/1.0 may leave the host out: routed by path.
        assert_eq!(host_of(Version::HTTP_10, "/t/app/", &[]), Ok(None));
        // An empty Host is how a client says the target has no authority.
        assert_eq!(host_of(h11, "/t/app/", &[""]), Ok(Some(String::new())));
    }

    #[test]
    fn missing_repeated_invalid_or_conflicting_hosts_are_refused() {
        let h11 = Version::HTTP_11;
        assert_eq!(host_of(h11, "/", &[]), Err(HostError::Missing));
        assert_eq!(
            host_of(h11, "/", &["a.localhost", "b.localhost"]),
            Err(HostError::Repeated)
        );
        // Repeated even when the two agree: RFC 9112 allows one field line.
        assert_eq!(
            host_of(h11, "/", &["a.localhost", "a.localhost"]),
            Err(HostError::Repeated)
        );
        for bad in [
            "a b",
            "u@a.localhost",
            "a.localhost:x",
            "a.localhost:65536",
            "a/b",
            "[::1",
        ] {
            assert_eq!(host_of(h11, "/", &[bad]), Err(HostError::Invalid), "{bad}");
        }
        for (target, host) in [
            ("http://a.localhost/", "b.localhost"),
            ("http://a.localhost:8080/", "a.localhost:8081"),
            ("http://a.localhost/", "a.localhost:8080"),
            ("http://a.localhost/", ""),
        ] {
            assert_eq!(
                host_of(h11, target, &[host]),
                Err(HostError::Conflicting),
                "{target} with Host {host:?}"
            );
        }
        assert_eq!(
            host_of(Version::HTTP_2, "https://a.localhost/", &["b.localhost"]),
            Err(HostError::Conflicting)
        );
    }

    #[test]
    fn ports_and_ipv6() {
        assert_eq!(host_without_port("a.b:80"), "a.b");
        assert_eq!(host_without_port("[::1]:8080"), "::1");
        assert_eq!(host_without_port("a.b"), "a.b");
    }
}
