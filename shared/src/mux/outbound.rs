//! The session's write side: the queues every stream's frames go through
//! and the one writer that moves them to the WebSocket.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use super::{StreamError, CONTROL_QUEUE_FRAMES, DATA_QUEUE_FRAMES};
use crate::frame::{Frame, ResetCode};

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

/// State the producers and the writer share besides the data queue.
struct Shared {
    /// The control queue. Not a channel: its producers never wait, and a
    /// tokio channel allocates a block of 32 slots and its own shared
    /// state up front (about 1.7 KiB, per session, idle or not), where an
    /// idle session's control traffic is one coalesced PONG at a time.
    control: Mutex<VecDeque<Bytes>>,
    /// Woken when a control frame is queued (a stored permit if the
    /// writer is not waiting yet, so none is missed).
    control_ready: Notify,
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
    /// When the session's queues were made.
    epoch: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        // +1 so that 0 keeps meaning "idle".
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// Producer side of a session's write queues. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    data: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
}

/// Consumer side, owned by the session's writer task.
pub struct OutboundRx {
    data: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
}

/// A new pair of queues for one session.
pub fn outbound() -> (Outbound, OutboundRx) {
    let (data, data_rx) = mpsc::channel(DATA_QUEUE_FRAMES);
    let shared = Arc::new(Shared {
        control: Mutex::new(VecDeque::new()),
        control_ready: Notify::new(),
        pong: Mutex::new(None),
        overflow: AtomicBool::new(false),
        busy_since: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    (
        Outbound {
            data,
            shared: shared.clone(),
        },
        OutboundRx {
            data: data_rx,
            shared,
        },
    )
}

/// Control slots a session keeps allocated when its control queue empties;
/// a larger queue left by a burst is freed.
const CONTROL_KEEP: usize = 16;

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
        if self.data.is_closed() {
            return;
        }
        let mut q = lock(&self.shared.control);
        if q.len() >= CONTROL_QUEUE_FRAMES {
            drop(q);
            self.shared.overflow.store(true, Ordering::Release);
            return;
        }
        q.push_back(bytes);
        drop(q);
        self.shared.control_ready.notify_one();
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
    pub(super) async fn recv(&mut self) -> Result<Option<Bytes>, Overflowed> {
        let frame = loop {
            if let Some(b) = self.pop_control() {
                break Some(b);
            }
            tokio::select! {
                biased;
                () = self.shared.control_ready.notified() => continue,
                b = self.data.recv() => break b,
            }
        };
        if self.shared.overflow.load(Ordering::Acquire) {
            return Err(Overflowed);
        }
        Ok(frame.map(|b| self.expand(b)))
    }

    /// A frame that is ready now, if any; lets the writer batch many frames
    /// into one socket write.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        let b = match self.pop_control() {
            Some(b) => b,
            None => self.data.try_recv().ok()?,
        };
        Some(self.expand(b))
    }

    fn pop_control(&mut self) -> Option<Bytes> {
        let mut q = lock(&self.shared.control);
        let b = q.pop_front();
        if q.is_empty() && q.capacity() > CONTROL_KEEP {
            // After a burst of CREDITs: an idle session keeps a few slots.
            *q = VecDeque::new();
        }
        b
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
pub(super) struct Overflowed;

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
