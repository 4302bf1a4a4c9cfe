//! The WebSocket a session runs on, as both ends configure and read it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::session::Incoming;
use crate::protocol::{MAX_FRAME_BYTES, WS_READ_BUFFER, WS_SOCKET_READ};

/// WebSocket limits for tunnel sessions, from the protocol's constants, so
/// a peer's oversized message is refused by the WebSocket layer before a
/// frame is decoded.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .read_buffer_size(WS_READ_BUFFER)
}

/// A WebSocket message as the frame loop takes it.
pub fn incoming(msg: Message) -> Incoming {
    match msg {
        Message::Binary(bytes) => Incoming::Frame(bytes),
        Message::Close(frame) => {
            Incoming::Close(frame.map(|f| (u16::from(f.code), f.reason.to_string())))
        }
        Message::Text(_) => Incoming::Text,
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Incoming::Other,
    }
}

/// The socket under a session's WebSocket, with a read buffer that exists
/// only while bytes keep coming.
///
/// tungstenite keeps a read buffer of [`WS_READ_BUFFER`] per WebSocket for
/// the session's whole life, zero-filled before every read, so it is
/// resident even on an idle tunnel: with thousands of idle tunnels it was
/// the largest part of each one's memory. That buffer is kept small, and
/// this adapter lets it stay small without a system call per few hundred
/// bytes of a large body: a read that fills tungstenite's buffer means more
/// is waiting, so the following reads take up to [`WS_SOCKET_READ`] from
/// the socket at once into a buffer here, which is freed as soon as the
/// socket has nothing more to give (an idle session holds none).
pub struct LazyReadBuf<S> {
    io: S,
    /// Bytes read from the socket and not handed on yet; no allocation
    /// while the session is quiet.
    buf: BytesMut,
    /// The last direct read filled the caller's buffer: read ahead through
    /// `buf` until the socket runs dry.
    busy: bool,
}

impl<S> LazyReadBuf<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            busy: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Bytes held in the read-ahead buffer now (allocated, not just
    /// unread); 0 while quiet.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LazyReadBuf<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            if !this.busy {
                // Quiet: straight into the caller's buffer, nothing held
                // here (and nothing allocated for a read that finds no
                // data, as on every idle wake-up).
                let room = out.remaining();
                let before = out.filled().len();
                ready!(Pin::new(&mut this.io).poll_read(cx, out))?;
                this.busy = room > 0 && out.filled().len() - before == room;
                return Poll::Ready(Ok(()));
            }
            this.buf.reserve(WS_SOCKET_READ);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf) {
                Poll::Ready(Ok(n)) if n > 0 => {}
                other => {
                    // Dry (or ended): give the buffer back until the next
                    // full read.
                    this.buf = BytesMut::new();
                    this.busy = false;
                    return other.map_ok(|_| ());
                }
            }
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LazyReadBuf<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Reads in `chunk`-byte calls, as tungstenite does.
    async fn read_all<S: AsyncRead + Unpin>(r: &mut LazyReadBuf<S>, chunk: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = r.read(&mut buf).await.expect("read");
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn large_and_small_reads_pass_every_byte_in_order() {
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let data: Vec<u8> = (0..(3 * WS_SOCKET_READ + 123)).map(|i| i as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.expect("write");
            w.write_all(b"tail").await.expect("write");
        });
        let mut r = LazyReadBuf::new(r);
        let got = read_all(&mut r, 100).await;
        writer.await.expect("writer");
        assert_eq!(got.len(), data.len() + 4);
        assert_eq!(&got[..data.len()], &data[..]);
        assert_eq!(&got[data.len()..], b"tail");
    }

    #[tokio::test]
    async fn a_quiet_socket_holds_no_buffer() {
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let mut r = LazyReadBuf::new(r);
        // A burst larger than the reader's buffer: read ahead kicks in.
        w.write_all(&vec![7u8; 10_000]).await.expect("write");
        let mut buf = [0u8; 100];
        let n = r.read(&mut buf).await.expect("read");
        assert_eq!(n, 100);
        let n = r.read(&mut buf).await.expect("read");
        assert_eq!(n, 100);
        assert!(r.buffer_capacity() > 0, "reads ahead while busy");
        let mut rest = 10_000 - 200;
        while rest > 0 {
            rest -= r.read(&mut buf).await.expect("read");
        }
        // The socket is dry now: the next read waits, and gives the buffer
        // back first.
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(50), r.read(&mut buf)).await;
        assert!(pending.is_err(), "no data yet");
        assert_eq!(r.buffer_capacity(), 0);
        // A small message afterwards goes straight through.
        w.write_all(b"ping").await.expect("write");
        let n = r.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(r.buffer_capacity(), 0);
    }
}
