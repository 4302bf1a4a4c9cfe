//! One public exchange: find the tunnel, apply the header rules, open a
//! stream, stream the request body up and the response body back, and turn
//! every failure into SPEC's JSON error. Capture sees it all through a
//! [`Tap`].
//!
//! Parts: this file (the exchange: lookup, open, deadlines, errors);
//! `body.rs` (the tapped bodies); `offline.rs` (the answer when no client
//! is connected); `upgrade.rs` (protocol switches); `remote.rs` (cluster
//! mode: the exchange through the node holding the session) and
//! `relayed.rs` (the holder's side of it).

mod body;
mod offline;
mod relayed;
mod remote;
mod upgrade;

pub use relayed::serve_relayed;

use body::{RequestBody, ResponseBody, TooLarge, Upload};

use std::pin::Pin;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use relay_shared::fault::Fault;
use relay_shared::frame::{Payload, ResetCode};
use relay_shared::http::{add_forwarded, content_length, is_upgrade, strip_hop_by_hop};
use relay_shared::mux::{ReadyBody, StreamError, StreamParts};
use relay_shared::protocol::INITIAL_WINDOW;
use relay_shared::{RequestHead, ResponseHead};
use tokio::sync::oneshot;
use tracing::{debug, Instrument};

use crate::capture::{Outcome, Tap};
use crate::error::PublicError;
use crate::forwarded::TrustedProxies;
use crate::listen::Visitor;
use crate::registry::Lookup;
use crate::response::{drop_connection, new_request_id, ProxyBody, REQUEST_ID};
use crate::tunnel::TunnelHandle;
use crate::State;

const FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// Slowest request body, in bytes per second, that keeps an exchange
/// waiting past `--request-timeout`: measured over each timeout period, as
/// Apache's mod_reqtimeout does with its MinRate. Far below any real
/// upload, and it turns a byte-a-minute trickle (which could otherwise
/// hold one of the tunnel's streams for ever) into a 504.
pub const MIN_UPLOAD_RATE: u64 = 1024;

/// Forwards one request to tunnel `name`. Never fails: every problem is a
/// JSON error response, and the tap records how the exchange ended.
pub async fn forward(
    state: &Arc<State>,
    req: Request<Incoming>,
    visitor: &Visitor,
    name: &str,
    prefix: Option<&str>,
    target: String,
) -> Response<ProxyBody> {
    let id = new_request_id();
    let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase()
    } else {
        name.to_owned()
    };
    let mut found = state.registry.lookup(&name);
    let mut holder = None;
    if state.cluster.is_some() && !matches!(found, Lookup::Live(..)) {
        (found, holder) = remote::resolve(state, &name).await;
    }
    if let Lookup::Live(_, Some(edge)) | Lookup::Offline(_, Some(edge)) = &found {
        if let Err(rejection) = edge
            .check(
                req.headers(),
                visitor.client_ip(req.headers(), &state.config.trusted_proxies),
                &state.edge_checks,
            )
            .await
        {
            return Box::pin(reject(
                state, req, visitor, &id, &name, prefix, &target, rejection,
            ))
            .await;
        }
    }
    let handle = match found {
        Lookup::Live(h, _) => h,
        Lookup::Offline(when, _) if holder.is_some() => {
            let to = remote::To {
                lease: holder,
                when,
            };
            return Box::pin(remote::forward(
                state, to, req, visitor, &id, &name, prefix, target,
            ))
            .await;
        }
        Lookup::Offline(when, _) => {
            // Boxed for the same reason as the API: rare and large.
            return Box::pin(offline::answer(
                state, req, visitor, &id, &name, prefix, target, when,
            ))
            .await;
        }
        Lookup::Unknown => {
            state.metrics.outcome(Outcome::NotFound);
            return PublicError::TunnelNotFound.response(&id);
        }
    };
    let tap = Tap::new(Some(&state.capture), &id, &name, req.method(), &target)
        .with_metrics(&state.metrics)
        .with_budget(handle.tap_budget())
        .with_deadline(handle.deadline());
    let exchange = Exchange {
        state,
        id: &id,
        tap: &tap,
        relayed: false,
    };
    // Boxed once here, so hyper moves a small future per request instead of
    // the exchange's several kilobytes of state.
    // `req{id}` on the exchange and every task it spawns (debug level: off,
    // and nearly free, under the default filter).
    let span = tracing::debug_span!("req", %id, method = %req.method(), tunnel = %name);
    match Box::pin(
        exchange
            .run(&handle, req, visitor, prefix, target)
            .instrument(span),
    )
    .await
    {
        Ok(res) => res,
        Err(err) => fail(&tap, &err, &id).await,
    }
}

