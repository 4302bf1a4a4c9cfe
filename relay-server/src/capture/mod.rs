//! Capture: every exchange on a tunnel's URL, recorded whatever its
//! outcome, for `relay requests`, `relay replay` and the inspector.
//!
//! The proxy feeds a [`Tap`] the forwarded request head, the chunks of both
//! bodies as they stream past (reference-counted slices up to
//! `--capture-limit`, never a copy of a whole body), the response head and
//! the outcome. When the exchange ends the tap hands one [`NewCapture`] to
//! [`Capture`], whose bounded queue feeds a writer thread that inserts in
//! batches, one transaction each, and then publishes the new summaries to
//! live listeners. A delivered exchange never waits for the disk: when the
//! queue is full its capture is dropped, counted and logged.
//!
//! Two things do wait for a commit (SPEC "Guarantees"):
//! - a request answered without the local app (offline, too large, busy)
//!   is [`Capture::commit`]ted before its answer goes out, and such
//!   batches are synced to disk (`synchronous = FULL`), so a visitor that
//!   got an answer can count on the request being kept;
//! - a read of the API first [`Capture::flush`]es: every capture queued
//!   before it is stored, and a capture is queued before its visitor has
//!   the last byte, so a script sees the request it just sent.
//!
//! What a crash can lose is what waits in the queue: the delivered
//! exchanges of the last gathering window (`GATHER`; up to `COALESCE_MAX` under heavy
//! traffic), whose visitors have their answers.
//!
//! Parts: this file (settings, the queue, [`Capture`]); `writer.rs` (the
//! batching writer thread); `tap.rs` (the per-exchange [`Tap`] and the
//! tunnel's [`TapBudget`]).

pub mod remote;
mod tap;
mod writer;

use writer::write_loop;

pub use relay_shared::api::Outcome;
pub use tap::{Tap, TapBudget, TAP_BUDGET};

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use relay_shared::api::Summary;
use tokio::sync::{broadcast, oneshot};
use tracing::warn;

use crate::store::{self, NewCapture, NewMessage};

/// Captures waiting for the writer, at most. Enough for a burst of
/// several thousand requests while a checkpoint writes the WAL back.
pub const QUEUE_ENTRIES: usize = 4096;
/// Body bytes waiting for the writer, at most; bounds the memory capture
/// can hold when large bodies arrive faster than the disk takes them.
pub const QUEUE_BYTES: usize = 16 << 20;
/// How often the writer drains the queue; also how long a capture waits
/// before listeners see it when traffic is light.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);
/// Captures per [`GATHER`] (about 3k requests/s) that count as heavy
/// traffic: the next write waits [`COALESCE`], so a busy tunnel writes
/// only what retention keeps instead of a row per request.
const HEAVY_PER_GATHER: u64 = 64;
/// Bytes gathered that trigger a write before [`COALESCE`] is up: bounds
/// what coalescing holds when bodies are large. It must hold `--retain`
/// (1000) typical webhooks (2–3 KiB with heads), or coalescing never gets
/// to drop what retention would delete.
const PENDING_BYTES: usize = 4 << 20;
/// How long captures gather under heavy traffic before they are written;
/// the wait doubles while the traffic stays heavy, up to [`COALESCE_MAX`].
/// Each write under a flood replaces the whole retention window (1000 rows
/// by default), so the longer wait saves the server that many inserts and
/// deletes per second; captures then reach the API up to that much later.
const COALESCE: std::time::Duration = std::time::Duration::from_secs(1);
const COALESCE_MAX: std::time::Duration = std::time::Duration::from_secs(4);
/// Live events buffered per listener before a slow one skips some.
const EVENTS_BUFFER: usize = 1024;

/// What `--capture`, `--capture-limit` and `--retain` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureConfig {
    pub enabled: bool,
    /// Bytes kept of each body; the rest is counted and marked truncated.
    pub limit: usize,
    /// Captures kept per tunnel; older ones are deleted.
    pub retain: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            limit: 1 << 20,
            retain: 1000,
        }
    }
}

