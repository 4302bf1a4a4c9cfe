//! Captured exchanges on PostgreSQL (see `store/captures.rs`): the capture
//! writer's batches, with retention and a `capture:ID` event per row, and
//! the API's reads.

use std::collections::BTreeSet;

use relay_shared::api::{decode_headers, Delivery, Message, Page, Record, Summary};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::events::notify_sql;
use super::PgStore;
use crate::store::captures::{format_time, Filter, NewCapture, RECORD_COLUMNS, SUMMARY_COLUMNS};

/// A number PostgreSQL keeps as BIGINT, from a Rust unsigned one.
fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A row that starts with [`SUMMARY_COLUMNS`].
pub(super) fn summary_from_row(r: &Row) -> anyhow::Result<Summary> {
    let unsigned = |v: Option<i64>| v.map(|n| n.max(0) as u64);
    Ok(Summary {
        id: r.try_get(0)?,
        tunnel: r.try_get(1)?,
        time: format_time(r.try_get(2)?),
        method: r.try_get(3)?,
        path: r.try_get(4)?,
        status: r
            .try_get::<_, Option<i64>>(5)?
            .and_then(|s| u16::try_from(s).ok()),
        outcome: r.try_get::<_, String>(6)?.parse()?,
        duration_ms: r.try_get::<_, i64>(7)?.max(0) as u64,
        request_size: r.try_get::<_, i64>(8)?.max(0) as u64,
        response_size: unsigned(r.try_get(9)?).unwrap_or(0),
        replay_of: r.try_get(10)?,
        delivery: match r.try_get::<_, Option<String>>(11)? {
            Some(d) => Some(d.parse::<Delivery>().map_err(anyhow::Error::msg)?),
            None => None,
        },
        delivered_by: r.try_get(12)?,
        delivery_error: r.try_get(13)?,
        deadline_exceeded_ms: unsigned(r.try_get(14)?),
        fault: r.try_get(15)?,
    })
}

/// A row that starts with [`RECORD_COLUMNS`].
pub(super) fn record_from_row(r: &Row) -> anyhow::Result<Record> {
    /// Where the columns after the summary's start.
    const REST: usize = 16;
    let summary = summary_from_row(r)?;
    let request = Message {
        headers: decode_headers(&r.try_get::<_, Vec<u8>>(REST + 2)?),
        body: r.try_get(REST + 4)?,
        body_size: summary.request_size,
        body_truncated: r.try_get(REST)?,
    };
    let response = match r.try_get::<_, Option<Vec<u8>>>(REST + 3)? {
        Some(headers) => Some(Message {
            headers: decode_headers(&headers),
            body: r
                .try_get::<_, Option<Vec<u8>>>(REST + 5)?
                .unwrap_or_default(),
            body_size: summary.response_size,
            body_truncated: r.try_get::<_, Option<bool>>(REST + 1)?.unwrap_or(false),
        }),
        None => None,
    };
    // As on SQLite: a diff this server cannot read is left out.
    let diff = r
        .try_get::<_, Option<String>>(REST + 6)?
        .and_then(|json| serde_json::from_str(&json).ok());
    Ok(Record {
        summary,
        request,
        response,
        diff,
    })
}

const INSERT: &str = "INSERT INTO requests (id, tunnel, time_ms, method, path, status, outcome,
        duration_ms, delivery, replay_of, request_size, request_truncated, response_size,
        response_truncated, request_headers, request_body, response_headers, response_body,
        diff, deadline_exceeded_ms, fault)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
        $19, $20, $21)";

/// Retention's deletes, as on SQLite (`store::trim`): the oldest captures
/// that do not wait for delivery, then, if waiting ones alone are over
/// `retain`, the oldest of those.
const TRIM_SETTLED: &str = "DELETE FROM requests WHERE seq IN (
        SELECT seq FROM requests
        WHERE tunnel = $1 AND (delivery IS NULL OR delivery = 'delivered')
        ORDER BY seq LIMIT $2)";
const TRIM_WAITING: &str = "DELETE FROM requests WHERE seq IN (
        SELECT seq FROM requests WHERE tunnel = $1 AND delivery IN ('missed', 'failed')
        ORDER BY seq LIMIT $2)";

