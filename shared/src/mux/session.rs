//! The frame loop both ends of a session run: read messages, decode frames,
//! answer PINGs, route stream frames through the [`StreamTable`], reset
//! streams the peer got wrong, and notice a peer that went silent or stopped
//! reading. Generic over the message stream, so tests drive it with a
//! channel and each end maps its WebSocket's messages into [`Incoming`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::{Outbound, StreamTable};
use crate::frame::{Frame, FrameError, Payload};
use crate::http::RequestHead;
use crate::protocol::IDLE_TIMEOUT;

/// One message from the peer, as the loop needs it.
#[derive(Debug)]
pub enum Incoming {
    /// A binary message: one encoded frame.
    Frame(Bytes),
    /// The peer closed the WebSocket, with its close code and reason.
    Close(Option<(u16, String)>),
    /// A text message after the handshake: a protocol error.
    Text,
    /// Anything else (WebSocket-level pings): only proves the peer lives.
    Other,
}

const HALF_IDLE: Duration = Duration::from_millis((IDLE_TIMEOUT.as_millis() / 2) as u64);

/// How often the loop checks on the peer, and what it does then.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Time between checks.
    pub tick: Duration,
    /// Silence (nothing received) that ends the session.
    pub silent_limit: Duration,
    /// Whether this side PINGs on every tick (the client does; the server
    /// answers).
    pub ping: bool,
}

impl Liveness {
    /// The server: checks twice per idle timeout, since a client pings
    /// every `PING_INTERVAL` (15 s), well inside 22.5 s.
    pub const SERVER: Self = Self {
        tick: HALF_IDLE,
        silent_limit: HALF_IDLE,
        ping: false,
    };

    /// The client: PINGs every `PING_INTERVAL`, which the server answers,
    /// so a session silent for `IDLE_TIMEOUT` is dead.
    pub const CLIENT: Self = Self {
        tick: crate::protocol::PING_INTERVAL,
        silent_limit: IDLE_TIMEOUT,
        ping: true,
    };
}

/// Why the loop ended.
#[derive(Debug)]
pub enum Ended {
    /// `stop` resolved: this side ends the session.
    Stopped,
    /// The peer's socket ended or failed.
    Lost(String),
    /// The peer sent a close frame.
    Closed(Option<(u16, String)>),
    /// Nothing received for the silent limit.
    Silent,
    /// The peer sends but does not read: the writer is stuck, or the
    /// control queue overflowed.
    NotReading,
    /// The peer broke the protocol (a malformed frame or a text message):
    /// the WebSocket is closed with 1002.
    Protocol(String),
}

/// A stream the peer opened: for the accepting side to serve.
pub struct Opened {
    pub stream: u32,
    pub head: RequestHead,
    pub body: Payload,
}

/// Runs the loop until the peer goes, `stop` resolves, or the peer breaks
/// the protocol. `on_open` gets the streams the peer opens; `None` means
/// this side opens streams itself and a peer's request head is a protocol
/// error (reset by the table). Fails every open stream before returning.
pub async fn run<S, E>(
    mut messages: S,
    table: &Arc<StreamTable>,
    out: &Outbound,
    liveness: Liveness,
    stop: impl Future<Output = ()>,
    mut on_open: Option<&mut (dyn FnMut(Opened) + Send)>,
) -> Ended
where
    S: Stream<Item = Result<Incoming, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut stop = std::pin::pin!(stop);
    // One timer for the whole session rather than one per read.
    let mut tick = tokio::time::interval(liveness.tick);
    tick.reset();
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = false;
    let mut silent = Duration::ZERO;
    let mut nonce = 0u64;
    let ended = loop {
        let msg = tokio::select! {
            // All cancel safe: `next` on a stream, the caller's stop signal
            // (a cancellation or a oneshot), and an interval tick keep no
            // partial state.
            () = &mut stop => break Ended::Stopped,
            _ = tick.tick() => {
                silent = if std::mem::take(&mut heard) { Duration::ZERO } else { silent + liveness.tick };
                if silent >= liveness.silent_limit {
                    break Ended::Silent;
                }
                if out.write_stalled_for().is_some_and(|t| t > IDLE_TIMEOUT) {
                    break Ended::NotReading;
                }
                if liveness.ping {
                    nonce += 1;
                    out.control(&Frame::Ping { nonce });
                }
                continue;
            }
            m = messages.next() => m,
        };
        heard = true;
        let msg = match msg {
            None => break Ended::Lost("connection ended".into()),
            Some(Err(e)) => break Ended::Lost(e.to_string()),
            Some(Ok(m)) => m,
        };
        match msg {
            Incoming::Frame(bytes) => {
                if let Err(e) = on_frame(bytes, table, out, on_open.as_deref_mut()) {
                    break Ended::Protocol(format!("malformed frame: {e}"));
                }
                if out.overflowed() {
                    break Ended::NotReading;
                }
            }
            Incoming::Close(frame) => break Ended::Closed(frame),
            Incoming::Text => break Ended::Protocol("text message after the handshake".into()),
            Incoming::Other => {}
        }
    };
    table.close_all();
    ended
}

