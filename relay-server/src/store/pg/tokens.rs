//! Tokens on PostgreSQL (see `store/tokens.rs`). The secret's hash is
//! made by `Store`, which hands it over.

use super::events::notify_sql;
use super::PgStore;
use crate::store::{now, TokenCheck, TokenInfo};

/// A stored `max_names`; one out of range (not written by this server)
/// means no cap rather than an error.
fn max_names(v: Option<i64>) -> Option<u32> {
    v.and_then(|n| u32::try_from(n).ok())
}

impl PgStore {
    pub fn create_token(
        &self,
        label: Option<&str>,
        max: Option<u32>,
        hash: &[u8],
    ) -> anyhow::Result<i64> {
        let (label, hash) = (label.map(str::to_owned), hash.to_vec());
        self.query(move |c| async move {
            let row = c
                .query_one(
                    "INSERT INTO tokens (label, hash, created_at, max_names)
                     VALUES ($1, $2, $3, $4) RETURNING id",
                    &[&label, &hash, &now(), &max.map(i64::from)],
                )
                .await?;
            Ok(row.get(0))
        })
    }

    pub fn list_tokens(&self) -> anyhow::Result<Vec<TokenInfo>> {
        self.query(|c| async move {
            let rows = c
                .query(
                    "SELECT t.id, t.label, t.created_at, t.revoked_at, t.max_names,
                        t.last_used_at,
                        coalesce((SELECT array_agg(n.name ORDER BY n.claimed_at, n.name)
                            FROM names n WHERE n.owner = 'token:' || t.id), '{}')
                     FROM tokens t ORDER BY t.id",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| TokenInfo {
                    id: r.get(0),
                    label: r.get(1),
                    created_at: r.get(2),
                    revoked_at: r.get(3),
                    max_names: max_names(r.get(4)),
                    last_used_at: r.get(5),
                    names: r.get(6),
                })
                .collect())
        })
    }

    /// Revokes and tells every node (`token:ID`) in one statement.
    pub fn revoke_token(&self, id: i64) -> anyhow::Result<bool> {
        self.query(move |c| async move {
            let sql = format!(
                "WITH revoked AS (
                    UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL
                    RETURNING id)
                 SELECT {} FROM revoked",
                notify_sql("token", "revoked.id::text")
            );
            let rows = c.query(&sql, &[&id, &now()]).await?;
            Ok(rows.len() == 1)
        })
    }

    pub fn revoked_tokens(&self) -> anyhow::Result<Vec<i64>> {
        self.query(|c| async move {
            let stmt = c
                .prepare_cached("SELECT id FROM tokens WHERE revoked_at IS NOT NULL ORDER BY id")
                .await?;
            Ok(c.query(&stmt, &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    pub fn token_label(&self, id: i64) -> anyhow::Result<Option<String>> {
        self.query(move |c| async move {
            let row = c
                .query_opt("SELECT label FROM tokens WHERE id = $1", &[&id])
                .await?;
            Ok(row.and_then(|r| r.get(0)))
        })
    }

    pub fn names_of(&self, owner: &str) -> anyhow::Result<Vec<String>> {
        let owner = owner.to_owned();
        self.query(move |c| async move {
            let stmt = c
                .prepare_cached("SELECT name FROM names WHERE owner = $1 ORDER BY claimed_at, name")
                .await?;
            Ok(c.query(&stmt, &[&owner])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    /// The live token with this hash, noting its use at most every
    /// `granularity` seconds.
    pub fn verify_token(
        &self,
        hash: &[u8],
        granularity: i64,
    ) -> anyhow::Result<Option<TokenCheck>> {
        let hash = hash.to_vec();
        self.query(move |c| async move {
            let stmt = c
                .prepare_cached(
                    "SELECT id, max_names, last_used_at FROM tokens
                     WHERE hash = $1 AND revoked_at IS NULL",
                )
                .await?;
            let Some(row) = c.query_opt(&stmt, &[&hash]).await? else {
                return Ok(None);
            };
            let check = TokenCheck {
                id: row.get(0),
                max_names: max_names(row.get(1)),
            };
            let last_used: Option<i64> = row.get(2);
            let now = now();
            if last_used.is_none_or(|t| now - t >= granularity || now < t) {
                c.execute(
                    "UPDATE tokens SET last_used_at = $2 WHERE id = $1",
                    &[&check.id, &now],
                )
                .await?;
            }
            Ok(Some(check))
        })
    }
}
