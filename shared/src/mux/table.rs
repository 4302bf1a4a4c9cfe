//! Open streams of one session: each stream's state in one allocation, the
//! table the read loop dispatches incoming frames through, and the handles
//! (head and reset waiters, send window, guard) a stream's tasks hold.
//!
//! Longer than most files on purpose: the state, the table that changes it
//! and the handles that read it share one lock discipline (table, then
//! stream; never across an `.await`; wakers run after release), which is
//! easiest to check when it is all in one place.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::inbound::{BodyState, InboundBody};
use super::{Outbound, StreamError, SESSION_BUFFER_BUDGET};
use crate::frame::{Frame, Payload, ResetCode};
use crate::http::ResponseHead;
use crate::protocol::{INITIAL_WINDOW, MAX_STREAMS};

/// Which end of a stream this side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Sent the request head (the server): waits for the response head,
    /// and dropping the response body unread tells the peer to stop (the
    /// visitor left).
    Opener,
    /// Got the request head (the client): answers it; dropping the request
    /// body unread only stops reading, because the local app may answer
    /// without it.
    Acceptor,
}

/// This side's half of one stream: its id, the session's queue and the
/// credit the peer gave, together, so no caller can pair an id with the
/// wrong window. Cheap to clone: it shares the stream's one allocation.
#[derive(Clone)]
pub struct StreamSender(pub(super) Arc<Stream>);

impl StreamSender {
    /// The stream's id.
    pub fn id(&self) -> u32 {
        self.0.id
    }

    /// Queues a frame of this stream (a head, END) behind the ones before it.
    pub async fn send(&self, frame: &Frame) -> Result<(), StreamError> {
        self.0.out.send(frame).await
    }

    /// Queues END: this side's body is complete.
    pub async fn end(&self) -> Result<(), StreamError> {
        self.send(&Frame::End { stream: self.id() }).await
    }

    /// Tells the peer this stream failed, behind whatever it already
    /// queued (so a reset never overtakes a head it follows). A session
    /// already gone leaves nobody to tell.
    pub async fn reset(&self, code: ResetCode, message: String) {
        let _ = self
            .send(&Frame::Reset {
                stream: self.id(),
                code,
                message,
            })
            .await;
    }

    /// Waits until `n` bytes of credit are available and takes them.
    /// Fails once the stream is gone. Cancel safe.
    pub(super) async fn reserve(&self, n: usize) -> Result<(), StreamError> {
        let n = u32::try_from(n).map_err(|_| StreamError::Body("chunk too large".into()))?;
        self.0
            .window
            .acquire_many(n)
            .await
            .map_err(|_| StreamError::Reset(ResetCode::Cancel))?
            .forget();
        Ok(())
    }
}

/// How the peer's body on a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyEnd {
    End,
    Reset(ResetCode),
    /// The stream left the table or the session was lost.
    Lost,
}

/// The response head, for the side that opened the stream.
#[derive(Debug, Default)]
pub(super) enum Head {
    /// Not expected on this side of the stream.
    #[default]
    Unwanted,
    Waiting,
    Ready(ResponseHead, bool),
    Taken,
    /// Reset or lost before it came.
    Failed,
}

/// What the read loop and the stream's consumers share, behind one lock.
#[derive(Debug, Default)]
pub(super) struct State {
    /// The peer's body chunks not read yet.
    pub(super) chunks: VecDeque<Bytes>,
    /// `None` while the peer's body is open.
    pub(super) body_end: Option<BodyEnd>,
    pub(super) body_waker: Option<Waker>,
    /// DATA bytes received, and the most the peer may send (its credit).
    pub(super) received: u64,
    /// Bytes in `chunks`, counted in the session's budget.
    pub(super) queued: usize,
    pub(super) credited: u64,
    pub(super) head: Head,
    pub(super) head_waker: Option<Waker>,
    pub(super) reset: Option<ResetCode>,
    pub(super) reset_waker: Option<Waker>,
    /// Removed from the table: nothing more will arrive.
    pub(super) gone: bool,
}

impl State {
    /// Ends the peer's body (if still open) with `end`.
    pub(super) fn end_body(&mut self, end: BodyEnd) -> bool {
        if self.body_end.is_some() {
            return false;
        }
        self.body_end = Some(end);
        true
    }

