//! Cluster mode: a visitor's request for a tunnel whose session another
//! node holds. This node (the one the visitor reached) does what it does
//! for any request: request id, edge rules, capture; it streams the
//! exchange through the holder ([`forward`]), which serves it from its
//! session without capturing it again (`relayed.rs`). A holder that
//! cannot be reached leaves the request to the offline answer, here.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use relay_shared::api::Outcome;
use relay_shared::http::{content_length, is_upgrade, strip_hop_by_hop};
use relay_shared::protocol::WhenOffline;
use tokio::sync::oneshot;
use tracing::{debug, warn, Instrument};

use super::body::{RequestBody, Upload};
use super::{fail, forwarded_headers, offline};
use crate::capture::Tap;
use crate::cluster::NODE_OUTCOME;
use crate::error::PublicError;
use crate::listen::Visitor;
use crate::registry::{Lookup, Rules};
use crate::response::{bytes_response, BoxError, ProxyBody, REQUEST_ID};
use crate::store::Lease;
use crate::State;

/// Time allowed for the hop between nodes on top of the holder's own
/// `--request-timeout`, before a holder that does not answer at all is
/// given up on (504, captured as `timeout`).
pub const HOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Largest answer body a holder writes itself (its JSON errors) that is
/// read whole to record it; real errors are a few hundred bytes.
const HOLDER_ANSWER_MAX: usize = 64 << 10;

/// In cluster mode, what a lookup that found no local session means: the
/// name's settings and live lease, read from the shared store (the name
/// may have been claimed through another node since this one started).
/// The lease is returned only when another node holds it.
pub(super) async fn resolve(state: &Arc<State>, name: &str) -> (Lookup, Option<Lease>) {
    let Some(cluster) = state.cluster.as_ref() else {
        return (state.registry.lookup(name), None);
    };
    if let Some((rules, lease)) = cluster.routes.get(name) {
        return (Lookup::Offline(rules.when_offline, rules.edge), Some(lease));
    }
    let n = name.to_owned();
    let read = state
        .store
        .call(move |s| Ok((s.name_settings(&n)?, s.lease_of(&n)?)))
        .await;
    match read {
        Ok((Some(settings), lease)) => {
            let rules = Rules::from_settings(&settings);
            let lease = lease.filter(|l| l.node_id != cluster.config.node_id);
            if let Some(lease) = &lease {
                cluster.routes.put(name, rules.clone(), lease.clone());
            }
            (Lookup::Offline(rules.when_offline, rules.edge), lease)
        }
        Ok((None, _)) => (Lookup::Unknown, None),
        Err(e) => {
            warn!(tunnel = %name, error = %format!("{e:#}"), "reading the lease failed; answering from what this node knows");
            (state.registry.lookup(name), None)
        }
    }
}

/// Where [`forward`] sends a request, and what to answer if it cannot.
pub(super) struct To {
    pub(super) lease: Option<Lease>,
    pub(super) when: WhenOffline,
}

/// Streams one exchange through the holder of the tunnel's lease.
#[allow(clippy::too_many_arguments)] // one call site, all of the exchange's context
pub(super) async fn forward(
    state: &Arc<State>,
    to: To,
    mut req: Request<Incoming>,
    visitor: &Visitor,
    id: &str,
    name: &str,
    prefix: Option<&str>,
    target: String,
) -> Response<ProxyBody> {
    let (Some(cluster), Some(lease)) = (state.cluster.as_ref(), to.lease) else {
        return offline::answer(state, req, visitor, id, name, prefix, target, to.when).await;
    };
    let tap = Tap::new(Some(&state.capture), id, name, req.method(), &target)
        .with_metrics(&state.metrics);
    let max_body = state.config.max_body;
    if content_length(req.headers()).is_some_and(|n| n > max_body) {
        tap.request_head(req.headers());
        return fail(&tap, &PublicError::BodyTooLarge, id).await;
    }
    let upgrade = is_upgrade(req.headers());
    let visitor_side = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    // What the offline answer needs if the holder cannot be reached.
    let (method, uri, version, original) = (
        parts.method.clone(),
        parts.uri.clone(),
        parts.version,
        parts.headers.clone(),
    );
    let headers = forwarded_headers(
        parts.headers,
        &parts.uri,
        upgrade,
        visitor,
        prefix,
        &state.config.trusted_proxies,
    );
    tap.request_head(&headers);
    let upload = Arc::new(Upload::default());
    if body.is_end_stream() {
        upload.end(&tap);
    }
    let (too_large_tx, mut too_large) = oneshot::channel();
    let slot = Slot::new(RequestBody {
        inner: body,
        tap: tap.clone(),
        upload: upload.clone(),
        left: max_body,
        too_large: Some(too_large_tx),
    });
    let mut out = Request::new(slot.clone().boxed());
    *out.method_mut() = method.clone();
    *out.headers_mut() = headers;
    let sent = cluster.client.send(&lease.node_url, name, id, &target, out);
    let Some(sent) = holder_head(sent, &upload, state.config.request_timeout).await else {
        return fail(&tap, &PublicError::LocalTimeout, id).await;
    };
    let res = match sent {
        Ok(res) => res,
        Err(e) => {
            if too_large.try_recv().is_ok() {
                return fail(&tap, &PublicError::BodyTooLarge, id).await;
            }
            warn!(%id, tunnel = %name, node = %lease.node_id, error = %e, "the node holding the tunnel could not be reached");
            cluster.routes.forget(name);
            if let Some(body) = slot.reclaim() {
                // Nothing was sent: answered exactly as on one node.
                tap.discard();
                let mut req = Request::new(body);
                *req.method_mut() = method;
                *req.uri_mut() = uri;
                *req.version_mut() = version;
                *req.headers_mut() = original;
                return offline::answer(state, req, visitor, id, name, prefix, target, to.when)
                    .await;
            }
            return offline::settle(&tap, id, to.when, upgrade).await;
        }
    };
    let answered = res
        .headers()
        .get(NODE_OUTCOME)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Outcome>().ok());
    match answered {
        // The holder lost the session meanwhile: offline, answered here.
        Some(Outcome::Offline) => {
            cluster.routes.forget(name);
            offline::settle(&tap, id, to.when, upgrade).await
        }
        Some(outcome) => holder_answer(&tap, res, id, outcome).await,
        None => delivered(&tap, res, id, upgrade, visitor_side),
    }
}

