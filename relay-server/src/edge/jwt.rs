//! `--verify-jwt ISSUER --audience AUD`: checks a visitor's
//! `Authorization: Bearer` JWT against the issuer's published keys (SPEC
//! "Edge rules"). Owns the token checks and the per-issuer key cache with
//! its bounded HTTP(S) fetch; the proxy decides what to answer (401/403)
//! and captures the rejection.
//!
//! Decisions:
//! - Only RS256 and ES256 (P-256). The algorithm comes from the key the
//!   token's `kid` names, never from the token alone: an RSA key verifies
//!   only RS256, a P-256 key only ES256, so `alg: none`, HS256 (also the
//!   classic confusion attack, HMAC keyed with the RSA public key) and
//!   everything else are refused before any key is used.
//! - A token without `kid` is accepted only when the issuer publishes
//!   exactly one usable key: with several, guessing would mean trying
//!   each, and issuers that rotate always set `kid`.
//! - Keys are fetched from `ISSUER/.well-known/jwks.json` (the issuer's
//!   trailing `/` trimmed first) and cached per issuer. Two things fetch
//!   them again, each at most once per [`JWKS_REFETCH_INTERVAL`] per
//!   issuer, failed attempts included: keys older than [`JWKS_CACHE_TTL`]
//!   (so rotated-out keys disappear; also the retry when nothing is
//!   cached), and a token naming an unknown `kid` (a key just rotated in).
//!   A visitor sending made-up `kid`s, or an issuer that is down, cannot
//!   turn requests into fetches. Concurrent requests share one fetch, and
//!   the request that needs it waits for it (at most
//!   [`JWKS_FETCH_TIMEOUT`]).
//! - A failed fetch fails closed ([`JwtRejection::KeysUnavailable`]) only
//!   when nothing usable is cached: keys fetched earlier stay in use (up
//!   to [`JWKS_MAX_STALE`]) while the issuer is unreachable. The failure
//!   is logged at warn once per run of failures, not per request.
//!
//! Parts: this file (the token checks and the rejections), `cache.rs` (when
//! to fetch, what stays usable), `fetch.rs` (one bounded fetch, which keys
//! are usable).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use relay_shared::edge::JwtRule;
use serde::Deserialize;
use tokio_rustls::TlsConnector;

use cache::{IssuerKeys, VerifyKey};

/// Longest `Authorization` value looked at. Real access tokens are 1–4 KiB;
/// anything larger is refused before it is decoded.
pub const MAX_AUTHORIZATION_BYTES: usize = 16 * 1024;
/// Clock skew allowed on `exp` and `nbf` (SPEC: 60 s).
pub const JWT_LEEWAY: Duration = Duration::from_secs(60);
/// Age after which an issuer's keys are fetched again, so a key the issuer
/// has rotated out stops verifying within this time.
pub const JWKS_CACHE_TTL: Duration = Duration::from_secs(10 * 60);
/// Least time between two fetches of one issuer's keys (SPEC: an unknown
/// `kid` refetches at most once a minute). Failed fetches count too.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// How long keys fetched earlier stay usable while every refetch fails;
/// beyond it the issuer's tokens are refused.
pub const JWKS_MAX_STALE: Duration = Duration::from_secs(24 * 60 * 60);
/// Connect, TLS, request and the whole answer of one key-set fetch.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key-set body read. Identity providers publish a few keys of
/// about 1.5 KiB each.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys in a key set; a larger set is refused as a whole.
pub const MAX_JWKS_KEYS: usize = 32;
/// Issuers whose keys are cached at once; past it the least recently used
/// is forgotten (and fetched again when next needed).
pub const MAX_CACHED_ISSUERS: usize = 1024;
/// Smallest RSA modulus accepted.
pub const MIN_RSA_BITS: usize = 2048;
/// Where an issuer publishes its keys.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Why a token was refused. `Display` is the reason the visitor reads; it
/// never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtRejection {
    #[error("no token: send Authorization: Bearer <JWT>")]
    Missing,
    #[error("the Authorization header must be Bearer <JWT>")]
    NotBearer,
    #[error("the Authorization header is larger than {MAX_AUTHORIZATION_BYTES} bytes")]
    TooLarge,
    #[error("not a JWT")]
    Malformed,
    /// The header names no algorithm this server knows (`none`, ...).
    #[error("unsupported token header: the algorithm must be RS256 or ES256")]
    UnsupportedHeader,
    /// A known algorithm other than RS256 / ES256.
    #[error("algorithm {0} is not accepted: RS256 or ES256 only")]
    Algorithm(String),
    /// The token's algorithm is not the one of the key its `kid` names.
    #[error("algorithm {token} does not match the key, which is {key}")]
    WrongAlgorithm { token: String, key: String },
    #[error("unknown key id")]
    UnknownKey,
    #[error("the token has no key id and the issuer has several keys")]
    AmbiguousKey,
    #[error("signature invalid")]
    BadSignature,
    #[error("expired {} ago", ago(*.secs_ago))]
    Expired { secs_ago: u64 },
    #[error("not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    /// Absent, or not of the claim's type (`exp` not a number).
    #[error("claim {0} missing or malformed")]
    MissingClaim(String),
    #[error("claim {0} malformed")]
    BadClaim(String),
    /// The issuer's keys could not be had (fetch failed and nothing usable
    /// cached, or the issuer URL is not allowed).
    #[error("the issuer's keys are unavailable: {0}")]
    KeysUnavailable(String),
}

