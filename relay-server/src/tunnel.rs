//! One tunnel session: the task that owns a client's WebSocket, writes the
//! frames of every stream, and routes incoming frames by stream id.
//! [`TunnelHandle`] is what the proxy holds to open streams on it.

use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use relay_shared::frame::{Frame, Payload};
use relay_shared::mux::session::{self, Ended, Liveness};
use relay_shared::mux::ws::incoming;
use relay_shared::mux::{
    outbound, write_frames, Outbound, OutboundRx, Side, StreamError, StreamParts, StreamTable,
};
use relay_shared::protocol::{CLOSE_REPLACED, CLOSE_REVOKED};
use relay_shared::RequestHead;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

/// How long a closing session waits to hand its close frame to the socket.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

struct Shared {
    name: String,
    out: Outbound,
    table: Arc<StreamTable>,
    next_stream: AtomicU32,
    /// Cancelled when the session ends or must end.
    closed: CancellationToken,
    /// The WebSocket close code the session ends with: 1001 (going
    /// away) unless the client broke the protocol (1002) or a newer
    /// session took the name ([`CLOSE_REPLACED`]).
    close_code: AtomicU16,
    /// What this tunnel's exchanges in progress keep of their bodies.
    taps: crate::capture::TapBudget,
    /// The client's caller deadline (`relay connect --deadline`): longer
    /// exchanges are marked in their captures.
    deadline: Option<std::time::Duration>,
}

/// Handle to a live session; cheap to clone.
#[derive(Clone)]
pub struct TunnelHandle {
    shared: Arc<Shared>,
}

impl TunnelHandle {
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The budget the captures of this tunnel's exchanges share.
    pub fn tap_budget(&self) -> &crate::capture::TapBudget {
        &self.shared.taps
    }

    /// The caller deadline the client set for this session, if any.
    pub fn deadline(&self) -> Option<std::time::Duration> {
        self.shared.deadline
    }

    /// Streams open on this session now (a metric).
    pub fn open_streams(&self) -> usize {
        self.shared.table.len()
    }

    pub fn same_session(&self, other: &TunnelHandle) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Asks the session to end (server shutdown).
    pub fn close(&self) {
        self.shared.closed.cancel();
    }

    /// Ends the session because a newer session of the same owner took its
    /// name. The client is told with [`CLOSE_REPLACED`] so it stops instead
    /// of reconnecting and taking the name back (two `relay connect` runs
    /// sharing one config would otherwise evict each other forever).
    pub fn replace(&self) {
        self.shared
            .close_code
            .store(CLOSE_REPLACED, Ordering::Relaxed);
        self.shared.closed.cancel();
    }

    /// Ends the session because its token was revoked. The client is told
    /// with [`CLOSE_REVOKED`] so it stops and says why, instead of
    /// reconnecting into a refusal.
    pub fn revoke(&self) {
        self.shared
            .close_code
            .store(CLOSE_REVOKED, Ordering::Relaxed);
        self.shared.closed.cancel();
    }

    /// Opens a stream and sends its request head. Cancel safe: a dropped
    /// future leaves at most a registered stream that its guard removes.
    pub async fn open_stream(
        &self,
        head: RequestHead,
        body: Payload,
    ) -> Result<StreamParts, StreamError> {
        let s = &self.shared;
        if s.closed.is_cancelled() {
            return Err(StreamError::SessionClosed);
        }
        // Odd ids, wrapping past u32::MAX; 2^31 streams before a reuse, and
        // a reused id still in flight is refused by the table.
        let id = s.next_stream.fetch_add(2, Ordering::Relaxed) | 1;
        let parts = s.table.open(id, Side::Opener, &s.out)?;
        parts
            .sender
            .send(&Frame::RequestHead {
                stream: id,
                head,
                body,
            })
            .await?;
        Ok(parts)
    }
}

/// Starts a session on an accepted WebSocket whose hello was accepted.
/// `welcome` is written before any stream frame, so the handle can be
/// registered (and routed to) before the client has even read it: requests
/// that arrive meanwhile queue behind the welcome instead of missing the
/// tunnel. Returns the handle and the future that runs the session until
/// the socket ends, the client goes idle, `close` is called or `closed`
/// is cancelled.
pub fn start<S>(
    name: String,
    ws: WebSocketStream<S>,
    welcome: String,
    closed: CancellationToken,
    deadline: Option<std::time::Duration>,
) -> (TunnelHandle, impl std::future::Future<Output = ()>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (out, out_rx) = outbound();
    let shared = Arc::new(Shared {
        name,
        out,
        table: StreamTable::new(),
        next_stream: AtomicU32::new(1),
        closed,
        close_code: AtomicU16::new(CloseCode::Away.into()),
        taps: Default::default(),
        deadline,
    });
    let handle = TunnelHandle {
        shared: shared.clone(),
    };
    (handle, run(shared, ws, out_rx, welcome))
}

async fn run<S>(shared: Arc<Shared>, ws: WebSocketStream<S>, out_rx: OutboundRx, welcome: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let closed = shared.closed.clone();
    // The writer runs in the session's `tunnel{name}` span too.
    let writer = tokio::spawn(write_loop(sink, out_rx, shared.clone(), welcome).in_current_span());
    let messages = stream.map(|m| m.map(incoming));
    let ended = session::run(
        messages,
        &shared.table,
        &shared.out,
        Liveness::SERVER,
        closed.cancelled(),
        None,
    )
    .await;
    let reason = match ended {
        Ended::Stopped => "closed by server",
        Ended::Lost(e) => {
            debug!(error = %e, "websocket read ended");
            "connection ended"
        }
        Ended::Closed(_) => "client closed the session",
        Ended::Silent => "client idle too long",
        Ended::NotReading => {
            warn!(tunnel = %shared.name, "client does not read what it is sent");
            "client not reading"
        }
        Ended::Protocol(why) => {
            warn!(tunnel = %shared.name, %why, "protocol error");
            shared
                .close_code
                .store(CloseCode::Protocol.into(), Ordering::Relaxed);
            "protocol error"
        }
    };
    closed.cancel();
    let _ = writer.await;
    info!(tunnel = %shared.name, reason, "tunnel down");
}

async fn write_loop<W>(mut sink: W, mut rx: OutboundRx, shared: Arc<Shared>, welcome: String)
where
    W: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let closed = &shared.closed;
    if sink.send(Message::text(welcome)).await.is_err() {
        closed.cancel();
        return;
    }
    tokio::select! {
        _ = write_frames(&mut sink, &mut rx, Message::Binary) => {
            // The socket cannot be written: end the session now rather
            // than keep routing visitors to it until the idle timeout.
            closed.cancel();
            return;
        }
        _ = closed.cancelled() => {}
    }
    let code = shared.close_code.load(Ordering::Relaxed);
    let reason = match code {
        CLOSE_REPLACED => "another relay connect took over this tunnel name",
        CLOSE_REVOKED => "the server's admin revoked this tunnel's token",
        1002 => "protocol error",
        _ => "server closing the session",
    };
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    // A client that stopped reading must not hold the session (and its
    // name) open: the close frame gets a short deadline.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
}
