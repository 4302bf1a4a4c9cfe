//! Ends the live sessions of revoked tokens. `relay-server token revoke`
//! runs in another process and only writes the database, so the server
//! looks for new revocations every [`REVOCATION_CHECK`]; a session whose
//! token is revoked is closed with `CLOSE_REVOKED`, its name goes offline,
//! and its visitors get the offline answer from then on.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::State;

/// How soon a revoke ends the token's live sessions.
pub const REVOCATION_CHECK: Duration = Duration::from_secs(1);

/// Runs until `stop`: closes the sessions of every token revoked since the
/// last look. A connect that checked its token just before a revoke is
/// caught by [`still_valid`], which the handshake calls after registering.
pub async fn watch(state: Arc<State>, stop: CancellationToken) {
    let mut seen: HashSet<i64> = HashSet::new();
    let mut tick = tokio::time::interval(REVOCATION_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let revoked = match state.store.call(|s| s.revoked_tokens()).await {
            Ok(ids) => ids,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "checking for revoked tokens failed");
                continue;
            }
        };
        let new: HashSet<String> = revoked
            .iter()
            .filter(|id| !seen.contains(id))
            .map(|id| format!("token:{id}"))
            .collect();
        seen.extend(revoked);
        if new.is_empty() {
            continue;
        }
        for handle in state.registry.sessions_of(&new) {
            info!(tunnel = handle.name(), "token revoked: closing the session");
            handle.revoke();
        }
    }
}

/// Whether the token a session was granted under is still live, checked
/// once more after the session is registered: a revoke between the
/// handshake's check and the registration would otherwise be missed by
/// [`watch`], which only looks at revocations it has not seen.
pub async fn still_valid(state: &Arc<State>, owner: &str) -> bool {
    let Some(id) = owner
        .strip_prefix("token:")
        .and_then(|id| id.parse::<i64>().ok())
    else {
        return true;
    };
    match state.store.call(move |s| s.revoked_tokens()).await {
        Ok(revoked) => !revoked.contains(&id),
        // The watcher retries on its next tick; a store error here should
        // not end a session the token may still own.
        Err(_) => true,
    }
}
