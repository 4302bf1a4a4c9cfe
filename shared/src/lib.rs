//! What `relay-server` and the `relay` client agree on.
//!
//! The wire types are pure (no sockets, no runtime): the handshake messages
//! and every limit ([`protocol`]), the binary stream frames and their codec
//! ([`frame`]), tunnel name rules ([`name`]), the header rules every
//! forwarded message goes through ([`http`]), and the JSON shapes of the
//! capture API ([`api`]). [`mux`] runs streams over one WebSocket and needs
//! tokio (channels, semaphores, tasks) and tungstenite's message type; it
//! still opens no socket: each end hands it its own. [`rt`] builds the
//! runtime both binaries use.
//!
//! `docs/protocol.md` describes the same format for people; it changes in the
//! same commit as `protocol.rs` and `frame.rs`.

pub mod api;
pub mod edge;
pub mod fault;
pub mod frame;
pub mod http;
pub mod mux;
pub mod name;
pub mod protocol;
pub mod rt;

pub use frame::{Frame, FrameError, Payload, ResetCode};
pub use http::{RequestHead, ResponseHead};
pub use name::TunnelName;
pub use protocol::{ClientHello, Refusal, RefusalReason, ServerHello, Welcome, PROTOCOL_VERSION};
