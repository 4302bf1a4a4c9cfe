//! `relay replay --fresh-token [PROFILE]`: a callback captured yesterday
//! carries yesterday's access token, which the app now rejects. This gets a
//! new one by the OAuth2 client-credentials grant (RFC 6749 §4.4, the way
//! an Auth0 M2M application or a Hasura action's caller gets one) from a
//! profile in the config file, and the replay sends it as
//! `Authorization: Bearer ...`.
//!
//! ```toml
//! [profiles.default]
//! token_url = "https://TENANT.auth0.com/oauth/token"
//! client_id = "..."
//! client_secret_env = "AUTH0_CLIENT_SECRET"   # or client_secret = "..."
//! audience = "https://api.example.com"        # optional (Auth0 wants it)
//! scope = "read:users"                        # optional
//! ```
//!
//! The client secret is never printed or logged: its `Debug` is masked and
//! no error message includes it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use crate::net::ServerAddr;

/// Longest the token endpoint may take, answer included.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest token answer read: an access token is a few KiB at most.
const MAX_TOKEN_ANSWER: usize = 64 << 10;
/// The profile `--fresh-token` uses when it names none (unless the config
/// has exactly one profile).
pub const DEFAULT_PROFILE: &str = "default";

/// One `[profiles.NAME]` table.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The authorization server's token endpoint.
    pub token_url: String,
    pub client_id: String,
    /// The secret itself; `client_secret_env` keeps it out of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// The environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("client_secret_env", &self.client_secret_env)
            .field("audience", &self.audience)
            .field("scope", &self.scope)
            .finish()
    }
}

/// The profile `--fresh-token [NAME]` means: NAME, else `default`, else
/// the only one.
pub fn pick<'a>(
    profiles: &'a BTreeMap<String, Profile>,
    name: Option<&str>,
) -> anyhow::Result<(&'a str, &'a Profile)> {
    let known = || {
        if profiles.is_empty() {
            "the config file has no [profiles.NAME] table (see `relay replay --help`)".to_owned()
        } else {
            let names: Vec<&str> = profiles.keys().map(String::as_str).collect();
            format!("known profiles: {}", names.join(", "))
        }
    };
    let found = match name.filter(|n| !n.is_empty()) {
        Some(n) => profiles.get_key_value(n),
        None => profiles.get_key_value(DEFAULT_PROFILE).or_else(|| {
            (profiles.len() == 1)
                .then(|| profiles.iter().next())
                .flatten()
        }),
    };
    match found {
        Some((n, p)) => Ok((n.as_str(), p)),
        None => match name.filter(|n| !n.is_empty()) {
            Some(n) => bail!("no token profile {n:?}; {}", known()),
            None => bail!(
                "--fresh-token without a name needs a profile named {DEFAULT_PROFILE:?} or exactly one profile; {}",
                known()
            ),
        },
    }
}

impl Profile {
    /// The endpoint, checked: a client secret goes over `https://` only,
    /// except to a loopback address (local identity providers, tests).
    fn endpoint(&self) -> anyhow::Result<Uri> {
        let uri: Uri = self
            .token_url
            .parse()
            .with_context(|| format!("token_url {:?} is not a URL", self.token_url))?;
        let loopback = relay_shared::http::is_loopback_host(uri.host().unwrap_or_default());
        match uri.scheme_str() {
            Some("https") => Ok(uri),
            Some("http") if loopback => Ok(uri),
            _ => bail!(
                "token_url must be https:// (http:// only on loopback), got {:?}",
                self.token_url
            ),
        }
    }

    fn secret(&self) -> anyhow::Result<String> {
        match (&self.client_secret, &self.client_secret_env) {
            (Some(s), _) => Ok(s.clone()),
            (None, Some(var)) => std::env::var(var)
                .with_context(|| format!("client_secret_env names {var}, which is not set")),
            (None, None) => bail!("the profile has neither client_secret nor client_secret_env"),
        }
    }

    /// The form body of the token request (secret included: never log it).
    fn form(&self) -> anyhow::Result<String> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", &self.secret()?);
        if let Some(a) = &self.audience {
            form.append_pair("audience", a);
        }
        if let Some(s) = &self.scope {
            form.append_pair("scope", s);
        }
        Ok(form.finish())
    }

    /// Asks the token endpoint for a new access token.
    pub async fn fetch(&self, ca_cert: Option<&Path>) -> anyhow::Result<String> {
        let uri = self.endpoint()?;
        let form = self.form()?;
        let what = format!("getting a token from {}", self.token_url);
        tokio::time::timeout(TOKEN_TIMEOUT, self.exchange(&uri, form, ca_cert))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {}s", TOKEN_TIMEOUT.as_secs()))
            .and_then(|answer| answer)
            .context(what)
    }

    async fn exchange(
        &self,
        uri: &Uri,
        form: String,
        ca_cert: Option<&Path>,
    ) -> anyhow::Result<String> {
        let addr = ServerAddr::new(uri, ca_cert)?;
        let io = addr.dial().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, addr.authority())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))?;
        let res = sender.send_request(req).await?;
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_TOKEN_ANSWER)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
            .to_bytes();
        parse_answer(status, &body)
    }
}

