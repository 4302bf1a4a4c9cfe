//! The capture writer's side of the store: a batch of captures inserted in
//! one transaction, then retention applied to the tunnels that grew.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::Connection;

use super::captures::{count_captures, insert_capture, trim, NewCapture};
use super::pg::PgStore;

/// The capture writer thread's own connection: on SQLite a second
/// connection to the file (WAL lets it write while the API reads), on
/// PostgreSQL the shared pool.
pub struct CaptureWriter {
    engine: Engine,
}

enum Engine {
    Sqlite {
        conn: Connection,
        /// Rows per tunnel in the table, so trimming runs only when a
        /// tunnel is over `retain` and deletes exactly the overflow. One
        /// writer owns the file's captures, so the count stays right; on
        /// PostgreSQL other nodes insert too, and each batch recounts.
        counts: HashMap<String, u64>,
    },
    Postgres(Arc<PgStore>),
}

impl CaptureWriter {
    pub(super) fn sqlite(conn: Connection) -> Self {
        Self {
            engine: Engine::Sqlite {
                conn,
                counts: HashMap::new(),
            },
        }
    }

    pub(super) fn postgres(pg: Arc<PgStore>) -> Self {
        Self {
            engine: Engine::Postgres(pg),
        }
    }

    /// Stores `batch` in one transaction, oldest first, and deletes the
    /// oldest captures of each tunnel beyond `retain` (see
    /// [`trim`]); returns how many waiting missed requests that deleted.
    /// `durable`: the commit is synced to disk before this returns.
    pub fn write(
        &mut self,
        batch: &[&NewCapture],
        durable: bool,
        retain: u32,
    ) -> anyhow::Result<u64> {
        match &mut self.engine {
            Engine::Sqlite { conn, counts } => {
                let result = sqlite_write(conn, batch, durable, counts, retain);
                if result.is_err() {
                    // The counts may be off after a rollback; recount lazily.
                    counts.clear();
                }
                Ok(result?)
            }
            Engine::Postgres(pg) => pg.write_captures(batch, durable, retain),
        }
    }
}

fn sqlite_write(
    conn: &mut Connection,
    batch: &[&NewCapture],
    durable: bool,
    counts: &mut HashMap<String, u64>,
    retain: u32,
) -> rusqlite::Result<u64> {
    if durable {
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    let result = insert_and_trim(conn, batch, counts, retain);
    if durable {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    result
}

fn insert_and_trim(
    conn: &mut Connection,
    batch: &[&NewCapture],
    counts: &mut HashMap<String, u64>,
    retain: u32,
) -> rusqlite::Result<u64> {
    let tx = conn.transaction()?;
    for request in batch {
        insert_capture(&tx, request)?;
        let tunnel = &request.tunnel;
        if let Some(c) = counts.get_mut(tunnel) {
            *c += 1;
        } else {
            // First sight of the tunnel: the count includes this row.
            counts.insert(tunnel.clone(), count_captures(&tx, tunnel)?);
        }
    }
    let mut undelivered = 0;
    for (tunnel, count) in counts.iter_mut() {
        if *count > u64::from(retain) {
            let trimmed = trim(&tx, tunnel, *count, u64::from(retain))?;
            *count = trimmed.left;
            undelivered += trimmed.undelivered;
        }
    }
    tx.commit()?;
    Ok(undelivered)
}