    /// Queues a head's non-streamed body: an inline body as one chunk,
    /// then the end; an empty one as the end. Returns the bytes queued,
    /// for the session's budget.
    pub(super) fn deliver(&mut self, body: Payload) -> usize {
        if self.body_end.is_some() {
            return 0;
        }
        let mut queued = 0;
        match body {
            Payload::Streamed => return 0,
            Payload::Empty => {}
            Payload::Inline(data) => {
                self.received += data.len() as u64;
                queued = data.len();
                self.queued += queued;
                self.chunks.push_back(data);
            }
        }
        self.body_end = Some(BodyEnd::End);
        queued
    }

    /// Every waker, for the caller to wake once the lock is released.
    pub(super) fn wakers(&mut self) -> [Option<Waker>; 3] {
        [
            self.body_waker.take(),
            self.head_waker.take(),
            self.reset_waker.take(),
        ]
    }

    /// Only the body reader's waker: news about the body alone.
    pub(super) fn body_wakers(&mut self) -> [Option<Waker>; 3] {
        [self.body_waker.take(), None, None]
    }

    /// The body reader's and the head waiter's wakers: a head arrived.
    pub(super) fn head_wakers(&mut self) -> [Option<Waker>; 3] {
        [self.body_waker.take(), self.head_waker.take(), None]
    }
}

fn wake_all(wakers: [Option<Waker>; 3]) {
    for w in wakers.into_iter().flatten() {
        w.wake();
    }
}

pub(super) fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// One stream: a single allocation shared by the table, the body reader,
/// the head and reset waiters, the send window and the guard, so opening
/// a stream costs one `Arc` and no channels.
pub(super) struct Stream {
    pub(super) id: u32,
    pub(super) out: Outbound,
    pub(super) state: Mutex<State>,
    /// This side's credit for DATA: permits are bytes.
    pub(super) window: Semaphore,
    /// The session's unread bytes, all streams together.
    pub(super) buffered: Arc<AtomicUsize>,
}

impl Stream {
    /// Queues a chunk of the peer's body; returns the session's total.
    pub(super) fn push(&self, st: &mut State, data: Bytes) -> usize {
        let len = data.len();
        st.queued += len;
        st.chunks.push_back(data);
        self.buffered.fetch_add(len, Ordering::Relaxed) + len
    }

    /// Takes the next chunk of the peer's body.
    pub(super) fn pop(&self, st: &mut State) -> Option<Bytes> {
        let data = st.chunks.pop_front()?;
        st.queued -= data.len();
        self.buffered.fetch_sub(data.len(), Ordering::Relaxed);
        Some(data)
    }

    /// Drops every unread chunk, giving their bytes back to the budget.
    pub(super) fn discard(&self, st: &mut State) {
        st.chunks.clear();
        self.buffered
            .fetch_sub(std::mem::take(&mut st.queued), Ordering::Relaxed);
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the state consistent (no code in
        // them can panic midway), so poisoning carries no information.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn grant(&self, n: u32) {
        // Semaphore panics above usize::MAX >> 3 permits; a peer granting
        // absurd credit only hurts itself, so clamp instead.
        let room = Semaphore::MAX_PERMITS.saturating_sub(self.window.available_permits());
        self.window.add_permits((n as usize).min(room));
    }
}

/// Open streams of one session, keyed by stream id. The table lock is
/// held for map operations and the stream's own short updates, never
/// across an `.await`; stream wakers run after it is released (a window's
/// semaphore may wake its waiters under it, which only schedules them).
#[derive(Default)]
pub struct StreamTable {
    slots: Mutex<HashMap<u32, Arc<Stream>>>,
    /// Unread bytes of every stream's body (see [`SESSION_BUFFER_BUDGET`]).
    buffered: Arc<AtomicUsize>,
}

/// Everything one side needs to run its half of a new stream.
pub struct StreamParts {
    /// The peer's body for this stream, as an `http_body::Body`.
    pub body: InboundBody,
    /// This side's half: id, queue and credit for its DATA.
    pub sender: StreamSender,
    /// Resolves with the response head and whether it ends the stream (no
    /// body follows); only for the [`Side::Opener`].
    pub head: Option<HeadWait>,
    /// Resolves when the peer resets the stream; fails when the stream is
    /// removed or the session is lost.
    pub reset: ResetWait,
    /// Removes the stream from the table when the last clone is dropped.
    pub guard: Arc<StreamGuard>,
}

/// The stream ended (reset, removed, or its session lost) before what
/// was awaited arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream ended first")]
pub struct Gone;

/// Waits for the peer's response head.
pub struct HeadWait(Arc<Stream>);

impl std::future::Future for HeadWait {
    type Output = Result<(ResponseHead, bool), Gone>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.0.lock();
        match std::mem::replace(&mut st.head, Head::Taken) {
            Head::Ready(head, end) => Poll::Ready(Ok((head, end))),
            Head::Waiting if !st.gone => {
                st.head = Head::Waiting;
                set_waker(&mut st.head_waker, cx);
                Poll::Pending
            }
            other => {
                st.head = other;
                Poll::Ready(Err(Gone))
            }
        }
    }
}