/// A request the tunnel's edge rules refused: captured (its head) as
/// `rejected` and committed before the 401/403, never forwarded nor kept
/// for delivery.
#[allow(clippy::too_many_arguments)] // one call site, all of the exchange's context
async fn reject(
    state: &Arc<State>,
    req: Request<Incoming>,
    visitor: &Visitor,
    id: &str,
    name: &str,
    prefix: Option<&str>,
    target: &str,
    rejection: crate::edge::Rejection,
) -> Response<ProxyBody> {
    let tap =
        Tap::new(Some(&state.capture), id, name, req.method(), target).with_metrics(&state.metrics);
    let (parts, _body) = req.into_parts();
    record_head(state, &tap, parts, visitor, prefix);
    fail(&tap, &PublicError::EdgeRejected(rejection), id).await
}

/// Records the head the local app would have got (with X-Forwarded-*),
/// for a request the server answers itself (offline, refused).
pub(super) fn record_head(
    state: &State,
    tap: &Tap,
    parts: http::request::Parts,
    visitor: &Visitor,
    prefix: Option<&str>,
) {
    let upgrade = is_upgrade(&parts.headers);
    tap.request_head(&forwarded_headers(
        parts.headers,
        &parts.uri,
        upgrade,
        visitor,
        prefix,
        &state.config.trusted_proxies,
    ));
}

/// Answers `err` and records the answer and the outcome; a request the
/// server answers without the local app is committed first.
pub(super) async fn fail(tap: &Tap, err: &PublicError, id: &str) -> Response<ProxyBody> {
    err.log(id);
    if tap.played_reset() {
        // `relay connect --fault reset`: no answer at all.
        tap.finish(err.outcome());
        return drop_connection();
    }
    let res = err.response(id);
    tap.public_response(res.status(), res.headers(), &err.body(id));
    if err.kept_before_answer() {
        if let Some(Err(e)) = tap.finish_committed(err.outcome()).await {
            tracing::error!(%id, error = %format!("{e:#}"), "a request answered without the local app could not be stored");
        }
    } else {
        tap.finish(err.outcome());
    }
    res
}

/// One request on its way through a live tunnel.
struct Exchange<'a> {
    state: &'a Arc<State>,
    id: &'a str,
    tap: &'a Tap,
    /// Forwarded by another node, which already applied the header rules.
    relayed: bool,
}

