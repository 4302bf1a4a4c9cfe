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

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame as BodyFrame};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::frame::{Frame, FrameError, Payload, ResetCode};
use crate::http::ResponseHead;
use crate::protocol::{INITIAL_WINDOW, MAX_DATA_PAYLOAD, MAX_STREAMS};

/// Frames the bounded data queue holds before producers wait; 256 frames
/// of at most 64 KiB cap what a stalled socket can pile up.
pub const DATA_QUEUE_FRAMES: usize = 256;

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

/// Producer side of a session's write queues. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    data: mpsc::Sender<Bytes>,
    control: mpsc::UnboundedSender<Bytes>,
}

/// Consumer side, owned by the session's writer task.
pub struct OutboundRx {
    data: mpsc::Receiver<Bytes>,
    control: mpsc::UnboundedReceiver<Bytes>,
}

/// A new pair of queues for one session.
pub fn outbound() -> (Outbound, OutboundRx) {
    let (data, data_rx) = mpsc::channel(DATA_QUEUE_FRAMES);
    let (control, control_rx) = mpsc::unbounded_channel();
    (
        Outbound { data, control },
        OutboundRx {
            data: data_rx,
            control: control_rx,
        },
    )
}

impl Outbound {
    /// Queues a head, DATA or END frame, waiting while the queue is full.
    pub async fn send(&self, frame: &Frame) -> Result<(), StreamError> {
        let bytes = frame.encode()?;
        self.data
            .send(bytes)
            .await
            .map_err(|_| StreamError::SessionClosed)
    }

    /// Queues a control frame (CREDIT, RESET, PING, PONG) without waiting:
    /// callable from `poll` and `Drop`. Ignored when the session is gone,
    /// because then there is nobody left to tell.
    pub fn control(&self, frame: &Frame) {
        if let Ok(bytes) = frame.encode() {
            let _ = self.control.send(bytes);
        }
    }

    /// Whether the writer side is gone.
    pub fn is_closed(&self) -> bool {
        self.data.is_closed()
    }
}

impl OutboundRx {
    /// Waits for the next frame, control frames first; `None` once every
    /// [`Outbound`] is dropped. Cancel safe (both `recv`s are).
    pub async fn recv(&mut self) -> Option<Bytes> {
        tokio::select! {
            biased;
            Some(b) = self.control.recv() => Some(b),
            Some(b) = self.data.recv() => Some(b),
            else => None,
        }
    }

    /// A frame that is ready now, if any; lets the writer batch many frames
    /// into one socket write.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.control
            .try_recv()
            .or_else(|_| self.data.try_recv())
            .ok()
    }
}

/// Frames the writer puts into one socket write at most; past this it
/// flushes, so a burst of DATA cannot hold back other streams' frames long.
const WRITE_BATCH: usize = 64;

/// The session writer: moves queued frames to `sink`, batching whatever is
/// ready into one flush (many small responses become one socket write).
/// Returns when every [`Outbound`] is gone or the sink fails. Not cancel
/// safe: a frame may be lost if cancelled, which only happens when the
/// session is closing anyway.
pub async fn write_frames<S, M>(
    sink: &mut S,
    rx: &mut OutboundRx,
    wrap: impl Fn(Bytes) -> M,
) -> Result<(), S::Error>
where
    S: futures_util::Sink<M> + Unpin,
{
    use futures_util::SinkExt;
    while let Some(first) = rx.recv().await {
        sink.feed(wrap(first)).await?;
        for _ in 1..WRITE_BATCH {
            let Some(next) = rx.try_recv() else { break };
            sink.feed(wrap(next)).await?;
        }
        sink.flush().await?;
    }
    Ok(())
}

/// What an [`InboundBody`] receives from the read loop.
#[derive(Debug)]
enum BodyEvent {
    Data(Bytes),
    End,
    Reset(ResetCode),
}

/// Credit the peer may still use on one stream: permits are bytes.
pub struct SendWindow(Semaphore);

impl SendWindow {
    fn new() -> Self {
        Self(Semaphore::new(INITIAL_WINDOW as usize))
    }

    /// Waits until `n` bytes of credit are available and takes them.
    /// Fails once the stream is gone. Cancel safe.
    async fn reserve(&self, n: usize) -> Result<(), StreamError> {
        let n = u32::try_from(n).map_err(|_| StreamError::Body("chunk too large".into()))?;
        self.0
            .acquire_many(n)
            .await
            .map_err(|_| StreamError::Reset(ResetCode::Cancel))?
            .forget();
        Ok(())
    }

