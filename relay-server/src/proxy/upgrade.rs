//! WebSocket (and any `Upgrade`) exchanges: after the local app's 101, the
//! visitor's upgraded connection and the stream carry raw bytes both ways.

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use relay_shared::mux::{recv_io, StreamParts};
use tracing::{debug, Instrument};

use crate::capture::{Outcome, Tap};
use crate::response::ProxyBody;

/// After a 101, joins the visitor's upgraded connection to the stream.
pub(super) fn splice(
    tap: &Tap,
    open: StreamParts,
    on_upgrade: hyper::upgrade::OnUpgrade,
) -> ProxyBody {
    let tap = tap.clone();
    tokio::spawn(
        async move {
            let parts = open;
            let id = parts.sender.id();
            let _guard = parts.guard;
            let Ok(upgraded) = on_upgrade.await else {
                tap.finish(Outcome::VisitorGone);
                return;
            };
            let (r, w) = tokio::io::split(TokioIo::new(upgraded));
            // try_join: when one direction fails, the other is dropped with
            // the connection instead of waiting on a peer that is gone.
            let ended = tokio::try_join!(parts.sender.io(r), recv_io(parts.body, w));
            debug!(stream = id, ?ended, "upgraded stream ended");
            tap.finish(Outcome::Delivered);
        }
        .in_current_span(),
    );
    Empty::new().map_err(|never| match never {}).boxed()
}
