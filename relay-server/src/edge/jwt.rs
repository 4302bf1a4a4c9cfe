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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use relay_shared::edge::{validate_issuer, JwtRule};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

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
            tls: tls_connector(),
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
        let key = &keys.keys[index];
        if key.alg != header.alg {
            return Err(JwtRejection::WrongAlgorithm {
                token: format!("{:?}", header.alg),
                key: format!("{:?}", key.alg),
            });
        }
        check_token(token, key, rule)
    }

    /// The issuer's key for `kid`, from the cache or after a fetch.
    async fn key_for(
        &self,
        issuer: &str,
        kid: Option<&str>,
    ) -> Result<(Arc<KeySet>, usize), JwtRejection> {
        let entry = self.entry(issuer)?;
        let mut fetched = false;
        loop {
            let now = self.clock.now();
            let view = entry.state().view(now, &self.limits);
            let found = view.keys.as_ref().map(|k| k.lookup(kid));
            let refresh = (found.is_none() || !view.fresh).then_some(Why::Refresh);
            let unknown = matches!(found, Some(Lookup::Unknown)).then_some(Why::UnknownKid);
            let why = [refresh, unknown]
                .into_iter()
                .flatten()
                .find(|w| !fetched && view.may_fetch(*w));
            if let Some(why) = why {
                // A panicked fetch task leaves the cache as it was.
                let _ = self.spawn_fetch(entry.clone(), why).await;
                fetched = true;
                continue;
            }
            return match (view.keys, found) {
                (Some(keys), Some(Lookup::Found(i))) => Ok((keys, i)),
                (_, Some(Lookup::Unknown)) => Err(JwtRejection::UnknownKey),
                (_, Some(Lookup::Ambiguous)) => Err(JwtRejection::AmbiguousKey),
                _ => Err(JwtRejection::KeysUnavailable(
                    view.last_error
                        .unwrap_or_else(|| "not fetched yet, try again in a minute".to_owned()),
                )),
            };
        }
    }

    /// The cache entry of `issuer`, made on first use.
    fn entry(&self, issuer: &str) -> Result<Arc<IssuerKeys>, JwtRejection> {
        let mut issuers = self.issuers.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        if let Some(entry) = issuers.get(issuer) {
            entry.state().last_used = now;
            return Ok(entry.clone());
        }
        // The rule was validated when the tunnel was set up; checked again
        // because this is where the URL is fetched.
        validate_issuer(issuer).map_err(JwtRejection::KeysUnavailable)?;
        let url: Uri = format!("{}{JWKS_PATH}", issuer.trim_end_matches('/'))
            .parse()
            .map_err(|_| JwtRejection::KeysUnavailable("the issuer is not a URL".into()))?;
        if issuers.len() >= MAX_CACHED_ISSUERS {
            let oldest = issuers
                .iter()
                .min_by_key(|(_, e)| e.state().last_used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                issuers.remove(&oldest);
            }
        }
        let entry = Arc::new(IssuerKeys {
            url,
            fetch: Arc::new(tokio::sync::Mutex::new(())),
            state: Mutex::new(CacheState {
                keys: None,
                fetched_at: None,
                last_attempt: None,
                last_unknown_kid: None,
                last_error: None,
                last_used: now,
            }),
        });
        issuers.insert(issuer.to_owned(), entry.clone());
        Ok(entry)
    }

    /// Fetches the issuer's keys in a task of its own, one fetch per issuer
    /// at a time: a task that finds the same kind of fetch has just
    /// finished (within the refetch interval) leaves it at that.
    fn spawn_fetch(&self, entry: Arc<IssuerKeys>, why: Why) -> tokio::task::JoinHandle<()> {
        let (limits, tls, clock) = (self.limits.clone(), self.tls.clone(), self.clock.clone());
        tokio::spawn(async move {
            let _one_at_a_time = entry.fetch.clone().lock_owned().await;
            if !entry.state().view(clock.now(), &limits).may_fetch(why) {
                return;
            }
            let result = fetch_keys(&entry.url, &limits, &tls).await;
            let now = clock.now();
            let mut state = entry.state();
            state.last_attempt = Some(now);
            if why == Why::UnknownKid {
                state.last_unknown_kid = Some(now);
            }
            match result {
                Ok(keys) => {
                    if state.last_error.take().is_some() {
                        info!(url = %entry.url, "JWT issuer keys fetched again");
                    }
                    debug!(url = %entry.url, keys = keys.keys.len(), "JWT issuer keys fetched");
                    state.keys = Some(Arc::new(keys));
                    state.fetched_at = Some(now);
                }
                Err(e) => {
                    if state.last_error.is_none() {
                        warn!(url = %entry.url, error = %e, "JWT issuer keys unavailable; tokens of this issuer are checked against the keys cached earlier, if any");
                    } else {
                        debug!(url = %entry.url, error = %e, "JWT issuer keys still unavailable");
                    }
                    state.last_error = Some(e);
                }
            }
        })
    }
}