    fn grant(&self, n: u32) {
        // Semaphore panics above usize::MAX >> 3 permits; a peer granting
        // absurd credit only hurts itself, so clamp instead.
        let room = Semaphore::MAX_PERMITS.saturating_sub(self.0.available_permits());
        self.0.add_permits((n as usize).min(room));
    }

    fn close(&self) {
        self.0.close();
    }
}

/// The read loop's view of one stream.
struct Slot {
    body: Option<mpsc::UnboundedSender<BodyEvent>>,
    received: u64,
    credited: Arc<AtomicU64>,
    window: Arc<SendWindow>,
    head: Option<oneshot::Sender<(ResponseHead, bool)>>,
    reset: Option<oneshot::Sender<ResetCode>>,
}

/// Open streams of one session, keyed by stream id. The mutex is held only
/// for map operations, never across an `.await`.
#[derive(Default)]
pub struct StreamTable {
    slots: Mutex<HashMap<u32, Slot>>,
}

/// Everything one side needs to run its half of a new stream.
pub struct StreamParts {
    /// The peer's body for this stream, as an `http_body::Body`.
    pub body: InboundBody,
    /// Credit for this side's DATA.
    pub window: Arc<SendWindow>,
    /// Resolves with the response head and whether it ends the stream (no
    /// body follows); only for streams opened with `want_head`.
    pub head: Option<oneshot::Receiver<(ResponseHead, bool)>>,
    /// Resolves when the peer resets the stream; fails (sender dropped)
    /// when the stream is removed or the session is lost.
    pub reset: oneshot::Receiver<ResetCode>,
    /// Removes the stream from the table when the last clone is dropped.
    pub guard: Arc<StreamGuard>,
}

/// Keeps a stream in its table; dropping the last clone removes it and
/// wakes any sender waiting for credit, so no task outlives its stream.
pub struct StreamGuard {
    table: Arc<StreamTable>,
    out: Outbound,
    id: u32,
}

impl Drop for StreamGuard {
    /// If the peer was still sending (no END yet), tells it to stop:
    /// otherwise it would wait forever for credit nobody will return.
    fn drop(&mut self) {
        if self.table.remove(self.id) {
            self.out.control(&Frame::Reset {
                stream: self.id,
                code: ResetCode::Cancel,
                message: String::new(),
            });
        }
    }
}

