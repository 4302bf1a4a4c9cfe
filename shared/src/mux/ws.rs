//! The WebSocket a session runs on, as both ends configure and read it.

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::session::Incoming;
use crate::protocol::{MAX_FRAME_BYTES, WS_READ_BUFFER};

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
