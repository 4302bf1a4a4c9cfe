//! The leases of this node's sessions: taken when a session starts
//! ([`hold`]), renewed together every period ([`renew_loop`]), released
//! when the session ends ([`release`]). A name this node no longer holds
//! (a client of the same owner connected through another node) has its
//! local session closed as replaced, as on one node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::tunnel::TunnelHandle;
use crate::State;

/// The leases this node holds: name → (epoch, the session holding it).
#[derive(Default)]
pub struct Leases {
    held: Mutex<HashMap<String, (i64, TunnelHandle)>>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, TunnelHandle)>> {
        // One map operation per critical section: poisoning carries no news.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many names this node holds (a metric, and for tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The lease a session took, to release when it ends.
pub struct HeldLease {
    name: String,
    epoch: i64,
}

/// Takes the lease on the session's name for this node (whoever held it:
/// this client is here now). `None` outside cluster mode, or when the
/// store failed: the session still serves visitors who reach this node.
pub async fn hold(state: &Arc<State>, handle: &TunnelHandle) -> Option<HeldLease> {
    let cluster = state.cluster.as_ref()?;
    let (name, id, url, ttl) = (
        handle.name().to_owned(),
        cluster.config.node_id.clone(),
        cluster.config.url.clone(),
        cluster.config.lease_ttl,
    );
    let lease = match state
        .store
        .call(move |s| s.take_lease(&name, &id, &url, ttl))
        .await
    {
        Ok(lease) => lease,
        Err(e) => {
            warn!(tunnel = %handle.name(), error = %format!("{e:#}"), "taking the lease failed; other nodes will answer offline");
            return None;
        }
    };
    info!(tunnel = %lease.name, epoch = lease.epoch, "lease taken");
    cluster
        .leases
        .lock()
        .insert(lease.name.clone(), (lease.epoch, handle.clone()));
    Some(HeldLease {
        name: lease.name,
        epoch: lease.epoch,
    })
}

/// Releases a session's lease, unless a newer session (here or elsewhere)
/// holds the name now.
pub async fn release(state: &Arc<State>, lease: Option<HeldLease>) {
    let (Some(cluster), Some(lease)) = (state.cluster.as_ref(), lease) else {
        return;
    };
    {
        let mut held = cluster.leases.lock();
        if held
            .get(&lease.name)
            .is_some_and(|(e, _)| *e == lease.epoch)
        {
            held.remove(&lease.name);
        }
    }
    let id = cluster.config.node_id.clone();
    let name = lease.name.clone();
    if let Err(e) = state
        .store
        .call(move |s| s.release_lease(&name, &id, lease.epoch))
        .await
    {
        // It expires by itself within the TTL.
        warn!(tunnel = %lease.name, error = %format!("{e:#}"), "releasing the lease failed");
    }
}

/// Renews every lease this node holds, in one store call per period, and
/// closes the sessions whose names another node took.
pub async fn renew_loop(state: Arc<State>, stop: CancellationToken) {
    let Some(cluster) = state.cluster.as_ref() else {
        return;
    };
    let mut tick = tokio::time::interval(cluster.config.renew_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let held: Vec<(String, i64)> = cluster
            .leases
            .lock()
            .iter()
            .map(|(name, (epoch, _))| (name.clone(), *epoch))
            .collect();
        if held.is_empty() {
            continue;
        }
        let (id, ttl) = (cluster.config.node_id.clone(), cluster.config.lease_ttl);
        let asked = held.clone();
        let lost = match state
            .store
            .call(move |s| s.renew_leases(&id, &asked, ttl))
            .await
        {
            Ok(lost) => lost,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "renewing leases failed; retrying next period");
                continue;
            }
        };
        for name in lost {
            let epoch = held.iter().find(|(n, _)| *n == name).map(|(_, e)| *e);
            let gone = {
                let mut map = cluster.leases.lock();
                match map.get(&name) {
                    Some((e, _)) if Some(*e) == epoch => map.remove(&name).map(|(_, h)| h),
                    _ => None,
                }
            };
            if let Some(handle) = gone {
                info!(tunnel = %name, "lease taken by another node; closing the local session");
                handle.replace();
            }
        }
    }
}
