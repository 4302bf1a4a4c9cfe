//! Deadlines of one public connection, whoever is on the other end (a
//! visitor, or a client's WebSocket): how long it may go with no request
//! in progress, and how long a write to it may stall. `listen.rs` wraps
//! each accepted connection (after TLS) in [`DeadlineIo`] and each response
//! in [`Activity::start`]'s guard; when a deadline passes, the IO fails
//! with `TimedOut`, hyper closes the connection and drops its streams, and
//! the tunnel's stream (with its buffers) ends with them.
//!
//! - **Idle** (`--idle-timeout`): a connection with no request in progress
//!   is closed this long after its last request ended, or after it was
//!   accepted. That is the deadline for its first bytes (a socket that
//!   sends nothing, half an HTTP/2 preface, a whole preface and then no
//!   stream) and its idle timeout between requests, on HTTP/2 as on
//!   HTTP/1.1. Only requests count: bytes do not, so HTTP/2 PINGs or
//!   SETTINGS, or a request head sent a byte at a time, keep nothing open.
//!   An upgraded connection (a WebSocket) has no idle deadline; the
//!   protocol it carries has its own (the tunnel's heartbeat).
//! - **Write stall** (`--write-timeout`): a write that makes no progress
//!   for this long closes the connection, so a visitor that stops reading
//!   a download cannot hold the server's buffers for ever. (An HTTP/2
//!   visitor that keeps reading the connection but never opens a stream's
//!   window stalls that stream, not the connection; the tunnel's flow
//!   control bounds what it holds.)
//!
//! hyper's own header read timeout (HTTP/1.1) is set to the idle timeout
//! too; the HTTP/2 equivalent is what hyper lacks and this module adds.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Default `--idle-timeout`. hyper's HTTP/1.1 header read timeout and
/// nginx's `client_header_timeout` allow about as much: a browser sends its
/// first request at once and reuses an idle connection within seconds,
/// while with 1024 descriptors a silent socket per 30 ms (about 33 a
/// second) is what it takes to hold them all.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default `--write-timeout`. nginx's `send_timeout` is 60 s too: long
/// enough for a phone on a bad link to come back, short enough that a
/// visitor that stopped reading frees its stream's buffers within a minute.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// The deadlines of [`DeadlineIo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub idle: Duration,
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            idle: IDLE_TIMEOUT,
            write: WRITE_TIMEOUT,
        }
    }
}

/// Requests in progress on one connection: counted by the service, read by
/// the connection's [`DeadlineIo`].
#[derive(Debug)]
pub struct Activity {
    /// Requests whose response has not been sent to its end (or dropped).
    open: AtomicUsize,
    /// When a request last started or ended (or the connection was
    /// accepted), in milliseconds after `accepted`.
    changed_ms: AtomicU64,
    accepted: Instant,
    /// Set by a `101 Switching Protocols` (or an accepted CONNECT): the
    /// connection now carries another protocol and has no idle deadline.
    upgraded: AtomicBool,
    /// The connection's reader, woken when the last request ends so it
    /// arms the idle deadline (on HTTP/2 the response ends in another task).
    reader: AtomicWaker,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            changed_ms: AtomicU64::new(0),
            accepted: Instant::now(),
            upgraded: AtomicBool::new(false),
            reader: AtomicWaker::new(),
        })
    }

    /// A request has started; it is in progress until the returned guard
    /// (moved into its response by [`Open::track`]) drops.
    pub fn start(self: &Arc<Self>) -> Open {
        self.touch();
        self.open.fetch_add(1, Ordering::AcqRel);
        Open(self.clone())
    }

    fn touch(&self) {
        let ms = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.changed_ms.store(ms, Ordering::Release);
    }

    /// When the connection becomes idle-timed-out, if no request is in
    /// progress now.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let changed = Duration::from_millis(self.changed_ms.load(Ordering::Acquire));
        Some(self.accepted + changed + idle)
    }
}

/// One request in progress (see [`Activity::start`]).
#[derive(Debug)]
pub struct Open(Arc<Activity>);

impl Open {
    /// Moves the guard into `res`'s body, so the request counts as in
    /// progress until hyper has sent the body to its end or dropped it.
    /// Marks the connection upgraded when `res` switches protocols (or
    /// accepts a CONNECT, `connect`).
    pub fn track<B>(self, connect: bool, res: Response<B>) -> Response<Tracked<B>> {
        let status = res.status();
        if status == StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success()) {
            self.0.upgraded.store(true, Ordering::Release);
        }
        res.map(|body| Tracked { body, _open: self })
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        // Time first, so a reader that sees the count reach 0 sees the
        // time it did too.
        self.0.touch();
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

/// A response body that keeps its request in progress (see [`Open::track`]).
#[derive(Debug)]
pub struct Tracked<B> {
    body: B,
    _open: Open,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's byte stream with the idle and write-stall deadlines of
/// this module's docs. Fails reads with `TimedOut` when idle too long,
/// writes when stalled too long; otherwise passes everything through.
pub struct DeadlineIo<T> {
    io: T,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    /// The idle deadline, made on the first read that waits; dropped once
    /// the connection is upgraded.
    idle: Option<Pin<Box<Sleep>>>,
    /// The write-stall deadline, made on the first write that waits.
    stall: Option<Pin<Box<Sleep>>>,
    /// Whether `stall` runs: since a write waited, with no progress after.
    stalled: bool,
}

impl<T> DeadlineIo<T> {
    pub fn new(io: T, activity: Arc<Activity>, timeouts: Timeouts) -> Self {
        Self {
            io,
            activity,
            timeouts,
            idle: None,
            stall: None,
            stalled: false,
        }
    }

