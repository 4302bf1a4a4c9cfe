//! Per-stream flow control, shared by both ends of a session.
//!
//! A session is one WebSocket carrying many streams. Each side has:
//!
//! - an [`Outbound`] queue of encoded frames, drained by the one task that
//!   owns the WebSocket's write half. Heads, DATA and END share a bounded
//!   queue, so their order per stream is kept and a slow socket pushes back
//!   on producers; CREDIT, RESET and PING/PONG take an unbounded control
//!   queue that is drained first, so flow control never waits behind data.
//! - a [`StreamTable`] the read loop dispatches incoming frames through.
//!
//! Credit: a receiver grants [`INITIAL_WINDOW`] bytes per stream and returns
//! credit as its consumer reads ([`InboundBody`]), so each stream buffers at
//! most one window on each side, whatever its size or the reader's speed.
//! A sender waits on its [`SendWindow`] before every DATA frame.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame as BodyFrame};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

use crate::frame::{Frame, FrameError, Payload, ResetCode};
use crate::http::ResponseHead;
use crate::protocol::{INITIAL_WINDOW, MAX_DATA_PAYLOAD, MAX_STREAMS};

/// Frames the bounded data queue holds before producers wait; 256 frames
/// of at most 64 KiB cap what a stalled socket can pile up.
pub const DATA_QUEUE_FRAMES: usize = 256;

/// Control frames (CREDIT, protocol RESETs) one session may have queued.
/// A reading peer never gets near it: the writer drains control first, and
/// each stream can owe at most a couple of CREDITs before the peer runs out
/// of window. A full queue means the peer keeps making work for a socket it
/// does not read, so the session is ended instead of growing memory.
pub const CONTROL_QUEUE_FRAMES: usize = 4 * MAX_STREAMS;

/// Most bytes one session holds of the peer's bodies that their readers
/// have not taken yet (a visitor that stops reading a download, a local
/// app that stops reading an upload). Each stream may hold a window, so
/// without this a tunnel's worst case would be [`MAX_STREAMS`] windows
/// (512 MiB); past it, the stream furthest behind is reset and its bytes
/// freed. 128 streams with a full unread window fit.
pub const SESSION_BUFFER_BUDGET: usize = 64 * 1024 * 1024;

/// A receiver returns credit once this many bytes were consumed, so a
/// large body costs one CREDIT per half window instead of one per chunk.
const CREDIT_BATCH: u32 = INITIAL_WINDOW / 2;

/// Why a stream could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("the session to the other side is gone")]
    SessionClosed,
    #[error("the stream was reset: {0:?}")]
    Reset(ResetCode),
    #[error("frame could not be encoded: {0}")]
    Encode(#[from] FrameError),
    #[error("body failed: {0}")]
    Body(String),
    #[error("too many streams in flight")]
    TooManyStreams,
}

/// Why the writer gave up on a session.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    /// The WebSocket could not be written.
    #[error("write failed: {0}")]
    Sink(E),
    /// The control queue overflowed: the peer makes us answer faster than
    /// it reads.
    #[error("the peer does not read its control frames")]
    Overflow,
}

/// State the producers and the writer share besides the queues.
#[derive(Default)]
struct Shared {
    /// Nonce of the PONG still to send. PINGs are answered with the newest
    /// nonce only: a peer that pings faster than it reads gets one PONG per
    /// write, not one per PING.
    pong: Mutex<Option<u64>>,
    /// Set when the control queue overflowed; the writer then fails, and
    /// the read loop ends the session.
    overflow: AtomicBool,
    /// When the writer's current socket write started (milliseconds since
    /// `epoch`; 0 while it waits for frames): lets the session notice a
    /// writer stuck on a peer that does not read.
    busy_since: AtomicU64,
    epoch: OnceLock<std::time::Instant>,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        let epoch = self.epoch.get_or_init(std::time::Instant::now);
        // +1 so that 0 keeps meaning "idle".
        epoch.elapsed().as_millis() as u64 + 1
    }
}

/// Producer side of a session's write queues. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    data: mpsc::Sender<Bytes>,
    control: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
}

/// Consumer side, owned by the session's writer task.
pub struct OutboundRx {
    data: mpsc::Receiver<Bytes>,
    control: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
}