/// A capture for the writer, with an optional reply for callers that must
/// know it is stored.
struct Job {
    request: NewCapture,
    bytes: usize,
    stored: Option<oneshot::Sender<anyhow::Result<()>>>,
    /// Committed and synced before the caller answers: never retired by
    /// coalescing.
    durable: bool,
    /// Arrival order, set by the writer.
    order: u64,
}

/// What the writer's queue carries.
enum Work {
    Capture(Box<Job>),
    /// Answer once everything queued before is written.
    Flush(oneshot::Sender<()>),
}

/// State the writer thread shares with the data path.
struct Shared {
    queued_bytes: AtomicUsize,
    dropped: AtomicU64,
    /// Missed requests deleted by retention before they were delivered.
    missed_dropped: AtomicU64,
    events: broadcast::Sender<Arc<Summary>>,
    /// The store announces commits to every node (PostgreSQL): live
    /// listeners are fed from those announcements ([`remote`]), not by
    /// the writer, so a node's own captures are not shown twice.
    announced: bool,
}

/// The capture sink: a bounded queue to one writer thread.
pub struct Capture {
    config: CaptureConfig,
    /// Boxed jobs: the channel allocates all its slots up front, and a
    /// pointer per slot keeps that small.
    tx: Mutex<Option<SyncSender<Work>>>,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The writer, to wake from its gathering sleep when someone waits.
    writer_thread: Option<std::thread::Thread>,
    /// Body bytes of commits in flight, in KiB: they wait for room rather
    /// than be dropped, and this bounds what they hold.
    commit_room: tokio::sync::Semaphore,
}

impl Capture {
    /// Starts the writer on its own connection to `store`'s database.
    pub fn start(config: CaptureConfig, store: &store::Store) -> anyhow::Result<Arc<Self>> {
        let (events, _) = broadcast::channel(EVENTS_BUFFER);
        let shared = Arc::new(Shared {
            queued_bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            missed_dropped: AtomicU64::new(0),
            events,
            announced: store.postgres().is_some(),
        });
        let (tx, writer) = if config.enabled {
            let conn = store.capture_writer()?;
            let (tx, rx) = sync_channel(QUEUE_ENTRIES);
            let s = shared.clone();
            let retain = config.retain;
            let handle = std::thread::Builder::new()
                .name("capture-writer".into())
                .spawn(move || write_loop(conn, rx, &s, retain))?;
            (Some(tx), Some(handle))
        } else {
            (None, None)
        };
        let writer_thread = writer.as_ref().map(|h| h.thread().clone());
        Ok(Arc::new(Self {
            config,
            tx: Mutex::new(tx),
            shared,
            writer: Mutex::new(writer),
            writer_thread,
            commit_room: tokio::sync::Semaphore::new(QUEUE_BYTES >> 10),
        }))
    }

    pub fn config(&self) -> CaptureConfig {
        self.config
    }

    /// Captures lost because the queue was full or a write failed.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Missed requests retention deleted before they were delivered (a
    /// tunnel held more than `--retain` of them).
    pub fn missed_dropped(&self) -> u64 {
        self.shared.missed_dropped.load(Ordering::Relaxed)
    }

