//! The store on PostgreSQL (`--store postgres://...`), shared by several
//! nodes: the same methods as the SQLite engine (`Store` hands over to
//! these), with what several writers need on top: checks and changes in
//! one statement or under a lock (never read-then-write), NOTIFY of every
//! change another node may have to see (`events.rs`), and leases on names
//! (`leases.rs`).
//!
//! Parts: this file (the runtime, the pool, names); `schema.rs`;
//! `tokens.rs`; `captures.rs`; `delivery.rs`; `events.rs`; `leases.rs`.
//!
//! ## Why the engine has a runtime of its own
//!
//! The store's methods are synchronous (SQLite's are), and the driver is
//! async. A sync method could `Handle::block_on` the server's runtime, but
//! that panics when called on one of its worker threads, and the server
//! does call the store there (opening it in `Server::new`, tests, any
//! future caller that forgets `Store::call`). So the engine owns a small
//! runtime ([`RUNTIME_THREADS`] threads) that drives the pool's connections
//! and the listener; a sync method spawns its query there and waits on a
//! plain channel. That works on any thread, never panics, and cannot
//! deadlock on the caller's runtime; a call from a worker thread only
//! blocks that thread for the round trip, as a SQLite call does, which is
//! why async code still goes through `Store::call`.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use relay_shared::protocol::WhenOffline;
use tokio_postgres::NoTls;

use super::location::redact;
use super::{now, parse_when_offline, Claim, NameSettings};

mod captures;
mod delivery;
mod events;
mod leases;
mod schema;
mod tokens;

#[cfg(test)]
pub(crate) mod testdb;

/// Connections in the pool, at most: the blocking pool's store calls and
/// the capture writer share them; PostgreSQL's default `max_connections`
/// (100) then allows several nodes.
pub const POOL_SIZE: usize = 16;
/// How long a call waits for a free connection, or for a new one to be
/// made, before it fails (a dead database must not hang requests).
pub const POOL_TIMEOUT: Duration = Duration::from_secs(10);
/// Threads of the engine's own runtime: they only drive sockets.
pub const RUNTIME_THREADS: usize = 2;

/// The NOTIFY channel of every event (`events.rs`).
pub const EVENTS_CHANNEL: &str = "relay_events";

/// The PostgreSQL engine; `Store` holds it in an `Arc`.
pub struct PgStore {
    /// Taken in `Drop`, to shut down without blocking: the last handle
    /// may be dropped on a runtime thread, where a blocking drop panics.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    /// For the listener's connection, kept apart from the pool.
    config: tokio_postgres::Config,
    /// The URL without its password, for messages.
    shown: String,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects and brings the schema up to date.
    pub fn open(url: &str) -> anyhow::Result<Self> {
        let shown = redact(url);
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| anyhow::anyhow!("--store {shown}: {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("relay-postgres")
            .enable_all()
            .build()
            .context("starting the PostgreSQL store's runtime")?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A connection that broke is found by its next query, which
                // fails once; checking each one before use would cost a
                // round trip per call.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .context("building the PostgreSQL pool")?;
        let store = Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            pool,
            config,
            shown,
        };
        store
            .query(schema::migrate)
            .context("opening the PostgreSQL store")?;
        Ok(store)
    }

    /// Runs `fut` on the engine's runtime and waits for it (see the module
    /// doc for why not `block_on`).
    fn run<T, Fut>(&self, fut: Fut) -> anyhow::Result<T>
    where
        T: Send + 'static,
        Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| anyhow::anyhow!("the PostgreSQL store stopped"))?
    }

    /// Runs `f` with a pooled connection.
    fn query<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    {
        let pool = self.pool.clone();
        let shown = self.shown.clone();
        self.run(async move {
            let client = pool
                .get()
                .await
                .with_context(|| format!("connecting to {shown}"))?;
            f(client).await
        })
    }

    /// See `Store::claim_name`. Claims of one owner take a lock on it, so
    /// two connects (on two nodes) cannot both take the last of its
    /// `max_names`.
    pub fn claim_name(
        &self,
        name: &str,
        owner: &str,
        when_offline: Option<WhenOffline>,
        edge: Option<Option<String>>,
        max_names: Option<u32>,
    ) -> anyhow::Result<Claim> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.query(move |mut c| async move {
            let tx = c.transaction().await?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('relay owner ' || $1, 0))",
                &[&owner],
            )
            .await?;
            if let Some(max) = max_names {
                let row = tx
                    .query_one(
                        "SELECT count(*), coalesce(bool_or(name = $2), false)
                         FROM names WHERE owner = $1",
                        &[&owner, &name],
                    )
                    .await?;
                let (owned, has_it): (i64, bool) = (row.get(0), row.get(1));
                if !has_it && owned >= i64::from(max) {
                    return Ok(Claim::LimitReached(max));
                }
            }
            // Inserted or not, the row comes back locked for the update.
            tx.execute(
                "INSERT INTO names (name, owner, claimed_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &owner, &now()],
            )
            .await?;
            let row = tx
                .query_one(
                    "SELECT owner, when_offline, edge FROM names WHERE name = $1 FOR UPDATE",
                    &[&name],
                )
                .await?;
            let holder: String = row.get(0);
            if holder != owner {
                return Ok(Claim::Taken);
            }
            let kept = NameSettings {
                when_offline: parse_when_offline(row.get(1)),
                edge: row.get(2),
            };
            let wanted = NameSettings {
                when_offline: when_offline.unwrap_or(kept.when_offline),
                edge: edge.unwrap_or_else(|| kept.edge.clone()),
            };
            if wanted != kept {
                tx.execute(
                    "UPDATE names SET when_offline = $2, edge = $3 WHERE name = $1",
                    &[&name, &wanted.when_offline.as_str(), &wanted.edge],
                )
                .await?;
                events::notify(&tx, "name", &name).await?;
            }
            tx.commit().await?;
            Ok(Claim::Granted(wanted))
        })
    }

    pub fn known_names(&self) -> anyhow::Result<Vec<(String, NameSettings)>> {
        self.query(|c| async move {
            let rows = c
                .query("SELECT name, when_offline, edge FROM names", &[])
                .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let settings = NameSettings {
                        when_offline: parse_when_offline(r.get(1)),
                        edge: r.get(2),
                    };
                    (r.get(0), settings)
                })
                .collect())
        })
    }

    pub fn name_settings(&self, name: &str) -> anyhow::Result<Option<NameSettings>> {
        let name = name.to_owned();
        self.query(move |c| async move {
            let stmt = c
                .prepare_cached("SELECT when_offline, edge FROM names WHERE name = $1")
                .await?;
            Ok(c.query_opt(&stmt, &[&name]).await?.map(|r| NameSettings {
                when_offline: parse_when_offline(r.get(0)),
                edge: r.get(1),
            }))
        })
    }

    pub fn name_owner(&self, name: &str) -> anyhow::Result<Option<String>> {
        let name = name.to_owned();
        self.query(move |c| async move {
            let stmt = c
                .prepare_cached("SELECT owner FROM names WHERE name = $1")
                .await?;
            Ok(c.query_opt(&stmt, &[&name]).await?.map(|r| r.get(0)))
        })
    }

    /// Runs raw SQL (tests that break things on purpose); rows affected.
    #[cfg(test)]
    pub(crate) fn execute_for_test(&self, sql: &'static str) -> anyhow::Result<u64> {
        self.query(move |c| async move { Ok(c.execute(sql, &[]).await?) })
    }
}
