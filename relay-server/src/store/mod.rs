//! Every SQL statement the server runs. SQLite in `--data-dir`, WAL mode,
//! schema versioned by `PRAGMA user_version` with numbered migrations.
//!
//! Parts: this file (opening, migrations, names); `tokens.rs`; `captures.rs`
//! (the captured exchanges, retention); `delivery.rs` (missed requests and
//! the claims that deliver them).
//!
//! Calls are synchronous; async code goes through [`Store::call`], which runs
//! them on tokio's blocking pool so a slow disk never stalls the runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use relay_shared::protocol::WhenOffline;
use rusqlite::{params, Connection, OptionalExtension};

mod captures;
mod delivery;
mod tokens;

pub use captures::*;
pub use delivery::{ClaimOutcome, Settled, CLAIM_LEASE};
pub use tokens::{TokenCheck, TokenInfo, LAST_USE_GRANULARITY};

/// Numbered migrations; entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: tokens (hashed) and the names they own.
    "CREATE TABLE tokens (
        id INTEGER PRIMARY KEY,
        label TEXT,
        hash BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE names (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        claimed_at INTEGER NOT NULL
    );",
    // 2: captured requests. Summary columns first and bodies last, so a
    // listing never reads a body's overflow pages.
    "CREATE TABLE requests (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tunnel TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        status INTEGER,
        outcome TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        replay_of TEXT,
        request_size INTEGER NOT NULL,
        request_truncated INTEGER NOT NULL,
        response_size INTEGER,
        response_truncated INTEGER,
        request_headers BLOB NOT NULL,
        response_headers BLOB,
        request_body BLOB NOT NULL,
        response_body BLOB
    );
    CREATE INDEX requests_by_tunnel ON requests (tunnel, seq);",
    // 3: delivery state of missed requests, and each name's offline
    // answer. `requests` is rebuilt so the new columns sit with the summary
    // ones, before the bodies (SQLite appends added columns after them).
    // Offline captures become missed, or delivered where a replay already
    // reached the app.
    "CREATE TABLE requests_v3 (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tunnel TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        status INTEGER,
        outcome TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        replay_of TEXT,
        delivery TEXT,
        delivered_by TEXT,
        delivery_error TEXT,
        claim TEXT,
        claimed_until INTEGER,
        request_size INTEGER NOT NULL,
        request_truncated INTEGER NOT NULL,
        response_size INTEGER,
        response_truncated INTEGER,
        request_headers BLOB NOT NULL,
        response_headers BLOB,
        request_body BLOB NOT NULL,
        response_body BLOB
    );
    INSERT INTO requests_v3 (seq, id, tunnel, time_ms, method, path, status, outcome,
        duration_ms, replay_of, request_size, request_truncated, response_size,
        response_truncated, request_headers, response_headers, request_body, response_body)
    SELECT seq, id, tunnel, time_ms, method, path, status, outcome,
        duration_ms, replay_of, request_size, request_truncated, response_size,
        response_truncated, request_headers, response_headers, request_body, response_body
    FROM requests;
    DROP TABLE requests;
    ALTER TABLE requests_v3 RENAME TO requests;
    CREATE INDEX requests_by_tunnel ON requests (tunnel, seq);
    CREATE INDEX requests_by_original ON requests (replay_of) WHERE replay_of IS NOT NULL;
    UPDATE requests SET delivery = 'missed' WHERE outcome = 'offline' AND replay_of IS NULL;
    UPDATE requests SET delivery = 'delivered', delivered_by = (
        SELECT r.id FROM requests r
        WHERE r.replay_of = requests.id AND r.outcome = 'delivered' AND r.status < 500
        ORDER BY r.seq LIMIT 1)
    WHERE delivery = 'missed';
    UPDATE requests SET delivery = 'missed' WHERE delivery = 'delivered' AND delivered_by IS NULL;
    CREATE INDEX requests_waiting ON requests (tunnel, seq) WHERE delivery IN ('missed', 'failed');
    ALTER TABLE names ADD COLUMN when_offline TEXT NOT NULL DEFAULT 'reject';",
    // 4: a replay's diff against its original (JSON), kept for the
    // inspector. Appended after the bodies: only full records read it.
    "ALTER TABLE requests ADD COLUMN diff TEXT;",
    // 5: the caller-deadline and fault marks. Summary columns, so the
    // table is rebuilt to keep them before the bodies, as in 3; existing
    // captures keep everything and have no marks.
    "CREATE TABLE requests_v5 (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tunnel TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        status INTEGER,
        outcome TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        replay_of TEXT,
        delivery TEXT,
        delivered_by TEXT,
        delivery_error TEXT,
        claim TEXT,
        claimed_until INTEGER,
        deadline_exceeded_ms INTEGER,
        fault TEXT,
        request_size INTEGER NOT NULL,
        request_truncated INTEGER NOT NULL,
        response_size INTEGER,
        response_truncated INTEGER,
        request_headers BLOB NOT NULL,
        response_headers BLOB,
        request_body BLOB NOT NULL,
        response_body BLOB,
        diff TEXT
    );
    INSERT INTO requests_v5 (seq, id, tunnel, time_ms, method, path, status, outcome,
        duration_ms, replay_of, delivery, delivered_by, delivery_error, claim, claimed_until,
        request_size, request_truncated, response_size, response_truncated, request_headers,
        response_headers, request_body, response_body, diff)
    SELECT seq, id, tunnel, time_ms, method, path, status, outcome,
        duration_ms, replay_of, delivery, delivered_by, delivery_error, claim, claimed_until,
        request_size, request_truncated, response_size, response_truncated, request_headers,
        response_headers, request_body, response_body, diff
    FROM requests;
    DROP TABLE requests;
    ALTER TABLE requests_v5 RENAME TO requests;
    CREATE INDEX requests_by_tunnel ON requests (tunnel, seq);
    CREATE INDEX requests_by_original ON requests (replay_of) WHERE replay_of IS NOT NULL;
    CREATE INDEX requests_waiting ON requests (tunnel, seq) WHERE delivery IN ('missed', 'failed');",
    // 6: how many names a token may claim (NULL: no cap), and when it was
    // last used (to connect or to call the API), for `token list`.
    "ALTER TABLE tokens ADD COLUMN max_names INTEGER;
    ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;",
    // 7: each name's edge rules (JSON, the basic-auth password hashed),
    // checked also while its client is away.
    "ALTER TABLE names ADD COLUMN edge TEXT;",
];

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
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
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // rusqlite leaves the connection usable after a panic elsewhere.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
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
        let conn = self.lock();
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
        let conn = self.lock();
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
fn parse_when_offline(s: &str) -> WhenOffline {
    match s {
        "accept" => WhenOffline::Accept,
        _ => WhenOffline::Reject,
    }
}

impl Store {
    /// Who owns `name`: `token:ID` or `client:ID`.
    pub fn name_owner(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .lock()
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
mod tests;