/// Handles one binary message; a frame that does not decode ends the
/// session (the stream it meant cannot be known).
fn on_frame<'f>(
    bytes: Bytes,
    table: &Arc<StreamTable>,
    out: &Outbound,
    on_open: Option<&mut (dyn FnMut(Opened) + Send + 'f)>,
) -> Result<(), FrameError> {
    match Frame::decode(bytes)? {
        Frame::Ping { nonce } => out.pong(nonce),
        Frame::Pong { .. } => {}
        Frame::RequestHead { stream, head, body } if on_open.is_some() => {
            if let Some(open) = on_open {
                open(Opened { stream, head, body });
            }
        }
        frame => {
            if let Err((stream, code)) = table.dispatch(frame) {
                out.control(&Frame::Reset {
                    stream,
                    code,
                    message: String::new(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::ResetCode;
    use crate::mux::outbound;
    use futures_util::stream;

    type Msg = Result<Incoming, std::convert::Infallible>;

    /// Messages, then a peer that stays connected and silent.
    fn peer(msgs: Vec<Incoming>) -> impl Stream<Item = Msg> + Unpin {
        stream::iter(msgs.into_iter().map(Ok)).chain(stream::pending())
    }

    fn frame(f: Frame) -> Incoming {
        Incoming::Frame(f.encode().expect("encodes"))
    }

    /// Runs the loop, without a stop signal or an acceptor, to its end.
    async fn until_end(
        msgs: impl Stream<Item = Msg> + Unpin,
        table: &Arc<StreamTable>,
        out: &Outbound,
        liveness: Liveness,
    ) -> Ended {
        run(msgs, table, out, liveness, std::future::pending(), None).await
    }

    fn queued(rx: &mut crate::mux::OutboundRx) -> Vec<Frame> {
        std::iter::from_fn(|| rx.try_recv())
            .map(|b| Frame::decode(b).expect("own frames decode"))
            .collect()
    }

    #[tokio::test]
    async fn a_malformed_frame_ends_the_session_as_a_protocol_error() {
        let (out, _rx) = outbound();
        let table = StreamTable::new();
        let msgs = peer(vec![Incoming::Frame(Bytes::from_static(&[99, 0, 0, 0, 1]))]);
        let ended = until_end(msgs, &table, &out, Liveness::SERVER).await;
        assert!(matches!(ended, Ended::Protocol(_)), "{ended:?}");
    }

    #[tokio::test]
    async fn pings_get_pongs_and_frames_for_unknown_streams_are_dropped() {
        let (out, mut rx) = outbound();
        let table = StreamTable::new();
        let msgs = peer(vec![
            frame(Frame::Data {
                stream: 7,
                data: Bytes::from_static(b"late"),
            }),
            frame(Frame::Ping { nonce: 42 }),
            Incoming::Close(Some((1000, "bye".into()))),
        ]);
        let ended = until_end(msgs, &table, &out, Liveness::SERVER).await;
        assert!(matches!(ended, Ended::Closed(Some((1000, _)))), "{ended:?}");
        assert_eq!(queued(&mut rx), [Frame::Pong { nonce: 42 }]);
    }

    #[tokio::test]
    async fn request_heads_go_to_the_acceptor_and_are_reset_on_the_opener() {
        let head = || {
            frame(Frame::RequestHead {
                stream: 3,
                head: RequestHead {
                    id: "r".into(),
                    method: http::Method::GET,
                    target: "/".into(),
                    headers: http::HeaderMap::new(),
                },
                body: Payload::Empty,
            })
        };
        let (out, mut rx) = outbound();
        let table = StreamTable::new();
        let mut opened = Vec::new();
        let mut on_open = |o: Opened| opened.push(o.stream);
        let msgs = peer(vec![head(), Incoming::Close(None)]);
        run(
            msgs,
            &table,
            &out,
            Liveness::CLIENT,
            std::future::pending(),
            Some(&mut on_open),
        )
        .await;
        assert_eq!(opened, [3]);
        assert!(queued(&mut rx).is_empty());

        let msgs = peer(vec![head(), Incoming::Close(None)]);
        until_end(msgs, &table, &out, Liveness::SERVER).await;
        assert!(matches!(
            queued(&mut rx)[..],
            [Frame::Reset {
                stream: 3,
                code: ResetCode::Protocol,
                ..
            }]
        ));
    }

    #[tokio::test]
    async fn text_after_the_handshake_is_a_protocol_error() {
        let (out, _rx) = outbound();
        let table = StreamTable::new();
        let ended = until_end(peer(vec![Incoming::Text]), &table, &out, Liveness::SERVER).await;
        assert!(matches!(ended, Ended::Protocol(_)), "{ended:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_dropped_after_the_silent_limit_and_pinged_before() {
        let (out, mut rx) = outbound();
        let table = StreamTable::new();
        let started = tokio::time::Instant::now();
        let ended = until_end(peer(vec![]), &table, &out, Liveness::CLIENT).await;
        assert!(matches!(ended, Ended::Silent), "{ended:?}");
        assert_eq!(started.elapsed(), IDLE_TIMEOUT);
        // The client pinged on every tick before giving up.
        let pings = queued(&mut rx);
        assert_eq!(pings.len(), 2, "{pings:?}");

        let started = tokio::time::Instant::now();
        let ended = until_end(peer(vec![]), &table, &out, Liveness::SERVER).await;
        assert!(matches!(ended, Ended::Silent), "{ended:?}");
        assert_eq!(started.elapsed(), IDLE_TIMEOUT / 2);
        assert!(queued(&mut rx).is_empty(), "the server does not ping");
    }

    #[tokio::test]
    async fn stop_ends_the_loop_and_fails_open_streams() {
        let (out, _rx) = outbound();
        let table = StreamTable::new();
        let mut parts = table
            .open(1, crate::mux::Side::Opener, &out)
            .expect("opens");
        let ended = run(peer(vec![]), &table, &out, Liveness::SERVER, async {}, None).await;
        assert!(matches!(ended, Ended::Stopped), "{ended:?}");
        assert!(table.is_empty());
        assert!(parts
            .head
            .take()
            .expect("opener waits for a head")
            .await
            .is_err());
    }
}
