//! The capture tap: what one exchange looked like, recorded whatever its
//! outcome. The proxy feeds it the request head, the bytes of both bodies as
//! they stream past (never a copy of a whole body) and the outcome; when the
//! exchange ends the record goes to the sink.
//!
//! Today the sink is the debug log; the capture store (SQLite, bounded
//! body prefixes, replay) plugs in here without touching the data path.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use tracing::debug;

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// No tunnel has the name.
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

/// One exchange in progress, shared by the task pumping the request body
/// and the response body; the lock is uncontended in practice and held
/// only to add to counters.
#[derive(Clone)]
pub struct Tap(Arc<Mutex<Record>>);

struct Record {
    id: String,
    tunnel: String,
    method: Method,
    target: String,
    started: Instant,
    status: Option<StatusCode>,
    request_bytes: u64,
    response_bytes: u64,
    finished: bool,
}

impl Tap {
    pub fn new(id: &str, tunnel: &str, method: &Method, target: &str) -> Self {
        Self(Arc::new(Mutex::new(Record {
            id: id.to_owned(),
            tunnel: tunnel.to_owned(),
            method: method.clone(),
            target: target.to_owned(),
            started: Instant::now(),
            status: None,
            request_bytes: 0,
            response_bytes: 0,
            finished: false,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn request_chunk(&self, chunk: &[u8]) {
        self.lock().request_bytes += chunk.len() as u64;
    }

    pub fn response_status(&self, status: StatusCode) {
        self.lock().status = Some(status);
    }

    pub fn response_chunk(&self, chunk: &[u8]) {
        self.lock().response_bytes += chunk.len() as u64;
    }

    pub fn elapsed(&self) -> Duration {
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
        debug!(
            id = %self.id,
            tunnel = %self.tunnel,
            method = %self.method,
            target = %self.target,
            status = self.status.map(|s| s.as_u16()),
            request_bytes = self.request_bytes,
            response_bytes = self.response_bytes,
            duration_ms = self.started.elapsed().as_millis() as u64,
            ?outcome,
            "exchange"
        );
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.finish(Outcome::VisitorGone);
    }
}
