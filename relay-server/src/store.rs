//! Every SQL statement the server runs. SQLite in `--data-dir`, WAL mode,
//! schema versioned by `PRAGMA user_version` with numbered migrations.
//!
//! Calls are synchronous; async code goes through [`Store::call`], which runs
//! them on tokio's blocking pool so a slow disk never stalls the runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use relay_shared::api::{decode_headers, Message, Outcome, Page, Record, Summary};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

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
];

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

/// A token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub label: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// Result of claiming a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The name is now (or already was) this owner's.
    Granted,
    /// Another owner has it.
    Taken,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn hash_token(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
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

    /// Creates a token; returns its id and the secret, which is shown once.
    pub fn create_token(&self, label: Option<&str>) -> anyhow::Result<(i64, String)> {
        use rand::RngExt;
        let bytes: [u8; 24] = rand::rng().random();
        let secret = format!("rly_{}", hex(&bytes));
        let conn = self.lock();
        conn.execute(
            "INSERT INTO tokens (label, hash, created_at) VALUES (?1, ?2, ?3)",
            params![label, hash_token(&secret), now()],
        )?;
        Ok((conn.last_insert_rowid(), secret))
    }

    pub fn list_tokens(&self) -> anyhow::Result<Vec<TokenInfo>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT id, label, created_at, revoked_at FROM tokens ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(TokenInfo {
                id: r.get(0)?,
                label: r.get(1)?,
                created_at: r.get(2)?,
                revoked_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes a token; `false` if no live token has that id.
    pub fn revoke_token(&self, id: i64) -> anyhow::Result<bool> {
        let n = self.lock().execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now()],
        )?;
        Ok(n == 1)
    }

    /// The id of the live token with this secret.
    pub fn verify_token(&self, secret: &str) -> anyhow::Result<Option<i64>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id FROM tokens WHERE hash = ?1 AND revoked_at IS NULL",
                params![hash_token(secret)],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Gives `name` to `owner` unless another owner has it.
    pub fn claim_name(&self, name: &str, owner: &str) -> anyhow::Result<Claim> {
        let conn = self.lock();
        conn.execute(
            "INSERT OR IGNORE INTO names (name, owner, claimed_at) VALUES (?1, ?2, ?3)",
            params![name, owner, now()],
        )?;
        let holder: String = conn.query_row(
            "SELECT owner FROM names WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )?;
        Ok(if holder == owner {
            Claim::Granted
        } else {
            Claim::Taken
        })
    }

    /// Every claimed name, so the server can tell "offline" from "unknown"
    /// without a query per request.
    pub fn known_names(&self) -> anyhow::Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT name FROM names")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
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

/// A captured exchange on its way into the `requests` table.
#[derive(Debug, Clone)]
pub struct NewCapture {
    pub id: String,
    pub tunnel: String,
    pub time_ms: i64,
    pub method: String,
    pub path: String,
    pub status: Option<u16>,
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub replay_of: Option<String>,
    pub request: NewMessage,
    pub response: Option<NewMessage>,
}

/// Headers (in the form of [`relay_shared::api::encode_headers`]) and the
/// captured prefix of a body.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    pub headers: Vec<u8>,
    pub body: Vec<u8>,
    pub size: u64,
    pub truncated: bool,
}

impl NewCapture {
    pub fn summary(&self) -> Summary {
        Summary {
            id: self.id.clone(),
            tunnel: self.tunnel.clone(),
            time: format_time(self.time_ms),
            method: self.method.clone(),
            path: self.path.clone(),
            status: self.status,
            outcome: self.outcome,
            duration_ms: self.duration_ms,
            request_size: self.request.size,
            response_size: self.response.as_ref().map_or(0, |r| r.size),
            replay_of: self.replay_of.clone(),
            delivery: None,
            delivered_by: None,
            delivery_error: None,
        }
    }
}

/// Which captures a listing wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub limit: u32,
    /// Only entries older than this id.
    pub before: Option<String>,
    pub method: Option<String>,
    pub status: Option<u16>,
    pub outcome: Option<Outcome>,
    /// Substring of the path.
    pub path: Option<String>,
}

