//! The session: connect to the server (TCP_NODELAY, optional TLS), upgrade
//! to WebSocket, handshake, then read frames until the connection drops —
//! and do it again, with jittered backoff, until the user stops.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use http::Uri;
use relay_shared::frame::{Frame, Payload, ResetCode};
use relay_shared::mux::session::{self as mux_session, Ended as LoopEnded, Liveness, Opened};
use relay_shared::mux::ws::{incoming, ws_config, LazyReadBuf};
use relay_shared::mux::{outbound, write_frames, Side, StreamTable};
use relay_shared::protocol::{
    ClientHello, ServerHello, Token, Welcome, CLOSE_REPLACED, CLOSE_REVOKED, HANDSHAKE_TIMEOUT,
    PROTOCOL_VERSION,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, Instrument};

use crate::forward::Forwarder;
use crate::net::{Io, ServerAddr};
use crate::output::Output;

/// First reconnect delay; doubles per failure up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(200);
/// Longest wait between reconnect attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What the session knows of its tunnel, for whoever shows it (the
/// inspector page reads it; the session never depends on the page).
#[derive(Default)]
pub struct TunnelStatus {
    urls: Mutex<Vec<String>>,
    connected: AtomicBool,
}

impl TunnelStatus {
    pub fn connected(&self, urls: Vec<String>) {
        *self.urls.lock().unwrap_or_else(|e| e.into_inner()) = urls;
        self.connected.store(true, Ordering::Relaxed);
    }

    pub fn disconnected(&self) {
        self.connected.store(false, Ordering::Relaxed);
    }

    /// The public URLs of the last welcome.
    pub fn urls(&self) -> Vec<String> {
        self.urls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// Where and who to connect as.
pub struct SessionConfig {
    /// `http(s)://host[:port]` of the server.
    pub server: Uri,
    pub token: Option<Token>,
    pub name: String,
    pub client_id: String,
    pub ca_cert: Option<PathBuf>,
    /// What the server answers for the tunnel while this client is away.
    pub when_offline: relay_shared::protocol::WhenOffline,
    /// Sent at every connect: the server replaces the name's rules with
    /// these (an empty set clears them).
    pub edge: relay_shared::edge::EdgeRules,
    /// `--deliver-missed`: woken after each welcome that reports missed
    /// requests.
    pub deliver_missed: Option<crate::missed::Wake>,
    /// Shown by the inspector page.
    pub status: Arc<TunnelStatus>,
    /// The inspector page's address, for the `ready` event.
    pub inspector: Option<String>,
}

/// Why one connection ended.
enum Ended {
    /// The user stopped the client.
    Stopped,
    /// The connection dropped after a welcome; reconnect at once-ish.
    Lost(String),
}

/// Refusals that retrying cannot fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

type Ws = WebSocketStream<LazyReadBuf<Box<dyn Io>>>;

/// Keeps the tunnel up until `stop` resolves. Returns an error only for
/// problems the user must fix (bad token, name taken, version mismatch, a
/// server certificate not trusted on the first connection).
pub async fn run(
    cfg: SessionConfig,
    forwarder: Arc<Forwarder>,
    output: Output,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let server = ServerAddr::new(&cfg.server, cfg.ca_cert.as_deref())?;
    let mut stop = std::pin::pin!(stop);
    let mut delay = BACKOFF_START;
    let welcomed = AtomicBool::new(false);
    // Attempts since the last welcome, for the `reconnecting` event.
    let mut attempt = 0u32;
    loop {
        let attempt_ = async {
            let ws = connect(&cfg, &server).await?;
            session(ws, &cfg, &forwarder, &output, &welcomed).await
        }
        .instrument(tracing::info_span!("tunnel", name = %cfg.name));
        let ended = tokio::select! {
            r = attempt_ => r,
            _ = &mut stop => Ok(Ended::Stopped),
        };
        let reason = match ended {
            Ok(Ended::Stopped) => return Ok(()),
            Ok(Ended::Lost(reason)) => {
                cfg.status.disconnected();
                delay = BACKOFF_START;
                attempt = 0;
                format!("connection lost ({reason})")
            }
            Err(e) if e.is::<Refused>() => return Err(e),
            // An untrusted certificate before the first welcome is a setup
            // problem to fix, not an outage to wait out; later (a server
            // coming back mid-renewal), it is retried like any failure.
            Err(e)
                if !welcomed.load(Ordering::Relaxed) && e.is::<crate::net::UntrustedServer>() =>
            {
                return Err(e)
            }
            Err(e) => format!("cannot reach {}: {e:#}", cfg.server),
        };
        let wait = jitter(delay);
        attempt = attempt.saturating_add(1);
        output.reconnecting(attempt, wait, &reason);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {},
            _ = &mut stop => return Ok(()),
        }
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// A delay between half and all of `d`, so clients dropped together by a
/// server restart do not all reconnect in the same instant.
fn jitter(d: Duration) -> Duration {
    use rand::RngExt;
    let ms = d.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

async fn connect(cfg: &SessionConfig, server: &ServerAddr) -> anyhow::Result<Ws> {
    let io = server.dial().await?;
    let scheme = if cfg.server.scheme_str() == Some("https") {
        "wss"
    } else {
        "ws"
    };
    let url = format!("{scheme}://{}/_relay/v1/connect", server.authority());
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, LazyReadBuf::new(io), Some(ws_config()))
            .await
            .context("WebSocket upgrade failed")?;
    Ok(ws)
}

/// `deadline_ms`: the caller deadline the server marks captures against.
async fn handshake(
    ws: &mut Ws,
    cfg: &SessionConfig,
    deadline_ms: Option<u64>,
) -> anyhow::Result<Welcome> {
    let hello = ClientHello {
        protocol: PROTOCOL_VERSION,
        software: format!("relay/{}", env!("CARGO_PKG_VERSION")),
        client_id: cfg.client_id.clone(),
        name: cfg.name.clone(),
        token: cfg.token.clone(),
        when_offline: Some(cfg.when_offline),
        edge: Some(cfg.edge.clone()),
        deadline_ms,
    };
    ws.send(Message::text(serde_json::to_string(&hello)?))
        .await?;
    let reply = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => bail!("unexpected handshake message {other:?}"),
                Some(Err(e)) => return Err(e.into()),
                None => bail!("server closed the connection during the handshake"),
            }
        }
    })
    .await
    .context("no handshake answer from the server")??;
    match serde_json::from_str::<ServerHello>(reply.as_str()).context("bad handshake answer")? {
        ServerHello::Welcome(w) => Ok(w),
        ServerHello::Refused(r) if r.reason.is_retryable() => bail!("{}", r.message),
        ServerHello::Refused(r) => {
            Err(Refused(format!("server refused the tunnel: {}", r.message)).into())
        }
    }
}

