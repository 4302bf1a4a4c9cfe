//! The per-issuer key cache of [`JwtVerifier`]: when to fetch (nothing
//! cached, older than the TTL, an unknown `kid`; each at most once per
//! refetch interval), one fetch per issuer at a time, and what a failed
//! fetch leaves usable.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use http::Uri;
use jsonwebtoken::{Algorithm, DecodingKey};
use relay_shared::edge::validate_issuer;
use tracing::{debug, info, warn};

use super::fetch::fetch_keys;
use super::{JwksLimits, JwtRejection, JwtVerifier, JWKS_PATH};

impl JwtVerifier {
    /// The issuer's key for `kid`, from the cache or after a fetch.
    pub(super) async fn key_for(
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
        if issuers.len() >= self.limits.max_issuers {
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
pub(super) struct IssuerKeys {
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
pub(super) struct KeySet {
    pub(super) keys: Vec<VerifyKey>,
}

pub(super) struct VerifyKey {
    pub(super) kid: Option<String>,
    /// The only algorithm this key verifies.
    pub(super) alg: Algorithm,
    pub(super) key: DecodingKey,
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