/// "45 s", "5 min", "3 h", "2 days".
fn ago(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86400 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

/// The key-cache and fetch settings; [`JwksLimits::default`] is production.
#[derive(Debug, Clone)]
pub struct JwksLimits {
    pub fetch_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_keys: usize,
    pub cache_ttl: Duration,
    pub refetch_interval: Duration,
    pub max_stale: Duration,
    pub max_issuers: usize,
}

impl Default for JwksLimits {
    fn default() -> Self {
        Self {
            fetch_timeout: JWKS_FETCH_TIMEOUT,
            max_body_bytes: MAX_JWKS_BYTES,
            max_keys: MAX_JWKS_KEYS,
            cache_ttl: JWKS_CACHE_TTL,
            refetch_interval: JWKS_REFETCH_INTERVAL,
            max_stale: JWKS_MAX_STALE,
            max_issuers: MAX_CACHED_ISSUERS,
        }
    }
}

/// Monotonic time for the cache; tests move it by hand instead of sleeping.
#[derive(Clone)]
struct Clock {
    base: Instant,
    manual: Option<Arc<Mutex<Duration>>>,
}

impl Clock {
    fn system() -> Self {
        Self {
            base: Instant::now(),
            manual: None,
        }
    }

    fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(offset) => self.base + *offset.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// One per server process, shared by every tunnel: the keys of each issuer
/// are cached once for all tunnels that name it.
pub struct JwtVerifier {
    limits: JwksLimits,
    tls: TlsConnector,
    issuers: Mutex<HashMap<String, Arc<IssuerKeys>>>,
    clock: Clock,
}

impl Default for JwtVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl JwtVerifier {
    /// Production limits (the constants above).
    pub fn new() -> Self {
        Self::with_limits(JwksLimits::default())
    }

    pub fn with_limits(limits: JwksLimits) -> Self {
        Self {
            limits,
            tls: fetch::tls_connector(),
            issuers: Mutex::new(HashMap::new()),
            clock: Clock::system(),
        }
    }

    /// Checks an `Authorization` header value against `rule`. `Ok`: a valid
    /// token (signature by one of the issuer's keys, `iss`, `aud`, `exp`,
    /// `nbf`). May fetch the issuer's keys (at most [`JWKS_FETCH_TIMEOUT`]).
    ///
    /// Cancel safe: a fetch runs in its own task and fills the cache even
    /// if the visitor that started it goes away.
    pub async fn verify(
        &self,
        rule: &JwtRule,
        authorization: Option<&HeaderValue>,
    ) -> Result<(), JwtRejection> {
        let token = bearer_token(authorization)?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::Json(j) if j.classify() == serde_json::error::Category::Data => {
                JwtRejection::UnsupportedHeader
            }
            _ => JwtRejection::Malformed,
        })?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(JwtRejection::Algorithm(format!("{:?}", header.alg)));
        }
        let (keys, index) = self.key_for(&rule.issuer, header.kid.as_deref()).await?;
        let Some(key) = keys.keys.get(index) else {
            return Err(JwtRejection::UnknownKey);
        };
        if key.alg != header.alg {
            return Err(JwtRejection::WrongAlgorithm {
                token: format!("{:?}", header.alg),
                key: format!("{:?}", key.alg),
            });
        }
        check_token(token, key, rule)
    }
}