impl Exchange<'_> {
    async fn run(
        &self,
        handle: &TunnelHandle,
        mut req: Request<Incoming>,
        visitor: &Visitor,
        prefix: Option<&str>,
        target: String,
    ) -> Result<Response<ProxyBody>, PublicError> {
        let max_body = self.state.config.max_body;
        let declared = content_length(req.headers());
        if declared.is_some_and(|n| n > max_body) {
            // Refused before forwarding: the record shows the head as sent.
            self.tap.request_head(req.headers());
            return Err(PublicError::BodyTooLarge);
        }
        let upgrade = is_upgrade(req.headers());
        let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let headers = if self.relayed {
            let mut headers = parts.headers;
            strip_hop_by_hop(&mut headers, upgrade);
            headers
        } else {
            forwarded_headers(
                parts.headers,
                &parts.uri,
                upgrade,
                visitor,
                prefix,
                &self.state.config.trusted_proxies,
            )
        };
        let head = RequestHead {
            id: self.id.to_owned(),
            headers,
            method: parts.method,
            target,
        };
        self.tap.request_head(&head.headers);
        let upload = Arc::new(Upload::default());
        if body.is_end_stream() {
            upload.end(self.tap);
        }
        let (too_large_tx, too_large) = oneshot::channel();
        let body = RequestBody {
            inner: body,
            tap: self.tap.clone(),
            upload: upload.clone(),
            left: max_body,
            too_large: Some(too_large_tx),
        };
        // One deadline for the whole exchange: a timer is registered only
        // if something has to wait, and only once.
        let deadline = tokio::time::sleep(self.state.config.request_timeout);
        let mut deadline = std::pin::pin!(deadline);
        // Upgrades stream the upgraded connection later. A small body
        // (Content-Length up to one frame: most webhooks) is read first and
        // rides in the head frame; of a larger one, what has already arrived
        // follows the head at once and a task pumps the rest.
        let (payload, rest) = if upgrade {
            (Payload::Streamed, None)
        } else {
            let read = tokio::select! {
                // Biased: a body that is already here (every GET) is taken
                // without arming the timer.
                biased;
                r = ReadyBody::read(body) => Ok(r),
                () = &mut deadline => Err(()),
            };
            match read {
                Ok(Ok(body)) => body.split(),
                Ok(Err(e)) if e.is::<TooLarge>() => return Err(PublicError::BodyTooLarge),
                Ok(Err(_)) => {
                    return Err(PublicError::bad_request(
                        "the request body could not be read",
                    ))
                }
                Err(_) => {
                    return Err(PublicError::bad_request(
                        "the request body did not arrive in time",
                    ))
                }
            }
        };

        // Opening and sending wait on the session's queue, which a client
        // that stopped reading leaves full: they are under the deadline
        // too, so no visitor waits for ever on a stalled session.
        let version = parts.version;
        let opened = tokio::select! {
            // Cancel safe: a dropped `open_stream` leaves at most a
            // registered stream that its guard removes.
            biased;
            o = handle.open_stream(head, payload) => o,
            () = &mut deadline => return Err(PublicError::LocalTimeout),
        };
        let mut open = match opened {
            Ok(o) => o,
            Err(StreamError::TooManyStreams) => return Err(PublicError::TunnelBusy),
            Err(StreamError::Encode(e)) => {
                debug!(id = %self.id, error = %e, "request head too large to forward");
                return Err(PublicError::bad_request(
                    "request head too large to forward",
                ));
            }
            Err(_) => return Err(PublicError::TunnelOffline),
        };
        if let Some(body) = rest {
            // Boxed: only bodies too large for the head frame get here, and
            // the body-pumping future would otherwise enlarge every request's.
            let sent = tokio::select! {
                // Cancel safe: the body is either queued or dropped with
                // the stream, whose guard resets it.
                biased;
                () = Box::pin(send_rest(&open, body)) => true,
                () = &mut deadline => false,
            };
            if !sent {
                return Err(PublicError::LocalTimeout);
            }
        }
        let (head, ends_stream) = self
            .await_head(&mut open, &upload, too_large, deadline.as_mut())
            .await?;
        let switching = head.status == StatusCode::SWITCHING_PROTOCOLS;
        let mut headers = head.headers;
        strip_hop_by_hop(&mut headers, switching && upgrade);
        if !upgrade && version < http::Version::HTTP_2 && upload.progress().1.is_none() {
            // The app answered before the visitor's body ended. The rest of
            // the body is read and dropped (see `linger`), and the visitor
            // must not reuse a connection it is still uploading on, as
            // hyper and nginx do for their own early answers.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Ok(v) = HeaderValue::from_str(self.id) {
            headers.insert(REQUEST_ID, v);
        }
        self.tap.response_head(head.status, &headers);
        let body = match (switching, on_upgrade) {
            (true, Some(on_upgrade)) => {
                // Recorded at the switch: the upgraded connection may last
                // for hours, and its bytes are not HTTP bodies.
                self.tap.finish(Outcome::Delivered);
                upgrade::splice(self.tap, open, on_upgrade)
            }
            (true, None) => return Err(PublicError::LocalError),
            (false, on_upgrade) => {
                if on_upgrade.is_some() {
                    // The local app declined the switch: the visitor's side
                    // of the stream has nothing more to send.
                    let sender = open.sender.clone();
                    tokio::spawn(async move { sender.end().await }.in_current_span());
                }
                self.response_body(open, ends_stream, &headers)
            }
        };
        let mut res = Response::new(body);
        *res.status_mut() = head.status;
        *res.headers_mut() = headers;
        Ok(res)
    }

    /// Waits for the response head, the request timeout, or the visitor's
    /// body crossing `--max-body`, whichever comes first.
    ///
    /// The timeout is the local app's time to answer, counted from the end
    /// of the visitor's body: an upload longer than the timeout is not
    /// blamed on the app. While the body is still arriving, each timeout
    /// period it must move at least [`MIN_UPLOAD_RATE`], so a trickle
    /// cannot hold a stream for ever (nor can an app that stops reading,
    /// which stops the body through flow control).
    async fn await_head(
        &self,
        open: &mut StreamParts,
        upload: &Upload,
        mut too_large: oneshot::Receiver<()>,
        mut deadline: Pin<&mut tokio::time::Sleep>,
    ) -> Result<(ResponseHead, bool), PublicError> {
        // Streams opened by the proxy always wait for a head; a missing
        // receiver would be our bug, answered like a broken local app.
        let mut head_rx = open.head.take().ok_or(PublicError::LocalError)?;
        // A oneshot must not be polled again once it has answered.
        let mut body_ok = false;
        let timeout = self.state.config.request_timeout;
        let min_moved = MIN_UPLOAD_RATE.saturating_mul(timeout.as_secs().max(1));
        let mut seen_at_arm = 0;
        let waited = loop {
            tokio::select! {
                // All cancel safe: two oneshot receivers and a sleep.
                biased;
                w = &mut head_rx => break Ok(w),
                r = &mut too_large, if !body_ok => match r {
                    Ok(()) => return Err(PublicError::BodyTooLarge),
                    Err(_) => body_ok = true,
                },
                () = deadline.as_mut() => {
                    let (seen, ended) = upload.progress();
                    let now = tokio::time::Instant::now();
                    let next = match ended {
                        Some(at) => at + timeout,
                        None if seen.saturating_sub(seen_at_arm) >= min_moved => now + timeout,
                        None => now,
                    };
                    if next <= now {
                        break Err(());
                    }
                    seen_at_arm = seen;
                    deadline.as_mut().reset(next);
                }
            }
        };
        match waited {
            Ok(Ok(head)) => Ok(head),
            // The stream ended first; its queued reset says why.
            Ok(Err(_)) => Err(match open.body.pending_error() {
                Some(StreamError::Reset(ResetCode::LocalUnreachable)) => {
                    PublicError::LocalUnreachable
                }
                Some(StreamError::Reset(ResetCode::LocalError)) => PublicError::LocalError,
                Some(StreamError::Reset(ResetCode::Fault)) => {
                    // Recorded as the local app breaking the exchange,
                    // marked as the fault it was; `fail` drops the visitor.
                    self.tap.fault(Fault::Reset);
                    PublicError::LocalError
                }
                _ => PublicError::ClientDisconnected,
            }),
            // Dropping the stream resets it, so the client stops waiting too.
            Err(_) => Err(PublicError::LocalTimeout),
        }
    }

    /// The visitor's response body, streamed from the tunnel.
    fn response_body(
        &self,
        open: StreamParts,
        ends_stream: bool,
        headers: &HeaderMap,
    ) -> ProxyBody {
        let mut inner = open.body;
        let known = inner.known_len();
        // A body that already ended empty is answered like a head that said
        // so: hyper would not poll it, and it would look abandoned.
        if ends_stream || known == Some(0) {
            let outcome = match inner.finish_empty() {
                None => Outcome::Delivered,
                Some(_) => Outcome::LocalError,
            };
            self.tap.finish(outcome);
            return Empty::new().map_err(|never| match never {}).boxed();
        }
        let declared = content_length(headers);
        if let Some(len) = declared {
            inner.expect_len(len);
        }
        ResponseBody {
            inner,
            tap: self.tap.clone(),
            _guard: open.guard,
            done: false,
            // hyper writes a Content-Length header as given but stops at
            // an exact size hint: the two must agree, or the visitor's
            // connection would desynchronise. A mismatch keeps the old
            // way (hyper follows the header and closes if the body is short).
            exact: known.is_some_and(|n| declared.is_none_or(|d| d == n)),
        }
        .boxed()
    }
}

