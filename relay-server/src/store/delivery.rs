//! Missed requests: `offline` captures waiting to reach the local app, and
//! the claims that let one deliverer at a time hand them over, oldest
//! first, each once (`docs/api.md`, "Delivering missed requests").
//!
//! Every check-then-change runs in one IMMEDIATE transaction, so two
//! callers (two clients, two servers' API calls on one file) cannot both
//! see a request as free and both take it.

use std::time::Duration;

use relay_shared::api::{Claimed, Delivery, MissedOverview};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::captures::{
    format_time, record_from_row, summary_from_row, RECORD_COLUMNS, RECORD_WIDTH, SUMMARY_COLUMNS,
};
use super::{hex, On, Store};

/// How long a claim reserves a tunnel's delivery: longer than a replay may
/// take (the client's 60 s timeout), so a live deliverer never loses it,
/// and short enough that a client that died mid-delivery holds nothing up
/// for long.
pub const CLAIM_LEASE: Duration = Duration::from_secs(90);

/// The `delivery` values of a request that still waits.
const WAITING: &str = "delivery IN ('missed', 'failed')";

/// What a claim found.
#[derive(Debug)]
pub enum ClaimOutcome {
    Claimed(Box<Claimed>),
    /// Another caller holds a live claim on the tunnel.
    Busy,
    /// Nothing waits.
    Empty,
}

/// What recording a delivery attempt did to the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The original is now `delivered` or `failed`.
    Done,
    /// The claim was taken over by another caller after its lease ran out:
    /// the state is theirs to set.
    ClaimLost,
    /// Nothing to settle: not a waiting missed request, or (for a replay
    /// made without a claim) another caller is delivering it.
    Untouched,
}

impl Store {
    /// How many missed requests wait, over all tunnels (a metric).
    pub fn missed_waiting(&self) -> anyhow::Result<u64> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.missed_waiting(),
        };
        let n: i64 = conn.query_row(
            &format!("SELECT count(*) FROM requests WHERE {WAITING}"),
            [],
            |row| row.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// How many of `tunnel`'s missed requests wait, the oldest's time, and
    /// the `limit` oldest.
    pub fn missed_overview(&self, tunnel: &str, limit: u32) -> anyhow::Result<MissedOverview> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.missed_overview(tunnel, limit),
        };
        let (count, oldest): (i64, Option<i64>) = conn.query_row(
            &format!(
                "SELECT count(*), (SELECT time_ms FROM requests WHERE tunnel = ?1 AND {WAITING}
                    ORDER BY seq LIMIT 1)
                 FROM requests WHERE tunnel = ?1 AND {WAITING}"
            ),
            params![tunnel],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let requests = if limit == 0 || count == 0 {
            Vec::new()
        } else {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM requests WHERE tunnel = ?1 AND {WAITING}
                 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![tunnel, limit], summary_from_row)?;
            rows.collect::<Result<_, _>>()?
        };
        Ok(MissedOverview {
            count: count.max(0) as u64,
            oldest: oldest.map(format_time),
            requests,
        })
    }

    /// Reserves `tunnel`'s oldest waiting missed request (that arrived
    /// within `within_ms`, if given) for [`CLAIM_LEASE`], unless another
    /// caller's claim on the tunnel is still live: one deliverer at a time
    /// keeps the arrival order.
    pub fn claim_missed(
        &self,
        tunnel: &str,
        within_ms: Option<u64>,
        now_ms: i64,
    ) -> anyhow::Result<ClaimOutcome> {
        let mut conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.claim_missed(tunnel, within_ms, now_ms),
        };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let busy: bool = tx.query_row(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM requests
                    WHERE tunnel = ?1 AND {WAITING} AND claimed_until > ?2)"
            ),
            params![tunnel, now_ms],
            |r| r.get(0),
        )?;
        if busy {
            return Ok(ClaimOutcome::Busy);
        }
        let since = within_ms.map_or(i64::MIN, |w| {
            now_ms.saturating_sub(i64::try_from(w).unwrap_or(i64::MAX))
        });
        let found = tx
            .query_row(
                &format!(
                    "SELECT {RECORD_COLUMNS}, seq FROM requests
                     WHERE tunnel = ?1 AND {WAITING} AND time_ms >= ?2 ORDER BY seq LIMIT 1"
                ),
                params![tunnel, since],
                |r| Ok((record_from_row(r)?, r.get::<_, i64>(RECORD_WIDTH)?)),
            )
            .optional()?;
        let Some((record, seq)) = found else {
            return Ok(ClaimOutcome::Empty);
        };
        let claim = {
            use rand::RngExt;
            let bytes: [u8; 16] = rand::rng().random();
            hex(&bytes)
        };
        let until = now_ms.saturating_add(CLAIM_LEASE.as_millis() as i64);
        tx.execute(
            "UPDATE requests SET claim = ?2, claimed_until = ?3 WHERE seq = ?1",
            params![seq, claim, until],
        )?;
        let waiting: i64 = tx.query_row(
            &format!(
                "SELECT count(*) FROM requests WHERE tunnel = ?1 AND {WAITING} AND time_ms >= ?2"
            ),
            params![tunnel, since],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(ClaimOutcome::Claimed(Box::new(Claimed {
            claim,
            record,
            waiting: waiting.max(0) as u64,
        })))
    }

    /// Records the result of a delivery attempt of `original`: `delivered`
    /// by `replay_id`, or `failed` with `error`. With `claim`, only its
    /// holder may settle (a claim whose lease ran out still counts while no
    /// one else took the request over); without one (a plain `relay replay
    /// ID`), only while no one holds a live claim on it.
    pub fn settle_delivery(
        &self,
        tunnel: &str,
        original: &str,
        claim: Option<&str>,
        replay_id: &str,
        error: Option<&str>,
        now_ms: i64,
    ) -> anyhow::Result<Settled> {
        let mut conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => {
                return pg.settle_delivery(tunnel, original, claim, replay_id, error, now_ms)
            }
        };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(Option<String>, Option<String>, Option<i64>)> = tx
            .query_row(
                "SELECT delivery, claim, claimed_until FROM requests WHERE tunnel = ?1 AND id = ?2",
                params![tunnel, original],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((Some(state), held_by, until)) = row else {
            return Ok(Settled::Untouched);
        };
        let waiting = state.parse::<Delivery>().is_ok_and(Delivery::is_waiting);
        match claim {
            Some(c) if held_by.as_deref() != Some(c) => return Ok(Settled::ClaimLost),
            Some(_) if !waiting => return Ok(Settled::Untouched),
            None if !waiting || until.is_some_and(|u| u > now_ms) => return Ok(Settled::Untouched),
            _ => {}
        }
        let (state, by) = match error {
            None => (Delivery::Delivered, Some(replay_id)),
            Some(_) => (Delivery::Failed, None),
        };
        tx.execute(
            "UPDATE requests SET delivery = ?3, delivered_by = ?4, delivery_error = ?5,
                claim = NULL, claimed_until = NULL
             WHERE tunnel = ?1 AND id = ?2",
            params![tunnel, original, state.as_str(), by, error],
        )?;
        tx.commit()?;
        Ok(Settled::Done)
    }
}
