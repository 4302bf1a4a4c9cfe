//! Captured exchanges: the rows of `requests`, written by the capture
//! writer's connection and read by the API's.

use std::time::{SystemTime, UNIX_EPOCH};

use relay_shared::api::{decode_headers, Delivery, Message, Outcome, Page, Record, Summary};
use rusqlite::{params, Connection, OptionalExtension};

use super::{On, Store};

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
    /// A replay's diff against its original, as JSON.
    pub diff: Option<String>,
    /// The tunnel's caller deadline (ms), when this exchange took longer.
    pub deadline_exceeded_ms: Option<u64>,
    /// The fault the client played instead of the local app.
    pub fault: Option<String>,
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
    /// A visitor's request answered while no client was connected: it
    /// waits to be delivered.
    pub fn is_missed(&self) -> bool {
        self.outcome == Outcome::Offline && self.replay_of.is_none()
    }

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
            delivery: self.is_missed().then_some(Delivery::Missed),
            delivered_by: None,
            delivery_error: None,
            deadline_exceeded_ms: self.deadline_exceeded_ms,
            fault: self.fault.clone(),
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
    /// Only missed requests that still wait (`missed` or `failed`).
    pub missed: bool,
    /// Only visitors' requests (`Some(false)`) or only replays (`Some(true)`).
    pub replays: Option<bool>,
}

/// Stores one capture; statements are cached, so a batch inside one
/// transaction costs a few B-tree inserts per row.
pub fn insert_capture(conn: &Connection, r: &NewCapture) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO requests (id, tunnel, time_ms, method, path, status, outcome,
            duration_ms, replay_of, request_size, request_truncated, response_size,
            response_truncated, request_headers, response_headers, request_body, response_body,
            delivery, diff, deadline_exceeded_ms, fault)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
            ?19, ?20, ?21)",
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
        r.is_missed().then_some(Delivery::Missed.as_str()),
        r.diff,
        r.deadline_exceeded_ms.map(|ms| ms as i64),
        r.fault,
    ])?;
    Ok(())
}

/// What retention did to a tunnel's captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Captures the tunnel has now.
    pub left: u64,
    /// Missed requests deleted before they were delivered.
    pub undelivered: u64,
}

/// Deletes `tunnel`'s oldest captures beyond `retain` (it has `count`).
/// Missed requests that still wait are spared, so a tunnel may keep more
/// than `retain` rows, unless they alone are more than `retain`: then the
/// oldest of them go too, and are counted.
pub fn trim(conn: &Connection, tunnel: &str, count: u64, retain: u64) -> rusqlite::Result<Trimmed> {
    if count <= retain {
        return Ok(Trimmed {
            left: count,
            undelivered: 0,
        });
    }
    let mut stmt = conn.prepare_cached(
        "DELETE FROM requests WHERE seq IN (
            SELECT seq FROM requests
            WHERE tunnel = ?1 AND (delivery IS NULL OR delivery = 'delivered')
            ORDER BY seq LIMIT ?2)",
    )?;
    let deleted = stmt.execute(params![tunnel, (count - retain) as i64])? as u64;
    let left = count.saturating_sub(deleted);
    if left <= retain {
        return Ok(Trimmed {
            left,
            undelivered: 0,
        });
    }
    let waiting: i64 = conn.query_row(
        "SELECT count(*) FROM requests WHERE tunnel = ?1 AND delivery IN ('missed', 'failed')",
        params![tunnel],
        |r| r.get(0),
    )?;
    let over = (waiting.max(0) as u64).saturating_sub(retain);
    let undelivered = if over == 0 {
        0
    } else {
        conn.execute(
            "DELETE FROM requests WHERE seq IN (
                SELECT seq FROM requests WHERE tunnel = ?1 AND delivery IN ('missed', 'failed')
                ORDER BY seq LIMIT ?2)",
            params![tunnel, over as i64],
        )? as u64
    };
    Ok(Trimmed {
        left: left - undelivered,
        undelivered,
    })
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

pub(super) const SUMMARY_COLUMNS: &str = "id, tunnel, time_ms, method, path, status, outcome,
    duration_ms, request_size, response_size, replay_of, delivery, delivered_by, delivery_error,
    deadline_exceeded_ms, fault";

pub(super) fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Summary> {
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
        delivery: match r.get::<_, Option<String>>(11)? {
            Some(d) => Some(d.parse().map_err(|e: String| {
                rusqlite::Error::FromSqlConversionFailure(11, rusqlite::types::Type::Text, e.into())
            })?),
            None => None,
        },
        delivered_by: r.get(12)?,
        delivery_error: r.get(13)?,
        deadline_exceeded_ms: r.get::<_, Option<i64>>(14)?.map(|ms| ms.max(0) as u64),
        fault: r.get(15)?,
    })
}
impl Store {
    /// A page of `tunnel`'s captures, newest first.
    pub fn list_captures(&self, tunnel: &str, f: &Filter) -> anyhow::Result<Page> {
        let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM requests WHERE tunnel = ?1");
        if f.missed {
            sql.push_str(" AND delivery IN ('missed', 'failed')");
        }
        match f.replays {
            Some(true) => sql.push_str(" AND replay_of IS NOT NULL"),
            Some(false) => sql.push_str(" AND replay_of IS NULL"),
            None => {}
        }
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
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.list_captures(tunnel, f),
        };
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
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.get_capture(tunnel, id),
        };
        let sql = format!("SELECT {RECORD_COLUMNS} FROM requests WHERE id = ?1 AND tunnel = ?2");
        Ok(conn
            .query_row(&sql, params![id, tunnel], record_from_row)
            .optional()?)
    }
}

/// The summary columns, then the rest of a full record.
pub(super) const RECORD_COLUMNS: &str = "id, tunnel, time_ms, method, path, status, outcome,
    duration_ms, request_size, response_size, replay_of, delivery, delivered_by, delivery_error,
    deadline_exceeded_ms, fault, request_truncated, response_truncated, request_headers, response_headers, request_body,
    response_body, diff";

/// How many columns [`RECORD_COLUMNS`] has: a query may select more after them.
pub(super) const RECORD_WIDTH: usize = 23;

/// A row of [`RECORD_COLUMNS`].
pub(super) fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    /// Where the columns after the summary's start.
    const REST: usize = 16;
    let summary = summary_from_row(r)?;
    let request = Message {
        headers: decode_headers(&r.get::<_, Vec<u8>>(REST + 2)?),
        body: r.get(REST + 4)?,
        body_size: summary.request_size,
        body_truncated: r.get(REST)?,
    };
    let response = match r.get::<_, Option<Vec<u8>>>(REST + 3)? {
        Some(headers) => Some(Message {
            headers: decode_headers(&headers),
            body: r.get::<_, Option<Vec<u8>>>(REST + 5)?.unwrap_or_default(),
            body_size: summary.response_size,
            body_truncated: r.get::<_, Option<bool>>(REST + 1)?.unwrap_or(false),
        }),
        None => None,
    };
    // A diff this server cannot read (another version's) is left out
    // rather than failing the whole record.
    let diff = r
        .get::<_, Option<String>>(REST + 6)?
        .and_then(|json| serde_json::from_str(&json).ok());
    Ok(Record {
        summary,
        request,
        response,
        diff,
    })
}
