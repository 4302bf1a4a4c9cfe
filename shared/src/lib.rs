//! Wire types shared by `relay-server` and the `relay` client.
//!
//! Nothing here opens a socket or needs a runtime: the crate owns the
//! handshake messages ([`protocol`]), the binary stream frames and their
//! codec ([`frame`]), tunnel name rules ([`name`]), the header rules every
//! forwarded message goes through ([`http`]), and the per-stream flow-control
//! pieces both ends drive from their own tasks ([`stream`]), and the JSON
//! shapes of the capture API ([`api`]).
//!
//! `docs/protocol.md` describes the same format for people; it changes in the
//! same commit as `protocol.rs` and `frame.rs`.

pub mod api;
pub mod frame;
pub mod http;
pub mod name;
pub mod protocol;
pub mod stream;

pub use frame::{Frame, FrameError, Payload, ResetCode};
pub use http::{RequestHead, ResponseHead};
pub use name::TunnelName;
pub use protocol::{ClientHello, Refusal, RefusalReason, ServerHello, Welcome, PROTOCOL_VERSION};