/// A new pair of queues for one session.
pub fn outbound() -> (Outbound, OutboundRx) {
    let (data, data_rx) = mpsc::channel(DATA_QUEUE_FRAMES);
    let (control, control_rx) = mpsc::channel(CONTROL_QUEUE_FRAMES);
    let shared = Arc::new(Shared::default());
    shared.now_ms();
    (
        Outbound {
            data,
            control,
            shared: shared.clone(),
        },
        OutboundRx {
            data: data_rx,
            control: control_rx,
            shared,
        },
    )
}

/// Marker on the control queue: a PONG is due (its nonce is in
/// [`Shared::pong`]). Encoded frames are never empty.
const PONG_DUE: Bytes = Bytes::new();

impl Outbound {
    /// Queues a head, DATA, END or a stream's RESET, waiting while the
    /// queue is full. One queue keeps a stream's frames in order: a RESET
    /// that follows a complete response cannot overtake it.
    pub async fn send(&self, frame: &Frame) -> Result<(), StreamError> {
        let bytes = frame.encode()?;
        self.data
            .send(bytes)
            .await
            .map_err(|_| StreamError::SessionClosed)
    }

    /// Queues a stream's RESET behind the frames already queued for it,
    /// without waiting: callable from `Drop`. When the data queue is full,
    /// a task waits for room (a stalled session is ended within the idle
    /// timeout, which ends those tasks too).
    pub fn reset_later(&self, stream: u32, code: ResetCode) {
        let frame = Frame::Reset {
            stream,
            code,
            message: String::new(),
        };
        let Ok(bytes) = frame.encode() else { return };
        match self.data.try_send(bytes) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(bytes)) => {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let data = self.data.clone();
                    rt.spawn(async move { data.send(bytes).await });
                }
            }
        }
    }

    /// Queues a control frame (CREDIT, or a RESET for a stream the peer
    /// broke) without waiting: callable from `poll` and `Drop`, and sent
    /// before queued data so flow control never waits behind it. Ignored
    /// when the session is gone, because then there is nobody left to
    /// tell. A full queue ends the session (see [`CONTROL_QUEUE_FRAMES`]).
    pub fn control(&self, frame: &Frame) {
        let Ok(bytes) = frame.encode() else { return };
        self.push_control(bytes);
    }

    fn push_control(&self, bytes: Bytes) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.control.try_send(bytes) {
            self.shared.overflow.store(true, Ordering::Release);
        }
    }

    /// Answers a PING. Coalesced: until the writer sends it, a newer PING
    /// only replaces the nonce, so a flood of PINGs costs no memory.
    pub fn pong(&self, nonce: u64) {
        let was_due = lock(&self.shared.pong).replace(nonce).is_some();
        if !was_due {
            self.push_control(PONG_DUE);
        }
    }

    /// Whether the writer side is gone.
    pub fn is_closed(&self) -> bool {
        self.data.is_closed()
    }

    /// Whether the control queue overflowed: the session must end.
    pub fn overflowed(&self) -> bool {
        self.shared.overflow.load(Ordering::Acquire)
    }

    /// How long the writer has been stuck in one socket write, if it is
    /// writing now. A peer that stops reading leaves it stuck for ever.
    pub fn write_stalled_for(&self) -> Option<std::time::Duration> {
        let since = self.shared.busy_since.load(Ordering::Acquire);
        (since != 0)
            .then(|| std::time::Duration::from_millis(self.shared.now_ms().saturating_sub(since)))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here is a single assignment: poisoning
    // carries no information.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl OutboundRx {
    /// Waits for the next frame, control frames first; `None` once every
    /// [`Outbound`] is dropped. Cancel safe (both `recv`s are).
    async fn recv(&mut self) -> Result<Option<Bytes>, Overflowed> {
        let frame = tokio::select! {
            biased;
            Some(b) = self.control.recv() => Some(b),
            Some(b) = self.data.recv() => Some(b),
            else => None,
        };
        if self.shared.overflow.load(Ordering::Acquire) {
            return Err(Overflowed);
        }
        Ok(frame.map(|b| self.expand(b)))
    }

    /// A frame that is ready now, if any; lets the writer batch many frames
    /// into one socket write.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        let b = self
            .control
            .try_recv()
            .or_else(|_| self.data.try_recv())
            .ok()?;
        Some(self.expand(b))
    }

    /// Turns the PONG marker into the PONG frame it stands for.
    fn expand(&self, b: Bytes) -> Bytes {
        if !b.is_empty() {
            return b;
        }
        let nonce = lock(&self.shared.pong).take().unwrap_or_default();
        Frame::Pong { nonce }.encode().unwrap_or_default()
    }

    fn busy(&self, busy: bool) {
        let v = if busy { self.shared.now_ms() } else { 0 };
        self.shared.busy_since.store(v, Ordering::Release);
    }
}

