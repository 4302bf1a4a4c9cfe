//! The answer for a known tunnel whose client is away. The request is
//! captured, body included (up to `--capture-limit`), and committed before
//! the answer goes out: it is a missed request that waits to be delivered
//! when the developer is back. The answer is the tunnel's setting (SPEC
//! "Missed requests"): 503 `tunnel_offline` with `Retry-After`, or 202
//! `{"queued": true, ...}` for callers (an Auth0 Action) that must go on.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use relay_shared::http::is_upgrade;
use relay_shared::protocol::WhenOffline;

use super::{fail, record_head};
use crate::capture::{Outcome, Tap};
use crate::error::PublicError;
use crate::listen::Visitor;
use crate::response::{bytes_response, json_bytes, ProxyBody};
use crate::State;

/// A request for a known tunnel whose client is away, answered as `when`
/// says once it is stored. A request that cannot be kept (capture off, an
/// upgrade, a failed commit) is never told it was queued: it gets the 503.
#[allow(clippy::too_many_arguments)] // one call site, all of the exchange's context
pub(super) async fn answer(
    state: &Arc<State>,
    req: Request<Incoming>,
    visitor: &Visitor,
    id: &str,
    name: &str,
    prefix: Option<&str>,
    target: String,
    when: WhenOffline,
) -> Response<ProxyBody> {
    let tap = Tap::new(Some(&state.capture), id, name, req.method(), &target)
        .with_metrics(&state.metrics);
    let upgrade = is_upgrade(req.headers());
    if tap.capturing() {
        let (parts, mut body) = req.into_parts();
        record_head(state, &tap, parts, visitor, prefix);
        let limit = state.capture.config().limit as u64;
        let read = async {
            let mut seen = 0u64;
            if body.is_end_stream() {
                tap.request_complete();
                return;
            }
            // `<=`: a body of exactly the limit is read to its end, so it
            // is not marked truncated; a longer one stops one frame past.
            while seen <= limit {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            seen += data.len() as u64;
                            tap.request_chunk(data);
                        }
                        if body.is_end_stream() {
                            tap.request_complete();
                            return;
                        }
                    }
                    Some(Err(_)) => return,
                    None => {
                        tap.request_complete();
                        return;
                    }
                }
            }
        };
        // A visitor that trickles its body gets its 503 after the request
        // timeout at the latest; what arrived by then is kept.
        let _ = tokio::time::timeout(state.config.request_timeout, read).await;
    }
    settle(&tap, id, when, upgrade).await
}

/// The offline answer for a request whose capture `tap` holds: 202 once
/// it is stored (`--when-offline accept`), else the committed 503.
pub(super) async fn settle(
    tap: &Tap,
    id: &str,
    when: WhenOffline,
    upgrade: bool,
) -> Response<ProxyBody> {
    if when == WhenOffline::Accept && !upgrade && tap.capturing() {
        let body = json_bytes(&serde_json::json!({"queued": true, "request_id": id}));
        let res = bytes_response(StatusCode::ACCEPTED, body.clone(), Some(id));
        tap.public_response(res.status(), res.headers(), &body);
        match tap.finish_committed(Outcome::Offline).await {
            Some(Ok(())) => return res,
            Some(Err(e)) => {
                tracing::error!(%id, error = %format!("{e:#}"), "an offline request could not be stored; answering 503");
            }
            None => {}
        }
        return PublicError::TunnelOffline.response(id);
    }
    fail(tap, &PublicError::TunnelOffline, id).await
}