/// One issuer's cached keys.
struct IssuerKeys {
    /// `ISSUER/.well-known/jwks.json`.
    url: Uri,
    /// Held for the duration of a fetch: one at a time per issuer.
    fetch: Arc<tokio::sync::Mutex<()>>,
    state: Mutex<CacheState>,
}

impl IssuerKeys {
    fn state(&self) -> MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct CacheState {
    /// The last key set fetched, and when.
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    /// The last fetch that finished, successful or not.
    last_attempt: Option<Instant>,
    /// The last fetch for an unknown `kid` that finished.
    last_unknown_kid: Option<Instant>,
    /// Set while fetches fail: the reason given to visitors when nothing
    /// is cached, and what makes the warning once per run of failures.
    last_error: Option<String>,
    last_used: Instant,
}

/// Why the keys are fetched; each reason has its own once-per-interval
/// allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Nothing cached, or older than the TTL.
    Refresh,
    /// A token names a `kid` the cached set lacks.
    UnknownKid,
}

/// What a request may do with the cache at one instant.
struct View {
    /// The cached keys, unless older than the stale limit.
    keys: Option<Arc<KeySet>>,
    /// Younger than the cache TTL.
    fresh: bool,
    /// Whether the interval has passed since the last fetch of any kind,
    /// and since the last one for an unknown `kid`.
    since_any: bool,
    since_unknown_kid: bool,
    last_error: Option<String>,
}

impl View {
    fn may_fetch(&self, why: Why) -> bool {
        match why {
            Why::Refresh => self.since_any,
            Why::UnknownKid => self.since_unknown_kid,
        }
    }
}

impl CacheState {
    fn view(&self, now: Instant, limits: &JwksLimits) -> View {
        let age = self.fetched_at.map(|t| now.saturating_duration_since(t));
        let passed = |last: Option<Instant>| {
            last.is_none_or(|t| now.saturating_duration_since(t) >= limits.refetch_interval)
        };
        View {
            keys: self
                .keys
                .clone()
                .filter(|_| age.is_some_and(|a| a < limits.max_stale)),
            fresh: age.is_some_and(|a| a < limits.cache_ttl),
            since_any: passed(self.last_attempt),
            since_unknown_kid: passed(self.last_unknown_kid),
            last_error: self.last_error.clone(),
        }
    }
}

/// The usable keys of one key set, in the set's order.
struct KeySet {
    keys: Vec<VerifyKey>,
}

struct VerifyKey {
    kid: Option<String>,
    /// The only algorithm this key verifies.
    alg: Algorithm,
    key: DecodingKey,
}

enum Lookup {
    Found(usize),
    Unknown,
    Ambiguous,
}

