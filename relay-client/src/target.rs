//! Where the local app listens: `relay connect`'s PORT | HOST:PORT | URL.

use http::Uri;

/// Where the local app listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTarget {
    /// `http://host:port`, no trailing slash.
    pub base: String,
    host: String,
    port: u16,
}

impl LocalTarget {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, for a Host header.
    pub fn authority(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// `PORT`, `:PORT`, `HOST:PORT` or `http://HOST[:PORT]`. A bare port
    /// means `localhost`, like ngrok: resolved per connection, so apps
    /// bound to `::1` only are reached too.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('/');
        if let Ok(port) = s.parse::<u16>() {
            return if port == 0 {
                Err("port 0 is not a port an app listens on".into())
            } else {
                Ok(Self {
                    base: format!("http://localhost:{port}"),
                    host: "localhost".into(),
                    port,
                })
            };
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s} is not a port (1-65535)"));
        }
        let with_scheme = if s.contains("://") {
            s.to_owned()
        } else if let Some(port) = s.strip_prefix(':') {
            // `:4000`, as some tools write a port on every interface.
            format!("http://localhost:{port}")
        } else if s.contains(':') {
            format!("http://{s}")
        } else {
            // A bare word is more likely a typo than a host on port 80;
            // `http://HOST` says port 80 on purpose.
            return Err(format!(
                "{s:?} is not PORT, HOST:PORT or an http:// URL (for port 80, write http://{s})"
            ));
        };
        let uri: Uri = with_scheme
            .parse()
            .map_err(|_| format!("{s:?} is not PORT, HOST:PORT or an http:// URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err("only http:// local apps are supported".into());
        }
        let Some(auth) = uri.authority().filter(|a| !a.host().is_empty()) else {
            return Err(format!("{s:?} has no host"));
        };
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err("a local target is a host and port, without a path".into());
        }
        // After an IPv6 literal's `]`, a `:` means a port was written.
        let after_host = auth
            .as_str()
            .rsplit_once(']')
            .map_or(auth.as_str(), |(_, p)| p);
        let port = match auth.port_u16() {
            Some(0) => return Err("port 0 is not a port an app listens on".into()),
            Some(p) => p,
            None if after_host.contains(':') => {
                return Err(format!("{s:?} does not have a port in 1-65535"))
            }
            None => 80,
        };
        Ok(Self {
            base: format!("http://{}:{port}", auth.host()),
            host: auth
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let base = |s: &str| LocalTarget::parse(s).map(|t| t.base);
        assert_eq!(base("4000"), Ok("http://localhost:4000".into()));
        assert_eq!(base("127.0.0.1:4000"), Ok("http://127.0.0.1:4000".into()));
        assert_eq!(
            base("http://app.internal:81/"),
            Ok("http://app.internal:81".into())
        );
        assert_eq!(
            base("http://app.internal"),
            Ok("http://app.internal:80".into())
        );
        assert_eq!(base(":4000"), Ok("http://localhost:4000".into()));
        assert_eq!(base("[::1]:4000"), Ok("http://[::1]:4000".into()));
        assert!(base("0").is_err());
        assert!(base("99999").is_err());
        assert!(base("abc").is_err());
        assert!(base("http://:4000").is_err());
        assert!(base("localhost:99999").is_err());
        assert!(base("").is_err());
        assert!(base("https://x:1").is_err());
        assert!(base("http://x:1/path").is_err());
        assert!(base("not a target").is_err());
    }
}