/// Waits for the peer to reset the stream.
pub struct ResetWait(Arc<Stream>);

impl std::future::Future for ResetWait {
    type Output = Result<ResetCode, Gone>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.0.lock();
        if let Some(code) = st.reset {
            return Poll::Ready(Ok(code));
        }
        if st.gone {
            return Poll::Ready(Err(Gone));
        }
        set_waker(&mut st.reset_waker, cx);
        Poll::Pending
    }
}

/// Keeps a stream in its table; dropping the last clone removes it and
/// wakes any sender waiting for credit, so no task outlives its stream.
pub struct StreamGuard {
    table: Arc<StreamTable>,
    stream: Arc<Stream>,
}

impl Drop for StreamGuard {
    /// If the peer was still sending (no END yet), tells it to stop:
    /// otherwise it would wait forever for credit nobody will return.
    fn drop(&mut self) {
        if self.table.remove(self.stream.id) {
            // Behind this side's own frames: after a complete response, the
            // peer must see the response before it hears "stop sending".
            self.stream
                .out
                .reset_later(self.stream.id, ResetCode::Cancel);
        }
    }
}

impl StreamTable {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Stream>>> {
        // Each critical section is one map operation plus a stream update
        // that cannot panic; poisoning carries no information.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes of the peers' bodies this session holds unread.
    pub fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Number of open streams.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers stream `id`, for this `side` of it.
    pub fn open(
        self: &Arc<Self>,
        id: u32,
        side: Side,
        out: &Outbound,
    ) -> Result<StreamParts, StreamError> {
        let opener = side == Side::Opener;
        let stream = Arc::new(Stream {
            id,
            out: out.clone(),
            state: Mutex::new(State {
                credited: u64::from(INITIAL_WINDOW),
                head: if opener {
                    Head::Waiting
                } else {
                    Head::Unwanted
                },
                ..State::default()
            }),
            window: Semaphore::new(INITIAL_WINDOW as usize),
            buffered: self.buffered.clone(),
        });
        {
            let mut slots = self.lock();
            if slots.len() >= MAX_STREAMS {
                return Err(StreamError::TooManyStreams);
            }
            match slots.entry(id) {
                Entry::Occupied(_) => return Err(StreamError::Reset(ResetCode::Protocol)),
                Entry::Vacant(v) => {
                    v.insert(stream.clone());
                }
            }
        }
        Ok(StreamParts {
            body: InboundBody {
                stream: stream.clone(),
                unacked: 0,
                state: BodyState::Open,
                reset_on_drop: opener,
                remaining: None,
            },
            sender: StreamSender(stream.clone()),
            head: opener.then(|| HeadWait(stream.clone())),
            reset: ResetWait(stream.clone()),
            guard: Arc::new(StreamGuard {
                table: self.clone(),
                stream,
            }),
        })
    }

    /// Removes stream `id`; `true` if the peer's body was still open.
    fn remove(&self, id: u32) -> bool {
        let Some(stream) = self.lock().remove(&id) else {
            return false;
        };
        stream.window.close();
        let (was_open, wakers) = {
            let mut st = stream.lock();
            st.gone = true;
            (st.end_body(BodyEnd::Lost), st.wakers())
        };
        wake_all(wakers);
        was_open
    }

