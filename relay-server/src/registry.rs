//! Which session serves which tunnel name, and which names exist at all
//! (so an offline tunnel answers as its client asked, an unknown one 404).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use relay_shared::protocol::WhenOffline;

use crate::tunnel::TunnelHandle;

#[derive(Default)]
struct Inner {
    /// Name → its session and the session's owner (`token:ID`, `client:ID`).
    live: HashMap<String, (TunnelHandle, String)>,
    /// Every claimed name, with what it answers while its client is away.
    known: HashMap<String, WhenOffline>,
}

/// Name → live session. The lock is held for map operations only.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

/// What a lookup found.
pub enum Lookup {
    Live(TunnelHandle),
    /// Known, no client connected: answer as the tunnel's setting says.
    Offline(WhenOffline),
    Unknown,
}

impl Registry {
    /// A registry that already knows the names claimed in the store.
    pub fn with_known(names: impl IntoIterator<Item = (String, WhenOffline)>) -> Self {
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
            Some((h, _)) => Lookup::Live(h.clone()),
            None => match inner.known.get(name) {
                Some(w) => Lookup::Offline(*w),
                None => Lookup::Unknown,
            },
        }
    }

    /// Makes `handle` the session for its name. A previous session for the
    /// same name (the same owner reconnecting before its old connection
    /// timed out) is returned so the caller can close it.
    /// `when_offline` is what the name answers once this session is gone.
    pub fn insert(
        &self,
        handle: TunnelHandle,
        owner: String,
        when_offline: WhenOffline,
    ) -> Option<TunnelHandle> {
        let mut inner = self.lock();
        let name = handle.name().to_owned();
        inner.known.insert(name.clone(), when_offline);
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