impl StreamTable {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Slot>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every critical section is a single map operation), so poisoning
        // carries no information here.
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
        let (tx, rx) = mpsc::unbounded_channel();
        let credited = Arc::new(AtomicU64::new(u64::from(INITIAL_WINDOW)));
        let window = Arc::new(SendWindow::new());
        let (reset_tx, reset_rx) = oneshot::channel();
        let (head_tx, head_rx) = if want_head {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        {
            let mut slots = self.lock();
            if slots.len() >= MAX_STREAMS {
                return Err(StreamError::TooManyStreams);
            }
            if slots.contains_key(&id) {
                return Err(StreamError::Reset(ResetCode::Protocol));
            }
            slots.insert(
                id,
                Slot {
                    body: Some(tx),
                    received: 0,
                    credited: credited.clone(),
                    window: window.clone(),
                    head: head_tx,
                    reset: Some(reset_tx),
                },
            );
        }
        Ok(StreamParts {
            body: InboundBody {
                rx,
                stream: id,
                out: out.clone(),
                credited,
                unacked: 0,
                state: BodyState::Open,
                reset_on_drop,
                pending: None,
                remaining: None,
                window: window.clone(),
            },
            window,
            head: head_rx,
            reset: reset_rx,
            guard: Arc::new(StreamGuard {
                table: self.clone(),
                out: out.clone(),
                id,
            }),
        })
    }

    /// Removes stream `id`; `true` if the peer's body was still open.
    fn remove(&self, id: u32) -> bool {
        match self.lock().remove(&id) {
            Some(slot) => {
                slot.window.close();
                slot.body.is_some()
            }
            None => false,
        }
    }

    /// Routes one incoming stream frame. Returns the reset to send back
    /// when the peer broke flow control; frames for unknown streams (late
    /// DATA after a reset) are dropped.
    pub fn dispatch(&self, frame: Frame) -> Result<(), (u32, ResetCode)> {
        let mut slots = self.lock();
        match frame {
            Frame::Data { stream, data } => {
                let Some(slot) = slots.get_mut(&stream) else {
                    return Ok(());
                };
                slot.received += data.len() as u64;
                if slot.received > slot.credited.load(Ordering::Acquire) {
                    if let Some(s) = slot.remove_body() {
                        let _ = s.send(BodyEvent::Reset(ResetCode::FlowControl));
                    }
                    slot.window.close();
                    return Err((stream, ResetCode::FlowControl));
                }
                if let Some(tx) = &slot.body {
                    let _ = tx.send(BodyEvent::Data(data));
                }
            }
            Frame::End { stream } => {
                if let Some(tx) = slots.get_mut(&stream).and_then(Slot::remove_body) {
                    let _ = tx.send(BodyEvent::End);
                }
            }
            Frame::Reset { stream, code, .. } => {
                if let Some(slot) = slots.get_mut(&stream) {
                    if let Some(tx) = slot.remove_body() {
                        let _ = tx.send(BodyEvent::Reset(code));
                    }
                    slot.head = None;
                    if let Some(tx) = slot.reset.take() {
                        let _ = tx.send(code);
                    }
                    slot.window.close();
                }
            }
            Frame::Credit { stream, bytes } => {
                if let Some(slot) = slots.get(&stream) {
                    slot.window.grant(bytes);
                }
            }
            Frame::ResponseHead { stream, head, body } => {
                if let Some(slot) = slots.get_mut(&stream) {
                    let end_stream = matches!(body, Payload::Empty);
                    slot.deliver(body);
                    match slot.head.take() {
                        Some(tx) => {
                            let _ = tx.send((head, end_stream));
                        }
                        None => return Err((stream, ResetCode::Protocol)),
                    }
                }
            }
            Frame::RequestHead { stream, .. } => return Err((stream, ResetCode::Protocol)),
            Frame::Ping { .. } | Frame::Pong { .. } => {}
        }
        Ok(())
    }

    /// Queues the body a request head carried (inline or empty) for stream
    /// `id`, which the caller has just opened.
    pub fn deliver(&self, id: u32, body: Payload) {
        if let Some(slot) = self.lock().get_mut(&id) {
            slot.deliver(body);
        }
    }

    /// Fails every open stream: the session is gone.
    pub fn close_all(&self) {
        for (_, mut slot) in self.lock().drain() {
            slot.window.close();
            // Dropping the senders makes bodies fail with SessionClosed and
            // head receivers fail with RecvError.
            slot.body = None;
            slot.head = None;
            slot.reset = None;
        }
    }
}

impl Slot {
    fn remove_body(&mut self) -> Option<mpsc::UnboundedSender<BodyEvent>> {
        self.body.take()
    }