/// The access token from a token endpoint's answer, or the reason in its
/// OAuth2 error (`error`, `error_description`).
fn parse_answer(status: http::StatusCode, body: &[u8]) -> anyhow::Result<String> {
    #[derive(Deserialize)]
    struct Granted {
        access_token: String,
        #[serde(default)]
        token_type: Option<String>,
    }
    #[derive(Deserialize)]
    struct Refused {
        error: String,
        #[serde(default)]
        error_description: Option<String>,
    }
    if !status.is_success() {
        return Err(match serde_json::from_slice::<Refused>(body) {
            Ok(r) => anyhow::anyhow!(
                "refused (HTTP {status}): {}{}",
                r.error,
                r.error_description
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
            Err(_) => anyhow::anyhow!("refused (HTTP {status})"),
        });
    }
    let granted: Granted =
        serde_json::from_slice(body).context("the answer has no access_token")?;
    if let Some(t) = &granted.token_type {
        if !t.eq_ignore_ascii_case("bearer") {
            bail!("the token type is {t:?}, not Bearer");
        }
    }
    if granted.access_token.is_empty()
        || http::HeaderValue::from_str(&format!("Bearer {}", granted.access_token)).is_err()
    {
        bail!("the access_token cannot be sent in a header");
    }
    Ok(granted.access_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(url: &str) -> Profile {
        Profile {
            token_url: url.into(),
            client_id: "cid".into(),
            client_secret: Some("s3cr3t&=".into()),
            client_secret_env: None,
            audience: Some("https://api".into()),
            scope: None,
        }
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        let p = profile("https://x/oauth/token");
        assert!(!format!("{p:?}").contains("s3cr3t"));
    }

    #[test]
    fn the_form_is_a_client_credentials_grant_with_escaped_values() {
        let form = profile("https://x/t").form().expect("form");
        assert_eq!(
            form,
            "grant_type=client_credentials&client_id=cid&client_secret=s3cr3t%26%3D&audience=https%3A%2F%2Fapi"
        );
    }

    #[test]
    fn plain_http_is_for_loopback_only() {
        assert!(profile("https://tenant.auth0.com/oauth/token")
            .endpoint()
            .is_ok());
        assert!(profile("http://127.0.0.1:9/t").endpoint().is_ok());
        assert!(profile("http://localhost:9/t").endpoint().is_ok());
        assert!(profile("http://[::1]:9/t").endpoint().is_ok());
        let e = profile("http://tenant.auth0.com/oauth/token")
            .endpoint()
            .expect_err("plain http to a remote host");
        assert!(e.to_string().contains("https://"), "{e}");
    }

    #[test]
    fn a_profile_is_picked_by_name_default_or_being_alone() {
        let mut ps = BTreeMap::new();
        assert!(pick(&ps, None).is_err());
        ps.insert("auth0".to_owned(), profile("https://a/t"));
        assert_eq!(pick(&ps, None).expect("the only one").0, "auth0");
        ps.insert("other".to_owned(), profile("https://b/t"));
        let e = pick(&ps, None).expect_err("two, no default");
        assert!(e.to_string().contains("auth0, other"), "{e}");
        ps.insert(DEFAULT_PROFILE.to_owned(), profile("https://c/t"));
        assert_eq!(pick(&ps, None).expect("default").0, DEFAULT_PROFILE);
        assert_eq!(pick(&ps, Some("other")).expect("named").0, "other");
        assert!(pick(&ps, Some("nope")).is_err());
    }

    #[test]
    fn answers_give_the_token_or_the_oauth_error() {
        let ok = br#"{"access_token":"eyJ.a.b","token_type":"Bearer","expires_in":86400}"#;
        assert_eq!(
            parse_answer(http::StatusCode::OK, ok).expect("token"),
            "eyJ.a.b"
        );
        let refused = br#"{"error":"access_denied","error_description":"Unauthorized"}"#;
        let e = parse_answer(http::StatusCode::UNAUTHORIZED, refused).expect_err("refused");
        assert!(e.to_string().contains("access_denied: Unauthorized"), "{e}");
        assert!(parse_answer(http::StatusCode::OK, b"<html>").is_err());
        let mac = br#"{"access_token":"x","token_type":"mac"}"#;
        assert!(parse_answer(http::StatusCode::OK, mac).is_err());
        let newline = br#"{"access_token":"a\nb"}"#;
        assert!(parse_answer(http::StatusCode::OK, newline).is_err());
    }
}
