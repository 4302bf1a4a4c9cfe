//! Every SQL statement the server runs. SQLite in `--data-dir`, WAL mode,
//! schema versioned by `PRAGMA user_version` with numbered migrations.
//!
//! Calls are synchronous; async code goes through [`Store::call`], which runs
//! them on tokio's blocking pool so a slow disk never stalls the runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
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
        crate::config::ensure_data_dir(dir)?;
        let path = dir.join("relay.db");
        let conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        Self::init(conn)
    }

    fn init(mut conn: Connection) -> anyhow::Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
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
