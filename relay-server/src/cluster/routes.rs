//! What a node read about names whose sessions other nodes hold, kept for
//! [`ROUTE_CACHE_TTL`]: without it every forwarded request paid two store
//! reads before its hop, and a node forwarding a busy tunnel spent its
//! time handing those reads between threads (docs/benchmarks.md,
//! "Forwarding between nodes"). Only a found holder is kept: a name with
//! no live lease is read afresh each time, so a client that reconnects is
//! seen at once; and a holder that turns out unreachable, or no longer has
//! the session, is forgotten at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::registry::Rules;
use crate::store::Lease;

/// How long a forwarding node trusts a holder it read from the store.
/// Edge rules or an offline answer changed through another node reach it
/// within this time; a takeover is noticed sooner (the old holder says it
/// has no session, and the entry is dropped).
pub const ROUTE_CACHE_TTL: Duration = Duration::from_secs(1);

/// Entries kept at most; past it the stale ones are dropped (names are
/// bounded by what was claimed, this bounds it again).
const MAX_ROUTES: usize = 10_000;

struct Route {
    read_at: Instant,
    rules: Rules,
    lease: Lease,
}

/// Name → the holder another node has, as last read.
#[derive(Default)]
pub struct Routes {
    inner: Mutex<HashMap<String, Route>>,
}

impl Routes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Route>> {
        // One map operation per critical section: poisoning carries no
        // information.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The holder read within [`ROUTE_CACHE_TTL`], if any.
    pub fn get(&self, name: &str) -> Option<(Rules, Lease)> {
        let routes = self.lock();
        let route = routes.get(name)?;
        (route.read_at.elapsed() < ROUTE_CACHE_TTL)
            .then(|| (route.rules.clone(), route.lease.clone()))
    }

    pub fn put(&self, name: &str, rules: Rules, lease: Lease) {
        let mut routes = self.lock();
        if routes.len() >= MAX_ROUTES {
            routes.retain(|_, r| r.read_at.elapsed() < ROUTE_CACHE_TTL);
        }
        if routes.len() < MAX_ROUTES {
            let read_at = Instant::now();
            routes.insert(
                name.to_owned(),
                Route {
                    read_at,
                    rules,
                    lease,
                },
            );
        }
    }

    /// Drops what is known of `name`: its holder could not serve it.
    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(node: &str) -> Lease {
        Lease {
            name: "n".into(),
            node_id: node.into(),
            node_url: format!("http://{node}"),
            epoch: 1,
            expires_at_ms: 0,
        }
    }

    #[test]
    fn a_holder_is_kept_until_forgotten() {
        let routes = Routes::default();
        assert!(routes.get("n").is_none());
        routes.put("n", Rules::default(), lease("a"));
        assert_eq!(routes.get("n").map(|(_, l)| l.node_id), Some("a".into()));
        routes.forget("n");
        assert!(routes.get("n").is_none());
    }
}
