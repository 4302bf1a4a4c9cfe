//! Missed requests on PostgreSQL (see `store/delivery.rs`), where several
//! nodes' API calls claim and settle the same rows. Exactly once:
//! - a claim holds a lock on its tunnel for its transaction (so the "is
//!   another deliverer's claim live" check and the claim are one step for
//!   every node), and takes the row with a conditional update (`WHERE`
//!   the row's claim is free or ran out) on a row locked `FOR UPDATE SKIP
//!   LOCKED`;
//! - settling is one conditional `UPDATE` (claim still held, or none live)
//!   whose result says whether it happened; a read afterwards only tells
//!   the caller why not.

use relay_shared::api::{Claimed, Delivery, MissedOverview};

use super::captures::{record_from_row, summary_from_row};
use super::events::notify_sql;
use super::PgStore;
use crate::store::captures::{format_time, RECORD_COLUMNS, SUMMARY_COLUMNS};
use crate::store::{hex, ClaimOutcome, Settled, CLAIM_LEASE};

/// The `delivery` values of a request that still waits.
const WAITING: &str = "delivery IN ('missed', 'failed')";

impl PgStore {
    pub fn missed_waiting(&self) -> anyhow::Result<u64> {
        self.query(|c| async move {
            let sql = format!("SELECT count(*) FROM requests WHERE {WAITING}");
            let n: i64 = c.query_one(&sql, &[]).await?.get(0);
            Ok(n.max(0) as u64)
        })
    }

    pub fn missed_overview(&self, tunnel: &str, limit: u32) -> anyhow::Result<MissedOverview> {
        let tunnel = tunnel.to_owned();
        self.query(move |c| async move {
            let sql = format!(
                "SELECT count(*), (SELECT time_ms FROM requests WHERE tunnel = $1 AND {WAITING}
                    ORDER BY seq LIMIT 1)
                 FROM requests WHERE tunnel = $1 AND {WAITING}"
            );
            let row = c.query_one(&sql, &[&tunnel]).await?;
            let (count, oldest): (i64, Option<i64>) = (row.get(0), row.get(1));
            let requests = if limit == 0 || count == 0 {
                Vec::new()
            } else {
                let sql = format!(
                    "SELECT {SUMMARY_COLUMNS} FROM requests WHERE tunnel = $1 AND {WAITING}
                     ORDER BY seq LIMIT $2"
                );
                let stmt = c.prepare_cached(&sql).await?;
                c.query(&stmt, &[&tunnel, &i64::from(limit)])
                    .await?
                    .iter()
                    .map(summary_from_row)
                    .collect::<anyhow::Result<_>>()?
            };
            Ok(MissedOverview {
                count: count.max(0) as u64,
                oldest: oldest.map(format_time),
                requests,
            })
        })
    }

    /// See `Store::claim_missed`.
    pub fn claim_missed(
        &self,
        tunnel: &str,
        within_ms: Option<u64>,
        now_ms: i64,
    ) -> anyhow::Result<ClaimOutcome> {
        let tunnel = tunnel.to_owned();
        let since = within_ms.map_or(i64::MIN, |w| {
            now_ms.saturating_sub(i64::try_from(w).unwrap_or(i64::MAX))
        });
        let claim = {
            use rand::RngExt;
            let bytes: [u8; 16] = rand::rng().random();
            hex(&bytes)
        };
        let until = now_ms.saturating_add(CLAIM_LEASE.as_millis() as i64);
        self.query(move |mut c| async move {
            let tx = c.transaction().await?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('relay claim ' || $1, 0))",
                &[&tunnel],
            )
            .await?;
            let busy: bool = tx
                .query_one(
                    &format!(
                        "SELECT EXISTS (SELECT 1 FROM requests
                            WHERE tunnel = $1 AND {WAITING} AND claimed_until > $2)"
                    ),
                    &[&tunnel, &now_ms],
                )
                .await?
                .get(0);
            if busy {
                return Ok(ClaimOutcome::Busy);
            }
            let sql = format!(
                "UPDATE requests SET claim = $4, claimed_until = $5
                 WHERE seq = (SELECT seq FROM requests
                        WHERE tunnel = $1 AND {WAITING} AND time_ms >= $2
                        ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
                    AND {WAITING} AND (claimed_until IS NULL OR claimed_until <= $3)
                 RETURNING {RECORD_COLUMNS}"
            );
            let Some(row) = tx
                .query_opt(&sql, &[&tunnel, &since, &now_ms, &claim, &until])
                .await?
            else {
                return Ok(ClaimOutcome::Empty);
            };
            let record = record_from_row(&row)?;
            let waiting: i64 = tx
                .query_one(
                    &format!(
                        "SELECT count(*) FROM requests
                         WHERE tunnel = $1 AND {WAITING} AND time_ms >= $2"
                    ),
                    &[&tunnel, &since],
                )
                .await?
                .get(0);
            tx.commit().await?;
            Ok(ClaimOutcome::Claimed(Box::new(Claimed {
                claim,
                record,
                waiting: waiting.max(0) as u64,
            })))
        })
    }

    /// See `Store::settle_delivery`; announces `delivery:ID` when it
    /// settles.
    pub fn settle_delivery(
        &self,
        tunnel: &str,
        original: &str,
        claim: Option<&str>,
        replay_id: &str,
        error: Option<&str>,
        now_ms: i64,
    ) -> anyhow::Result<Settled> {
        let (state, by) = match error {
            None => (Delivery::Delivered, Some(replay_id.to_owned())),
            Some(_) => (Delivery::Failed, None),
        };
        let (tunnel, original) = (tunnel.to_owned(), original.to_owned());
        let (claim, error) = (claim.map(str::to_owned), error.map(str::to_owned));
        self.query(move |c| async move {
            // With a claim: only its holder. Without: only while no claim
            // is live.
            let held = if claim.is_some() {
                "claim = $6"
            } else {
                "(claimed_until IS NULL OR claimed_until <= $6)"
            };
            let sql = format!(
                "WITH settled AS (
                    UPDATE requests SET delivery = $3, delivered_by = $4, delivery_error = $5,
                        claim = NULL, claimed_until = NULL
                    WHERE tunnel = $1 AND id = $2 AND {WAITING} AND {held}
                    RETURNING id)
                 SELECT {} FROM settled",
                notify_sql("delivery", "settled.id")
            );
            let state = state.as_str();
            let done = match &claim {
                Some(held_by) => c
                    .query(&sql, &[&tunnel, &original, &state, &by, &error, held_by])
                    .await?
                    .len(),
                None => c
                    .query(&sql, &[&tunnel, &original, &state, &by, &error, &now_ms])
                    .await?
                    .len(),
            };
            if done == 1 {
                return Ok(Settled::Done);
            }
            let Some(claim) = claim else {
                return Ok(Settled::Untouched);
            };
            // Why not: someone else's claim now, or nothing to settle.
            let row = c
                .query_opt(
                    "SELECT delivery, claim FROM requests WHERE tunnel = $1 AND id = $2",
                    &[&tunnel, &original],
                )
                .await?;
            Ok(match row {
                Some(r)
                    if r.get::<_, Option<String>>(0).is_some()
                        && r.get::<_, Option<String>>(1).as_deref() != Some(claim.as_str()) =>
                {
                    Settled::ClaimLost
                }
                _ => Settled::Untouched,
            })
        })
    }
}
