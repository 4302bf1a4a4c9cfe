//! Edge rules: what a tunnel's public URL lets through, checked by the
//! server before a stream opens (SPEC "Edge rules"). The client sends them
//! in its hello; the server keeps them with the name, so they hold while
//! the client is away too. Both ends validate with [`EdgeRules::validate`]:
//! the client to fail before it connects, the server because a client
//! cannot be trusted to have done so.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Most CIDRs in `--allow-ip`.
pub const MAX_ALLOW_IPS: usize = 64;
/// Most `--require-header` rules.
pub const MAX_REQUIRED_HEADERS: usize = 16;
/// Longest required header value, basic-auth user or password, issuer or
/// audience, in bytes.
pub const MAX_RULE_TEXT: usize = 1024;

/// The rules of one tunnel. Empty: everything passes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeRules {
    /// `--basic-auth USER:PASS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// `--allow-ip CIDR,...`: the visitor's address must be in one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_ip: Vec<String>,
    /// `--require-header 'Name: value'`: each must be present with exactly
    /// that value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require_headers: Vec<(String, String)>,
    /// `--verify-jwt ISSUER --audience AUD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtRule>,
}

/// A user and password a visitor must send (`Authorization: Basic`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// A bearer JWT the visitor must send, signed by the issuer's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtRule {
    /// As the tokens' `iss` has it, e.g. `https://TENANT.auth0.com/`.
    pub issuer: String,
    /// The `aud` the tokens must carry.
    pub audience: String,
}

impl EdgeRules {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// One line for the user, without secrets: `basic auth (user ada);
    /// from 10.0.0.0/8; header X-Hook-Secret; JWT from ISSUER for AUD`.
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(b) = &self.basic_auth {
            parts.push(format!("basic auth (user {})", b.user));
        }
        if !self.allow_ip.is_empty() {
            parts.push(format!("from {}", self.allow_ip.join(", ")));
        }
        for (name, _) in &self.require_headers {
            parts.push(format!("header {name}"));
        }
        if let Some(j) = &self.jwt {
            parts.push(format!("JWT from {} for {}", j.issuer, j.audience));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Every rule well formed and within the limits; the message names the
    /// flag at fault.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(b) = &self.basic_auth {
            if b.user.is_empty() || b.user.contains(':') {
                return Err("--basic-auth: the user must be non-empty and contain no ':'".into());
            }
            if b.password.is_empty() {
                return Err("--basic-auth: the password must not be empty".into());
            }
            if b.user.len() > MAX_RULE_TEXT || b.password.len() > MAX_RULE_TEXT {
                return Err(format!(
                    "--basic-auth: user and password are limited to {MAX_RULE_TEXT} bytes"
                ));
            }
            if b.user
                .chars()
                .chain(b.password.chars())
                .any(char::is_control)
            {
                return Err("--basic-auth: no control characters".into());
            }
        }
        if self.allow_ip.len() > MAX_ALLOW_IPS {
            return Err(format!(
                "--allow-ip: at most {MAX_ALLOW_IPS} networks (got {})",
                self.allow_ip.len()
            ));
        }
        for cidr in &self.allow_ip {
            parse_network(cidr)?;
        }
        if self.require_headers.len() > MAX_REQUIRED_HEADERS {
            return Err(format!(
                "--require-header: at most {MAX_REQUIRED_HEADERS} (got {})",
                self.require_headers.len()
            ));
        }
        for (name, value) in &self.require_headers {
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("--require-header: {name:?} is not a header name"))?;
            if value.len() > MAX_RULE_TEXT {
                return Err(format!(
                    "--require-header {name}: the value is limited to {MAX_RULE_TEXT} bytes"
                ));
            }
            http::HeaderValue::from_str(value)
                .map_err(|_| format!("--require-header {name}: {value:?} is not a header value"))?;
        }
        if self.basic_auth.is_some() && self.jwt.is_some() {
            return Err(
                "--basic-auth and --verify-jwt both need the Authorization header; pick one".into(),
            );
        }
        if let Some(j) = &self.jwt {
            validate_issuer(&j.issuer)?;
            if j.audience.is_empty() || j.audience.len() > MAX_RULE_TEXT {
                return Err(format!(
                    "--audience: 1 to {MAX_RULE_TEXT} bytes (Auth0: the API's identifier)"
                ));
            }
        }
        Ok(())
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a single address (`203.0.113.7`).
pub fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("--allow-ip: {s:?} is not an address or a CIDR such as 10.0.0.0/8"))
}