/// The control queue overflowed.
#[derive(Debug)]
struct Overflowed;

/// Frames the writer puts into one socket write at most; past this it
/// flushes, so a burst of DATA cannot hold back other streams' frames long.
const WRITE_BATCH: usize = 64;

/// The session writer: moves queued frames to `sink`, batching whatever is
/// ready into one flush (many small responses become one socket write).
/// Returns when every [`Outbound`] is gone, the sink fails or the control
/// queue overflowed. Not cancel safe: a frame may be lost if cancelled,
/// which only happens when the session is closing anyway.
pub async fn write_frames<S, M>(
    sink: &mut S,
    rx: &mut OutboundRx,
    wrap: impl Fn(Bytes) -> M,
) -> Result<(), WriteError<S::Error>>
where
    S: futures_util::Sink<M> + Unpin,
{
    use futures_util::SinkExt;
    loop {
        let first = match rx.recv().await {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(()),
            Err(Overflowed) => return Err(WriteError::Overflow),
        };
        rx.busy(true);
        sink.feed(wrap(first)).await.map_err(WriteError::Sink)?;
        for _ in 1..WRITE_BATCH {
            let Some(next) = rx.try_recv() else { break };
            sink.feed(wrap(next)).await.map_err(WriteError::Sink)?;
        }
        sink.flush().await.map_err(WriteError::Sink)?;
        rx.busy(false);
    }
}

/// Credit the peer may still use on one stream, in bytes. Cheap to clone:
/// it shares the stream's one allocation.
#[derive(Clone)]
pub struct SendWindow(Arc<Stream>);