/// Waits for the holder's response head; `None` once it is later than the
/// holder itself would have answered (504 at `--request-timeout` after
/// the body ended, [`HOP_GRACE`] allowed for the hop): the backstop for a
/// holder that accepts connections but no longer answers. While the body
/// is still being sent, the holder judges its pace.
async fn holder_head<F: std::future::Future>(
    sent: F,
    upload: &Upload,
    timeout: std::time::Duration,
) -> Option<F::Output> {
    let limit = timeout + HOP_GRACE;
    let mut sent = std::pin::pin!(sent);
    let deadline = tokio::time::sleep(limit);
    let mut deadline = std::pin::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            r = &mut sent => return Some(r),
            () = deadline.as_mut() => {
                let now = tokio::time::Instant::now();
                let next = match upload.progress().1 {
                    Some(ended) => ended + limit,
                    None => now + limit,
                };
                if next <= now {
                    return None;
                }
                deadline.as_mut().reset(next);
            }
        }
    }
}

/// An answer the holder wrote itself (502, 504, ...): recorded here with
/// its outcome and committed before it goes out, as on one node.
async fn holder_answer(
    tap: &Tap,
    res: Response<Incoming>,
    id: &str,
    outcome: Outcome,
) -> Response<ProxyBody> {
    let (mut parts, body) = res.into_parts();
    parts.headers.remove(NODE_OUTCOME);
    strip_hop_by_hop(&mut parts.headers, false);
    let body = http_body_util::Limited::new(body, HOLDER_ANSWER_MAX)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    tap.public_response(parts.status, &parts.headers, &body);
    if let Some(Err(e)) = tap.finish_committed(outcome).await {
        tracing::error!(%id, error = %format!("{e:#}"), "a request answered without the local app could not be stored");
    }
    let mut out = bytes_response(parts.status, body, Some(id));
    out.headers_mut().extend(parts.headers);
    out
}

/// The local app's answer, streamed back from the holder and tapped.
fn delivered(
    tap: &Tap,
    res: Response<Incoming>,
    id: &str,
    upgrade: bool,
    visitor_side: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    let status = res.status();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut res = res;
    let holder_side = switching.then(|| hyper::upgrade::on(&mut res));
    let (mut parts, body) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers, switching && upgrade);
    if let Ok(v) = HeaderValue::from_str(id) {
        parts.headers.insert(REQUEST_ID, v);
    }
    tap.response_head(status, &parts.headers);
    let body = match (holder_side, visitor_side) {
        (Some(holder), Some(visitor)) => {
            // Recorded at the switch, as on one node.
            tap.finish(Outcome::Delivered);
            tokio::spawn(splice(holder, visitor).in_current_span());
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed()
        }
        _ => RemoteBody {
            inner: body,
            tap: tap.clone(),
            done: false,
        }
        .boxed(),
    };
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = parts.headers;
    out
}

/// Joins the visitor's upgraded connection to the holder's.
async fn splice(holder: hyper::upgrade::OnUpgrade, visitor: hyper::upgrade::OnUpgrade) {
    let (Ok(holder), Ok(visitor)) = tokio::join!(holder, visitor) else {
        return;
    };
    let ended =
        tokio::io::copy_bidirectional(&mut TokioIo::new(holder), &mut TokioIo::new(visitor)).await;
    debug!(?ended, "upgraded exchange through another node ended");
}

/// The request body handed to the node client, which can be taken back
/// if the client never polled it (the holder was not reached).
#[derive(Clone)]
struct Slot(Arc<Mutex<(Option<RequestBody>, bool)>>);

impl Slot {
    fn new(body: RequestBody) -> Self {
        Self(Arc::new(Mutex::new((Some(body), false))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<RequestBody>, bool)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The visitor's body, if not a byte of it was read.
    fn reclaim(&self) -> Option<Incoming> {
        let mut slot = self.lock();
        if slot.1 {
            return None;
        }
        slot.0.take().map(|b| b.inner)
    }
}

impl Body for Slot {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut slot = self.lock();
        slot.1 = true;
        match slot.0.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.lock().0.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.lock()
            .0
            .as_ref()
            .map_or_else(SizeHint::default, |b| b.size_hint())
    }
}

/// The holder's response body on its way to the visitor, tapped.
struct RemoteBody {
    inner: Incoming,
    tap: Tap,
    done: bool,
}

impl Body for RemoteBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.tap.response_chunk(data);
                }
                if self.inner.is_end_stream() {
                    self.done = true;
                    self.tap.finish(Outcome::Delivered);
                }
            }
            Poll::Ready(None) => {
                self.done = true;
                self.tap.finish(Outcome::Delivered);
            }
            Poll::Ready(Some(Err(_))) => {
                self.done = true;
                self.tap.finish(Outcome::LocalError);
            }
            Poll::Pending => {}
        }
        polled.map(|o| o.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RemoteBody {
    fn drop(&mut self) {
        if !self.done {
            self.tap.finish(Outcome::VisitorGone);
        }
    }
}