/// The issuer must be `https://`, or `http://` on a loopback host (local
/// identity providers and tests); its keys are fetched from
/// `ISSUER/.well-known/jwks.json`.
pub fn validate_issuer(issuer: &str) -> Result<(), String> {
    if issuer.len() > MAX_RULE_TEXT {
        return Err(format!("--verify-jwt: limited to {MAX_RULE_TEXT} bytes"));
    }
    let uri: http::Uri = issuer
        .parse()
        .map_err(|_| format!("--verify-jwt: {issuer:?} is not a URL"))?;
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if crate::http::is_loopback_host(host) => Ok(()),
        _ => Err(format!(
            "--verify-jwt: the issuer must be https:// (http:// only on loopback), got {issuer:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> EdgeRules {
        EdgeRules {
            basic_auth: Some(BasicAuth {
                user: "ada".into(),
                password: "s3cr3t".into(),
            }),
            allow_ip: vec![
                "10.0.0.0/8".into(),
                "127.0.0.1".into(),
                "2001:db8::/32".into(),
            ],
            require_headers: vec![("X-Hook-Secret".into(), "abc".into())],
            jwt: Some(JwtRule {
                issuer: "https://tenant.auth0.com/".into(),
                audience: "https://api".into(),
            }),
        }
    }

    #[test]
    fn well_formed_rules_pass_and_the_password_stays_out_of_debug() {
        let jwt_only = EdgeRules {
            basic_auth: None,
            ..rules()
        };
        assert_eq!(jwt_only.validate(), Ok(()));
        let basic_only = EdgeRules {
            jwt: None,
            ..rules()
        };
        assert_eq!(basic_only.validate(), Ok(()));
        let both = rules().validate().expect_err("one Authorization header");
        assert!(both.contains("pick one"), "{both}");
        assert!(EdgeRules::default().is_empty());
        assert!(!format!("{:?}", rules()).contains("s3cr3t"));
        let line = rules().describe().expect("rules");
        assert_eq!(
            line,
            "basic auth (user ada); from 10.0.0.0/8, 127.0.0.1, 2001:db8::/32; header X-Hook-Secret; JWT from https://tenant.auth0.com/ for https://api"
        );
        assert!(!line.contains("abc") && !line.contains("s3cr3t"));
        assert_eq!(EdgeRules::default().describe(), None);
    }

    #[test]
    fn each_bad_rule_names_its_flag() {
        let bad = |edit: fn(&mut EdgeRules), flag: &str| {
            let mut r = rules();
            edit(&mut r);
            let e = r.validate().expect_err("refused");
            assert!(e.contains(flag), "{e}");
        };
        bad(|r| r.allow_ip = vec!["10.0.0.0/33".into()], "--allow-ip");
        bad(|r| r.allow_ip = vec!["not-an-ip".into()], "--allow-ip");
        bad(
            |r| r.allow_ip = vec!["10.0.0.1".into(); MAX_ALLOW_IPS + 1],
            "--allow-ip",
        );
        bad(
            |r| r.require_headers = vec![("bad name".into(), "v".into())],
            "--require-header",
        );
        bad(
            |r| r.require_headers = vec![("X".into(), "a\nb".into())],
            "--require-header",
        );
        bad(
            |r| r.basic_auth.as_mut().expect("set").user = "a:b".into(),
            "--basic-auth",
        );
        bad(
            |r| r.basic_auth.as_mut().expect("set").password.clear(),
            "--basic-auth",
        );
        let jwt = |edit: fn(&mut JwtRule), flag: &str| {
            let mut r = EdgeRules {
                basic_auth: None,
                ..rules()
            };
            edit(r.jwt.as_mut().expect("set"));
            let e = r.validate().expect_err("refused");
            assert!(e.contains(flag), "{e}");
        };
        jwt(
            |j| j.issuer = "http://tenant.auth0.com/".into(),
            "--verify-jwt",
        );
        jwt(|j| j.audience.clear(), "--audience");
    }

    #[test]
    fn networks_are_cidrs_or_single_addresses() {
        assert_eq!(
            parse_network("10.1.2.3/8").expect("cidr").to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_network("203.0.113.7").expect("one").to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(parse_network("::1").expect("v6").to_string(), "::1/128");
    }

    #[test]
    fn loopback_issuers_may_be_plain_http() {
        assert!(validate_issuer("http://127.0.0.1:8443/").is_ok());
        assert!(validate_issuer("http://localhost:9/").is_ok());
        assert!(validate_issuer("https://tenant.auth0.com/").is_ok());
        assert!(validate_issuer("http://10.0.0.1/").is_err());
        assert!(validate_issuer("tenant.auth0.com").is_err());
    }
}