impl SendWindow {
    /// Waits until `n` bytes of credit are available and takes them.
    /// Fails once the stream is gone. Cancel safe.
    async fn reserve(&self, n: usize) -> Result<(), StreamError> {
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
enum BodyEnd {
    End,
    Reset(ResetCode),
    /// The stream left the table or the session was lost.
    Lost,
}

/// The response head, for the side that opened the stream.
#[derive(Debug, Default)]
enum Head {
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
struct State {
    /// The peer's body chunks not read yet.
    chunks: VecDeque<Bytes>,
    /// `None` while the peer's body is open.
    body_end: Option<BodyEnd>,
    body_waker: Option<Waker>,
    /// DATA bytes received, and the most the peer may send (its credit).
    received: u64,
    /// Bytes in `chunks`, counted in the session's budget.
    queued: usize,
    credited: u64,
    head: Head,
    head_waker: Option<Waker>,
    reset: Option<ResetCode>,
    reset_waker: Option<Waker>,
    /// Removed from the table: nothing more will arrive.
    gone: bool,
}

impl State {
    /// Ends the peer's body (if still open) with `end`.
    fn end_body(&mut self, end: BodyEnd) -> bool {
        if self.body_end.is_some() {
            return false;
        }
        self.body_end = Some(end);
        true
    }

    /// Queues a head's non-streamed body: an inline body as one chunk,
    /// then the end; an empty one as the end. Returns the bytes queued,
    /// for the session's budget.
    fn deliver(&mut self, body: Payload) -> usize {
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
    fn wakers(&mut self) -> [Option<Waker>; 3] {
        [
            self.body_waker.take(),
            self.head_waker.take(),
            self.reset_waker.take(),
        ]
    }

    /// Only the body reader's waker: news about the body alone.
    fn body_wakers(&mut self) -> [Option<Waker>; 3] {
        [self.body_waker.take(), None, None]
    }

    /// The body reader's and the head waiter's wakers: a head arrived.
    fn head_wakers(&mut self) -> [Option<Waker>; 3] {
        [self.body_waker.take(), self.head_waker.take(), None]
    }
}

fn wake_all(wakers: [Option<Waker>; 3]) {
    for w in wakers.into_iter().flatten() {
        w.wake();
    }
}

fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// One stream: a single allocation shared by the table, the body reader,
/// the head and reset waiters, the send window and the guard, so opening
/// a stream costs one `Arc` and no channels.
struct Stream {
    id: u32,
    out: Outbound,
    state: Mutex<State>,
    /// This side's credit for DATA: permits are bytes.
    window: Semaphore,
    /// The session's unread bytes, all streams together.
    buffered: Arc<AtomicUsize>,
}

impl Stream {
    /// Queues a chunk of the peer's body; returns the session's total.
    fn push(&self, st: &mut State, data: Bytes) -> usize {
        let len = data.len();
        st.queued += len;
        st.chunks.push_back(data);
        self.buffered.fetch_add(len, Ordering::Relaxed) + len
    }

    /// Takes the next chunk of the peer's body.
    fn pop(&self, st: &mut State) -> Option<Bytes> {
        let data = st.chunks.pop_front()?;
        st.queued -= data.len();
        self.buffered.fetch_sub(data.len(), Ordering::Relaxed);
        Some(data)
    }

    /// Drops every unread chunk, giving their bytes back to the budget.
    fn discard(&self, st: &mut State) {
        st.chunks.clear();
        self.buffered
            .fetch_sub(std::mem::take(&mut st.queued), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
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
    /// Credit for this side's DATA.
    pub window: SendWindow,
    /// Resolves with the response head and whether it ends the stream (no
    /// body follows); only for streams opened with `want_head`.
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Stream>>> {
        // Each critical section is one map operation plus a stream update
        // that cannot panic; poisoning carries no information.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of open streams.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers stream `id`. `want_head` is for the opening side, which
    /// waits for the peer's response head. `reset_on_drop`: whether
    /// dropping the returned body unread tells the peer to stop.
    pub fn open(
        self: &Arc<Self>,
        id: u32,
        want_head: bool,
        out: &Outbound,
        reset_on_drop: bool,
    ) -> Result<StreamParts, StreamError> {
        let stream = Arc::new(Stream {
            id,
            out: out.clone(),
            state: Mutex::new(State {
                credited: u64::from(INITIAL_WINDOW),
                head: if want_head {
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
                reset_on_drop,
                remaining: None,
            },
            window: SendWindow(stream.clone()),
            head: want_head.then(|| HeadWait(stream.clone())),
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
            let Some(stream) = slots.get(&frame_stream(&frame)) else {
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

/// The stream a frame belongs to (0 for PING/PONG).
fn frame_stream(frame: &Frame) -> u32 {
    match frame {
        Frame::RequestHead { stream, .. }
        | Frame::ResponseHead { stream, .. }
        | Frame::Data { stream, .. }
        | Frame::End { stream }
        | Frame::Reset { stream, .. }
        | Frame::Credit { stream, .. } => *stream,
        Frame::Ping { .. } | Frame::Pong { .. } => 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Open,
    Ended,
    Failed,
}

/// The peer's body on one stream, readable as an `http_body::Body`:
/// hyper can send it straight to a visitor or a local app. Reading it
/// returns credit to the peer.
pub struct InboundBody {
    stream: Arc<Stream>,
    /// Bytes read and not yet credited back.
    unacked: u32,
    state: BodyState,
    reset_on_drop: bool,
    /// Bytes still due when the head declared a Content-Length.
    remaining: Option<u64>,
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

/// Sends `body` as DATA frames under the stream's credit, then END. Trailers
/// are not carried. On a body error the stream is reset with `on_error`.
pub async fn send_body<B>(
    body: B,
    stream: u32,
    out: &Outbound,
    window: &SendWindow,
    on_error: ResetCode,
) -> Result<(), StreamError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                // Ordered behind the DATA already sent: the peer sees the
                // body it got, then why it stopped.
                let _ = out
                    .send(&Frame::Reset {
                        stream,
                        code: on_error,
                        message: e.to_string(),
                    })
                    .await;
                return Err(StreamError::Body(e.to_string()));
            }
        };
        if let Ok(data) = frame.into_data() {
            send_data(data, stream, out, window).await?;
        }
    }
    out.send(&Frame::End { stream }).await
}

async fn send_data(
    mut data: Bytes,
    stream: u32,
    out: &Outbound,
    window: &SendWindow,
) -> Result<(), StreamError> {
    while !data.is_empty() {
        let piece = data.split_to(data.len().min(MAX_DATA_PAYLOAD));
        window.reserve(piece.len()).await?;
        out.send(&Frame::Data {
            stream,
            data: piece,
        })
        .await?;
    }
    Ok(())
}

/// Sends everything `reader` yields (an upgraded connection) as DATA, then
/// END at EOF.
pub async fn send_io<R: AsyncRead + Unpin>(
    mut reader: R,
    stream: u32,
    out: &Outbound,
    window: &SendWindow,
) -> Result<(), StreamError> {
    let mut buf = vec![0u8; MAX_DATA_PAYLOAD];
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| StreamError::Body(e.to_string()))?;
        if n == 0 {
            return out.send(&Frame::End { stream }).await;
        }
        send_data(Bytes::copy_from_slice(&buf[..n]), stream, out, window).await?;
    }
}

/// Writes the peer's bytes to `writer` (an upgraded connection) and shuts
/// its write side down at END.
pub async fn recv_io<W: AsyncWrite + Unpin>(
    body: InboundBody,
    mut writer: W,
) -> Result<(), StreamError> {
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            writer
                .write_all(&data)
                .await
                .map_err(|e| StreamError::Body(e.to_string()))?;
        }
    }
    writer
        .shutdown()
        .await
        .map_err(|e| StreamError::Body(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(b: Bytes) -> Frame {
        Frame::decode(b).expect("own frames decode")
    }

    #[tokio::test]
    async fn reading_returns_credit_and_sender_waits_for_it() {
        let (out, mut rx) = outbound();
        let table = StreamTable::new();
        let mut parts = table.open(1, false, &out, true).expect("opens");
        // The peer may send a full window...
        for _ in 0..(INITIAL_WINDOW as usize / MAX_DATA_PAYLOAD) {
            table
                .dispatch(Frame::Data {
                    stream: 1,
                    data: Bytes::from(vec![7; MAX_DATA_PAYLOAD]),
                })
                .expect("within window");
        }
        // ...but not one byte more.
        assert_eq!(
            table.dispatch(Frame::Data {
                stream: 1,
                data: Bytes::from_static(b"x"),
            }),
            Err((1, ResetCode::FlowControl))
        );
        // Consuming half a window sends one CREDIT.
        for _ in 0..(CREDIT_BATCH as usize / MAX_DATA_PAYLOAD) {
            parts.body.frame().await.expect("data").expect("ok");
        }
        assert_eq!(
            decode(rx.try_recv().expect("credit queued")),
            Frame::Credit {
                stream: 1,
                bytes: CREDIT_BATCH
            }
        );
    }

    #[tokio::test]
    async fn send_body_stops_at_window_until_credit() {
        let (out, mut rx) = outbound();
        let table = StreamTable::new();
        let parts = table.open(3, false, &out, false).expect("opens");
        let body = http_body_util::Full::new(Bytes::from(vec![1u8; INITIAL_WINDOW as usize + 10]));
        let window = parts.window.clone();
        let sender =
            tokio::spawn(
                async move { send_body(body, 3, &out, &window, ResetCode::LocalError).await },
            );
        let mut sent = 0;
        while sent < INITIAL_WINDOW as usize {
            match decode(rx.recv().await.ok().flatten().expect("frame")) {
                Frame::Data { data, .. } => sent += data.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(sent, INITIAL_WINDOW as usize);
        assert!(rx.try_recv().is_none(), "nothing beyond the window");
        table
            .dispatch(Frame::Credit {
                stream: 3,
                bytes: 10,
            })
            .expect("credit ok");
        assert_eq!(
            decode(rx.recv().await.ok().flatten().expect("frame")),
            Frame::Data {
                stream: 3,
                data: Bytes::from(vec![1u8; 10])
            }
        );
        assert_eq!(
            decode(rx.recv().await.ok().flatten().expect("frame")),
            Frame::End { stream: 3 }
        );
        sender.await.expect("joins").expect("sent");
    }

    #[tokio::test]
    async fn pings_are_answered_with_one_pong_per_write() {
        let (out, mut rx) = outbound();
        for nonce in 1..=100_000 {
            out.pong(nonce);
        }
        // However many PINGs came, one PONG (the newest) is queued.
        assert_eq!(
            decode(rx.try_recv().expect("pong")),
            Frame::Pong { nonce: 100_000 }
        );
        assert!(rx.try_recv().is_none());
        out.pong(7);
        assert_eq!(
            decode(rx.try_recv().expect("pong")),
            Frame::Pong { nonce: 7 }
        );
        assert!(!out.overflowed());
    }

    #[tokio::test]
    async fn a_full_control_queue_ends_the_session_instead_of_growing() {
        let (out, mut rx) = outbound();
        let credit = Frame::Credit {
            stream: 1,
            bytes: 1,
        };
        for _ in 0..CONTROL_QUEUE_FRAMES {
            out.control(&credit);
        }
        assert!(!out.overflowed(), "a full queue is still within bounds");
        out.control(&credit);
        assert!(out.overflowed());
        assert!(rx.recv().await.is_err(), "the writer gives up");
    }

    #[tokio::test]
    async fn a_reset_after_a_response_does_not_overtake_it() {
        let (out, mut rx) = outbound();
        let table = StreamTable::new();
        let parts = table.open(21, false, &out, false).expect("opens");
        out.send(&Frame::End { stream: 21 }).await.expect("queued");
        // The guard's "stop sending" goes behind the END, not ahead of it.
        drop(parts);
        assert_eq!(
            decode(rx.try_recv().expect("end")),
            Frame::End { stream: 21 }
        );
        assert!(matches!(
            decode(rx.try_recv().expect("reset")),
            Frame::Reset { stream: 21, .. }
        ));
    }

    #[tokio::test]
    async fn a_session_over_its_buffer_budget_resets_the_stream_furthest_behind() {
        let (out, _rx) = outbound();
        let table = StreamTable::new();
        let chunk = Bytes::from(vec![0u8; MAX_DATA_PAYLOAD]);
        let mut parts = Vec::new();
        for i in 0..(MAX_STREAMS as u32 - 1) {
            let id = 2 * i + 1;
            parts.push(table.open(id, false, &out, false).expect("opens"));
            for _ in 0..(INITIAL_WINDOW as usize / MAX_DATA_PAYLOAD) {
                let data = Frame::Data {
                    stream: id,
                    data: chunk.clone(),
                };
                if let Err((victim, code)) = table.dispatch(data) {
                    // The first stream never read anything: it goes first.
                    assert_eq!((victim, code), (1, ResetCode::Cancel));
                    assert!(table.buffered.load(Ordering::Relaxed) <= SESSION_BUFFER_BUDGET);
                    let first = &mut parts[0].body;
                    assert_eq!(
                        first.frame().await.expect("an error").expect_err("reset"),
                        StreamError::Reset(ResetCode::Cancel)
                    );
                    // Dropping bodies gives their bytes back.
                    drop(parts);
                    assert_eq!(table.buffered.load(Ordering::Relaxed), 0);
                    return;
                }
            }
            if id != 1 {
                // Every other reader keeps up a little.
                let body = &mut parts.last_mut().expect("just opened").body;
                body.frame().await.expect("a chunk").expect("data");
            }
        }
        panic!("{MAX_STREAMS} streams did not cross the budget");
    }

    #[tokio::test]
    async fn dropping_guard_unblocks_a_waiting_sender() {
        let (out, _rx) = outbound();
        let table = StreamTable::new();
        let parts = table.open(5, false, &out, false).expect("opens");
        let window = parts.window.clone();
        window
            .reserve(INITIAL_WINDOW as usize)
            .await
            .expect("full window");
        let waiting = tokio::spawn(async move { window.reserve(1).await });
        drop(parts.guard);
        assert!(waiting.await.expect("joins").is_err());
        assert!(table.is_empty());
    }

    #[tokio::test]
    async fn dropping_guard_resets_a_peer_still_sending() {
        let (out, mut rx) = outbound();
        let table = StreamTable::new();
        // The peer's body is still open: it must be told to stop, or it
        // would wait for credit forever.
        let parts = table.open(11, false, &out, false).expect("opens");
        drop(parts);
        assert!(matches!(
            decode(rx.try_recv().expect("reset queued")),
            Frame::Reset {
                stream: 11,
                code: ResetCode::Cancel,
                ..
            }
        ));
        // After the peer's END there is nothing to stop.
        let parts = table.open(13, false, &out, false).expect("opens");
        table.dispatch(Frame::End { stream: 13 }).expect("end ok");
        drop(parts);
        assert!(rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn dropped_unfinished_body_resets_the_peer() {
        let (out, mut rx) = outbound();
        let table = StreamTable::new();
        let parts = table.open(9, false, &out, true).expect("opens");
        drop(parts.body);
        assert!(matches!(
            decode(rx.try_recv().expect("reset queued")),
            Frame::Reset {
                stream: 9,
                code: ResetCode::Cancel,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn session_loss_fails_bodies_and_heads() {
        let (out, _rx) = outbound();
        let table = StreamTable::new();
        let mut parts = table.open(2, true, &out, false).expect("opens");
        table.close_all();
        assert_eq!(
            parts
                .body
                .frame()
                .await
                .expect("an error")
                .expect_err("fails"),
            StreamError::SessionClosed
        );
        assert!(parts.head.take().expect("head wanted").await.is_err());
    }
}
