//! The peer's body on one stream, readable as an `http_body::Body`; reading
//! it returns credit to the peer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame as BodyFrame};

use super::table::{set_waker, BodyEnd, State, Stream};
use super::{StreamError, CREDIT_BATCH};
use crate::frame::{Frame, ResetCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyState {
    Open,
    Ended,
    Failed,
}

/// The peer's body on one stream, readable as an `http_body::Body`:
/// hyper can send it straight to a visitor or a local app. Reading it
/// returns credit to the peer.
pub struct InboundBody {
    pub(super) stream: Arc<Stream>,
    /// Bytes read and not yet credited back.
    pub(super) unacked: u32,
    pub(super) state: BodyState,
    pub(super) reset_on_drop: bool,
    /// Bytes still due when the head declared a Content-Length.
    pub(super) remaining: Option<u64>,
}

impl InboundBody {
    /// Counts `n` bytes read; returns the credit to send, if a batch is due.
    fn consumed(&mut self, st: &mut State, n: usize) -> Option<u32> {
        self.unacked = self.unacked.saturating_add(n as u32);
        if self.unacked < CREDIT_BATCH {
            return None;
        }
        let bytes = std::mem::take(&mut self.unacked);
        st.credited += u64::from(bytes);
        Some(bytes)
    }

    /// Declares the body's length (its head's Content-Length): once that
    /// many bytes were read the body counts as complete even before END
    /// arrives, because hyper stops polling a body at its declared length.
    pub fn expect_len(&mut self, len: u64) {
        self.remaining = Some(len);
    }

    /// Whether the peer finished the body cleanly.
    pub fn is_complete(&self) -> bool {
        self.state == BodyState::Ended
    }

    /// The bytes left to read, when the peer's whole body has already
    /// arrived (an inline body): a response can then carry its length
    /// instead of chunked framing.
    pub fn known_len(&self) -> Option<u64> {
        match self.state {
            BodyState::Ended => Some(0),
            BodyState::Failed => None,
            BodyState::Open => {
                let st = self.stream.lock();
                (st.body_end == Some(BodyEnd::End))
                    .then(|| st.chunks.iter().map(|c| c.len() as u64).sum())
            }
        }
    }

    /// Takes the END (or reset) that is already queued, for a head that
    /// said no body follows; afterwards dropping the body resets nothing.
    /// Returns the reset code if the stream failed instead.
    pub fn finish_empty(&mut self) -> Option<ResetCode> {
        let st = self.stream.lock();
        let outcome = match (st.chunks.is_empty(), st.body_end) {
            (true, Some(BodyEnd::End)) => None,
            (_, Some(BodyEnd::Reset(code))) => Some(code),
            _ => Some(ResetCode::Protocol),
        };
        drop(st);
        self.state = match outcome {
            None => BodyState::Ended,
            Some(_) => BodyState::Failed,
        };
        outcome
    }

    /// The failure already known for this body, if any: why a stream ended
    /// before its response head arrived. `SessionClosed` when the session
    /// went away.
    pub fn pending_error(&mut self) -> Option<StreamError> {
        let (end, reset) = {
            let st = self.stream.lock();
            (st.body_end, st.reset)
        };
        // A RESET that came after the peer's END still says why.
        let err = match (reset, end) {
            (Some(code), _) | (None, Some(BodyEnd::Reset(code))) => StreamError::Reset(code),
            (None, Some(BodyEnd::Lost)) => StreamError::SessionClosed,
            _ => return None,
        };
        self.state = BodyState::Failed;
        Some(err)
    }
}

impl Body for InboundBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, StreamError>>> {
        if self.state != BodyState::Open {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let stream = this.stream.clone();
        let mut st = stream.lock();
        if let Some(data) = stream.pop(&mut st) {
            let credit = this.consumed(&mut st, data.len());
            if let Some(left) = &mut this.remaining {
                *left = left.saturating_sub(data.len() as u64);
                if *left == 0 {
                    this.state = BodyState::Ended;
                }
            }
            // Senders queue END right behind the last DATA; noticing it
            // now lets `is_end_stream` turn true with the last chunk, so
            // hyper (which stops polling at Content-Length) drops a
            // finished body rather than a seemingly open one.
            if st.chunks.is_empty() && st.body_end == Some(BodyEnd::End) {
                this.state = BodyState::Ended;
            }
            drop(st);
            if let Some(bytes) = credit {
                stream.out.control(&Frame::Credit {
                    stream: stream.id,
                    bytes,
                });
            }
            return Poll::Ready(Some(Ok(BodyFrame::data(data))));
        }
        match st.body_end {
            None => {
                set_waker(&mut st.body_waker, cx);
                Poll::Pending
            }
            Some(BodyEnd::End) => {
                this.state = BodyState::Ended;
                Poll::Ready(None)
            }
            Some(BodyEnd::Reset(code)) => {
                this.state = BodyState::Failed;
                Poll::Ready(Some(Err(StreamError::Reset(code))))
            }
            Some(BodyEnd::Lost) => {
                this.state = BodyState::Failed;
                Poll::Ready(Some(Err(StreamError::SessionClosed)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == BodyState::Ended
    }
}

impl Drop for InboundBody {
    fn drop(&mut self) {
        // Nobody will read what is left: give it back to the budget.
        {
            let mut st = self.stream.lock();
            self.stream.discard(&mut st);
        }
        // A peer whose body already ended is not sending: nothing to stop.
        if self.state == BodyState::Open
            && self.reset_on_drop
            && self.stream.lock().body_end != Some(BodyEnd::End)
        {
            self.stream
                .out
                .reset_later(self.stream.id, ResetCode::Cancel);
            // The stream is over for this side too: wake a sender of ours
            // that waits for credit on it.
            self.stream.window.close();
        }
    }
}
