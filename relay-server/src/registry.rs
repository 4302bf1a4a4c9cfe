//! Which session serves which tunnel name, and which names exist at all
//! (so an offline tunnel answers 503, an unknown one 404).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::tunnel::TunnelHandle;

#[derive(Default)]
struct Inner {
    live: HashMap<String, TunnelHandle>,
    known: HashSet<String>,
}

/// Name → live session. The lock is held for map operations only.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

/// What a lookup found.
pub enum Lookup {
    Live(TunnelHandle),
    Offline,
    Unknown,
}

impl Registry {
    /// A registry that already knows the names claimed in the store.
    pub fn with_known(names: impl IntoIterator<Item = String>) -> Self {
        let reg = Self::default();
        reg.lock().known.extend(names);
        reg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each critical section is one map operation; poisoning carries no
        // information.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lookup(&self, name: &str) -> Lookup {
        let inner = self.lock();
        match inner.live.get(name) {
            Some(h) => Lookup::Live(h.clone()),
            None if inner.known.contains(name) => Lookup::Offline,
            None => Lookup::Unknown,
        }
    }

    /// Makes `handle` the session for its name. A previous session for the
    /// same name (the same owner reconnecting before its old connection
    /// timed out) is returned so the caller can close it.
    pub fn insert(&self, handle: TunnelHandle) -> Option<TunnelHandle> {
        let mut inner = self.lock();
        let name = handle.name().to_owned();
        inner.known.insert(name.clone());
        inner.live.insert(name, handle)
    }

    /// Removes `handle`, unless a newer session took its name meanwhile.
    pub fn remove(&self, handle: &TunnelHandle) {
        let mut inner = self.lock();
        if inner
            .live
            .get(handle.name())
            .is_some_and(|h| h.same_session(handle))
        {
            inner.live.remove(handle.name());
        }
    }

    pub fn live_count(&self) -> usize {
        self.lock().live.len()
    }

    /// Every live session, for shutdown.
    pub fn all(&self) -> Vec<TunnelHandle> {
        self.lock().live.values().cloned().collect()
    }
}
