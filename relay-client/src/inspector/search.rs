//! The page's search box: captures whose path, headers or body contain a
//! text, case-insensitive. The server's list filters only by path, so the
//! inspector reads the newest records itself and keeps the text it looked
//! through (records do not change once stored), so that the next
//! keystroke costs one list call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{stream, StreamExt};
use relay_shared::api::Summary;
use serde_json::Value;
use tracing::debug;

use super::views;
use crate::api::Api;

/// Newest captures a search looks through (the server's largest page).
pub const SEARCH_SCAN: u32 = 1000;
/// Most matches answered; the page says when there are more.
pub const SEARCH_RESULTS: usize = 200;
/// Text kept for searching, all captures together: over this, the cache
/// starts again empty (each capture adds at most twice
/// [`views::SEARCH_BODY_BYTES`] plus its headers).
pub const SEARCH_CACHE_BYTES: usize = 64 << 20;
/// Records fetched at once when the cache lacks them.
const FETCH_AT_ONCE: usize = 8;

/// Searchable text by capture id, for one tunnel.
#[derive(Default)]
pub struct Cache {
    inner: Mutex<Texts>,
}

#[derive(Default)]
struct Texts {
    by_id: HashMap<String, Arc<str>>,
    bytes: usize,
}

impl Cache {
    fn get(&self, id: &str) -> Option<Arc<str>> {
        self.lock().by_id.get(id).cloned()
    }

    fn put(&self, id: String, text: Arc<str>) {
        let mut t = self.lock();
        if t.bytes + text.len() > SEARCH_CACHE_BYTES {
            t.by_id.clear();
            t.bytes = 0;
        }
        t.bytes += text.len();
        if let Some(old) = t.by_id.insert(id, text) {
            t.bytes -= old.len();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Texts> {
        // A panic elsewhere leaves only a cache behind: keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a search answers: `{"requests": [summaries, newest first],
/// "scanned": N, "more": bool}` (`more`: matches beyond
/// [`SEARCH_RESULTS`] were left out).
#[derive(Debug, serde::Serialize)]
pub struct Found {
    pub requests: Vec<Value>,
    pub scanned: usize,
    pub more: bool,
}

/// The newest [`SEARCH_SCAN`] captures of `api`'s tunnel that contain
/// `query` (trimmed, any case) in their id, method, path, status, headers
/// or body. A capture retired while the search ran is left out.
///
/// Errors: the server's, for the list call.
pub async fn search(api: &Api, cache: &Cache, query: &str) -> anyhow::Result<Found> {
    let needle = query.trim().to_lowercase();
    let page = api.list(&format!("limit={SEARCH_SCAN}")).await?;
    let missing: Vec<String> = page
        .requests
        .iter()
        .filter(|s| !views::summary_matches(s, &needle) && cache.get(&s.id).is_none())
        .map(|s| s.id.clone())
        .collect();
    let fetched: Vec<_> = stream::iter(missing)
        .map(|id| async move {
            let rec = api.get(&id).await;
            (id, rec)
        })
        .buffer_unordered(FETCH_AT_ONCE)
        .collect()
        .await;
    for (id, rec) in fetched {
        match rec {
            Ok(rec) => cache.put(id, views::haystack(&rec).into()),
            Err(e) => debug!(%id, error = %e, "search skips a capture it cannot read"),
        }
    }
    let matches = |s: &Summary| {
        views::summary_matches(s, &needle) || cache.get(&s.id).is_some_and(|t| t.contains(&needle))
    };
    let hits: Vec<&Summary> = page.requests.iter().filter(|s| matches(s)).collect();
    Ok(Found {
        more: hits.len() > SEARCH_RESULTS,
        requests: hits
            .into_iter()
            .take(SEARCH_RESULTS)
            .map(views::summary)
            .collect(),
        scanned: page.requests.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_starts_again_when_full() {
        let cache = Cache::default();
        cache.put("a".into(), "x".repeat(SEARCH_CACHE_BYTES - 10).into());
        cache.put("a".into(), "x".repeat(SEARCH_CACHE_BYTES - 10).into());
        assert!(
            cache.get("a").is_some(),
            "a replaced entry is not counted twice"
        );
        cache.put("b".into(), "y".repeat(20).into());
        assert!(cache.get("a").is_none() && cache.get("b").is_some());
        assert_eq!(cache.lock().bytes, 20);
    }
}
