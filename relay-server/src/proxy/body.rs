//! The bodies of one exchange as they stream through the proxy: the
//! visitor's request body (tapped, stopped at `--max-body`) and the local
//! app's response body (tapped, recording the outcome at its end).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame as BodyFrame, SizeHint};
use hyper::body::Incoming;
use relay_shared::mux::{InboundBody, StreamError, StreamGuard};
use tokio::sync::oneshot;

use crate::capture::{Outcome, Tap};
use crate::response::BoxError;

/// What both bodies' `poll_frame` return.
type Polled = Poll<Option<Result<BodyFrame<Bytes>, BoxError>>>;

/// How far the visitor's body has come. The request timeout counts the
/// local app's time to answer from the body's end, and lets a body that
/// keeps moving wait; the body sees every chunk, so it keeps the count.
#[derive(Default)]
pub(super) struct Upload {
    seen: AtomicU64,
    ended: Mutex<Option<tokio::time::Instant>>,
}

impl Upload {
    /// The body ended (the first call counts); the capture hears it too.
    pub(super) fn end(&self, tap: &Tap) {
        tap.request_complete();
        self.lock().get_or_insert_with(tokio::time::Instant::now);
    }

    /// Bytes so far, and when the body ended, if it has.
    pub(super) fn progress(&self) -> (u64, Option<tokio::time::Instant>) {
        (self.seen.load(Ordering::Relaxed), *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<tokio::time::Instant>> {
        // A single assignment under the lock: poisoning carries no news.
        self.ended.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The visitor's body went past `--max-body`.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than the server accepts")]
pub(super) struct TooLarge;

/// The visitor's request body as it streams up: tells the tap about each
/// chunk and stops at `--max-body`, firing `too_large` so the visitor gets
/// 413 even when the excess shows only mid-stream (no or a false
/// Content-Length).
pub(super) struct RequestBody {
    pub(super) inner: Incoming,
    pub(super) tap: Tap,
    pub(super) upload: Arc<Upload>,
    pub(super) left: u64,
    pub(super) too_large: Option<oneshot::Sender<()>>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                self.upload.end(&self.tap);
                return Poll::Ready(None);
            }
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.left {
                if let Some(tx) = self.too_large.take() {
                    let _ = tx.send(());
                }
                return Poll::Ready(Some(Err(TooLarge.into())));
            }
            self.left -= len;
            self.upload.seen.fetch_add(len, Ordering::Relaxed);
            self.tap.request_chunk(data);
        }
        if self.inner.is_end_stream() {
            self.upload.end(&self.tap);
        }
        Poll::Ready(Some(Ok(frame)))
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
pub(super) struct ResponseBody {
    pub(super) inner: InboundBody,
    pub(super) tap: Tap,
    pub(super) _guard: Arc<StreamGuard>,
    pub(super) done: bool,
    /// Whether the body's length is known and agrees with the head.
    pub(super) exact: bool,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
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

    /// Exact for a body that came whole with its head, so hyper frames the
    /// visitor's response with Content-Length rather than chunked.
    fn size_hint(&self) -> SizeHint {
        match self.inner.known_len() {
            Some(n) if self.exact => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if !self.done {
            self.tap.finish(Outcome::VisitorGone);
        }
    }
}