    /// Queues a head's non-streamed body: an inline body as one DATA, then
    /// END; an empty one as END.
    fn deliver(&mut self, body: Payload) {
        let data = match body {
            Payload::Streamed => return,
            Payload::Empty => None,
            Payload::Inline(data) => Some(data),
        };
        if let Some(tx) = self.remove_body() {
            if let Some(data) = data {
                self.received += data.len() as u64;
                let _ = tx.send(BodyEvent::Data(data));
            }
            let _ = tx.send(BodyEvent::End);
        }
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
    rx: mpsc::UnboundedReceiver<BodyEvent>,
    stream: u32,
    out: Outbound,
    credited: Arc<AtomicU64>,
    unacked: u32,
    state: BodyState,
    reset_on_drop: bool,
    /// An event read ahead while looking for END.
    pending: Option<BodyEvent>,
    /// Bytes still due when the head declared a Content-Length.
    remaining: Option<u64>,
    /// This side's credit on the same stream, closed when the body is
    /// dropped unfinished.
    window: Arc<SendWindow>,
}

impl InboundBody {
    fn consumed(&mut self, n: usize) {
        self.unacked = self.unacked.saturating_add(n as u32);
        if self.unacked >= CREDIT_BATCH {
            let bytes = std::mem::take(&mut self.unacked);
            self.credited.fetch_add(u64::from(bytes), Ordering::AcqRel);
            self.out.control(&Frame::Credit {
                stream: self.stream,
                bytes,
            });
        }
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

    /// Takes the END (or reset) that is already queued, for a head that
    /// said no body follows; afterwards dropping the body resets nothing.
    /// Returns the reset code if the stream failed instead.
    pub fn finish_empty(&mut self) -> Option<ResetCode> {
        match self.rx.try_recv() {
            Ok(BodyEvent::End) => {
                self.state = BodyState::Ended;
                None
            }
            Ok(BodyEvent::Reset(code)) => {
                self.state = BodyState::Failed;
                Some(code)
            }
            Ok(BodyEvent::Data(_)) | Err(_) => {
                self.state = BodyState::Failed;
                Some(ResetCode::Protocol)
            }
        }
    }

    /// The failure already queued for this body, if any: why a stream
    /// ended before its response head arrived. `SessionClosed` when the
    /// session went away.
    pub fn pending_error(&mut self) -> Option<StreamError> {
        match self.rx.try_recv() {
            Ok(BodyEvent::Reset(code)) => {
                self.state = BodyState::Failed;
                Some(StreamError::Reset(code))
            }
            Err(mpsc::error::TryRecvError::Disconnected) => {
                self.state = BodyState::Failed;
                Some(StreamError::SessionClosed)
            }
            _ => None,
        }
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
        let event = match self.pending.take() {
            Some(ev) => Poll::Ready(Some(ev)),
            None => self.rx.poll_recv(cx),
        };
        match event {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(BodyEvent::Data(data))) => {
                self.consumed(data.len());
                if let Some(left) = &mut self.remaining {
                    *left = left.saturating_sub(data.len() as u64);
                    if *left == 0 {
                        self.state = BodyState::Ended;
                    }
                }
                // Senders queue END right behind the last DATA; noticing it
                // now lets `is_end_stream` turn true with the last chunk, so
                // hyper (which stops polling at Content-Length) drops a
                // finished body rather than a seemingly open one.
                if let Ok(next) = self.rx.try_recv() {
                    self.pending = Some(next);
                    if matches!(self.pending, Some(BodyEvent::End)) {
                        self.pending = None;
                        self.state = BodyState::Ended;
                    }
                }
                Poll::Ready(Some(Ok(BodyFrame::data(data))))
            }
            Poll::Ready(Some(BodyEvent::End)) => {
                self.state = BodyState::Ended;
                Poll::Ready(None)
            }
            Poll::Ready(Some(BodyEvent::Reset(code))) => {
                self.state = BodyState::Failed;
                Poll::Ready(Some(Err(StreamError::Reset(code))))
            }
            Poll::Ready(None) => {
                self.state = BodyState::Failed;
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
        if self.state == BodyState::Open && self.reset_on_drop {
            self.out.control(&Frame::Reset {
                stream: self.stream,
                code: ResetCode::Cancel,
                message: String::new(),
            });
            // The stream is over for this side too: wake a sender of ours
            // that waits for credit on it.
            self.window.close();
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

    /// Reads what a sender can put in or right behind its head frame.
    ///
    /// With a declared length (Content-Length) that fits one frame, waits
    /// for the whole body, which then rides in the head frame. Otherwise
    /// takes what is ready, yields once, and takes again: hyper's HTTP/1
    /// connection task hands over one chunk at a time, so the end of a
    /// short chunked body that arrived with its head shows up one scheduler
    /// turn later, and the whole body can still go in one frame.
    pub async fn read(mut body: B) -> Result<Self, B::Error> {
        let small = body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= MAX_DATA_PAYLOAD as u64);
        if !small {
            let mut me = Self::take(body)?;
            if !me.complete {
                tokio::task::yield_now().await;
                me.fill()?;
            }
            return Ok(me);
        }
        let mut ready = std::collections::VecDeque::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                ready.push_back(data);
            }
        }
        Ok(Self {
            ready,
            rest: body,
            complete: true,
        })
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
                out.control(&Frame::Reset {
                    stream,
                    code: on_error,
                    message: e.to_string(),
                });
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
            match decode(rx.recv().await.expect("frame")) {
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
            decode(rx.recv().await.expect("frame")),
            Frame::Data {
                stream: 3,
                data: Bytes::from(vec![1u8; 10])
            }
        );
        assert_eq!(
            decode(rx.recv().await.expect("frame")),
            Frame::End { stream: 3 }
        );
        sender.await.expect("joins").expect("sent");
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
