//! Edge rules on the server: kept with the name (the basic-auth password
//! as an Argon2 hash), compiled once per connect or start, and checked for
//! every request before a stream opens or an offline answer is given, so a
//! request that fails them never reaches the laptop and is never kept for
//! delivery. `jwt.rs` verifies bearer JWTs against the issuer's keys.

pub mod jwt;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use base64::Engine as _;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use ipnet::IpNet;
use relay_shared::edge::{parse_network, EdgeRules, JwtRule};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// Password checks (Argon2, tens of milliseconds of CPU each) that may run
/// at once in the whole server: wrong passwords sent in a flood queue here
/// instead of taking every core.
pub const MAX_PASSWORD_CHECKS: usize = 2;
/// Credentials remembered per tunnel once they verified, so a visitor that
/// sends the right password on every request pays Argon2 once.
const VERIFIED_CACHE: usize = 16;

/// What the store keeps of a tunnel's rules (JSON in `names.edge`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<StoredBasic>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_ip: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require_headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtRule>,
}

/// A basic-auth user and its password's Argon2 hash (PHC string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBasic {
    pub user: String,
    pub hash: String,
}

impl StoredRules {
    /// Validates `rules` and hashes the password; blocking (Argon2).
    pub fn from_rules(rules: &EdgeRules) -> Result<Self, String> {
        rules.validate()?;
        let basic_auth = match &rules.basic_auth {
            Some(b) => {
                let hash = Argon2::default()
                    .hash_password(b.password.as_bytes())
                    .map_err(|e| format!("--basic-auth: could not hash the password: {e}"))?
                    .to_string();
                Some(StoredBasic {
                    user: b.user.clone(),
                    hash,
                })
            }
            None => None,
        };
        Ok(Self {
            basic_auth,
            allow_ip: rules.allow_ip.clone(),
            require_headers: rules.require_headers.clone(),
            jwt: rules.jwt.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A tunnel's rules ready to check.
pub struct Edge {
    basic: Option<StoredBasic>,
    networks: Vec<IpNet>,
    headers: Vec<(HeaderName, HeaderValue)>,
    jwt: Option<JwtRule>,
    /// The stored rules did not parse (a damaged row): fail closed.
    damaged: bool,
    /// SHA-256 of `user:password` pairs that passed Argon2.
    verified: Mutex<HashSet<[u8; 32]>>,
}

/// Why a request was refused: its status, the reason for the JSON body,
/// and the challenge header for 401s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub reason: String,
    pub challenge: Option<HeaderValue>,
}

impl Rejection {
    fn forbidden(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
            challenge: None,
        }
    }

    fn unauthorized(reason: impl Into<String>, challenge: &'static str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            reason: reason.into(),
            challenge: Some(HeaderValue::from_static(challenge)),
        }
    }
}

/// Shared by every tunnel of a server.
pub struct Checks {
    password_checks: Semaphore,
    pub jwt: jwt::JwtVerifier,
}

impl Checks {
    /// Waits for a turn at Argon2 (a password check or hash).
    pub async fn password_permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.password_checks.acquire().await.ok()
    }
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            password_checks: Semaphore::new(MAX_PASSWORD_CHECKS),
            jwt: jwt::JwtVerifier::new(),
        }
    }
}

impl Edge {
    /// Compiles the store's JSON (`names.edge`); JSON that does not parse
    /// fails closed.
    pub fn from_json(json: Option<&str>) -> Option<Arc<Self>> {
        let json = json.filter(|j| !j.is_empty())?;
        match serde_json::from_str::<StoredRules>(json) {
            Ok(stored) => Self::compile(stored),
            Err(e) => {
                tracing::error!(error = %e, "stored edge rules are not valid JSON; the tunnel refuses every request");
                Some(Arc::new(Self {
                    basic: None,
                    networks: Vec::new(),
                    headers: Vec::new(),
                    jwt: None,
                    damaged: true,
                    verified: Mutex::default(),
                }))
            }
        }
    }

