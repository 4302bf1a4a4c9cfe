//! Accept loop: TCP (TCP_NODELAY), optional TLS, and hyper-util's auto
//! builder (HTTP/1.1 with upgrades, HTTP/2) per connection, all watched by
//! a graceful-shutdown handle. Each connection's deadlines (idle, before
//! and between requests; stalled writes) are `conn.rs`'s.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;

use crate::response::DropConnection;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::conn::{Activity, DeadlineIo};
use crate::forwarded::TrustedProxies;
use crate::State;

/// The visitor's side of the connection a request came on.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub peer: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The peer's IP as `X-Forwarded-For` carries it, formatted once per
    /// connection rather than once per request.
    pub ip: HeaderValue,
}

impl Visitor {
    pub fn new(peer: SocketAddr, scheme: &'static str) -> Self {
        let ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { peer, scheme, ip }
    }

    /// The visitor's address: the peer's, or behind a trusted reverse
    /// proxy the one its `X-Forwarded-For` names (see
    /// [`TrustedProxies::client_ip`]). Edge rules' `--allow-ip` checks this.
    pub fn client_ip(&self, headers: &http::HeaderMap, trusted: &TrustedProxies) -> IpAddr {
        trusted.client_ip(self.peer.ip(), headers)
    }
}

/// Time allowed for a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// First pause after `accept` fails for want of a resource (out of file
/// descriptors: EMFILE, ENFILE; or of memory). The connection stays in the
/// listen backlog, so an immediate retry would fail again at once and spin
/// a core; as in Go's net/http, the pause starts small and doubles.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);

/// Longest pause between accept attempts while they keep failing: once a
/// descriptor is free again (a connection ends or times out), waiting
/// visitors get in within this time, and the loop wakes at most once a
/// second meanwhile.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves connections until `stop` is cancelled, then waits for in-flight
/// requests up to the configured grace period.
pub async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    let timeouts = state.config.timeouts;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.idle)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut backoff = AcceptBackoff::default();

    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff.succeeded();
                a
            }
            // The peer gave up before we took its connection: nothing to
            // wait for, the next one may be fine.
            Err(e) if is_connection_error(&e) => {
                debug!(error = %e, "accept: connection gone before it was taken");
                continue;
            }
            Err(e) => {
                // Out of file descriptors and the like. Existing
                // connections go on being served meanwhile (they run in
                // their own tasks); only accepting waits.
                let pause = backoff.failed(&e);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let visitor = Visitor::new(peer, scheme);
        let state2 = state.clone();
        let activity = Activity::new();
        let activity2 = activity.clone();
        let service = service_fn(move |req: http::Request<_>| {
            let state = state2.clone();
            let visitor = visitor.clone();
            let open = activity2.start();
            let connect = req.method() == http::Method::CONNECT;
            async move {
                let res = crate::handle(&state, req, visitor).await;
                if res.extensions().get::<DropConnection>().is_some() {
                    // A service error makes hyper drop the connection (an
                    // HTTP/2 stream: reset it) without writing an answer.
                    return Err(DropConnection);
                }
                Ok(open.track(connect, res))
            }
        });
        let builder = builder.clone();
        match &tls {
            None => {
                let io = DeadlineIo::new(tcp, activity, timeouts);
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    if tls.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) {
                        // The CA validating a TLS-ALPN-01 challenge: the
                        // handshake was all it wanted (RFC 8737 §3).
                        debug!(%peer, "acme-tls/1 validation handshake");
                        return;
                    }
                    let io = DeadlineIo::new(tls, activity, timeouts);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    let grace = state.config.shutdown_grace;
    tokio::select! {
        _ = graceful.shutdown() => debug!("all connections closed"),
        _ = tokio::time::sleep(grace) => warn!(?grace, "shutdown grace period over; closing remaining connections"),
    }
}

/// Errors of one pending connection rather than of the listener: the
/// next `accept` may succeed at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}

/// Pauses between failing `accept` calls, doubling from
/// [`ACCEPT_BACKOFF_MIN`] to [`ACCEPT_BACKOFF_MAX`]. Logs one warning when
/// a run of failures starts and one line when accepting works again, not
/// one per attempt.
#[derive(Debug, Default)]
struct AcceptBackoff {
    failures: u64,
    since: Option<tokio::time::Instant>,
    pause: Duration,
}

impl AcceptBackoff {
    /// Records a failure; returns how long to wait before the next attempt.
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        if self.failures == 0 {
            warn!(error = %e, "accept failed; new connections wait until it works again");
            self.since = Some(tokio::time::Instant::now());
            self.pause = ACCEPT_BACKOFF_MIN;
        } else {
            self.pause = (self.pause * 2).min(ACCEPT_BACKOFF_MAX);
        }
        self.failures += 1;
        self.pause
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            let waited = self.since.map(|t| t.elapsed()).unwrap_or_default();
            info!(
                failures = self.failures,
                ?waited,
                "accepting connections again"
            );
            *self = Self::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = AcceptBackoff::default();
        let e = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<_> = (0..12).map(|_| b.failed(&e)).collect();
        assert_eq!(pauses[0], ACCEPT_BACKOFF_MIN);
        assert_eq!(pauses[1], ACCEPT_BACKOFF_MIN * 2);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(pauses[11], ACCEPT_BACKOFF_MAX);
        b.succeeded();
        assert_eq!(b.failed(&e), ACCEPT_BACKOFF_MIN);
    }

    #[test]
    fn a_vanished_peer_is_not_a_listener_failure() {
        use std::io::{Error, ErrorKind};
        assert!(is_connection_error(&Error::from(
            ErrorKind::ConnectionAborted
        )));
        // EMFILE: out of file descriptors.
        assert!(!is_connection_error(&Error::from_raw_os_error(24)));
    }
}