/// The header rules of SPEC.md: hop-by-hop headers dropped (the upgrade
/// pair kept for a protocol switch), a Host for HTTP/2 visitors, and the
/// `X-Forwarded-*` headers added (kept from a trusted proxy, else replaced).
pub(super) fn forwarded_headers(
    mut headers: HeaderMap,
    uri: &http::Uri,
    upgrade: bool,
    visitor: &Visitor,
    prefix: Option<&str>,
    trusted: &TrustedProxies,
) -> HeaderMap {
    strip_hop_by_hop(&mut headers, upgrade);
    if !headers.contains_key(header::HOST) {
        // HTTP/2 visitors send :authority instead; the local app speaks
        // HTTP/1.1 and needs a Host.
        if let Some(v) = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(header::HOST, v);
        }
    }
    let host = headers
        .get(header::HOST)
        .filter(|v| v.to_str().is_ok())
        .cloned();
    let trusted = trusted.contains(visitor.peer.ip());
    add_forwarded(&mut headers, &visitor.ip, visitor.scheme, host, trusted);
    if let Some(v) = prefix.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert(FORWARDED_PREFIX, v);
    }
    headers
}

/// Sends the part of the request body that did not ride in the head:
/// inline when it is all here and fits the window (so no credit wait),
/// else from a task that lives as long as the stream.
async fn send_rest(open: &StreamParts, body: ReadyBody<RequestBody>) {
    if body.is_complete() && body.ready_len() <= INITIAL_WINDOW as usize {
        // The body is in memory, so the only failure is a lost session,
        // which the wait for the response head reports (502).
        let _ = open.sender.body(body, ResetCode::Cancel).await;
        return;
    }
    let guard = open.guard.clone();
    let sender = open.sender.clone();
    tokio::spawn(
        async move {
            let _guard = guard;
            let mut body = body;
            // A body over the limit has already told the proxy (413); other
            // failures reset the stream inside `body`.
            let sent = sender.body(&mut body, ResetCode::Cancel).await;
            if let Err(StreamError::Reset(_)) = sent {
                linger(body).await;
            }
        }
        .in_current_span(),
    );
}

/// Longest a visitor's unwanted request body is read and dropped after the
/// local app stopped the stream (typically by answering early). Closing
/// with unread bytes would make the visitor's kernel reset the connection
/// and discard the answer before the visitor reads it (nginx's "lingering
/// close" does the same, for the same reason).
pub const LINGER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and drops the rest of `body` for up to [`LINGER_TIMEOUT`]; `--max-body`
/// still bounds how much (the body fails past it).
async fn linger(mut body: ReadyBody<RequestBody>) {
    let drain = async { while let Some(Ok(_)) = body.frame().await {} };
    let _ = tokio::time::timeout(LINGER_TIMEOUT, drain).await;
}