impl KeySet {
    fn lookup(&self, kid: Option<&str>) -> Lookup {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .position(|k| k.kid.as_deref() == Some(kid))
                .map_or(Lookup::Unknown, Lookup::Found),
            None if self.keys.len() == 1 => Lookup::Found(0),
            None => Lookup::Ambiguous,
        }
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

/// A TLS client trusting the Mozilla roots (webpki-roots), HTTP/1.1 only.
fn tls_connector() -> TlsConnector {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// GETs the key set under the fetch limits and keeps its usable keys.
async fn fetch_keys(url: &Uri, limits: &JwksLimits, tls: &TlsConnector) -> Result<KeySet, String> {
    let body = tokio::time::timeout(limits.fetch_timeout, get(url, limits, tls))
        .await
        .map_err(|_| format!("no answer from {url} within {:?}", limits.fetch_timeout))??;
    parse_key_set(&body, limits.max_keys).map_err(|e| format!("{url}: {e}"))
}

async fn get(url: &Uri, limits: &JwksLimits, tls: &TlsConnector) -> Result<Bytes, String> {
    let https = url.scheme_str() == Some("https");
    let host = url.host().ok_or_else(|| format!("{url} has no host"))?;
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let authority = url.authority().map_or(host, |a| a.as_str());
    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let path = url.path_and_query().map_or(JWKS_PATH, |p| p.as_str());
    let req = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "relay-server")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request for {url}: {e}"))?;
    if https {
        let name = rustls::pki_types::ServerName::try_from(bare_host.to_owned())
            .map_err(|_| format!("{host} is not a TLS server name"))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {authority}: {e}"))?;
        exchange(stream, req, url, limits.max_body_bytes).await
    } else {
        exchange(tcp, req, url, limits.max_body_bytes).await
    }
}

/// Aborts the connection task when the fetch ends, also by timeout.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange<S>(
    io: S,
    req: Request<Empty<Bytes>>,
    url: &Uri,
    max_body: usize,
) -> Result<Bytes, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if res.status() != StatusCode::OK {
        return Err(format!("{url} answered {}", res.status()));
    }
    let too_large = || format!("{url}: the key set is larger than {max_body} bytes");
    let declared = res
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body as u64) {
        return Err(too_large());
    }
    match Limited::new(res.into_body(), max_body).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(format!("{url}: reading the key set: {e}")),
    }
}

/// The usable keys of a JWK set: RSA (at least [`MIN_RSA_BITS`]) for RS256
/// and P-256 for ES256, marked for signatures if marked at all. Keys of
/// other types, or that do not parse, are skipped, so one odd key does not
/// hide the others.
fn parse_key_set(body: &[u8], max_keys: usize) -> Result<KeySet, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|e| format!("not a JWK set ({e})"))?;
    if raw.keys.len() > max_keys {
        return Err(format!(
            "the key set has {} keys, more than {max_keys}",
            raw.keys.len()
        ));
    }
    let keys: Vec<VerifyKey> = raw.keys.into_iter().filter_map(usable_key).collect();
    if keys.is_empty() {
        return Err("the key set has no RS256 or ES256 (P-256) signing key".into());
    }
    Ok(KeySet { keys })
}

fn usable_key(value: serde_json::Value) -> Option<VerifyKey> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    if jwk
        .common
        .key_algorithm
        .is_some_and(|a| a != KeyAlgorithm::from(alg))
    {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    let sound = match key.kind() {
        jsonwebtoken::DecodingKeyKind::RsaModulusExponent { n, e } => {
            let n = n.iter().skip_while(|b| **b == 0).count();
            n * 8 >= MIN_RSA_BITS && !e.is_empty()
        }
        // 0x04 || x || y, as `from_jwk` builds it for EC keys.
        jsonwebtoken::DecodingKeyKind::SecretOrDer(point) => point.len() == 65,
    };
    sound.then(|| VerifyKey {
        kid: jwk.common.key_id,
        alg,
        key,
    })
}

#[cfg(test)]
mod tests;