impl PgStore {
    /// See `CaptureWriter::write`. The rows are sent pipelined in one
    /// transaction, which also announces each (`capture:ID`, delivered on
    /// commit). Other nodes insert into the same tunnels, so each tunnel
    /// of the batch is recounted rather than counted in memory. A batch
    /// that need not be durable commits without waiting for the disk
    /// (`synchronous_commit = off`, as SQLite's `synchronous = NORMAL`).
    pub fn write_captures(
        &self,
        batch: &[&NewCapture],
        durable: bool,
        retain: u32,
    ) -> anyhow::Result<u64> {
        let ids: Vec<String> = batch.iter().map(|r| r.id.clone()).collect();
        let tunnels: BTreeSet<String> = batch.iter().map(|r| r.tunnel.clone()).collect();
        let rows: Vec<Params> = batch.iter().map(|&r| params(r.clone())).collect();
        self.query(move |mut c| async move {
            let tx = c.transaction().await?;
            if !durable {
                tx.batch_execute("SET LOCAL synchronous_commit = off")
                    .await?;
            }
            let insert = tx.prepare_cached(INSERT).await?;
            let inserts = rows.iter().map(|p| {
                let refs: Vec<&(dyn ToSql + Sync)> = p
                    .iter()
                    .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let tx = &tx;
                let insert = &insert;
                async move { tx.execute(insert, &refs).await }
            });
            futures_util::future::try_join_all(inserts).await?;
            let notify = format!(
                "SELECT {} FROM unnest($1::text[]) AS id",
                notify_sql("capture", "id")
            );
            tx.execute(&notify, &[&ids]).await?;
            let retain = i64::from(retain);
            let mut undelivered = 0;
            for tunnel in &tunnels {
                let count: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM requests WHERE tunnel = $1",
                        &[&tunnel],
                    )
                    .await?
                    .get(0);
                if count <= retain {
                    continue;
                }
                let deleted = tx
                    .execute(TRIM_SETTLED, &[&tunnel, &(count - retain)])
                    .await? as i64;
                if count - deleted <= retain {
                    continue;
                }
                let waiting: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM requests
                         WHERE tunnel = $1 AND delivery IN ('missed', 'failed')",
                        &[&tunnel],
                    )
                    .await?
                    .get(0);
                if waiting > retain {
                    undelivered += tx
                        .execute(TRIM_WAITING, &[&tunnel, &(waiting - retain)])
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(undelivered)
        })
    }

    pub fn list_captures(&self, tunnel: &str, f: &Filter) -> anyhow::Result<Page> {
        let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM requests WHERE tunnel = $1");
        if f.missed {
            sql.push_str(" AND delivery IN ('missed', 'failed')");
        }
        match f.replays {
            Some(true) => sql.push_str(" AND replay_of IS NOT NULL"),
            Some(false) => sql.push_str(" AND replay_of IS NULL"),
            None => {}
        }
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(tunnel.to_owned())];
        let mut add = |clause: &str, v: Box<dyn ToSql + Sync + Send>| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("${}", args.len())));
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
            add(" AND status = ?", Box::new(i64::from(s)));
        }
        if let Some(o) = &f.outcome {
            add(" AND outcome = ?", Box::new(o.as_str()));
        }
        if let Some(p) = &f.path {
            add(" AND strpos(path, ?) > 0", Box::new(p.clone()));
        }
        let limit = f.limit.clamp(1, 1000);
        // One more than asked tells whether an older page exists.
        add(" ORDER BY seq DESC LIMIT ?", Box::new(i64::from(limit) + 1));
        self.query(move |c| async move {
            let stmt = c.prepare_cached(&sql).await?;
            let refs: Vec<&(dyn ToSql + Sync)> = args
                .iter()
                .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let rows = c.query(&stmt, &refs).await?;
            let mut requests = rows
                .iter()
                .map(summary_from_row)
                .collect::<anyhow::Result<Vec<_>>>()?;
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
        })
    }

    pub fn get_capture(&self, tunnel: &str, id: &str) -> anyhow::Result<Option<Record>> {
        let (tunnel, id) = (tunnel.to_owned(), id.to_owned());
        self.query(move |c| async move {
            let sql =
                format!("SELECT {RECORD_COLUMNS} FROM requests WHERE id = $1 AND tunnel = $2");
            let stmt = c.prepare_cached(&sql).await?;
            c.query_opt(&stmt, &[&id, &tunnel])
                .await?
                .as_ref()
                .map(record_from_row)
                .transpose()
        })
    }

    pub fn summary_by_id(&self, id: &str) -> anyhow::Result<Option<Summary>> {
        let id = id.to_owned();
        self.query(move |c| async move {
            let sql = format!("SELECT {SUMMARY_COLUMNS} FROM requests WHERE id = $1");
            let stmt = c.prepare_cached(&sql).await?;
            c.query_opt(&stmt, &[&id])
                .await?
                .as_ref()
                .map(summary_from_row)
                .transpose()
        })
    }
}

/// Owned statement parameters, to move into the engine's runtime.
type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// The parameters of [`INSERT`] for one capture.
fn params(r: NewCapture) -> Params {
    let delivery = r.is_missed().then_some(Delivery::Missed.as_str());
    let (response_size, response_truncated, response_headers, response_body) = match r.response {
        Some(m) => (
            Some(big(m.size)),
            Some(m.truncated),
            Some(m.headers),
            Some(m.body),
        ),
        None => (None, None, None, None),
    };
    vec![
        Box::new(r.id),
        Box::new(r.tunnel),
        Box::new(r.time_ms),
        Box::new(r.method),
        Box::new(r.path),
        Box::new(r.status.map(i64::from)),
        Box::new(r.outcome.as_str()),
        Box::new(big(r.duration_ms)),
        Box::new(delivery),
        Box::new(r.replay_of),
        Box::new(big(r.request.size)),
        Box::new(r.request.truncated),
        Box::new(response_size),
        Box::new(response_truncated),
        Box::new(r.request.headers),
        Box::new(r.request.body),
        Box::new(response_headers),
        Box::new(response_body),
        Box::new(r.diff),
        Box::new(r.deadline_exceeded_ms.map(big)),
        Box::new(r.fault),
    ]
}
