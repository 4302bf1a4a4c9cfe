//! The answer for a known tunnel whose client is away: 503 at once, with
//! the request captured (body included, up to `--capture-limit`) so it can
//! be replayed when the developer is back.

use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use relay_shared::http::is_upgrade;

use super::{fail, forwarded_headers};
use crate::capture::Tap;
use crate::error::PublicError;
use crate::listen::Visitor;
use crate::response::ProxyBody;
use crate::State;

/// A request for a known tunnel whose client is away: 503 at once, and
/// the request is captured, body included (up to `--capture-limit`), so it
/// can be replayed when the developer is back.
pub(super) async fn answer(
    state: &Arc<State>,
    req: Request<Incoming>,
    visitor: &Visitor,
    id: &str,
    name: &str,
    prefix: Option<&str>,
    target: String,
) -> Response<ProxyBody> {
    let tap = Tap::new(Some(&state.capture), id, name, req.method(), &target);
    if tap.capturing() {
        let upgrade = is_upgrade(req.headers());
        let (parts, mut body) = req.into_parts();
        tap.request_head(&forwarded_headers(
            parts.headers,
            &parts.uri,
            upgrade,
            visitor,
            prefix,
        ));
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
    fail(&tap, &PublicError::TunnelOffline, id)
}
