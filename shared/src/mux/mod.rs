//! Streams over one WebSocket, shared by both ends of a session.
//!
//! A session is one WebSocket carrying many streams. Each side has:
//!
//! - an [`Outbound`] queue of encoded frames ([`outbound`]), drained by the
//!   one task that owns the WebSocket's write half. Heads, DATA, END and a
//!   stream's own RESETs share a bounded queue, so their order per stream is
//!   kept and a slow socket pushes back on producers; CREDIT, RESETs for
//!   frames the peer got wrong, and coalesced PONGs take a small bounded
//!   control queue that is drained first, so flow control never waits
//!   behind data.
//! - a [`StreamTable`] ([`table`]) the read loop dispatches incoming frames
//!   through, holding each stream's state in one allocation.
//! - per stream, an [`InboundBody`] ([`inbound`]): the peer's body as an
//!   `http_body::Body`; [`ReadyBody`] ([`ready`]): a body read ahead so a
//!   small message travels in its head frame; and the pumps ([`pump`]) that
//!   send a body or an upgraded connection under the stream's credit.
//!
//! Credit: a receiver grants [`INITIAL_WINDOW`] bytes per stream and returns
//! credit as its consumer reads ([`InboundBody`]), so each stream buffers at
//! most one window on each side, whatever its size or the reader's speed,
//! and a session at most [`SESSION_BUFFER_BUDGET`] in all. A sender waits on
//! its [`StreamSender`]'s credit before every DATA frame.
//!
//! Everything here runs on tokio (channels, semaphores, `yield_now`).

mod inbound;
mod outbound;
mod pump;
mod ready;
pub mod session;
mod table;
#[cfg(test)]
mod tests;
pub mod ws;

pub use inbound::InboundBody;
pub use outbound::{outbound, write_frames, Outbound, OutboundRx, WriteError};
pub use pump::recv_io;
pub use ready::{ReadyBody, READY_MAX};
pub use table::{
    Gone, HeadWait, ResetWait, Side, StreamGuard, StreamParts, StreamSender, StreamTable,
};

use crate::frame::{FrameError, ResetCode};
use crate::protocol::{INITIAL_WINDOW, MAX_STREAMS};

/// Frames the bounded data queue holds before producers wait; 256 frames
/// of at most 64 KiB cap what a stalled socket can pile up.
pub const DATA_QUEUE_FRAMES: usize = 256;

/// Control frames (CREDIT, protocol RESETs) one session may have queued.
/// A reading peer never gets near it: the writer drains control first, and
/// each stream can owe at most a couple of CREDITs before the peer runs out
/// of window. A full queue means the peer keeps making work for a socket it
/// does not read, so the session is ended instead of growing memory.
pub const CONTROL_QUEUE_FRAMES: usize = 4 * MAX_STREAMS;

/// Most bytes one session holds of the peer's bodies that their readers
/// have not taken yet (a visitor that stops reading a download, a local
/// app that stops reading an upload). Each stream may hold a window, so
/// without this a tunnel's worst case would be [`MAX_STREAMS`] windows
/// (512 MiB); past it, the stream furthest behind is reset and its bytes
/// freed. 128 streams with a full unread window fit.
pub const SESSION_BUFFER_BUDGET: usize = 64 * 1024 * 1024;

/// A receiver returns credit once this many bytes were consumed, so a
/// large body costs one CREDIT per half window instead of one per chunk.
const CREDIT_BATCH: u32 = INITIAL_WINDOW / 2;

/// Why a stream could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("the session to the other side is gone")]
    SessionClosed,
    #[error("the stream was reset: {0:?}")]
    Reset(ResetCode),
    #[error("frame could not be encoded: {0}")]
    Encode(#[from] FrameError),
    #[error("body failed: {0}")]
    Body(String),
    #[error("too many streams in flight")]
    TooManyStreams,
}