    /// Compiles stored rules; `None` when there are none. Rules that no
    /// longer parse (a damaged row) fail closed: everything is refused.
    pub fn compile(stored: StoredRules) -> Option<Arc<Self>> {
        if stored.is_empty() {
            return None;
        }
        let mut networks = Vec::with_capacity(stored.allow_ip.len());
        let mut headers = Vec::with_capacity(stored.require_headers.len());
        let mut damaged = false;
        for cidr in &stored.allow_ip {
            match parse_network(cidr) {
                Ok(n) => networks.push(n),
                Err(_) => damaged = true,
            }
        }
        for (name, value) in &stored.require_headers {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                _ => damaged = true,
            }
        }
        if damaged {
            tracing::error!("stored edge rules do not parse; the tunnel refuses every request");
        }
        Some(Arc::new(Self {
            basic: stored.basic_auth,
            networks,
            headers,
            jwt: stored.jwt,
            damaged,
            verified: Mutex::default(),
        }))
    }

    /// Checks one request: the visitor's address, required headers, then
    /// the credentials (basic or JWT). The first failure is the answer.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        peer: IpAddr,
        checks: &Checks,
    ) -> Result<(), Rejection> {
        if self.damaged {
            return Err(Rejection::forbidden(
                "the tunnel's rules could not be read; ask its owner to reconnect",
            ));
        }
        let peer = canonical(peer);
        if !self.networks.is_empty() && !self.networks.iter().any(|n| n.contains(&peer)) {
            return Err(Rejection::forbidden(format!(
                "{peer} is not in the tunnel's allowed networks"
            )));
        }
        for (name, want) in &self.headers {
            let ok = headers
                .get_all(name)
                .iter()
                .any(|got| bool::from(got.as_bytes().ct_eq(want.as_bytes())));
            if !ok {
                return Err(Rejection::forbidden(format!(
                    "the {name} header is missing or has another value"
                )));
            }
        }
        if let Some(basic) = &self.basic {
            self.check_basic(basic, headers.get(AUTHORIZATION), checks)
                .await?;
        }
        if let Some(rule) = &self.jwt {
            checks
                .jwt
                .verify(rule, headers.get(AUTHORIZATION))
                .await
                .map_err(|e| {
                    Rejection::unauthorized(
                        format!("bearer token refused: {e}"),
                        "Bearer realm=\"relay\", error=\"invalid_token\"",
                    )
                })?;
        }
        Ok(())
    }

    async fn check_basic(
        &self,
        basic: &StoredBasic,
        authorization: Option<&HeaderValue>,
        checks: &Checks,
    ) -> Result<(), Rejection> {
        const CHALLENGE: &str = "Basic realm=\"relay\", charset=\"UTF-8\"";
        let refuse = |why: &str| Rejection::unauthorized(why, CHALLENGE);
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return Err(refuse("this tunnel needs a user and password (basic auth)"));
        };
        let digest: [u8; 32] = Sha256::digest(format!("{user}:{password}").as_bytes()).into();
        if self.lock_verified().contains(&digest) {
            return Ok(());
        }
        let user_ok = bool::from(user.as_bytes().ct_eq(basic.user.as_bytes()));
        let Some(_permit) = checks.password_permit().await else {
            return Err(refuse("the password could not be checked"));
        };
        let hash = basic.hash.clone();
        let password_ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        if !(user_ok && password_ok) {
            return Err(refuse("wrong user or password"));
        }
        let mut verified = self.lock_verified();
        if verified.len() >= VERIFIED_CACHE {
            verified.clear();
        }
        verified.insert(digest);
        Ok(())
    }

    fn lock_verified(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For the handshake's log line: which kinds of rule are set.
    pub fn describe(&self) -> String {
        let mut kinds = Vec::new();
        if self.basic.is_some() {
            kinds.push("basic auth");
        }
        if !self.networks.is_empty() {
            kinds.push("allowed networks");
        }
        if !self.headers.is_empty() {
            kinds.push("required headers");
        }
        if self.jwt.is_some() {
            kinds.push("JWT");
        }
        kinds.join(", ")
    }
}

/// An IPv4 address seen as `::ffff:a.b.c.d` (a dual-stack listener)
/// compares with IPv4 networks.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `Basic base64(user:password)` → its parts.
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Sets the challenge header of a 401.
pub fn add_challenge(headers: &mut HeaderMap, rejection: &Rejection) {
    if let Some(c) = &rejection.challenge {
        headers.insert(WWW_AUTHENTICATE, c.clone());
    }
}

#[cfg(test)]
mod tests;
