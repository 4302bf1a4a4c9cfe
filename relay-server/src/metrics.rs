//! Prometheus metrics (`--metrics-listen`): the series of `docs/metrics.md`,
//! and the small HTTP listener that serves them at `/metrics`.
//!
//! Two kinds of series. Events (requests by outcome, bytes, durations,
//! handshake refusals) are counted where they happen, with atomics only:
//! every label value's counter is created up front, so counting takes no
//! lock and allocates nothing. Levels (tunnels connected, streams in
//! flight, missed requests waiting, captures dropped) already live
//! elsewhere (the registry, the stream tables, the store, the capture
//! queue) and are read when Prometheus scrapes, so the data path does no
//! extra work for them.
//!
//! The text is OpenMetrics (`prometheus-client`'s encoder), which
//! Prometheus scrapes natively.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{text, DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use relay_shared::api::Outcome;
use relay_shared::protocol::RefusalReason;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::State;

/// Path the metrics are served at.
pub const METRICS_PATH: &str = "/metrics";

/// What Prometheus is told it gets.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds, in seconds, of the request-duration buckets: from a
/// local app answering on the same laptop (a few ms plus the tunnel's round
/// trip) to the default `--request-timeout` of 60 s and past it (long
/// downloads and event streams land in +Inf).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Longest a scrape connection may stay open, from accept to the end of
/// the answer: a scraper that sends nothing cannot hold a task for ever.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many outcomes have a counter: every stored one and `not_found`.
/// `Outcome as usize` (a fieldless enum's declaration order) indexes them.
const OUTCOMES: usize = Outcome::STORED.len() + 1;

/// Pause after the metrics listener's `accept` fails (out of descriptors
/// and the like), so the loop does not spin; scrapes simply retry.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The server's metrics; cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct Metrics(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    registry: Registry,
    /// Indexed by `Outcome as usize`.
    requests: Vec<Counter>,
    request_bytes: Counter,
    response_bytes: Counter,
    /// Indexed like [`RefusalReason::ALL`].
    refusals: Vec<Counter>,
    duration: Arc<DurationHistogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let by_outcome = Family::<OutcomeLabel, Counter>::default();
        let mut requests = vec![Counter::default(); OUTCOMES];
        for outcome in std::iter::once(Outcome::NotFound).chain(Outcome::STORED) {
            let counter = by_outcome.get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            });
            if let Some(slot) = requests.get_mut(outcome as usize) {
                *slot = counter.clone();
            }
        }
        registry.register(
            "relay_requests",
            "Requests to tunnels, by how they ended (the outcome a capture records)",
            by_outcome,
        );
        let request_bytes = Counter::default();
        registry.register_with_unit(
            "relay_request",
            "Request body bytes received from visitors",
            Unit::Bytes,
            request_bytes.clone(),
        );
        let response_bytes = Counter::default();
        registry.register_with_unit(
            "relay_response",
            "Response body bytes sent to visitors (local apps' answers and relay's own errors)",
            Unit::Bytes,
            response_bytes.clone(),
        );
        let by_reason = Family::<ReasonLabel, Counter>::default();
        let refusals = RefusalReason::ALL
            .iter()
            .map(|r| {
                by_reason
                    .get_or_create(&ReasonLabel { reason: r.as_str() })
                    .clone()
            })
            .collect();
        registry.register(
            "relay_handshake_refusals",
            "Client handshakes refused, by reason",
            by_reason,
        );
        let duration = Arc::new(DurationHistogram::default());
        registry.register_collector(Box::new(duration.clone()));
        Self(Arc::new(Inner {
            registry,
            requests,
            request_bytes,
            response_bytes,
            refusals,
            duration,
        }))
    }

    /// One exchange with a tunnel ended: its outcome, body bytes each way
    /// and how long it took.
    pub fn exchange(&self, outcome: Outcome, request: u64, response: u64, took: Duration) {
        self.outcome(outcome);
        self.0.request_bytes.inc_by(request);
        self.0.response_bytes.inc_by(response);
        self.0.duration.observe(took);
    }

    /// A request counted by outcome only: one that never had a tunnel
    /// (`not_found`), so nothing else about it is measured.
    pub fn outcome(&self, outcome: Outcome) {
        if let Some(c) = self.0.requests.get(outcome as usize) {
            c.inc();
        }
    }

    /// A client handshake was refused.
    pub fn refused(&self, reason: RefusalReason) {
        if let Some(i) = RefusalReason::ALL.iter().position(|&r| r == reason) {
            if let Some(c) = self.0.refusals.get(i) {
                c.inc();
            }
        }
    }
}

/// What is read from the rest of the server at each scrape.
#[derive(Debug, Default)]
pub struct Levels {
    pub tunnels: u64,
    pub streams: u64,
    /// `None` when the store could not be read (the series is left out).
    pub missed_waiting: Option<u64>,
    pub capture_dropped: u64,
}

