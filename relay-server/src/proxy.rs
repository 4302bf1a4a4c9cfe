//! One public exchange: find the tunnel, apply the header rules, open a
//! stream, stream the request body up and the response body back, and turn
//! every failure into SPEC's JSON error. Capture sees it all through a
//! [`Tap`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame as BodyFrame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use relay_shared::frame::{Frame, Payload, ResetCode};
use relay_shared::http::{add_forwarded, is_upgrade, strip_hop_by_hop};
use relay_shared::stream::{
    recv_io, send_body, send_io, InboundBody, ReadyBody, StreamError, StreamGuard,
};
use relay_shared::RequestHead;
use tracing::debug;

use crate::capture::{Outcome, Tap};
use crate::error::PublicError;
use crate::registry::Lookup;
use crate::State;

/// Errors inside response bodies: hyper only needs them to abort the
/// connection.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body type of every response the server writes.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Header naming the request on every forwarded response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-relay-request-id");

const FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// The visitor's side of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Visitor {
    pub peer: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
}

/// A new request id: time-ordered (ULID), lower-case to match the rest of
/// the URL-ish things a user copies.
pub fn new_request_id() -> String {
    ulid::Ulid::generate().to_string().to_ascii_lowercase()
}

/// Forwards one request to tunnel `name`. Never fails: every problem is a
/// JSON error response.
pub async fn forward(
    state: &Arc<State>,
    mut req: Request<Incoming>,
    visitor: Visitor,
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
    let handle = match state.registry.lookup(&name) {
        Lookup::Live(h) => h,
        Lookup::Offline => {
            Tap::new(&id, &name, req.method(), &target).finish(Outcome::Offline);
            return PublicError::TunnelOffline.response(&id);
        }
        Lookup::Unknown => return PublicError::TunnelNotFound.response(&id),
    };
    let tap = Tap::new(&id, &name, req.method(), &target);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.config.max_body) {
        tap.finish(Outcome::BodyTooLarge);
        return PublicError::BodyTooLarge.response(&id);
    }

    let upgrade = is_upgrade(req.headers());
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers, upgrade);
    if !headers.contains_key(header::HOST) {
        // HTTP/2 visitors send :authority instead; the local app speaks
        // HTTP/1.1 and needs a Host.
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(header::HOST, v);
        }
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    add_forwarded(
        &mut headers,
        &visitor.peer.ip().to_string(),
        visitor.scheme,
        host.as_deref(),
    );
    if let Some(v) = prefix.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert(FORWARDED_PREFIX, v);
    }
    // A small body (Content-Length up to one frame: most webhooks) is read
    // first and rides in the head frame; of a larger one, what has already
    // arrived follows the head at once and a task pumps the rest.
    let body = TapBody {
        inner: Limited::new(body, state.config.max_body as usize),
        tap: tap.clone(),
    };
    let body = if upgrade {
        None
    } else {
        // A stalled visitor gets the request timeout here too.
        match tokio::time::timeout(state.config.request_timeout, ReadyBody::read(body)).await {
            Ok(Ok(b)) => Some(b),
            Ok(Err(e)) => {
                let too_large = e.to_string().contains("length limit");
                tap.finish(if too_large {
                    Outcome::BodyTooLarge
                } else {
                    Outcome::VisitorGone
                });
                return if too_large {
                    PublicError::BodyTooLarge.response(&id)
                } else {
                    PublicError::BadRequest("the request body could not be read").response(&id)
                };
            }
            Err(_) => {
                tap.finish(Outcome::VisitorGone);
                return PublicError::BadRequest("the request body did not arrive in time")
                    .response(&id);
            }
        }
    };
    // Upgrades stream the upgraded connection later; a complete small body
    // rides in the head frame; the rest streams after it.
    let (payload, rest) = match body {
        None => (Payload::Streamed, None),
        Some(body) => body.split(),
    };
    let head = RequestHead {
        id: id.clone(),
        method: parts.method,
        target,
        headers,
    };

    let mut open = match handle.open_stream(head, payload).await {
        Ok(o) => o,
        Err(StreamError::TooManyStreams) => {
            tap.finish(Outcome::TunnelBusy);
            return PublicError::TunnelBusy.response(&id);
        }
        Err(StreamError::Encode(e)) => {
            debug!(%id, error = %e, "request head too large to forward");
            return PublicError::BadRequest("request head too large to forward").response(&id);
        }
        Err(_) => {
            tap.finish(Outcome::Offline);
            return PublicError::TunnelOffline.response(&id);
        }
    };
    let stream = open.id;

    // Fires when the visitor's body turns out larger than `--max-body`
    // (no or a false Content-Length): the visitor gets 413 right away.
    let (too_large_tx, too_large) = tokio::sync::oneshot::channel::<()>();
    if let Some(body) = rest {
        if body.is_complete() {
            // Fits the window: no credit wait, at most a wait for queue space.
            let _ = send_body(
                body,
                stream,
                &open.out,
                &open.parts.window,
                ResetCode::Cancel,
            )
            .await;
        } else {
            let guard = open.parts.guard.clone();
            let window = open.parts.window.clone();
            let out = open.out.clone();
            tokio::spawn(async move {
                let _guard = guard;
                let sent = send_body(body, stream, &out, &window, ResetCode::Cancel).await;
                if matches!(&sent, Err(StreamError::Body(m)) if m.contains("length limit")) {
                    let _ = too_large_tx.send(());
                }
            });
        }
    }

    // Streams opened by the proxy always wait for a head; a missing
    // receiver would be our bug, answered like a broken local app.
    let Some(head_rx) = open.parts.head.take() else {
        tap.finish(Outcome::LocalError);
        return PublicError::LocalError.response(&id);
    };
    let waited = tokio::select! {
        // Both cancel safe: a oneshot receiver and a timeout over one.
        w = tokio::time::timeout(state.config.request_timeout, head_rx) => w,
        Ok(()) = too_large => {
            tap.finish(Outcome::BodyTooLarge);
            return PublicError::BodyTooLarge.response(&id);
        }
    };
    let (head, head_ends_stream) = match waited {
        Ok(Ok(h)) => h,
        Ok(Err(_)) => {
            let err = match open.parts.body.pending_error() {
                Some(StreamError::Reset(ResetCode::LocalUnreachable)) => {
                    PublicError::LocalUnreachable
                }
                Some(StreamError::Reset(ResetCode::LocalError)) => PublicError::LocalError,
                _ => PublicError::ClientDisconnected,
            };
            tap.finish(match err {
                PublicError::LocalUnreachable => Outcome::LocalUnreachable,
                PublicError::LocalError => Outcome::LocalError,
                _ => Outcome::ClientDisconnected,
            });
            return err.response(&id);
        }
        Err(_) => {
            tap.finish(Outcome::Timeout);
            return PublicError::LocalTimeout.response(&id);
        }
    };

    tap.response_status(head.status);
    let switching = head.status == StatusCode::SWITCHING_PROTOCOLS;
    let mut headers = head.headers;
    strip_hop_by_hop(&mut headers, switching && upgrade);
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, v);
    }
    let guard = open.parts.guard.clone();

    let body: ProxyBody = if switching {
        let Some(on_upgrade) = on_upgrade else {
            tap.finish(Outcome::LocalError);
            return PublicError::LocalError.response(&id);
        };
        let window = open.parts.window.clone();
        let out = open.out.clone();
        let inbound = open.parts.body;
        let tap2 = tap.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let Ok(upgraded) = on_upgrade.await else {
                tap2.finish(Outcome::VisitorGone);
                return;
            };
            let (r, w) = tokio::io::split(TokioIo::new(upgraded));
            let (up, down) = tokio::join!(send_io(r, stream, &out, &window), recv_io(inbound, w));
            debug!(stream, ?up, ?down, "upgraded stream ended");
            tap2.finish(Outcome::Delivered);
        });
        Empty::new().map_err(|never| match never {}).boxed()
    } else {
        if upgrade {
            // The local app declined the switch: the visitor's side of the
            // stream has nothing more to send.
            let out = open.out.clone();
            tokio::spawn(async move { out.send(&Frame::End { stream }).await });
        }
        if head_ends_stream {
            match open.parts.body.finish_empty() {
                None => tap.finish(Outcome::Delivered),
                Some(_) => tap.finish(Outcome::LocalError),
            }
            Empty::new().map_err(|never| match never {}).boxed()
        } else {
            let mut inner = open.parts.body;
            if let Some(len) = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
            {
                inner.expect_len(len);
            }
            ResponseBody {
                inner,
                tap: tap.clone(),
                _guard: guard,
                done: false,
            }
            .boxed()
        }
    };
    let mut res = Response::new(body);
    *res.status_mut() = head.status;
    *res.headers_mut() = headers;
    res
}

/// A request body that tells the tap about each chunk.
struct TapBody<B> {
    inner: B,
    tap: Tap,
}

impl<B> Body for TapBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.tap.request_chunk(data);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body streamed from the tunnel to the visitor. Holds the
/// stream open while hyper writes it and records the outcome at its end.
struct ResponseBody {
    inner: InboundBody,
    tap: Tap,
    _guard: Arc<StreamGuard>,
    done: bool,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, BoxError>>> {
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
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                self.tap.finish(match e {
                    StreamError::SessionClosed => Outcome::ClientDisconnected,
                    _ => Outcome::LocalError,
                });
            }
            Poll::Pending => {}
        }
        polled.map(|o| o.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if !self.done {
            self.tap.finish(Outcome::VisitorGone);
        }
    }
}
