//! One exchange's recording as it streams past, and the budget a tunnel's
//! exchanges in progress share.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use relay_shared::api::encode_headers;
use relay_shared::http::content_length;
use tracing::debug;

use crate::store::{self, NewCapture, NewMessage};

use super::*;

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
/// One exchange in progress, shared by the task pumping the request body
/// and the one pumping the response body; the lock is uncontended in
/// practice and held only to append.
#[derive(Clone)]
pub struct Tap(Arc<Mutex<Recording>>);

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

/// One exchange's capture while it is being made; it becomes a
/// [`NewCapture`] when the exchange ends.
struct Recording {
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

    status: Option<StatusCode>,
    response: BodyTap,
    finished: bool,
    /// The tunnel's caller deadline: a longer exchange is marked.
    deadline: Option<std::time::Duration>,
    /// The fault the client played instead of the local app.
    fault: Option<relay_shared::fault::Fault>,
    /// Where the exchange is counted when it ends.
    metrics: Option<crate::metrics::Metrics>,
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
        Self(Arc::new(Mutex::new(Recording {
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

            status: None,
            response: BodyTap::default(),
            finished: false,
            deadline: None,
            fault: None,
            metrics: None,
        })))
    }

    /// Counts the prefixes this exchange keeps against its tunnel's budget.
    pub fn with_budget(self, budget: &TapBudget) -> Self {
        self.lock().budget = Some(budget.clone());
        self
    }

    /// Counts the exchange in the server's metrics when it ends.
    pub fn with_metrics(self, metrics: &crate::metrics::Metrics) -> Self {
        self.lock().metrics = Some(metrics.clone());
        self
    }

    /// Marks the capture if the exchange outlasts the tunnel's caller
    /// deadline.
    pub fn with_deadline(self, deadline: Option<std::time::Duration>) -> Self {
        self.lock().deadline = deadline;
        self
    }

    /// Records that the client played a fault instead of the local app.
    pub fn fault(&self, fault: relay_shared::fault::Fault) {
        self.lock().fault = Some(fault);
    }

    /// Whether the client played `--fault reset`: the visitor gets no
    /// answer at all.
    pub fn played_reset(&self) -> bool {
        matches!(self.lock().fault, Some(relay_shared::fault::Fault::Reset))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recording> {
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
        self.lock().push(Side::Request, chunk);
    }

    /// The visitor's body has been read to its end.
    pub fn request_complete(&self) {
        let mut r = self.lock();
        r.request.complete = true;
    }

    /// The response head as sent to the visitor.
    pub fn response_head(&self, status: StatusCode, headers: &HeaderMap) {
        let mut r = self.lock();
        r.status = Some(status);
        // A fault's answer names itself; anything that does not parse as
        // one is not recorded (see `relay_shared::fault`).
        if let Some(v) = headers.get(relay_shared::fault::FAULT_HEADER) {
            r.fault = v
                .to_str()
                .ok()
                .and_then(|v| relay_shared::fault::Fault::parse(v).ok());
        }
        if r.sink.is_some() {
            r.response.head(headers);
        }
    }

    pub fn response_chunk(&self, chunk: &[u8]) {
        self.lock().push(Side::Response, chunk);
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
        r.push(Side::Response, body);
        r.response.complete = true;
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.lock().started.elapsed()
    }

    /// Records the exchange. The first call counts; later ones (a body
    /// dropped after it already finished) are ignored.
    pub fn finish(&self, outcome: Outcome) {
        let taken = self.lock().finish(outcome);
        if let Some((sink, capture)) = taken {
            sink.submit(capture);
        }
    }

    /// Ends the recording without storing it: the exchange is recorded by
    /// another tap under the same id (a forward to another node that never
    /// left this one is answered, and captured, as offline).
    pub fn discard(&self) {
        self.lock().finished = true;
    }

    /// Records the exchange and waits until it is committed to disk: for
    /// requests answered without the local app, whose answer must wait for
    /// that. `None` when nothing is recorded (capture off, or already
    /// finished).
    pub async fn finish_committed(&self, outcome: Outcome) -> Option<anyhow::Result<()>> {
        let (sink, capture) = self.lock().finish(outcome)?;
        Some(sink.commit(capture).await)
    }
}

/// Which body of the exchange a chunk belongs to.
#[derive(Clone, Copy)]
enum Side {
    Request,
    Response,
}

impl Recording {
    /// Keeps what fits of `chunk` in that body's prefix, under the
    /// tunnel's budget.
    fn push(&mut self, side: Side, chunk: &[u8]) {
        let body = match side {
            Side::Request => &mut self.request,
            Side::Response => &mut self.response,
        };
        body.push(chunk, self.limit, self.budget.as_ref());
    }

