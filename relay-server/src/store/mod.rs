//! Every SQL statement the server runs, on one of two engines behind one
//! handle: SQLite in `--data-dir` (the default: WAL mode, schema versioned
//! by `PRAGMA user_version`), or PostgreSQL with `--store postgres://...`,
//! shared by several nodes (`pg/`, its own numbered migrations).
//!
//! Parts: this file (opening, the engine, names); `location.rs` (what
//! `--store` says); `sqlite_schema.rs`; `tokens.rs`; `captures.rs` (the
//! captured exchanges, retention); `delivery.rs` (missed requests and the
//! claims that deliver them); `writer.rs` (the capture writer's batches);
//! `pg/` (the same on PostgreSQL).
//!
//! Calls are synchronous; async code goes through [`Store::call`], which runs
//! them on tokio's blocking pool so a slow disk or a database round trip
//! never stalls the runtime. Each SQLite method starts with
//! `match self.on()`: on PostgreSQL it hands over to `pg/` at once, so the
//! two engines share the method names and the callers see one `Store`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use relay_shared::api::Summary;
use relay_shared::protocol::WhenOffline;
use rusqlite::{params, Connection, OptionalExtension};

mod captures;
mod delivery;
mod leases;
mod location;
pub mod pg;
mod sqlite_schema;
mod tokens;
mod writer;

pub use captures::*;
pub use delivery::{ClaimOutcome, Settled, CLAIM_LEASE};
pub use location::StoreLocation;
pub use tokens::{TokenCheck, TokenInfo, LAST_USE_GRANULARITY};
pub use writer::CaptureWriter;

pub(crate) use sqlite_schema::MIGRATIONS;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    engine: Engine,
}

#[derive(Clone)]
enum Engine {
    Sqlite {
        conn: Arc<Mutex<Connection>>,
        /// Where the capture writer opens its own connection.
        dir: PathBuf,
    },
    Postgres(Arc<pg::PgStore>),
}

/// What a method runs on: SQLite's connection, locked, or PostgreSQL.
enum On<'a> {
    Sqlite(MutexGuard<'a, Connection>),
    Pg(&'a pg::PgStore),
}

/// A name held by one node of several (`--store postgres://...`): the
/// node serving its tunnel's session, reached at `node_url`. `epoch` grows
/// by one at each takeover, so a node can tell it lost the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub node_id: String,
    pub node_url: String,
    pub epoch: i64,
    pub expires_at_ms: i64,
}

/// What the server keeps with a name: its offline answer and its edge
/// rules (`edge.rs`'s stored JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameSettings {
    pub when_offline: WhenOffline,
    pub edge: Option<String>,
}