impl Levels {
    /// Reads the levels from the server's state.
    pub async fn read(state: &State) -> Self {
        let live = state.registry.all();
        let streams = live.iter().map(|h| h.open_streams() as u64).sum();
        let missed_waiting = match state.store.call(|s| s.missed_waiting()).await {
            Ok(n) => Some(n),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "metrics: could not count missed requests");
                None
            }
        };
        Self {
            tunnels: live.len() as u64,
            streams,
            missed_waiting,
            capture_dropped: state.capture.dropped(),
        }
    }
}

/// The whole scrape: counted events and the levels read now.
pub fn render(metrics: &Metrics, levels: &Levels) -> Result<String, std::fmt::Error> {
    let mut sampled = Registry::default();
    sampled.register(
        "relay_tunnels_connected",
        "Tunnels with a client connected",
        ConstGauge::new(levels.tunnels as i64),
    );
    sampled.register(
        "relay_streams_in_flight",
        "Exchanges open on tunnel sessions right now",
        ConstGauge::new(levels.streams as i64),
    );
    if let Some(n) = levels.missed_waiting {
        sampled.register(
            "relay_missed_requests_waiting",
            "Requests that arrived while their tunnel was offline and wait to be delivered",
            ConstGauge::new(n as i64),
        );
    }
    sampled.register(
        "relay_capture_dropped",
        "Captures lost because the capture queue was full or a write failed (the requests were still forwarded)",
        ConstCounter::new(levels.capture_dropped),
    );
    let mut out = String::with_capacity(4096);
    text::encode_registry(&mut out, &sampled)?;
    text::encode_registry(&mut out, &metrics.0.registry)?;
    text::encode_eof(&mut out)?;
    Ok(out)
}

/// A request-duration histogram of atomics: `prometheus-client`'s own
/// takes a mutex per observation, which every proxied request would
/// contend on. A scrape may see a bucket incremented before the sum; the
/// count is the buckets' total, so `+Inf` and `_count` always agree.
#[derive(Debug, Default)]
struct DurationHistogram {
    /// One per bound in [`DURATION_BUCKETS`], then the overflow (+Inf).
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl DurationHistogram {
    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(DURATION_BUCKETS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

impl Collector for DurationHistogram {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts: Vec<(f64, u64)> = DURATION_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        let count = counts.iter().map(|(_, n)| n).sum();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let mut metric = encoder.encode_descriptor(
            "relay_request_duration",
            "Time from a request's arrival to the end of its response, for requests to a known tunnel.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        metric.encode_histogram::<NoLabelSet>(sum, count, &counts, None)
    }
}

/// Serves `GET /metrics` on `listener` until `stop` fires. One request per
/// connection (scrapes are seconds apart), each under [`SCRAPE_TIMEOUT`].
pub async fn serve(state: Arc<State>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: the public listener has
                // the same trouble and says so; pause rather than spin.
                debug!(error = %e, "metrics: accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(SCRAPE_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), service);
            match tokio::time::timeout(SCRAPE_TIMEOUT, conn).await {
                Ok(Err(e)) => debug!(%peer, error = %e, "metrics connection failed"),
                Err(_) => debug!(%peer, "metrics connection timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

async fn answer(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &'static str, body: Bytes| {
        let mut res = Response::new(Full::new(body));
        *res.status_mut() = status;
        res.headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
        res
    };
    if req.uri().path() != METRICS_PATH {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"metrics are at /metrics\n"),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"GET /metrics\n"),
        );
    }
    let levels = Levels::read(state).await;
    match render(&state.metrics, &levels) {
        Ok(text) => reply(StatusCode::OK, CONTENT_TYPE, Bytes::from(text)),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"could not encode the metrics\n"),
        ),
    }
}

/// Binds `--metrics-listen`; the address really bound is returned so
/// `main` can print it (port 0 picks one).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
    use anyhow::Context;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --metrics-listen {addr}"))?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_under_their_labels_and_buckets() {
        let m = Metrics::new();
        m.exchange(Outcome::Delivered, 10, 20, Duration::from_millis(3));
        m.exchange(Outcome::Delivered, 1, 2, Duration::from_secs(200));
        m.outcome(Outcome::NotFound);
        m.refused(RefusalReason::BadToken);
        m.refused(RefusalReason::Unknown);
        let levels = Levels {
            tunnels: 2,
            streams: 1,
            missed_waiting: Some(4),
            capture_dropped: 0,
        };
        let text = render(&m, &levels).expect("encodes");
        for line in [
            "relay_requests_total{outcome=\"delivered\"} 2",
            "relay_requests_total{outcome=\"not_found\"} 1",
            "relay_requests_total{outcome=\"rejected\"} 0",
            "relay_request_bytes_total 11",
            "relay_response_bytes_total 22",
            "relay_handshake_refusals_total{reason=\"bad_token\"} 1",
            "relay_request_duration_seconds_count 2",
            "relay_request_duration_seconds_bucket{le=\"0.005\"} 1",
            "relay_request_duration_seconds_bucket{le=\"120.0\"} 1",
            "relay_request_duration_seconds_bucket{le=\"+Inf\"} 2",
            "relay_tunnels_connected 2",
            "relay_missed_requests_waiting 4",
            "relay_capture_dropped_total 0",
            "# TYPE relay_request_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(!text.contains("reason=\"unknown\""), "{text}");
    }
}
