//! File descriptors for connections to the local app. Each request in
//! flight holds one such connection, and a process may hold only so many
//! descriptors (`RLIMIT_NOFILE`: 256 by default on macOS, 1024 on Linux,
//! raised to the hard limit at start where the system allows). A request
//! past that waits for a descriptor instead of failing with EMFILE, which
//! the visitor would get as a 502.
//!
//! [`FdBudget`] counts the descriptors connections may use; a connection
//! holds its permit for as long as its socket lives ([`Counted`]), upgraded
//! ones included. [`connect`] also retries a connect that fails with
//! EMFILE (descriptors used elsewhere in the process), until its caller's
//! deadline.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors left for everything but connections to the local app:
/// stdio, the runtime's poller and wakers, the session's socket, the
/// inspector's listener, its page's connections and replays, name lookups
/// reading `/etc/hosts`. About 20 are in use at rest; the rest is margin.
pub const RESERVED_FDS: u64 = 64;

/// First pause before retrying a connect that failed with EMFILE or
/// ENFILE; it doubles up to [`CONNECT_RETRY_MAX`].
const CONNECT_RETRY_MIN: Duration = Duration::from_millis(5);

/// Longest pause between such retries: a descriptor freed by a finished
/// request is used within this time.
const CONNECT_RETRY_MAX: Duration = Duration::from_millis(200);

/// How many connections to the local app may be open at once.
#[derive(Debug, Clone)]
pub struct FdBudget {
    permits: Arc<Semaphore>,
}

impl FdBudget {
    /// Sized from the process's soft descriptor limit, less
    /// [`RESERVED_FDS`] (half the limit when that is small).
    pub fn from_limit() -> Self {
        let limit = match rlimit::Resource::NOFILE.get() {
            Ok((soft, _hard)) => soft,
            // No such limit (or it cannot be read): the Linux default.
            Err(_) => 1024,
        };
        Self::new(permits_for(limit))
    }

    pub fn new(permits: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits)),
        }
    }

    /// Waits until a connection may be opened. Cancel safe: a caller that
    /// gives up waiting loses its place in the queue, nothing else.
    pub async fn acquire(&self) -> OwnedSemaphorePermit {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .expect("the budget's semaphore is never closed")
    }

    /// No descriptor is free (requests may be waiting for one): a finished
    /// connection should be closed rather than kept idle, so they get it.
    pub fn exhausted(&self) -> bool {
        self.permits.available_permits() == 0
    }
}

/// Connections allowed by a soft limit of `limit` descriptors.
fn permits_for(limit: u64) -> usize {
    let usable = if limit > 2 * RESERVED_FDS {
        limit - RESERVED_FDS
    } else {
        limit / 2
    };
    usize::try_from(usable)
        .unwrap_or(usize::MAX)
        .clamp(1, Semaphore::MAX_PERMITS)
}

/// A connection that holds one of the budget's permits until it closes.
#[derive(Debug)]
pub struct Counted<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
}

impl<T> Counted<T> {
    pub fn new(io: T, permit: OwnedSemaphorePermit) -> Self {
        Self {
            io,
            _permit: permit,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Connects to `addr`, retrying while the process is out of descriptors
/// (they may be in use outside the budget); the caller's timeout bounds
/// the whole. Cancel safe.
pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut pause = CONNECT_RETRY_MIN;
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if out_of_descriptors(&e) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(CONNECT_RETRY_MAX);
            }
            result => return result,
        }
    }
}

/// EMFILE (this process) or ENFILE (the whole system): 24 and 23 on Linux,
/// macOS and the BSDs alike; std gives them no `ErrorKind` of their own.
fn out_of_descriptors(e: &io::Error) -> bool {
    cfg!(unix) && matches!(e.raw_os_error(), Some(23 | 24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_room_for_the_rest_of_the_process() {
        assert_eq!(permits_for(256), 192);
        assert_eq!(permits_for(1024), 960);
        assert_eq!(permits_for(100), 50);
        assert_eq!(permits_for(1), 1);
        assert_eq!(permits_for(u64::MAX), Semaphore::MAX_PERMITS);
    }

    #[test]
    fn emfile_and_enfile_are_out_of_descriptors() {
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(24)));
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(23)));
        assert!(!out_of_descriptors(&io::Error::from(
            io::ErrorKind::ConnectionRefused
        )));
    }

    #[tokio::test]
    async fn a_connection_holds_its_permit_until_it_closes() {
        let budget = FdBudget::new(1);
        let (a, _b) = tokio::io::duplex(8);
        let conn = Counted::new(a, budget.acquire().await);
        assert!(budget.exhausted());
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.acquire().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(conn);
        let _permit = waiter.await.expect("the waiter gets the permit");
        assert!(budget.exhausted());
    }
}
