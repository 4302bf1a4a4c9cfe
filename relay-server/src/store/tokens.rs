//! Tokens: created and revoked by `relay-server token ...` (another process
//! on the same database), checked by every connect and API call. Only a
//! SHA-256 of the secret is stored: a secret is 24 random bytes, so a
//! slow password hash would add nothing but latency to every call.

use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};

use super::{hex, now, On, Store};

/// `last_used_at` is written at most this often per token (seconds), so
/// API polling (`relay requests --follow`, the inspector) does not turn
/// every read into a write.
pub const LAST_USE_GRANULARITY: i64 = 60;

/// A token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub label: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub max_names: Option<u32>,
    pub last_used_at: Option<i64>,
    /// The names it claimed, in claim order.
    pub names: Vec<String>,
}

/// A live token, as a connect or an API call sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCheck {
    pub id: i64,
    pub max_names: Option<u32>,
}

impl TokenCheck {
    /// The owner string its names are stored under.
    pub fn owner(&self) -> String {
        format!("token:{}", self.id)
    }
}

pub(super) fn hash_token(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

impl Store {
    /// Creates a token; returns its id and the secret, which is shown once.
    pub fn create_token(
        &self,
        label: Option<&str>,
        max_names: Option<u32>,
    ) -> anyhow::Result<(i64, String)> {
        use rand::RngExt;
        let bytes: [u8; 24] = rand::rng().random();
        let secret = format!("rly_{}", hex(&bytes));
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => {
                return pg
                    .create_token(label, max_names, &hash_token(&secret))
                    .map(|id| (id, secret))
            }
        };
        conn.execute(
            "INSERT INTO tokens (label, hash, created_at, max_names) VALUES (?1, ?2, ?3, ?4)",
            params![label, hash_token(&secret), now(), max_names],
        )?;
        Ok((conn.last_insert_rowid(), secret))
    }

    pub fn list_tokens(&self) -> anyhow::Result<Vec<TokenInfo>> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.list_tokens(),
        };
        let mut stmt = conn.prepare(
            "SELECT id, label, created_at, revoked_at, max_names, last_used_at FROM tokens
             ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TokenInfo {
                id: r.get(0)?,
                label: r.get(1)?,
                created_at: r.get(2)?,
                revoked_at: r.get(3)?,
                max_names: r.get(4)?,
                last_used_at: r.get(5)?,
                names: Vec::new(),
            })
        })?;
        let mut tokens = rows.collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(conn);
        for t in &mut tokens {
            t.names = self.names_of(&format!("token:{}", t.id))?;
        }
        Ok(tokens)
    }

    /// Revokes a token; `false` if no live token has that id.
    pub fn revoke_token(&self, id: i64) -> anyhow::Result<bool> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.revoke_token(id),
        };
        let n = conn.execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now()],
        )?;
        Ok(n == 1)
    }

    /// Every revoked token's id: the server compares it with its live
    /// sessions, since a revoke comes from another process.
    pub fn revoked_tokens(&self) -> anyhow::Result<Vec<i64>> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.revoked_tokens(),
        };
        let mut stmt = conn.prepare_cached("SELECT id FROM tokens WHERE revoked_at IS NOT NULL")?;
        let ids = stmt.query_map([], |r| r.get(0))?;
        Ok(ids.collect::<Result<_, _>>()?)
    }

    pub fn token_label(&self, id: i64) -> anyhow::Result<Option<String>> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.token_label(id),
        };
        Ok(conn
            .query_row("SELECT label FROM tokens WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()?
            .flatten())
    }

    /// The names `owner` (`token:ID`, `client:ID`) claimed, oldest first.
    pub fn names_of(&self, owner: &str) -> anyhow::Result<Vec<String>> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.names_of(owner),
        };
        let mut stmt = conn
            .prepare_cached("SELECT name FROM names WHERE owner = ?1 ORDER BY claimed_at, name")?;
        let names = stmt.query_map(params![owner], |r| r.get(0))?;
        Ok(names.collect::<Result<_, _>>()?)
    }

    /// The live token with this secret, noting its use.
    pub fn verify_token(&self, secret: &str) -> anyhow::Result<Option<TokenCheck>> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.verify_token(&hash_token(secret), LAST_USE_GRANULARITY),
        };
        let found = conn
            .query_row(
                "SELECT id, max_names, last_used_at FROM tokens
                 WHERE hash = ?1 AND revoked_at IS NULL",
                params![hash_token(secret)],
                |r| {
                    Ok((
                        TokenCheck {
                            id: r.get(0)?,
                            max_names: r.get(1)?,
                        },
                        r.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
            .optional()?;
        let Some((check, last_used)) = found else {
            return Ok(None);
        };
        let now = now();
        if last_used.is_none_or(|t| now - t >= LAST_USE_GRANULARITY || now < t) {
            conn.execute(
                "UPDATE tokens SET last_used_at = ?2 WHERE id = ?1",
                params![check.id, now],
            )?;
        }
        Ok(Some(check))
    }
}