/// Stores one capture; statements are cached, so a batch inside one
/// transaction costs a few B-tree inserts per row.
pub fn insert_capture(conn: &Connection, r: &NewCapture) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO requests (id, tunnel, time_ms, method, path, status, outcome,
            duration_ms, replay_of, request_size, request_truncated, response_size,
            response_truncated, request_headers, response_headers, request_body, response_body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?;
    let resp = r.response.as_ref();
    stmt.execute(params![
        r.id,
        r.tunnel,
        r.time_ms,
        r.method,
        r.path,
        r.status,
        r.outcome.as_str(),
        r.duration_ms as i64,
        r.replay_of,
        r.request.size as i64,
        r.request.truncated,
        resp.map(|m| m.size as i64),
        resp.map(|m| m.truncated),
        r.request.headers,
        resp.map(|m| m.headers.as_slice()),
        r.request.body,
        resp.map(|m| m.body.as_slice()),
    ])?;
    Ok(())
}

/// Deletes the `n` oldest captures of `tunnel`.
pub fn delete_oldest(conn: &Connection, tunnel: &str, n: u64) -> rusqlite::Result<usize> {
    let mut stmt = conn.prepare_cached(
        "DELETE FROM requests WHERE seq IN (
            SELECT seq FROM requests WHERE tunnel = ?1 ORDER BY seq LIMIT ?2)",
    )?;
    stmt.execute(params![tunnel, n as i64])
}

/// How many captures `tunnel` has.
pub fn count_captures(conn: &Connection, tunnel: &str) -> rusqlite::Result<u64> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM requests WHERE tunnel = ?1",
        params![tunnel],
        |r| r.get(0),
    )?;
    Ok(n.max(0) as u64)
}

