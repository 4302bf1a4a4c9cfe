//! Capture: every exchange on a tunnel's URL, recorded whatever its
//! outcome, for `relay requests`, `relay replay` and the inspector.
//!
//! The proxy feeds a [`Tap`] the forwarded request head, the chunks of both
//! bodies as they stream past (reference-counted slices up to
//! `--capture-limit`, never a copy of a whole body), the response head and
//! the outcome. When the exchange ends the tap hands one [`NewRequest`] to
//! [`Capture`], whose bounded queue feeds a writer thread that inserts in
//! batches, one transaction each, and then publishes the new summaries to
//! live listeners. The data path never waits for the disk: when the queue
//! is full the capture is dropped, counted and logged.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use relay_shared::api::{encode_headers, Summary};
use relay_shared::http::content_length;
use rusqlite::Connection;
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, warn};

use crate::store::{self, NewMessage, NewRequest};

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
/// Most a body prefix reserves on a declared length before data arrives.
const RESERVE_MAX: usize = 64 << 10;
/// Body prefix bytes the exchanges in progress on one tunnel may hold
/// together. Each exchange may keep `--capture-limit` of each body while it
/// lasts, so visitors that stop reading large downloads would otherwise pin
/// that much each; past this budget, further bytes are not kept and the
/// capture says it was truncated. 32 full 1 MiB prefixes fit.
pub const TAP_BUDGET: usize = 32 << 20;

/// What the taps of one tunnel's exchanges in progress hold, against
/// [`TAP_BUDGET`]. Cheap to clone.
#[derive(Clone, Default)]
pub struct TapBudget(Arc<std::sync::atomic::AtomicUsize>);

impl TapBudget {
    /// Takes up to `want` bytes of the budget; returns how many it got.
    fn take(&self, want: usize) -> usize {
        use std::sync::atomic::Ordering;
        let mut got = 0;
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                got = want.min(TAP_BUDGET.saturating_sub(used));
                Some(used + got)
            });
        got
    }

    fn give(&self, n: usize) {
        self.0.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}
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

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// No tunnel has the name; not captured (there is no owner to show it to).
    NotFound,
    Offline,
    LocalUnreachable,
    LocalError,
    Timeout,
    ClientDisconnected,
    BodyTooLarge,
    TunnelBusy,
    /// The visitor went away before the response was complete.
    VisitorGone,
}

impl Outcome {
    /// The name in the API and the database (see `relay_shared::api::OUTCOMES`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::NotFound => "not_found",
            Self::Offline => "offline",
            Self::LocalUnreachable => "local_unreachable",
            Self::LocalError => "local_error",
            Self::Timeout => "timeout",
            Self::ClientDisconnected => "client_disconnected",
            Self::BodyTooLarge => "body_too_large",
            Self::TunnelBusy => "tunnel_busy",
            Self::VisitorGone => "visitor_gone",
        }
    }
}

/// A capture for the writer, with an optional reply for callers that must
/// know it is stored (replays recorded through the API).
struct Job {
    request: NewRequest,
    bytes: usize,
    stored: Option<oneshot::Sender<anyhow::Result<()>>>,
    /// Arrival order, set by the writer.
    order: u64,
}

/// State the writer thread shares with the data path.
struct Shared {
    queued_bytes: AtomicUsize,
    dropped: AtomicU64,
    events: broadcast::Sender<Arc<Summary>>,
}

/// The capture sink: a bounded queue to one writer thread.
pub struct Capture {
    config: CaptureConfig,
    /// Boxed jobs: the channel allocates all its slots up front, and a
    /// pointer per slot keeps that small.
    tx: Mutex<Option<SyncSender<Box<Job>>>>,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Capture {
    /// Starts the writer on its own connection to the database in `dir`.
    pub fn start(config: CaptureConfig, dir: &std::path::Path) -> anyhow::Result<Arc<Self>> {
        let (events, _) = broadcast::channel(EVENTS_BUFFER);
        let shared = Arc::new(Shared {
            queued_bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            events,
        });
        let (tx, writer) = if config.enabled {
            let conn = store::connect(dir)?;
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
        Ok(Arc::new(Self {
            config,
            tx: Mutex::new(tx),
            shared,
            writer: Mutex::new(writer),
        }))
    }

    pub fn config(&self) -> CaptureConfig {
        self.config
    }

    /// Captures lost because the queue was full or a write failed.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// New summaries as they are stored, for live listeners.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Summary>> {
        self.shared.events.subscribe()
    }

    fn sender(&self) -> Option<SyncSender<Box<Job>>> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Queues a capture without waiting; a full queue drops it (counted).
    fn submit(&self, request: NewRequest) {
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
            order: 0,
        };
        if let Err(e) = tx.try_send(Box::new(job)) {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            match e {
                TrySendError::Full(_) => self.shared.lost(1, "capture queue full"),
                TrySendError::Disconnected(_) => self.shared.lost(1, "capture writer stopped"),
            }
        }
    }

