//! End-to-end harness for relay: starts the real `relay-server` and `relay`
//! binaries on loopback, next to a hyper origin ("local app") on port 0.
//!
//! Module map:
//! - [`bins`]: finds the built binaries in the target directory.
//! - [`process`]: a child process whose stdout lines are events; killed (by its
//!   own PID) when dropped.
//! - [`server`] / [`client`]: typed wrappers that start `relay-server` and
//!   `relay connect` and wait for their readiness lines.
//! - [`origin`]: the local app: `/echo`, `/stream`, `/hold`, `/download`,
//!   `/upload`, `/ws`, `/slow`, `/inbox`; it records every request it
//!   receives, and answers 500 on demand ([`Origin::fail`]).
//! - [`http`]: a small HTTP/1.1 client that can set any `Host` header, plus a
//!   raw-bytes exchange for byte-exact header tests, HTTPS (HTTP/1.1 over
//!   rustls) and HTTP/2 with prior knowledge.
//! - [`certs`]: self-signed certificates made at test time.
//! - [`pebble`]: Pebble, Let's Encrypt's test CA, and its DNS stand-in, on
//!   loopback for the `--acme` tests.
//! - [`idp`]: a local OAuth2 token endpoint (client credentials).
//! - [`jwks`]: a local identity provider's keys (`/.well-known/jwks.json`)
//!   and tokens signed with them (RS256, ES256), for `--verify-jwt`.
//! - [`metrics`]: the `--metrics-listen` address a server printed, and a
//!   parser for the Prometheus text it serves.
//! - [`cluster`]: several `relay-server` nodes sharing one store, each
//!   with its node listener, and the leases they keep.
//! - [`stack`]: [`Stack::builder`] starts a test's origin, server and client
//!   in one [`Sandbox`].
//! - [`postgres`]: a database of its own on the tests' PostgreSQL, for
//!   `relay-server --store postgres://...`.
//! - [`pattern`]: deterministic pseudo-random bodies and their SHA-256.
//! - [`capture_api`]: GETs on the server's capture API and decoders for its
//!   records (base64 bodies, header pairs, listings); [`capture_api::TunnelApi`]
//!   reads one tunnel's captures, missed requests and delivery states.
//! - [`delivery`]: missed requests: sent while the client is away, the
//!   offline answers (503 or 202 queued), what reached the local app.
//!
//! Nothing here sleeps to synchronise: readiness is a printed line, and every
//! wait carries a deadline.

pub mod bins;
pub mod capture_api;
pub mod certs;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod delivery;
pub mod http;
pub mod idp;
pub mod jwks;
pub mod metrics;
pub mod nginx;
pub mod origin;
pub mod pattern;
pub mod pebble;
pub mod postgres;
pub mod process;
pub mod server;
pub mod stack;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

pub use client::{ClientConfig, RelayClient, Routing};
pub use origin::Origin;
pub use server::{create_token, server_token, RelayServer, ServerConfig, Stop, TlsFiles};
pub use stack::{Stack, StackBuilder};

/// Awaits `fut`, failing with a message naming `what` if it takes longer than `limit`.
pub async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| anyhow!("timed out after {limit:?} waiting for {what}"))
}

/// Runs a whole test body under an overall deadline.
pub async fn run_test(limit: Duration, body: impl Future<Output = Result<()>>) -> Result<()> {
    within("the whole test", limit, body).await?
}

/// Polls `check` until it returns `Some`, or fails after `limit`. For conditions
/// that have no event to wait on (e.g. "the server noticed the client left").
pub async fn poll_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow!("condition not reached within {limit:?}: {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One test's private scratch space: every server data dir and client home
/// lives under it and is removed when it drops.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("relay-e2e-")
            .tempdir()
            .context("creating the test's temp dir")?;
        Ok(Self { dir })
    }

    /// A sub-directory of the sandbox, created if missing.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(p)
    }
}

/// A port on 127.0.0.1 where nothing listens, reserved for as long as this
/// value lives: its socket is bound but never listens, so a connection to it
/// is refused, and the kernel hands the port to no other socket, so no test
/// running in parallel can start listening there.
///
/// The socket sets `SO_REUSEADDR`, as `relay-server`'s listener does, so a
/// server started with `--listen` on this port can still take it (a client
/// started before its server); port-0 binds never get it.
pub struct ReservedPort {
    _socket: tokio::net::TcpSocket,
    port: u16,
}

impl ReservedPort {
    pub fn new() -> Result<Self> {
        let socket =
            tokio::net::TcpSocket::new_v4().context("creating a socket to reserve a port")?;
        socket
            .set_reuseaddr(true)
            .context("SO_REUSEADDR on the reserving socket")?;
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .context("binding the reserving socket")?;
        let port = socket.local_addr().context("reserved port")?.port();
        Ok(Self {
            _socket: socket,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}