    /// Called when a read waits: `Ready(Err)` once the idle deadline has
    /// passed, else `Pending` with the deadline (or the end of the last
    /// request) set to wake this task.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.activity.upgraded.load(Ordering::Acquire) {
            self.idle = None;
            return Poll::Pending;
        }
        // Registered before the count is read: a request that ends after
        // the read below wakes us.
        self.activity.reader.register(cx.waker());
        let Some(deadline) = self.activity.idle_deadline(self.timeouts.idle) else {
            return Poll::Pending;
        };
        let sleep = self
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request within the idle timeout",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Passes a write's (or flush's) result on, watching for stalls: a
    /// `Pending` starts the stall deadline unless it runs already, any
    /// other result stops it; past the deadline the write fails.
    fn watch_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stalled = false;
            return polled;
        }
        let sleep = match (&mut self.stall, self.stalled) {
            (Some(sleep), true) => sleep,
            (slot, _) => {
                self.stalled = true;
                let deadline = Instant::now() + self.timeouts.write;
                match slot {
                    Some(sleep) => {
                        sleep.as_mut().reset(deadline);
                        sleep
                    }
                    None => slot.insert(Box::pin(tokio::time::sleep_until(deadline))),
                }
            }
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no write progress within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeadlineIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => this.poll_idle(cx).map(Err),
            ready => ready,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.watch_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watch_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.watch_write(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.watch_write(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const IDLE: Duration = Duration::from_secs(30);
    const WRITE: Duration = Duration::from_secs(60);

    fn timeouts() -> Timeouts {
        Timeouts {
            idle: IDLE,
            write: WRITE,
        }
    }

    /// Reads from `io` and reports how long it took to fail with `TimedOut`.
    async fn time_to_timeout<T: AsyncRead + Unpin>(io: &mut DeadlineIo<T>) -> Duration {
        let start = Instant::now();
        let mut buf = [0u8; 16];
        loop {
            match io.read(&mut buf).await {
                Ok(0) => panic!("peer closed; expected an idle timeout"),
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
                    return start.elapsed();
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_times_out_from_accept() {
        let (server, _peer) = tokio::io::duplex(64);
        let mut io = DeadlineIo::new(server, Activity::new(), timeouts());
        assert_eq!(time_to_timeout(&mut io).await, IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_without_a_request_do_not_keep_it_open() {
        let (server, mut peer) = tokio::io::duplex(64);
        let mut io = DeadlineIo::new(server, Activity::new(), timeouts());
        tokio::spawn(async move {
            // Half an HTTP/2 preface, then a byte every 10 s.
            let _ = peer.write_all(b"PRI * HTTP/2.0\r\n").await;
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if peer.write_all(b"x").await.is_err() {
                    return;
                }
            }
        });
        assert_eq!(time_to_timeout(&mut io).await, IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_end_of_the_last_request() {
        let (server, _peer) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut io = DeadlineIo::new(server, activity.clone(), timeouts());
        let open = activity.start();
        let reader = tokio::spawn(async move { time_to_timeout(&mut io).await });
        // A request in progress for longer than the idle timeout...
        tokio::time::sleep(IDLE * 3).await;
        assert!(!reader.is_finished(), "timed out with a request open");
        // ...then, from its end, the idle timeout again: the reader is
        // woken by the end of the request, not by a byte.
        drop(open);
        let took = reader.await.expect("reader task");
        assert_eq!(took, IDLE * 4);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_connection_has_no_idle_deadline() {
        let (server, mut peer) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut io = DeadlineIo::new(server, activity.clone(), timeouts());
        let res = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .body(())
            .expect("valid response");
        drop(activity.start().track(false, res));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 4];
            io.read_exact(&mut buf).await.map(|_| buf)
        });
        tokio::time::sleep(IDLE * 10).await;
        peer.write_all(b"ping").await.expect("write");
        let got = reader.await.expect("reader task").expect("no timeout");
        assert_eq!(&got, b"ping");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_stalls_fails_after_the_write_timeout() {
        let (server, mut peer) = tokio::io::duplex(1024);
        let activity = Activity::new();
        let _open = activity.start();
        let mut io = DeadlineIo::new(server, activity, timeouts());
        // The peer reads 1 KiB every 30 s: slow, but progress.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            for _ in 0..4 {
                tokio::time::sleep(WRITE / 2).await;
                peer.read_exact(&mut buf).await.expect("read");
            }
            // Then it stops reading, and keeps the connection.
            peer
        });
        let start = Instant::now();
        let chunk = [7u8; 1024];
        let err = loop {
            if let Err(e) = io.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        // 1 KiB fits the pipe, four more were read every 30 s, then the
        // write timeout ran from the last progress.
        assert_eq!(start.elapsed(), WRITE / 2 * 4 + WRITE);
        drop(reader);
    }
}
