//! Which part of the server a request is for, from its Host and path alone.
//! Pure functions: no I/O, so every routing rule is unit-tested here.

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
        // Everything on a tunnel host goes to the tunnel, even /_relay paths.
        assert_eq!(
            route(Some("app.localhost"), CONNECT_PATH, "localhost"),
            tunnel("app", None, CONNECT_PATH)
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

    #[test]
    fn ports_and_ipv6() {
        assert_eq!(host_without_port("a.b:80"), "a.b");
        assert_eq!(host_without_port("[::1]:8080"), "::1");
        assert_eq!(host_without_port("a.b"), "a.b");
    }
}
