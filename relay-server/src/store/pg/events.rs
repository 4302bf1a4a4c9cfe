//! NOTIFY and LISTEN on [`EVENTS_CHANNEL`]: each change another node may
//! have to show or act on is announced inside the transaction that makes
//! it (so it is delivered on commit, and never for a rollback), as
//! `KIND:ID`, ids only: PostgreSQL caps a payload at 8000 bytes, and the
//! listener reads the rest from the store.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, NoTls};
use tracing::{info, warn};

use super::{PgStore, EVENTS_CHANNEL};

/// Payloads buffered for the listener's receiver before the forwarder
/// waits for it (it then falls behind, PostgreSQL queues for it).
pub const EVENTS_BUFFER: usize = 1024;
/// The listener's first and longest wait before reconnecting.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// `pg_notify(...)` of `KIND:` and the SQL expression `id`, for a
/// statement that announces what it changed.
pub(super) fn notify_sql(kind: &str, id: &str) -> String {
    format!("pg_notify('{EVENTS_CHANNEL}', '{kind}:' || {id})")
}

/// Announces `KIND:ID` in the caller's transaction.
pub(super) async fn notify(
    c: &tokio_postgres::Transaction<'_>,
    kind: &str,
    id: &str,
) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "SELECT pg_notify($1, $2)",
        &[&EVENTS_CHANNEL, &format!("{kind}:{id}")],
    )
    .await?;
    Ok(())
}

impl PgStore {
    /// See `Store::listen_events`. Returns once the first `LISTEN` is in
    /// place, so what is committed after this returns is received.
    pub async fn listen_events(&self) -> anyhow::Result<mpsc::Receiver<String>> {
        let (tx, rx) = mpsc::channel(EVENTS_BUFFER);
        let (ready_tx, ready) = oneshot::channel();
        let config = self.config.clone();
        let shown = self.shown.clone();
        self.handle.spawn(listen_loop(config, shown, tx, ready_tx));
        ready
            .await
            .map_err(|_| anyhow::anyhow!("the PostgreSQL store stopped"))??;
        Ok(rx)
    }
}

/// Listens until the receiver is dropped, reconnecting with backoff.
async fn listen_loop(
    config: tokio_postgres::Config,
    shown: String,
    tx: mpsc::Sender<String>,
    ready: oneshot::Sender<anyhow::Result<()>>,
) {
    let mut ready = Some(ready);
    let mut backoff = BACKOFF_MIN;
    loop {
        let since = tokio::time::Instant::now();
        match listen_once(&config, &tx, &mut ready).await {
            // The receiver is gone: nobody listens any more.
            Ok(()) => return,
            Err(e) => {
                if let Some(r) = ready.take() {
                    // The first connection failed: the caller hears it.
                    let _ = r.send(Err(e.context(format!("listening on {shown}"))));
                    return;
                }
                // A connection that lived a while starts the backoff over.
                if since.elapsed() > BACKOFF_MAX {
                    backoff = BACKOFF_MIN;
                }
                warn!(error = %format!("{e:#}"), store = %shown, retry_in = ?backoff,
                    "lost the connection that listens for other nodes' events; reconnecting");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = tx.closed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's life: `Ok` when the receiver went away, `Err` when the
/// connection did.
async fn listen_once(
    config: &tokio_postgres::Config,
    tx: &mpsc::Sender<String>,
    ready: &mut Option<oneshot::Sender<anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (found_tx, mut found) = mpsc::unbounded_channel();
    // The connection yields notifications only when polled; this task
    // polls it (which also carries the client's LISTEN) and hands them on.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = found_tx.send(n.payload().to_owned());
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!("LISTEN {EVENTS_CHANNEL}"))
        .await?;
    if let Some(r) = ready.take() {
        let _ = r.send(Ok(()));
    } else {
        info!("listening for other nodes' events again");
    }
    loop {
        tokio::select! {
            payload = found.recv() => match payload {
                Some(p) => {
                    if tx.send(p).await.is_err() {
                        driver.abort();
                        return Ok(());
                    }
                }
                None => break,
            },
            () = tx.closed() => {
                driver.abort();
                return Ok(());
            }
        }
    }
    drop(client);
    match driver.await {
        Ok(Err(e)) => Err(e.into()),
        _ => Err(anyhow::anyhow!("the connection closed")),
    }
}
