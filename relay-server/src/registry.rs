//! Which session serves which tunnel name, and which names exist at all
//! (so an offline tunnel answers as its client asked, an unknown one 404).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use std::sync::Arc;

use relay_shared::protocol::WhenOffline;

use crate::edge::Edge;
use crate::store::NameSettings;
use crate::tunnel::TunnelHandle;

/// What a name answers while its client is away, and the edge rules every
/// request to it must pass, connected or not.
#[derive(Clone, Default)]
pub struct Rules {
    pub when_offline: WhenOffline,
    pub edge: Option<Arc<Edge>>,
}

impl Rules {
    /// From what the store keeps with the name.
    pub fn from_settings(s: &NameSettings) -> Self {
        Self {
            when_offline: s.when_offline,
            edge: Edge::from_json(s.edge.as_deref()),
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Name → its session and the session's owner (`token:ID`, `client:ID`).
    live: HashMap<String, (TunnelHandle, String)>,
    /// Every claimed name, with its rules.
    known: HashMap<String, Rules>,
}

/// Name → live session. The lock is held for map operations only.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

/// What a lookup found, with the name's edge rules.
pub enum Lookup {
    Live(TunnelHandle, Option<Arc<Edge>>),
    /// Known, no client connected: answer as the tunnel's setting says.
    Offline(WhenOffline, Option<Arc<Edge>>),
    Unknown,
}

impl Registry {
    /// A registry that already knows the names claimed in the store.
    pub fn with_known(names: impl IntoIterator<Item = (String, NameSettings)>) -> Self {
        let reg = Self::default();
        reg.lock().known.extend(
            names
                .into_iter()
                .map(|(name, s)| (name, Rules::from_settings(&s))),
        );
        reg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each critical section is one map operation; poisoning carries no
        // information.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lookup(&self, name: &str) -> Lookup {
        let inner = self.lock();
        let rules = inner.known.get(name);
        match (inner.live.get(name), rules) {
            (Some((h, _)), rules) => Lookup::Live(h.clone(), rules.and_then(|r| r.edge.clone())),
            (None, Some(r)) => Lookup::Offline(r.when_offline, r.edge.clone()),
            (None, None) => Lookup::Unknown,
        }
    }

    /// Makes `handle` the session for its name. A previous session for the
    /// same name (the same owner reconnecting before its old connection
    /// timed out) is returned so the caller can close it.
    /// `rules` are what the name answers once this session is gone, and
    /// what every request must pass.
    pub fn insert(
        &self,
        handle: TunnelHandle,
        owner: String,
        rules: Rules,
    ) -> Option<TunnelHandle> {
        let mut inner = self.lock();
        let name = handle.name().to_owned();
        inner.known.insert(name.clone(), rules);
        inner.live.insert(name, (handle, owner)).map(|(old, _)| old)
    }

    /// Removes `handle`, unless a newer session took its name meanwhile.
    pub fn remove(&self, handle: &TunnelHandle) {
        let mut inner = self.lock();
        if inner
            .live
            .get(handle.name())
            .is_some_and(|(h, _)| h.same_session(handle))
        {
            inner.live.remove(handle.name());
        }
    }

    pub fn live_count(&self) -> usize {
        self.lock().live.len()
    }

    /// Every live session, for shutdown.
    pub fn all(&self) -> Vec<TunnelHandle> {
        self.lock().live.values().map(|(h, _)| h.clone()).collect()
    }

    /// The live sessions of these owners (a revoked token's).
    pub fn sessions_of(&self, owners: &HashSet<String>) -> Vec<TunnelHandle> {
        self.lock()
            .live
            .values()
            .filter(|(_, owner)| owners.contains(owner))
            .map(|(h, _)| h.clone())
            .collect()
    }
}