/// RFC 3339 in UTC with milliseconds.
pub fn format_time(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const SUMMARY_COLUMNS: &str = "id, tunnel, time_ms, method, path, status, outcome, duration_ms,
    request_size, response_size, replay_of";

fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Summary> {
    Ok(Summary {
        id: r.get(0)?,
        tunnel: r.get(1)?,
        time: format_time(r.get(2)?),
        method: r.get(3)?,
        path: r.get(4)?,
        status: r.get(5)?,
        outcome: r.get::<_, String>(6)?.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, Box::new(e))
        })?,
        duration_ms: r.get::<_, i64>(7)?.max(0) as u64,
        request_size: r.get::<_, i64>(8)?.max(0) as u64,
        response_size: r.get::<_, Option<i64>>(9)?.unwrap_or(0).max(0) as u64,
        replay_of: r.get(10)?,
        delivery: None,
        delivered_by: None,
        delivery_error: None,
    })
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

    /// A page of `tunnel`'s captures, newest first.
    pub fn list_captures(&self, tunnel: &str, f: &Filter) -> anyhow::Result<Page> {
        let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM requests WHERE tunnel = ?1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(tunnel.to_owned())];
        let mut add = |clause: &str, v: Box<dyn rusqlite::ToSql>| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(b) = &f.before {
            add(
                " AND seq < coalesce((SELECT seq FROM requests WHERE id = ?), 0)",
                Box::new(b.clone()),
            );
        }
        if let Some(m) = &f.method {
            add(" AND method = ?", Box::new(m.to_ascii_uppercase()));
        }
        if let Some(s) = f.status {
            add(" AND status = ?", Box::new(s));
        }
        if let Some(o) = &f.outcome {
            add(" AND outcome = ?", Box::new(o.as_str()));
        }
        if let Some(p) = &f.path {
            add(" AND instr(path, ?) > 0", Box::new(p.clone()));
        }
        let limit = f.limit.clamp(1, 1000);
        // One more than asked tells whether an older page exists.
        add(" ORDER BY seq DESC LIMIT ?", Box::new(limit + 1));
        let conn = self.lock();
        let mut stmt = conn.prepare(&sql)?;
        let mut requests = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), summary_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let next_before = if requests.len() > limit as usize {
            requests.truncate(limit as usize);
            requests.last().map(|s| s.id.clone())
        } else {
            None
        };
        Ok(Page {
            requests,
            next_before,
        })
    }

    /// One capture in full, if it belongs to `tunnel`.
    pub fn get_capture(&self, tunnel: &str, id: &str) -> anyhow::Result<Option<Record>> {
        let conn = self.lock();
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS}, request_truncated, response_truncated, request_headers,
                response_headers, request_body, response_body
             FROM requests WHERE id = ?1 AND tunnel = ?2"
        );
        Ok(conn
            .query_row(&sql, params![id, tunnel], |r| {
                let summary = summary_from_row(r)?;
                let request = Message {
                    headers: decode_headers(&r.get::<_, Vec<u8>>(13)?),
                    body: r.get(15)?,
                    body_size: summary.request_size,
                    body_truncated: r.get(11)?,
                };
                let response = match r.get::<_, Option<Vec<u8>>>(14)? {
                    Some(headers) => Some(Message {
                        headers: decode_headers(&headers),
                        body: r.get::<_, Option<Vec<u8>>>(16)?.unwrap_or_default(),
                        body_size: summary.response_size,
                        body_truncated: r.get::<_, Option<bool>>(12)?.unwrap_or(false),
                    }),
                    None => None,
                };
                Ok(Record {
                    summary,
                    request,
                    response,
                })
            })
            .optional()?)
    }
}

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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("opens");
        (dir, store)
    }

    #[test]
    fn tokens_are_hashed_verified_and_revoked() {
        let (dir, s) = store();
        let (id, secret) = s.create_token(Some("laptop")).expect("created");
        assert!(secret.starts_with("rly_"));
        assert_eq!(s.verify_token(&secret).expect("query"), Some(id));
        assert_eq!(s.verify_token("rly_wrong").expect("query"), None);
        let raw = std::fs::read(dir.path().join("relay.db")).unwrap_or_default();
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secret stored in clear"
        );
        assert!(s.revoke_token(id).expect("revoke"));
        assert!(!s.revoke_token(id).expect("revoke twice"));
        assert_eq!(s.verify_token(&secret).expect("query"), None);
        assert_eq!(
            s.list_tokens().expect("list")[0].label.as_deref(),
            Some("laptop")
        );
    }

    #[test]
    fn names_belong_to_first_owner_and_survive_reopen() {
        let (dir, s) = store();
        assert_eq!(
            s.claim_name("app", "token:1").expect("claim"),
            Claim::Granted
        );
        assert_eq!(
            s.claim_name("app", "token:1").expect("again"),
            Claim::Granted
        );
        assert_eq!(s.claim_name("app", "token:2").expect("other"), Claim::Taken);
        drop(s);
        let s = Store::open(dir.path()).expect("reopens");
        assert_eq!(s.known_names().expect("names"), ["app"]);
        assert_eq!(
            s.claim_name("app", "client:x").expect("other"),
            Claim::Taken
        );
    }

    #[test]
    fn concurrent_opens_of_a_fresh_database_both_succeed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_owned();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || Store::open(&p).map(|_| ()))
            })
            .collect();
        for t in threads {
            t.join().expect("thread").expect("open succeeds");
        }
    }

    fn capture(id: &str, tunnel: &str, method: &str, path: &str, status: u16) -> NewCapture {
        NewCapture {
            id: id.into(),
            tunnel: tunnel.into(),
            time_ms: 1_764_000_000_000,
            method: method.into(),
            path: path.into(),
            status: Some(status),
            outcome: if status == 503 {
                Outcome::Offline
            } else {
                Outcome::Delivered
            },
            duration_ms: 3,
            replay_of: None,
            request: NewMessage {
                headers: b"host: a\r\nx-k: v\r\n".to_vec(),
                body: b"{}".to_vec(),
                size: 2,
                truncated: false,
            },
            response: (status != 503).then(|| NewMessage {
                headers: b"content-type: text/plain\r\n".to_vec(),
                body: b"ok".to_vec(),
                size: 10,
                truncated: true,
            }),
        }
    }

    #[test]
    fn migrates_a_version_1_database_keeping_its_data() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let conn = Connection::open(dir.path().join("relay.db")).expect("open");
            conn.execute_batch(MIGRATIONS[0]).expect("schema 1");
            conn.execute(
                "INSERT INTO names (name, owner, claimed_at) VALUES ('app', 'client:x', 1)",
                [],
            )
            .expect("a name");
            conn.pragma_update(None, "user_version", 1)
                .expect("version");
        }
        let s = Store::open(dir.path()).expect("migrates");
        assert_eq!(
            s.name_owner("app").expect("query").as_deref(),
            Some("client:x")
        );
        let version: i64 = s
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version as usize, MIGRATIONS.len());
        insert_capture(&s.lock(), &capture("r1", "app", "GET", "/", 200)).expect("insert");
        assert_eq!(
            s.list_captures("app", &Filter::default())
                .expect("list")
                .requests
                .len(),
            1
        );
    }

    #[test]
    fn lists_newest_first_with_filters_and_cursor_and_reads_back_in_full() {
        let (_dir, s) = store();
        {
            let conn = s.lock();
            insert_capture(&conn, &capture("a1", "app", "POST", "/hook?x=1", 200)).expect("insert");
            insert_capture(&conn, &capture("a2", "app", "GET", "/other", 404)).expect("insert");
            insert_capture(&conn, &capture("a3", "app", "POST", "/hook", 503)).expect("insert");
            insert_capture(&conn, &capture("b1", "other", "POST", "/hook", 200)).expect("insert");
        }
        let ids = |f: Filter| -> Vec<String> {
            s.list_captures("app", &Filter { limit: 50, ..f })
                .expect("list")
                .requests
                .into_iter()
                .map(|r| r.id)
                .collect()
        };
        assert_eq!(ids(Filter::default()), ["a3", "a2", "a1"]);
        let f = |m: Option<&str>, st: Option<u16>, o: Option<&str>, p: Option<&str>| Filter {
            method: m.map(Into::into),
            status: st,
            outcome: o.map(|o| o.parse().expect("test outcomes are known")),
            path: p.map(Into::into),
            ..Filter::default()
        };
        assert_eq!(ids(f(Some("post"), None, None, None)), ["a3", "a1"]);
        assert_eq!(ids(f(None, Some(404), None, None)), ["a2"]);
        assert_eq!(ids(f(None, None, Some("offline"), None)), ["a3"]);
        assert_eq!(ids(f(None, None, None, Some("x=1"))), ["a1"]);
        let page = s
            .list_captures(
                "app",
                &Filter {
                    limit: 2,
                    ..Filter::default()
                },
            )
            .expect("list");
        assert_eq!(page.next_before.as_deref(), Some("a2"));
        let rest = s
            .list_captures(
                "app",
                &Filter {
                    limit: 2,
                    before: page.next_before,
                    ..Filter::default()
                },
            )
            .expect("list");
        assert_eq!(rest.requests.len(), 1);
        assert_eq!(rest.next_before, None);

        let full = s.get_capture("app", "a1").expect("get").expect("found");
        assert_eq!(full.summary.path, "/hook?x=1");
        assert_eq!(full.request.headers[1], ("x-k".to_owned(), "v".to_owned()));
        assert_eq!(full.request.body, b"{}");
        let response = full.response.expect("has a response");
        assert_eq!((response.body_size, response.body_truncated), (10, true));
        assert!(
            s.get_capture("app", "b1").expect("get").is_none(),
            "other tunnel's"
        );
        let offline = s.get_capture("app", "a3").expect("get").expect("found");
        assert!(offline.response.is_none());
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let conn = Connection::open(dir.path().join("relay.db")).expect("open");
            conn.pragma_update(None, "user_version", 99)
                .expect("set version");
        }
        let err = Store::open(dir.path()).err().expect("must refuse");
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