    /// New summaries as they are stored, for live listeners.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Summary>> {
        self.shared.events.subscribe()
    }

    /// Whether any live listener is subscribed.
    pub fn has_listeners(&self) -> bool {
        self.shared.events.receiver_count() > 0
    }

    /// Shows `summary` to live listeners: a capture the store announced.
    pub fn publish(&self, summary: Summary) {
        let _ = self.shared.events.send(Arc::new(summary));
    }

    fn sender(&self) -> Option<SyncSender<Work>> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Queues a capture without waiting; a full queue drops it (counted).
    fn submit(&self, request: NewCapture) {
        let Some(tx) = self.sender() else {
            // An exchange that outlived shutdown's grace period.
            self.shared.lost(1, "capture writer already stopped");
            return;
        };
        let bytes = held_bytes(&request);
        let queued = self.shared.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        // One capture larger than the budget is still taken when the queue
        // is empty, so a high --capture-limit does not drop every large body.
        if queued > 0 && queued + bytes > QUEUE_BYTES {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.shared.lost(1, "capture queue holds too many bytes");
            return;
        }
        let job = Job {
            request,
            bytes,
            stored: None,
            durable: false,
            order: 0,
        };
        if let Err(e) = tx.try_send(Work::Capture(Box::new(job))) {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            match e {
                TrySendError::Full(_) => self.shared.lost(1, "capture queue full"),
                TrySendError::Disconnected(_) => self.shared.lost(1, "capture writer stopped"),
            }
        }
    }

    /// Stores `request` and waits until it is committed and synced: for
    /// requests answered without the local app, whose answer must not go
    /// out before they are kept, and for replays the caller reads back at
    /// once. Waits for room in the queue rather than dropping.
    pub async fn commit(&self, request: NewCapture) -> anyhow::Result<()> {
        let tx = self
            .sender()
            .ok_or_else(|| anyhow::anyhow!("capture is off on this server"))?;
        let bytes = held_bytes(&request);
        let kib = u32::try_from((bytes >> 10) + 1)
            .unwrap_or(u32::MAX)
            .min((QUEUE_BYTES >> 10) as u32);
        let _room = self.commit_room.acquire_many(kib).await?;
        let (done, stored) = oneshot::channel();
        self.shared.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        let job = Job {
            request,
            bytes,
            stored: Some(done),
            durable: true,
            order: 0,
        };
        if !self.send_waiting(tx, Work::Capture(Box::new(job))).await {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            anyhow::bail!("capture writer stopped");
        }
        stored
            .await
            .map_err(|_| anyhow::anyhow!("capture writer stopped"))?
    }

    /// Waits until every capture queued before this call is stored (for
    /// reads that must see them). Returns at once when capture is off.
    pub async fn flush(&self) {
        let Some(tx) = self.sender() else { return };
        let (done, flushed) = oneshot::channel();
        if self.send_waiting(tx, Work::Flush(done)).await {
            let _ = flushed.await;
        }
    }

    /// Queues work someone waits for, waiting for room if the queue is
    /// full (off the runtime's threads), and wakes the writer so it does
    /// not finish its gathering sleep first.
    async fn send_waiting(&self, tx: SyncSender<Work>, work: Work) -> bool {
        let sent = match tx.try_send(work) {
            Ok(()) => true,
            Err(TrySendError::Disconnected(_)) => false,
            Err(TrySendError::Full(work)) => {
                tokio::task::spawn_blocking(move || tx.send(work).is_ok())
                    .await
                    .unwrap_or(false)
            }
        };
        if let Some(t) = &self.writer_thread {
            t.unpark();
        }
        sent
    }

    /// Stops taking captures and waits until the queued ones are stored.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                warn!("capture writer panicked");
            }
        }
    }
}

impl Shared {
    fn lost(&self, n: u64, why: &str) {
        let before = self.dropped.fetch_add(n, Ordering::Relaxed);
        // Every loss is counted (see /_relay/health); the log gets the first
        // and then one line per thousand so an overload cannot flood it.
        if before == 0 || (before + n) / 1000 > before / 1000 {
            warn!(
                lost = before + n,
                "{why}: request not captured (it was still forwarded)"
            );
        }
    }
}

/// What a queued capture holds in memory, roughly: bodies, heads, path.
fn held_bytes(r: &NewCapture) -> usize {
    let len = |m: &NewMessage| m.body.len() + m.headers.len();
    len(&r.request) + r.response.as_ref().map_or(0, len) + r.path.len() + r.id.len()
}

#[cfg(test)]
mod tests;
