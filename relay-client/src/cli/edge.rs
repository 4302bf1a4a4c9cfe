//! `relay connect`'s edge-rule flags (also what `relay.toml` tables are
//! read through), and where `--inspect` puts the page.

use std::net::SocketAddr;

use clap::Args;

/// Edge rules: checked by the server before a request reaches you, also
/// while you are offline (a request that fails them is refused, 401/403,
/// and never kept for delivery). A connect without them clears them.
#[derive(Debug, Args)]
#[command(next_help_heading = "Edge rules (enforced by the server)")]
pub struct EdgeArgs {
    /// Visitors must send this user and password (HTTP basic auth); the
    /// server keeps only a hash of the password.
    #[arg(long, value_name = "USER:PASS", value_parser = parse_basic_auth)]
    pub basic_auth: Option<relay_shared::edge::BasicAuth>,
    /// Only visitors from these networks (CIDRs or addresses, comma
    /// separated or repeated), e.g. Stripe's or Auth0's published ranges.
    #[arg(long, value_name = "CIDR[,CIDR...]", value_delimiter = ',')]
    pub allow_ip: Vec<String>,
    /// Visitors must send this header with exactly this value (a webhook's
    /// shared secret); repeat for several.
    #[arg(long = "require-header", value_name = "'NAME: VALUE'",
          value_parser = crate::edit::parse_header_arg)]
    pub require_headers: Vec<(String, String)>,
    /// Visitors must send `Authorization: Bearer JWT` signed by this
    /// issuer's keys (ISSUER/.well-known/jwks.json), e.g.
    /// https://TENANT.auth0.com/ — with --audience.
    #[arg(long, value_name = "ISSUER", requires = "audience")]
    pub verify_jwt: Option<String>,
    /// The `aud` the JWT must carry (Auth0: the API's identifier).
    #[arg(long, value_name = "AUD", requires = "verify_jwt")]
    pub audience: Option<String>,
}

/// Where `--inspect` / `--no-inspect` put the page.
pub fn inspect_at(
    no_inspect: bool,
    inspect: Option<SocketAddr>,
    first_port: u16,
) -> Option<crate::tunnels::InspectAt> {
    use crate::tunnels::InspectAt;
    (!no_inspect).then_some(match inspect {
        Some(addr) => InspectAt::Exactly(addr),
        None => InspectAt::FirstFree(first_port),
    })
}

impl EdgeArgs {
    /// The rules to send, checked as the server will check them.
    pub fn rules(&self) -> Result<relay_shared::edge::EdgeRules, String> {
        let rules = relay_shared::edge::EdgeRules {
            basic_auth: self.basic_auth.clone(),
            allow_ip: self
                .allow_ip
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            require_headers: self.require_headers.clone(),
            jwt: match (&self.verify_jwt, &self.audience) {
                (Some(issuer), Some(audience)) => Some(relay_shared::edge::JwtRule {
                    issuer: issuer.clone(),
                    audience: audience.clone(),
                }),
                _ => None,
            },
        };
        rules.validate()?;
        Ok(rules)
    }
}

/// `USER:PASS` (the password may contain ':').
pub fn parse_basic_auth(s: &str) -> Result<relay_shared::edge::BasicAuth, String> {
    let (user, password) = s
        .split_once(':')
        .ok_or_else(|| "expected USER:PASS".to_owned())?;
    Ok(relay_shared::edge::BasicAuth {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}
