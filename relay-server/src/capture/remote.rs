//! Live events when the store is shared (`--store postgres://...`): every
//! node's writer announces its commits with a NOTIFY carrying the capture
//! id, and each node turns those ids back into summaries for its own live
//! listeners. A node's own captures come back the same way, so one path
//! publishes everything in commit order and nothing is shown twice.

use std::sync::Arc;

use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::State;

/// The NOTIFY payload prefix of a committed capture (`store/pg/events.rs`).
const CAPTURE: &str = "capture:";

/// Publishes the captures the store announces until `stop` fires or the
/// store's listener ends. Ids are looked up only while someone listens:
/// without listeners an announcement costs nothing but its receipt.
pub async fn follow(state: Arc<State>, mut announced: Receiver<String>, stop: CancellationToken) {
    loop {
        let payload = tokio::select! {
            p = announced.recv() => match p {
                Some(p) => p,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        let Some(id) = payload.strip_prefix(CAPTURE) else {
            // Names, revocations and deliveries are read from the store
            // where they are used (per request, and by the revocation
            // poll), so their announcements need no action here.
            continue;
        };
        if !state.capture.has_listeners() {
            continue;
        }
        let id = id.to_owned();
        match state.store.call(move |s| s.summary_by_id(&id)).await {
            Ok(Some(summary)) => state.capture.publish(summary),
            // Trimmed by retention before we read it: nothing to show.
            Ok(None) => debug!("an announced capture is already gone"),
            Err(e) => warn!(error = %format!("{e:#}"), "reading an announced capture failed"),
        }
    }
}