    /// Ends the recording; answers the capture for the sink to store.
    fn finish(&mut self, outcome: Outcome) -> Option<(Arc<Capture>, NewCapture)> {
        if std::mem::replace(&mut self.finished, true) {
            return None;
        }
        if outcome == Outcome::Delivered {
            self.response.complete = true;
        }
        let took = self.started.elapsed();
        if let Some(m) = &self.metrics {
            m.exchange(outcome, self.request.seen, self.response.seen, took);
        }
        let duration_ms = took.as_millis() as u64;
        let deadline_exceeded_ms = exceeded(self.deadline, duration_ms);
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
            deadline_exceeded_ms,
            fault = self.fault.map(|f| f.label()),
            "exchange"
        );
        let sink = self.sink.take()?;
        if outcome == Outcome::NotFound {
            return None;
        }
        self.request.release(self.budget.as_ref());
        self.response.release(self.budget.as_ref());
        let request = self.request.message();
        let response = self.status.map(|_| self.response.message());
        let capture = NewCapture {
            id: std::mem::take(&mut self.id),
            tunnel: std::mem::take(&mut self.tunnel),
            time_ms: self.time_ms,
            method: self.method.as_str().to_owned(),
            path: std::mem::take(&mut self.target),
            status: self.status.map(|s| s.as_u16()),
            outcome,
            duration_ms,
            replay_of: None,
            request,
            response,
            diff: None,
            deadline_exceeded_ms,
            fault: self.fault.take().map(|f| f.label()),
        };
        Some((sink, capture))
    }
}

/// The deadline in milliseconds when an exchange of `duration_ms` took
/// longer than it (the mark a capture carries), else `None`.
fn exceeded(deadline: Option<std::time::Duration>, duration_ms: u64) -> Option<u64> {
    let ms = deadline?.as_millis() as u64;
    (duration_ms > ms).then_some(ms)
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some((sink, capture)) = self.finish(Outcome::VisitorGone) {
            sink.submit(capture);
        }
        let budget = self.budget.take();
        self.request.release(budget.as_ref());
        self.response.release(budget.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_fault_header_is_recorded() {
        let fault_of = |value: &[u8]| {
            let tap = Tap::new(None, "id", "t", &Method::GET, "/");
            let mut headers = HeaderMap::new();
            headers.insert(
                relay_shared::fault::FAULT_HEADER,
                http::HeaderValue::from_bytes(value).expect("a header value"),
            );
            tap.response_head(StatusCode::INTERNAL_SERVER_ERROR, &headers);
            let fault = tap.lock().fault.map(|f| f.label());
            fault
        };
        assert_eq!(fault_of(b"status=500").as_deref(), Some("status=500"));
        assert_eq!(fault_of(b"delay=1s 500ms").as_deref(), Some("delay=1500ms"));
        assert_eq!(fault_of(b"status=99"), None);
        assert_eq!(fault_of(b"anything"), None);
        assert_eq!(fault_of(b"\xff\xfe"), None);
        assert_eq!(
            fault_of(format!("delay={}", "9".repeat(4000)).as_bytes()),
            None
        );
        let tap = Tap::new(None, "id", "t", &Method::GET, "/");
        tap.response_head(StatusCode::OK, &HeaderMap::new());
        assert_eq!(tap.lock().fault, None, "no header, no fault");
    }

    #[test]
    fn only_an_exchange_longer_than_the_deadline_is_marked() {
        let ten = Some(std::time::Duration::from_secs(10));
        assert_eq!(exceeded(ten, 10_001), Some(10_000));
        assert_eq!(exceeded(ten, 10_000), None);
        assert_eq!(exceeded(ten, 12), None);
        assert_eq!(exceeded(None, 99_999), None);
    }

    #[test]
    fn past_the_budget_a_prefix_keeps_nothing_and_says_it_was_truncated() {
        let budget = TapBudget::default();
        assert_eq!(budget.take(TAP_BUDGET), TAP_BUDGET);
        let mut body = BodyTap::default();
        body.push(b"hello", 1 << 20, Some(&budget));
        assert!(body.kept.is_empty(), "nothing kept past the budget");
        body.complete = true;
        let message = body.message();
        assert!(message.truncated && message.size == 5);
        budget.give(TAP_BUDGET);
        let mut body = BodyTap::default();
        body.push(b"hello", 1 << 20, Some(&budget));
        assert_eq!(body.kept, b"hello");
        body.release(Some(&budget));
        assert_eq!(budget.used(), 0);
    }
}
