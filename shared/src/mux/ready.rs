//! A body read ahead: what has already arrived of it travels with its head.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame as BodyFrame};
use http_body_util::BodyExt;

use crate::frame::Payload;
use crate::protocol::{INITIAL_WINDOW, MAX_DATA_PAYLOAD};

/// Most bytes [`ReadyBody::take`] reads ahead: half a window, so sending
/// them never waits for credit.
pub const READY_MAX: usize = INITIAL_WINDOW as usize / 2;

/// A body whose already-arrived chunks were read ahead, then the rest.
///
/// Reading ahead without waiting lets a sender put a small message's head,
/// body and END into the session queue together, so the writer sends them
/// in one socket write and the peer sees the whole message at once, with
/// no task spawned to pump it.
pub struct ReadyBody<B> {
    ready: std::collections::VecDeque<Bytes>,
    rest: B,
    complete: bool,
}

impl<B> ReadyBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// Reads the chunks of `body` that are available without waiting, up
    /// to [`READY_MAX`] bytes. A body error is returned as is.
    pub fn take(body: B) -> Result<Self, B::Error> {
        let mut me = Self {
            complete: body.is_end_stream(),
            ready: std::collections::VecDeque::new(),
            rest: body,
        };
        me.fill()?;
        Ok(me)
    }

    fn fill(&mut self) -> Result<(), B::Error> {
        use futures_util::FutureExt;
        let mut bytes: usize = self.ready.iter().map(Bytes::len).sum();
        while !self.complete && bytes < READY_MAX {
            match self.rest.frame().now_or_never() {
                Some(Some(frame)) => {
                    if let Ok(data) = frame?.into_data() {
                        bytes += data.len();
                        self.ready.push_back(data);
                    }
                    self.complete = self.rest.is_end_stream();
                }
                Some(None) => self.complete = true,
                None => break,
            }
        }
        Ok(())
    }

    /// Reads what a sender can put in or right behind its head frame:
    /// only bytes that are already here, so a head is never held back by a
    /// slow body (SPEC: a head goes out as soon as it is complete).
    ///
    /// Takes what is ready, then yields and takes again for as long as
    /// each turn brings more: hyper's HTTP/1 connection task hands over one
    /// chunk per scheduler turn, so a short body that arrived with its head
    /// shows up a turn or two later, and can still go in one frame. A turn
    /// that brings nothing ends the read.
    pub async fn read(body: B) -> Result<Self, B::Error> {
        let mut me = Self::take(body)?;
        let mut had = me.ready.len();
        while !me.complete && me.ready_len() < READY_MAX {
            tokio::task::yield_now().await;
            me.fill()?;
            if me.ready.len() == had && !me.complete {
                break;
            }
            had = me.ready.len();
        }
        Ok(me)
    }

    /// Bytes read ahead and not yet sent.
    pub fn ready_len(&self) -> usize {
        self.ready.iter().map(Bytes::len).sum()
    }

    /// Whether the whole body was read (nothing left to wait for).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Whether the body is complete and empty: its head can say END_STREAM.
    pub fn is_empty(&self) -> bool {
        self.complete && self.ready.is_empty()
    }

    /// How the body travels: in the head frame when it is complete and fits
    /// one frame, else streamed after the head by sending the returned body.
    pub fn split(self) -> (Payload, Option<Self>) {
        match self.into_payload() {
            Ok(p) => (p, None),
            Err(body) => (Payload::Streamed, Some(body)),
        }
    }

    fn into_payload(mut self) -> Result<Payload, Self> {
        if !self.complete {
            return Err(self);
        }
        let len: usize = self.ready.iter().map(Bytes::len).sum();
        match self.ready.len() {
            0 => Ok(Payload::Empty),
            1 if len <= MAX_DATA_PAYLOAD => {
                Ok(Payload::Inline(self.ready.pop_front().unwrap_or_default()))
            }
            _ if len <= MAX_DATA_PAYLOAD => {
                let mut joined = bytes::BytesMut::with_capacity(len);
                for chunk in &self.ready {
                    joined.extend_from_slice(chunk);
                }
                Ok(Payload::Inline(joined.freeze()))
            }
            _ => Err(self),
        }
    }
}

impl<B> Body for ReadyBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Self::Error>>> {
        if let Some(data) = self.ready.pop_front() {
            return Poll::Ready(Some(Ok(BodyFrame::data(data))));
        }
        if self.complete {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_empty() && (self.complete || self.rest.is_end_stream())
    }
}