/// Result of claiming a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The name is now (or already was) this owner's; what it keeps.
    Granted(NameSettings),
    /// Another owner has it.
    Taken,
    /// The owner's token already has this many names (`--max-names`).
    LimitReached(u32),
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) `dir/relay.db` and migrates it.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let mut conn = connect(dir)?;
        migrate(&mut conn)?;
        Ok(Self {
            engine: Engine::Sqlite {
                conn: Arc::new(Mutex::new(conn)),
                dir: dir.to_owned(),
            },
        })
    }

    /// Opens the store `--store` names, migrating it.
    pub fn open_at(location: &StoreLocation) -> anyhow::Result<Self> {
        match location {
            StoreLocation::Sqlite(dir) => Self::open(dir),
            StoreLocation::Postgres(url) => Ok(Self {
                engine: Engine::Postgres(Arc::new(pg::PgStore::open(url)?)),
            }),
        }
    }

    /// The PostgreSQL engine, for what only it has (leases).
    pub fn postgres(&self) -> Option<&pg::PgStore> {
        match &self.engine {
            Engine::Postgres(pg) => Some(pg),
            Engine::Sqlite { .. } => None,
        }
    }

    fn on(&self) -> On<'_> {
        match &self.engine {
            // rusqlite leaves the connection usable after a panic elsewhere.
            Engine::Sqlite { conn, .. } => {
                On::Sqlite(conn.lock().unwrap_or_else(|e| e.into_inner()))
            }
            Engine::Postgres(pg) => On::Pg(pg),
        }
    }

    /// The SQLite connection (tests of its migrations).
    #[cfg(test)]
    fn lock(&self) -> MutexGuard<'_, Connection> {
        match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(_) => panic!("a SQLite test ran on PostgreSQL"),
        }
    }

    /// Runs `f` on the blocking pool.
    pub async fn call<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> anyhow::Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .context("store task panicked")?
    }

    /// Every change another handle (another node) makes that this node may
    /// have to show or act on, as NOTIFY payloads carrying ids only:
    /// `capture:ID`, `name:NAME`, `token:ID`, `delivery:ID`. `None` on
    /// SQLite, where one server is all there is. The channel follows one
    /// connection kept apart from the pool, reconnecting when it drops;
    /// what was sent while it was down is not replayed.
    pub async fn listen_events(
        &self,
    ) -> anyhow::Result<Option<tokio::sync::mpsc::Receiver<String>>> {
        match &self.engine {
            Engine::Sqlite { .. } => Ok(None),
            Engine::Postgres(pg) => pg.listen_events().await.map(Some),
        }
    }

    /// A new connection for the capture writer's thread, which writes in
    /// batches while the API reads through this handle.
    pub fn capture_writer(&self) -> anyhow::Result<CaptureWriter> {
        match &self.engine {
            Engine::Sqlite { dir, .. } => Ok(CaptureWriter::sqlite(connect(dir)?)),
            Engine::Postgres(pg) => Ok(CaptureWriter::postgres(pg.clone())),
        }
    }

    /// One capture's summary by id, whatever its tunnel: what a node sends
    /// its live listeners for another node's `capture:ID` event.
    pub fn summary_by_id(&self, id: &str) -> anyhow::Result<Option<Summary>> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.summary_by_id(id),
        };
        let sql = format!("SELECT {SUMMARY_COLUMNS} FROM requests WHERE id = ?1");
        Ok(conn
            .query_row(&sql, params![id], summary_from_row)
            .optional()?)
    }

    /// Gives `name` to `owner` unless another owner has it, or the owner
    /// already has `max_names` others; keeps the offline answer and edge
    /// rules the client asked for (`None`: the ones it has; `Some(None)`
    /// clears the rules). One connection serialises the count and the
    /// insert, so two connects cannot both take the last slot.
    pub fn claim_name(
        &self,
        name: &str,
        owner: &str,
        when_offline: Option<WhenOffline>,
        edge: Option<Option<String>>,
        max_names: Option<u32>,
    ) -> anyhow::Result<Claim> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.claim_name(name, owner, when_offline, edge, max_names),
        };
        if let Some(max) = max_names {
            let (owned, has_it): (u32, bool) = conn.query_row(
                "SELECT COUNT(*), COALESCE(MAX(name = ?2), 0) FROM names WHERE owner = ?1",
                params![owner, name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if !has_it && owned >= max {
                return Ok(Claim::LimitReached(max));
            }
        }
        conn.execute(
            "INSERT OR IGNORE INTO names (name, owner, claimed_at) VALUES (?1, ?2, ?3)",
            params![name, owner, now()],
        )?;
        let (holder, kept_offline, kept_edge): (String, String, Option<String>) = conn.query_row(
            "SELECT owner, when_offline, edge FROM names WHERE name = ?1",
            params![name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        if holder != owner {
            return Ok(Claim::Taken);
        }
        let kept = NameSettings {
            when_offline: parse_when_offline(&kept_offline),
            edge: kept_edge,
        };
        let wanted = NameSettings {
            when_offline: when_offline.unwrap_or(kept.when_offline),
            edge: edge.unwrap_or_else(|| kept.edge.clone()),
        };
        if wanted != kept {
            conn.execute(
                "UPDATE names SET when_offline = ?2, edge = ?3 WHERE name = ?1",
                params![name, wanted.when_offline.as_str(), wanted.edge],
            )?;
        }
        Ok(Claim::Granted(wanted))
    }

    /// Every claimed name with what it keeps, so the server can tell
    /// "offline" from "unknown", and answer, without a query per request.
    pub fn known_names(&self) -> anyhow::Result<Vec<(String, NameSettings)>> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.known_names(),
        };
        let mut stmt = conn.prepare("SELECT name, when_offline, edge FROM names")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                NameSettings {
                    when_offline: parse_when_offline(&r.get::<_, String>(1)?),
                    edge: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// A stored offline answer; anything unknown (a newer server's value) is
/// the safe default.
pub(crate) fn parse_when_offline(s: &str) -> WhenOffline {
    match s {
        "accept" => WhenOffline::Accept,
        _ => WhenOffline::Reject,
    }
}

impl Store {
    /// Who owns `name`: `token:ID` or `client:ID`.
    pub fn name_owner(&self, name: &str) -> anyhow::Result<Option<String>> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.name_owner(name),
        };
        Ok(conn
            .query_row(
                "SELECT owner FROM names WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// Opens `dir/relay.db` in WAL mode. WAL lets the capture writer's own
/// connection insert while API reads go on through the store's.
pub fn connect(dir: &Path) -> anyhow::Result<Connection> {
    crate::config::ensure_data_dir(dir)?;
    let path = dir.join("relay.db");
    let conn = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // First, so that the statements below wait for another process (a
    // `token create` next to the server) instead of failing.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Switching a fresh file to WAL can report "locked" without calling the
    // busy handler while another process does the same; retry briefly.
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => break,
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    // NORMAL in WAL mode: a power cut may lose the last commits, never
    // corrupt the file; the fsync per commit that FULL costs would throttle
    // capture.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Room for a tunnel's retained captures, so trimming and listing do not
    // re-read pages from the file; the cache grows only as pages are used.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    Ok(conn)
}

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// SQLite page cache per connection, in KiB.
const CACHE_KIB: i64 = 1024;
/// Brings the schema up to date. The version is read inside an IMMEDIATE
/// transaction, so a server and a `token create` opening the same fresh
/// database cannot both run migration 1.
fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version = tx.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        anyhow::bail!(
            "database schema version {version} is newer than this relay-server knows ({}); upgrade relay-server",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)
            .with_context(|| format!("migration {}", i + 1))?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()?;
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod leases_tests;
#[cfg(test)]
mod tests;