/// The token of `Authorization: Bearer TOKEN`, shaped like a JWT
/// (three base64url parts).
fn bearer_token(authorization: Option<&HeaderValue>) -> Result<&str, JwtRejection> {
    let value = authorization.ok_or(JwtRejection::Missing)?;
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return Err(JwtRejection::TooLarge);
    }
    let value = value.to_str().map_err(|_| JwtRejection::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(JwtRejection::NotBearer);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(JwtRejection::Missing);
    }
    let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let parts: Vec<&str> = token.splitn(4, '.').collect();
    let shaped = parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts.iter().all(|p| p.bytes().all(base64url));
    if !shaped {
        return Err(JwtRejection::Malformed);
    }
    Ok(token)
}

/// Signature, then claims: `iss` exactly the rule's issuer, `aud` holding
/// the rule's audience, `exp` required, `nbf` if present, both with
/// [`JWT_LEEWAY`].
fn check_token(token: &str, key: &VerifyKey, rule: &JwtRule) -> Result<(), JwtRejection> {
    let mut validation = Validation::new(key.alg);
    validation.leeway = JWT_LEEWAY.as_secs();
    validation.set_issuer(&[&rule.issuer]);
    validation.set_audience(&[&rule.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let Err(e) = jsonwebtoken::decode::<serde::de::IgnoredAny>(token, &key.key, &validation) else {
        return Ok(());
    };
    Err(match e.into_kind() {
        ErrorKind::InvalidSignature => JwtRejection::BadSignature,
        // The signature was checked before the claims, so reading `exp`
        // for the message reads what the issuer signed.
        ErrorKind::ExpiredSignature => JwtRejection::Expired {
            secs_ago: expired_secs_ago(token),
        },
        ErrorKind::ImmatureSignature => JwtRejection::NotYetValid,
        ErrorKind::InvalidIssuer => JwtRejection::WrongIssuer,
        ErrorKind::InvalidAudience => JwtRejection::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => JwtRejection::MissingClaim(c),
        ErrorKind::InvalidClaimFormat(c) => JwtRejection::BadClaim(c),
        // `verify` matched the header's algorithm to the key already.
        ErrorKind::InvalidAlgorithm => JwtRejection::WrongAlgorithm {
            token: "(as the header has it)".into(),
            key: format!("{:?}", key.alg),
        },
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            JwtRejection::KeysUnavailable(format!(
                "key {} is not a valid key",
                key.kid.as_deref().unwrap_or("(no kid)")
            ))
        }
        _ => JwtRejection::Malformed,
    })
}

fn expired_secs_ago(token: &str) -> u64 {
    #[derive(Deserialize)]
    struct Exp {
        exp: f64,
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    jsonwebtoken::dangerous::insecure_decode_claims::<Exp>(token)
        .map_or(0, |c| (now - c.exp).max(0.0) as u64)
}

mod cache;
mod fetch;

#[cfg(test)]
mod tests;
