//! The capture writer thread: drains the queue into per-tunnel batches and
//! writes each in one transaction, coalescing under heavy traffic.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use tracing::{debug, warn};

use crate::store::{self, CaptureWriter};

use super::*;

/// The writer thread. It drains the queue every [`GATHER`] into per-tunnel
/// buffers of at most `retain` entries, and writes them in one transaction
/// once they are due: at once when traffic is light, after [`COALESCE`]
/// (growing to [`COALESCE_MAX`]) while it is heavy. A buffer never holds
/// more than `retain` entries of a tunnel, because older ones would be
/// deleted by retention in the same transaction anyway; under load that saves most of the disk
/// work while what the API shows stays the same. Ends when every sender is
/// gone and the queue is drained.
pub(super) fn write_loop(
    mut writer: CaptureWriter,
    rx: Receiver<Work>,
    shared: &Shared,
    retain: u32,
) {
    let mut pending = Pending::new(retain as usize);
    let mut delay = std::time::Duration::ZERO;
    let mut open = true;
    while open {
        if pending.is_empty() {
            let work = match rx.try_recv() {
                Ok(work) => work,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => match rx.recv() {
                    Ok(work) => {
                        // Traffic stopped: the first capture after a pause
                        // is shown without the heavy-traffic delay.
                        delay = std::time::Duration::ZERO;
                        work
                    }
                    Err(_) => break,
                },
            };
            match work {
                // Nothing is pending: all that came before is written.
                Work::Flush(done) => {
                    let _ = done.send(());
                    continue;
                }
                Work::Capture(job) => pending.push(*job),
            }
        }
        let started = Instant::now();
        let due = started + delay;
        loop {
            // While the writer sleeps, senders find no one to wake: a busy
            // tunnel pays no wake-up per request. Those that wait for the
            // write (commits, flushes) unpark it.
            if pending.waiting == 0 {
                std::thread::park_timeout(GATHER);
            }
            loop {
                match rx.try_recv() {
                    Ok(Work::Capture(job)) => pending.push(*job),
                    Ok(Work::Flush(done)) => pending.flush(done),
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
        let result = write_batch(&mut writer, &batch.jobs, retain, shared);
        // Counted until written, so the bound covers the batch in flight.
        shared
            .queued_bytes
            .fetch_sub(batch.bytes, Ordering::Relaxed);
        if let Err(e) = &result {
            warn!(error = %format!("{e:#}"), "writing captures failed");
            let unacknowledged = batch.jobs.iter().filter(|j| j.stored.is_none()).count();
            shared.lost(unacknowledged as u64, "capture write failed");
        }
        let listening = !shared.announced && shared.events.receiver_count() > 0;
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
        for done in batch.flushes {
            let _ = done.send(());
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
    /// Jobs whose caller waits for the commit, and flushes.
    waiting: usize,
    /// Durable jobs: kept apart, since coalescing must never retire them.
    durable: Vec<Job>,
    /// Flushes answered after the next write.
    flushes: Vec<oneshot::Sender<()>>,
    /// Captures received since the last write, retired ones included: the
    /// traffic rate, which decides how long the next write waits.
    arrived: u64,
}

struct Batch {
    jobs: Vec<Job>,
    flushes: Vec<oneshot::Sender<()>>,
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
            durable: Vec::new(),
            flushes: Vec::new(),
            arrived: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.tunnels.is_empty() && self.durable.is_empty() && self.flushes.is_empty()
    }

    fn flush(&mut self, done: oneshot::Sender<()>) {
        self.waiting += 1;
        self.flushes.push(done);
    }

    fn push(&mut self, mut job: Job) {
        self.order += 1;
        self.arrived += 1;
        job.order = self.order;
        self.bytes += job.bytes;
        self.waiting += usize::from(job.stored.is_some());
        if job.durable {
            self.durable.push(job);
            return;
        }
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
        jobs.append(&mut self.durable);
        jobs.sort_unstable_by_key(|j| j.order);
        let bytes = std::mem::take(&mut self.bytes);
        self.waiting = 0;
        Batch {
            jobs,
            flushes: std::mem::take(&mut self.flushes),
            bytes,
            arrived: std::mem::take(&mut self.arrived),
        }
    }
}

/// Writes a batch in one transaction, then applies retention, counting
/// the missed requests it deleted. A batch with durable jobs is synced to
/// disk before the commit returns.
fn write_batch(
    writer: &mut CaptureWriter,
    batch: &[Job],
    retain: u32,
    shared: &Shared,
) -> anyhow::Result<()> {
    let durable = batch.iter().any(|j| j.durable);
    let requests: Vec<&store::NewCapture> = batch.iter().map(|j| &j.request).collect();
    let undelivered = writer.write(&requests, durable, retain)?;
    if undelivered > 0 {
        let before = shared
            .missed_dropped
            .fetch_add(undelivered, Ordering::Relaxed);
        warn!(
            deleted = undelivered,
            total = before + undelivered,
            "retention deleted missed requests before they were delivered: a tunnel holds more than --retain of them"
        );
    }
    Ok(())
}