async fn session(
    mut ws: Ws,
    cfg: &SessionConfig,
    forwarder: &Arc<Forwarder>,
    output: &Output,
    welcomed: &AtomicBool,
) -> anyhow::Result<Ended> {
    let welcome = handshake(&mut ws, cfg, forwarder.deadline_ms()).await?;
    output.welcome(
        !welcomed.swap(true, Ordering::Relaxed),
        &welcome.name,
        &welcome.urls,
        &forwarder.target().base,
        cfg.inspector.as_deref(),
    );
    // After the banner, so the URL lines stay together.
    if welcome.missed.count > 0 {
        let delivering_to = cfg
            .deliver_missed
            .as_ref()
            .map(|_| forwarder.target().base.as_str());
        output.missed(&welcome.missed, delivering_to);
        if let Some(wake) = &cfg.deliver_missed {
            wake.wake();
        }
    }
    cfg.status.connected(welcome.urls.clone());

    let (mut sink, stream) = ws.split();
    let (out, mut out_rx) = outbound();
    let table = StreamTable::new();
    let writer = tokio::spawn(
        async move {
            let _ = write_frames(&mut sink, &mut out_rx, Message::Binary).await;
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "client closing".into(),
                })))
                .await;
        }
        .in_current_span(),
    );
    // Called from the frame loop, before it reads the next frame, so the
    // stream's DATA cannot arrive before its slot exists.
    let mut open = |o: Opened| match table.open(o.stream, Side::Acceptor, &out) {
        Ok(parts) => {
            let end_stream = matches!(o.body, Payload::Empty);
            table.deliver(o.stream, o.body);
            let span = tracing::debug_span!("stream", id = o.stream);
            tokio::spawn(
                forwarder
                    .clone()
                    .forward(parts, o.head, end_stream)
                    .instrument(span),
            );
        }
        Err(e) => {
            debug!(stream = o.stream, error = %e, "refusing stream");
            out.control(&Frame::Reset {
                stream: o.stream,
                code: ResetCode::Protocol,
                message: e.to_string(),
            });
        }
    };
    let messages = stream.map(|m| m.map(incoming));
    let ended = mux_session::run(
        messages,
        &table,
        &out,
        Liveness::CLIENT,
        std::future::pending(),
        Some(&mut open),
    )
    .await;
    drop(out);
    writer.abort();
    let reason = match ended {
        LoopEnded::Closed(Some((code, reason))) if code == CLOSE_REPLACED => {
            return Err(Refused(format!("{reason}; stopping")).into());
        }
        LoopEnded::Closed(Some((code, _))) if code == CLOSE_REVOKED => {
            return Err(Refused(
                "the server's admin revoked this token; stopping (ask for a new token, then `relay login`)".into(),
            )
            .into());
        }
        LoopEnded::Closed(Some((_, reason))) if !reason.is_empty() => reason,
        LoopEnded::Closed(_) => "server closed the session".to_owned(),
        LoopEnded::Lost(e) => e,
        LoopEnded::Silent => "server silent too long".to_owned(),
        LoopEnded::NotReading => "server not reading".to_owned(),
        LoopEnded::Protocol(why) => format!("server broke the protocol: {why}"),
        LoopEnded::Stopped => "stopped".to_owned(),
    };
    Ok(Ended::Lost(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_to_full() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(1000));
            assert!(
                j >= Duration::from_millis(500) && j <= Duration::from_millis(1000),
                "{j:?}"
            );
        }
    }
}