    /// Routes one incoming stream frame. Returns the reset to send back
    /// when the peer broke flow control or the protocol; frames for
    /// unknown streams (late DATA after a reset) are dropped.
    pub fn dispatch(&self, frame: Frame) -> Result<(), (u32, ResetCode)> {
        let mut result = Ok(());
        let mut over_budget = false;
        let wakers = {
            let slots = self.lock();
            let Some(stream) = slots.get(&frame.stream()) else {
                return match frame {
                    Frame::RequestHead { stream, .. } => Err((stream, ResetCode::Protocol)),
                    _ => Ok(()),
                };
            };
            let mut st = stream.lock();
            // Each frame wakes only the waiters it concerns: a task waiting
            // for a reset is not polled for every DATA frame of its body.
            let wakers = match frame {
                Frame::Data { stream: id, data } => {
                    st.received += data.len() as u64;
                    if st.received > st.credited {
                        st.end_body(BodyEnd::Reset(ResetCode::FlowControl));
                        stream.window.close();
                        result = Err((id, ResetCode::FlowControl));
                    } else if st.body_end.is_none() && !data.is_empty() {
                        // Empty DATA carries nothing and costs no credit:
                        // queueing it would let a peer grow memory for free.
                        if stream.push(&mut st, data) > SESSION_BUFFER_BUDGET {
                            over_budget = true;
                        }
                    }
                    st.body_wakers()
                }
                Frame::End { .. } => {
                    st.end_body(BodyEnd::End);
                    st.body_wakers()
                }
                Frame::Reset { code, .. } => {
                    st.end_body(BodyEnd::Reset(code));
                    if matches!(st.head, Head::Waiting) {
                        st.head = Head::Failed;
                    }
                    st.reset.get_or_insert(code);
                    stream.window.close();
                    st.wakers()
                }
                Frame::Credit { bytes, .. } => {
                    // The semaphore wakes its own waiters.
                    stream.grant(bytes);
                    [None, None, None]
                }
                Frame::ResponseHead {
                    stream: id,
                    head,
                    body,
                } => {
                    let end_stream = matches!(body, Payload::Empty);
                    let queued = st.deliver(body);
                    stream.buffered.fetch_add(queued, Ordering::Relaxed);
                    if matches!(st.head, Head::Waiting) {
                        st.head = Head::Ready(head, end_stream);
                    } else {
                        result = Err((id, ResetCode::Protocol));
                    }
                    st.head_wakers()
                }
                Frame::RequestHead { stream: id, .. } => {
                    result = Err((id, ResetCode::Protocol));
                    [None, None, None]
                }
                Frame::Ping { .. } | Frame::Pong { .. } => [None, None, None],
            };
            drop(st);
            if over_budget {
                if let Some(victim) = Self::shed(&slots) {
                    result = Err(victim);
                }
            }
            wakers
        };
        wake_all(wakers);
        result
    }

    /// Over the session's budget: resets the stream whose reader is
    /// furthest behind (most unread bytes) and frees them. Returns the
    /// reset to send to the peer.
    fn shed(slots: &HashMap<u32, Arc<Stream>>) -> Option<(u32, ResetCode)> {
        let victim = slots.values().max_by_key(|s| s.lock().queued)?;
        let wakers = {
            let mut st = victim.lock();
            victim.discard(&mut st);
            st.body_end = Some(BodyEnd::Reset(ResetCode::Cancel));
            st.reset.get_or_insert(ResetCode::Cancel);
            victim.window.close();
            st.wakers()
        };
        wake_all(wakers);
        Some((victim.id, ResetCode::Cancel))
    }

    /// Queues the body a request head carried (inline or empty) for stream
    /// `id`, which the caller has just opened.
    pub fn deliver(&self, id: u32, body: Payload) {
        let wakers = match self.lock().get(&id) {
            Some(stream) => {
                let mut st = stream.lock();
                let queued = st.deliver(body);
                stream.buffered.fetch_add(queued, Ordering::Relaxed);
                st.body_wakers()
            }
            None => return,
        };
        wake_all(wakers);
    }

    /// Fails every open stream: the session is gone.
    pub fn close_all(&self) {
        let streams: Vec<Arc<Stream>> = self.lock().drain().map(|(_, s)| s).collect();
        for stream in streams {
            stream.window.close();
            let wakers = {
                let mut st = stream.lock();
                st.gone = true;
                st.end_body(BodyEnd::Lost);
                if matches!(st.head, Head::Waiting) {
                    st.head = Head::Failed;
                }
                st.wakers()
            };
            wake_all(wakers);
        }
    }
}