    /// Stores `request` and waits until it is committed (for entries the
    /// caller reads back at once: replays recorded through the API).
    pub async fn store(&self, request: NewRequest) -> anyhow::Result<()> {
        let tx = self
            .sender()
            .ok_or_else(|| anyhow::anyhow!("capture is off on this server"))?;
        let (done, stored) = oneshot::channel();
        let bytes = held_bytes(&request);
        self.shared.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        let job = Job {
            request,
            bytes,
            stored: Some(done),
            order: 0,
        };
        // Waiting for room is fine here: this is an API call, not the data path.
        let sent = tokio::task::spawn_blocking(move || tx.send(Box::new(job)).is_ok()).await?;
        if !sent {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            anyhow::bail!("capture writer stopped");
        }
        stored.await?
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
fn held_bytes(r: &NewRequest) -> usize {
    let len = |m: &NewMessage| m.body.len() + m.headers.len();
    len(&r.request) + r.response.as_ref().map_or(0, len) + r.path.len() + r.id.len()
}

/// The writer thread. It drains the queue every [`GATHER`] into per-tunnel
/// buffers of at most `retain` entries, and writes them in one transaction
/// once they are due: at once when traffic is light, after [`COALESCE`]
/// (growing to [`COALESCE_MAX`]) while it is heavy. A buffer never holds
/// more than `retain` entries of a tunnel, because older ones would be
/// deleted by retention in the same transaction anyway; under load that saves most of the disk
/// work while what the API shows stays the same. Ends when every sender is
/// gone and the queue is drained.
fn write_loop(mut conn: Connection, rx: Receiver<Box<Job>>, shared: &Shared, retain: u32) {
    // Rows per tunnel in the table, so trimming runs only when a tunnel is
    // over `retain` and deletes exactly the overflow.
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut pending = Pending::new(retain as usize);
    let mut delay = std::time::Duration::ZERO;
    let mut open = true;
    while open {
        if pending.is_empty() {
            match rx.try_recv() {
                Ok(job) => pending.push(*job),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => match rx.recv() {
                    Ok(job) => {
                        // Traffic stopped: the first capture after a pause
                        // is shown without the heavy-traffic delay.
                        delay = std::time::Duration::ZERO;
                        pending.push(*job);
                    }
                    Err(_) => break,
                },
            }
        }
        let started = Instant::now();
        let due = started + delay;
        loop {
            // While the writer sleeps, senders find no one to wake: a busy
            // tunnel pays no wake-up per request.
            std::thread::sleep(GATHER);
            loop {
                match rx.try_recv() {
                    Ok(job) => pending.push(*job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            shared
                .queued_bytes
                .fetch_sub(pending.take_released(), Ordering::Relaxed);
            if !open
                || Instant::now() >= due
                || pending.bytes >= PENDING_BYTES
                || pending.waiting > 0
            {
                break;
            }
        }
        let windows = (started.elapsed().as_millis() / GATHER.as_millis()).max(1) as u64;
        let batch = pending.take();
        delay = if batch.arrived >= HEAVY_PER_GATHER * windows {
            (delay * 2).clamp(COALESCE, COALESCE_MAX)
        } else {
            std::time::Duration::ZERO
        };
        let result = write_batch(&mut conn, &batch.jobs, &mut counts, retain);
        // Counted until written, so the bound covers the batch in flight.
        shared
            .queued_bytes
            .fetch_sub(batch.bytes, Ordering::Relaxed);
        if let Err(e) = &result {
            warn!(error = %e, "writing captures failed");
            // The counts may be off after a rollback; recount lazily.
            counts.clear();
            let unacknowledged = batch.jobs.iter().filter(|j| j.stored.is_none()).count();
            shared.lost(unacknowledged as u64, "capture write failed");
        }
        let listening = shared.events.receiver_count() > 0;
        for job in batch.jobs {
            if let Some(done) = job.stored {
                let _ = done.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(anyhow::anyhow!("storing the capture failed: {e}")),
                });
            }
            if result.is_ok() && listening {
                let _ = shared.events.send(Arc::new(job.request.summary()));
            }
        }
    }
    debug!("capture writer stopped");
}

/// Captures drained from the queue and not yet written.
struct Pending {
    retain: usize,
    tunnels: HashMap<String, VecDeque<Job>>,
    /// Arrival order across tunnels, so rows are written oldest first.
    order: u64,
    /// Body bytes of the entries held.
    bytes: usize,
    /// Body bytes of superseded entries not yet given back to the queue's
    /// byte count.
    released: usize,
    /// Jobs whose caller waits for the commit.
    waiting: usize,
    /// Captures received since the last write, retired ones included: the
    /// traffic rate, which decides how long the next write waits.
    arrived: u64,
}

struct Batch {
    jobs: Vec<Job>,
    bytes: usize,
    arrived: u64,
}

impl Pending {
    fn new(retain: usize) -> Self {
        Self {
            retain,
            tunnels: HashMap::new(),
            order: 0,
            bytes: 0,
            released: 0,
            waiting: 0,
            arrived: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.tunnels.is_empty()
    }

    fn push(&mut self, mut job: Job) {
        self.order += 1;
        self.arrived += 1;
        job.order = self.order;
        self.bytes += job.bytes;
        self.waiting += usize::from(job.stored.is_some());
        // Looked up before inserting: the key is cloned only for a new
        // tunnel, not for every capture.
        let queue = match self.tunnels.get_mut(&job.request.tunnel) {
            Some(q) => q,
            None => self.tunnels.entry(job.request.tunnel.clone()).or_default(),
        };
        queue.push_back(job);
        if queue.len() > self.retain {
            // Retention would delete it in the same transaction: it counts
            // as stored and retired.
            if let Some(old) = queue.pop_front() {
                self.bytes -= old.bytes;
                self.released += old.bytes;
                if let Some(done) = old.stored {
                    self.waiting -= 1;
                    let _ = done.send(Ok(()));
                }
            }
        }
    }

    /// Bytes of entries superseded since the last call.
    fn take_released(&mut self) -> usize {
        std::mem::take(&mut self.released)
    }

    /// Everything pending, oldest first, with its body bytes.
    fn take(&mut self) -> Batch {
        let mut jobs: Vec<Job> = self.tunnels.drain().flat_map(|(_, q)| q).collect();
        jobs.sort_unstable_by_key(|j| j.order);
        let bytes = std::mem::take(&mut self.bytes);
        self.waiting = 0;
        Batch {
            jobs,
            bytes,
            arrived: std::mem::take(&mut self.arrived),
        }
    }
}

fn write_batch(
    conn: &mut Connection,
    batch: &[Job],
    counts: &mut HashMap<String, u64>,
    retain: u32,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for job in batch {
        store::insert_request(&tx, &job.request)?;
        let tunnel = &job.request.tunnel;
        if let Some(c) = counts.get_mut(tunnel) {
            *c += 1;
        } else {
            // First sight of the tunnel: the count includes this row.
            counts.insert(tunnel.clone(), store::count_requests(&tx, tunnel)?);
        }
    }
    for (tunnel, count) in counts.iter_mut() {
        if *count > u64::from(retain) {
            store::delete_oldest(&tx, tunnel, *count - u64::from(retain))?;
            *count = u64::from(retain);
        }
    }
    tx.commit()
}

/// One exchange in progress, shared by the task pumping the request body
/// and the one pumping the response body; the lock is uncontended in
/// practice and held only to append.
#[derive(Clone)]
pub struct Tap(Arc<Mutex<Record>>);

/// Bytes seen of one body and the prefix kept of it. The prefix is a copy:
/// a slice would pin the whole read buffer it came from for as long as
/// the capture waits to be written.
#[derive(Default)]
struct BodyTap {
    /// The head in the store's form, encoded once when it passes.
    headers: Vec<u8>,
    /// Content-Length, if the head declared one.
    declared: Option<u64>,
    kept: Vec<u8>,
    /// Bytes of the tunnel's [`TapBudget`] this prefix holds.
    charged: usize,
    seen: u64,
    complete: bool,
}

impl BodyTap {
    fn head(&mut self, headers: &HeaderMap) {
        self.headers = encode_headers(headers);
        self.declared = content_length(headers);
    }

    fn push(&mut self, chunk: &[u8], limit: usize, budget: Option<&TapBudget>) {
        self.seen += chunk.len() as u64;
        let mut room = limit.saturating_sub(self.kept.len());
        if let Some(budget) = budget.filter(|_| room > 0) {
            let need = self.kept.len() + chunk.len().min(room);
            if need > self.charged {
                // Charged ahead in doublings (as the Vec grows), so the
                // budget is not touched for every chunk.
                let target = need.max((2 * self.charged).min(limit));
                self.charged += budget.take(target - self.charged);
                room = room.min(self.charged - self.kept.len());
                if self.kept.capacity() < self.charged {
                    self.kept.reserve_exact(self.charged - self.kept.len());
                }
            }
        }
        if room > 0 {
            if self.kept.is_empty() {
                // One allocation for a small prefix whose length is known; a
                // large one grows with the data that really arrives.
                let expect = self.declared.unwrap_or(0).min(RESERVE_MAX as u64) as usize;
                self.kept.reserve_exact(expect.max(chunk.len().min(room)));
            }
            self.kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
    }

    /// Gives this prefix's bytes back to the budget: it is leaving the
    /// exchange (into the capture queue, which has its own bound) or dropped.
    fn release(&mut self, budget: Option<&TapBudget>) {
        if let Some(b) = budget {
            b.give(std::mem::take(&mut self.charged));
        }
    }

    fn message(&mut self) -> NewMessage {
        let size = if self.complete {
            self.seen
        } else {
            self.seen.max(self.declared.unwrap_or(0))
        };
        NewMessage {
            headers: std::mem::take(&mut self.headers),
            truncated: (self.kept.len() as u64) < size || !self.complete,
            body: std::mem::take(&mut self.kept),
            size,
        }
    }
}

struct Record {
    sink: Option<Arc<Capture>>,
    /// The tunnel's budget for prefixes in progress; `None` for exchanges
    /// that are short by construction (offline answers).
    budget: Option<TapBudget>,
    limit: usize,
    id: String,
    tunnel: String,
    method: Method,
    target: String,
    time_ms: i64,
    started: Instant,
    request: BodyTap,
    /// When the visitor's body ended: the proxy's request timeout counts
    /// the app's time to answer from here, not from the request's start.
    request_ended: Option<tokio::time::Instant>,
    status: Option<StatusCode>,
    response: BodyTap,
    finished: bool,
}

impl Tap {
    /// A tap for one exchange; with `sink` `None` (capture off) it only
    /// times the exchange and logs its outcome.
    pub fn new(
        sink: Option<&Arc<Capture>>,
        id: &str,
        tunnel: &str,
        method: &Method,
        target: &str,
    ) -> Self {
        let sink = sink.filter(|c| c.config.enabled).cloned();
        let limit = sink.as_ref().map_or(0, |c| c.config.limit);
        Self(Arc::new(Mutex::new(Record {
            sink,
            budget: None,
            limit,
            id: id.to_owned(),
            tunnel: tunnel.to_owned(),
            method: method.clone(),
            target: target.to_owned(),
            time_ms: store::now_ms(),
            started: Instant::now(),
            request: BodyTap::default(),
            request_ended: None,
            status: None,
            response: BodyTap::default(),
            finished: false,
        })))
    }

    /// Counts the prefixes this exchange keeps against its tunnel's budget.
    pub fn with_budget(self, budget: &TapBudget) -> Self {
        self.lock().budget = Some(budget.clone());
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether bodies are being kept: callers skip work for a tap that
    /// would throw it away.
    pub fn capturing(&self) -> bool {
        self.lock().sink.is_some()
    }

    /// The request head as forwarded to the local app (what a replay sends).
    pub fn request_head(&self, headers: &HeaderMap) {
        let mut r = self.lock();
        if r.sink.is_some() {
            r.request.head(headers);
        }
    }

    pub fn request_chunk(&self, chunk: &[u8]) {
        let mut r = self.lock();
        let limit = r.limit;
        let r = &mut *r;
        r.request.push(chunk, limit, r.budget.as_ref());
    }

    /// The visitor's body has been read to its end.
    pub fn request_complete(&self) {
        let mut r = self.lock();
        r.request.complete = true;
        r.request_ended
            .get_or_insert_with(tokio::time::Instant::now);
    }

    /// How far the visitor's body has come: bytes so far, and when it
    /// ended, if it has. The tap already counts both for the record, so
    /// the proxy's timeout reads them here rather than counting again.
    pub fn request_progress(&self) -> (u64, Option<tokio::time::Instant>) {
        let r = self.lock();
        (r.request.seen, r.request_ended)
    }

    /// The response head as sent to the visitor.
    pub fn response_head(&self, status: StatusCode, headers: &HeaderMap) {
        let mut r = self.lock();
        r.status = Some(status);
        if r.sink.is_some() {
            r.response.head(headers);
        }
    }

    pub fn response_chunk(&self, chunk: &[u8]) {
        let mut r = self.lock();
        let limit = r.limit;
        let r = &mut *r;
        r.response.push(chunk, limit, r.budget.as_ref());
    }

    /// A response the server wrote itself (the JSON errors), in full.
    pub fn public_response(&self, status: StatusCode, headers: &HeaderMap, body: &Bytes) {
        // Replaces whatever part of a local response arrived before.
        {
            let mut r = self.lock();
            let r = &mut *r;
            r.response.release(r.budget.as_ref());
            r.response = BodyTap::default();
        }
        self.response_head(status, headers);
        let mut r = self.lock();
        let limit = r.limit;
        let r = &mut *r;
        r.response.push(body, limit, r.budget.as_ref());
        r.response.complete = true;
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.lock().started.elapsed()
    }

    /// Records the exchange. The first call counts; later ones (a body
    /// dropped after it already finished) are ignored.
    pub fn finish(&self, outcome: Outcome) {
        self.lock().finish(outcome);
    }
}

impl Record {
    fn finish(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        if outcome == Outcome::Delivered {
            self.response.complete = true;
        }
        let duration_ms = self.started.elapsed().as_millis() as u64;
        debug!(
            id = %self.id,
            tunnel = %self.tunnel,
            method = %self.method,
            target = %self.target,
            status = self.status.map(|s| s.as_u16()),
            request_bytes = self.request.seen,
            response_bytes = self.response.seen,
            duration_ms,
            outcome = outcome.as_str(),
            "exchange"
        );
        let Some(sink) = self.sink.take() else { return };
        if outcome == Outcome::NotFound {
            return;
        }
        self.request.release(self.budget.as_ref());
        self.response.release(self.budget.as_ref());
        let request = self.request.message();
        let response = self.status.map(|_| self.response.message());
        sink.submit(NewRequest {
            id: std::mem::take(&mut self.id),
            tunnel: std::mem::take(&mut self.tunnel),
            time_ms: self.time_ms,
            method: self.method.as_str().to_owned(),
            path: std::mem::take(&mut self.target),
            status: self.status.map(|s| s.as_u16()),
            outcome: outcome.as_str(),
            duration_ms,
            replay_of: None,
            request,
            response,
        });
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.finish(Outcome::VisitorGone);
        let budget = self.budget.take();
        self.request.release(budget.as_ref());
        self.response.release(budget.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Filter, Store};
    use http::header;

    fn config(limit: usize, retain: u32) -> CaptureConfig {
        CaptureConfig {
            enabled: true,
            limit,
            retain,
        }
    }

    /// One delivered exchange through a tap, as the proxy drives it.
    fn exchange(capture: &Arc<Capture>, id: &str, body: &[u8]) {
        let tap = Tap::new(Some(capture), id, "app", &Method::POST, "/hook");
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, body.len().into());
        tap.request_head(&headers);
        tap.request_chunk(body);
        tap.request_complete();
        tap.response_head(StatusCode::OK, &HeaderMap::new());
        tap.response_chunk(b"ok");
        tap.finish(Outcome::Delivered);
    }

    fn ids(store: &Store) -> Vec<String> {
        let f = Filter {
            limit: 100,
            ..Filter::default()
        };
        let page = store.list_requests("app", &f).expect("list");
        page.requests.into_iter().map(|r| r.id).collect()
    }

    #[test]
    fn taps_in_progress_share_the_tunnels_budget() {
        let dir = tempfile::tempdir().expect("temp dir");
        let capture = Capture::start(config(1 << 20, 100), dir.path()).expect("starts");
        let budget = TapBudget::default();
        let chunk = vec![7u8; 64 << 10];
        // Visitors that stopped reading: each exchange stays open with a
        // full prefix, and more of them than the budget holds.
        let taps: Vec<Tap> = (0..(TAP_BUDGET >> 20) + 8)
            .map(|i| {
                let tap = Tap::new(
                    Some(&capture),
                    &format!("d{i}"),
                    "app",
                    &Method::GET,
                    "/big",
                )
                .with_budget(&budget);
                tap.response_head(StatusCode::OK, &HeaderMap::new());
                for _ in 0..16 {
                    tap.response_chunk(&chunk);
                }
                tap
            })
            .collect();
        assert_eq!(
            budget.used(),
            TAP_BUDGET,
            "held prefixes stop at the budget"
        );
        let last = taps.last().expect("taps");
        assert!(
            last.lock().response.kept.is_empty(),
            "past the budget nothing is kept"
        );
        drop(taps);
        assert_eq!(budget.used(), 0, "finished exchanges give their bytes back");
        capture.close();
    }

    #[test]
    fn retention_keeps_the_newest_across_restarts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let capture = Capture::start(config(1024, 3), dir.path()).expect("starts");
        for i in 0..5 {
            exchange(&capture, &format!("r{i}"), b"x");
        }
        capture.close();
        assert_eq!(ids(&store), ["r4", "r3", "r2"]);

        // A new writer counts what is there before trimming.
        let capture = Capture::start(config(1024, 3), dir.path()).expect("restarts");
        exchange(&capture, "r5", b"x");
        capture.close();
        assert_eq!(ids(&store), ["r5", "r4", "r3"]);
        assert_eq!(capture.dropped(), 0);
    }

    #[test]
    fn bodies_past_the_limit_are_cut_and_flagged() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let capture = Capture::start(config(4, 10), dir.path()).expect("starts");
        exchange(&capture, "big", b"hello world");
        // The visitor left mid-response: the response body is incomplete.
        let tap = Tap::new(Some(&capture), "gone", "app", &Method::GET, "/");
        tap.request_complete();
        tap.response_head(StatusCode::OK, &HeaderMap::new());
        tap.response_chunk(b"ab");
        drop(tap);
        capture.close();

        let big = store.get_request("app", "big").expect("get").expect("kept");
        assert_eq!(big.request.body, b"hell");
        assert_eq!(
            (big.request.body_size, big.request.body_truncated),
            (11, true)
        );
        let response = big.response.expect("response");
        assert_eq!(
            (response.body.as_slice(), response.body_truncated),
            (&b"ok"[..], false)
        );

        let gone = store
            .get_request("app", "gone")
            .expect("get")
            .expect("kept");
        assert_eq!(gone.summary.outcome, "visitor_gone");
        assert!(!gone.request.body_truncated, "an empty, complete request");
        assert!(gone.response.expect("response").body_truncated);
    }

    #[test]
    fn a_burst_larger_than_retention_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let capture = Capture::start(config(64, 10), dir.path()).expect("starts");
        for i in 0..500 {
            exchange(&capture, &format!("r{i:03}"), b"x");
        }
        capture.close();
        let kept = ids(&store);
        assert_eq!(kept.len(), 10);
        assert_eq!(kept[0], "r499");
        assert_eq!(kept[9], "r490");
        assert_eq!(capture.dropped(), 0, "retired, not lost");
    }

    #[test]
    fn a_public_error_is_recorded_as_the_response() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let capture = Capture::start(config(1024, 10), dir.path()).expect("starts");
        let tap = Tap::new(Some(&capture), "off", "app", &Method::POST, "/graphql");
        tap.request_chunk(b"{}");
        tap.request_complete();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/json".parse().expect("value"),
        );
        let body = Bytes::from_static(b"{\"error\":\"tunnel_offline\"}");
        tap.public_response(StatusCode::SERVICE_UNAVAILABLE, &headers, &body);
        tap.finish(Outcome::Offline);
        capture.close();
        let rec = store.get_request("app", "off").expect("get").expect("kept");
        assert_eq!(
            (rec.summary.status, rec.summary.outcome.as_str()),
            (Some(503), "offline")
        );
        assert_eq!(rec.request.body, b"{}");
        let response = rec.response.expect("the 503 is kept");
        assert_eq!(
            response.headers,
            [("content-type".to_owned(), "application/json".to_owned())]
        );
        assert_eq!(response.body, body.as_ref());
        assert!(!response.body_truncated);
    }

    #[test]
    fn capture_off_stores_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let off = CaptureConfig {
            enabled: false,
            ..CaptureConfig::default()
        };
        let capture = Capture::start(off, dir.path()).expect("starts");
        let tap = Tap::new(Some(&capture), "x", "app", &Method::GET, "/");
        assert!(!tap.capturing());
        tap.finish(Outcome::Delivered);
        capture.close();
        assert!(ids(&store).is_empty());
    }
}
