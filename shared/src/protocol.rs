//! Handshake messages and the protocol's limits.
//!
//! A session starts with one JSON text message each way: the client's
//! [`ClientHello`], then the server's [`ServerHello`] (welcome or a typed
//! refusal the client prints). Everything after that is binary
//! [`crate::frame::Frame`]s. Every limit either side enforces is a constant
//! here, so both ends, the WebSocket configuration and the docs agree.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Version of the handshake and frame format; a mismatch is refused with
/// both numbers named, because mixing versions silently would corrupt streams.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest DATA payload a sender may put in one frame. Big enough that a
/// 64 MiB body is ~1000 frames, small enough that one stream cannot hog the
/// WebSocket for long while others wait.
pub const MAX_DATA_PAYLOAD: usize = 64 * 1024;

/// Largest encoded request or response head: its fields with their length
/// prefixes, without the inline body (see `docs/protocol.md`). Both
/// `Frame::encode` and `Frame::decode` refuse a larger one. Not above
/// everything hyper accepts: its HTTP/1.1 server reads heads of up to
/// about 400 KiB, and a visitor's head between the two gets 400 from the
/// proxy. (hyper caps HTTP/2 header lists at 16 KiB.)
pub const MAX_HEAD_BYTES: usize = 256 * 1024;

/// Most header fields in one head.
pub const MAX_HEADERS: usize = 512;

/// Longest reset message, in bytes.
pub const MAX_RESET_MESSAGE: usize = 1024;

/// Largest frame either side accepts; the WebSocket's max message and frame
/// sizes are set from this.
/// (A head frame may carry an inline body of up to [`MAX_DATA_PAYLOAD`].)
pub const MAX_FRAME_BYTES: usize =
    crate::frame::FRAME_HEADER_LEN + 1 + MAX_HEAD_BYTES + MAX_DATA_PAYLOAD;

/// WebSocket read buffer: tungstenite's, per session, for the session's
/// whole life. It zero-fills the free part before every read, so the whole
/// of it is resident even on an idle tunnel (at 8 KiB it was over a third of
/// an idle tunnel's server memory), and a large one costs a large memset per
/// small message. Large bodies do not need it large: `mux::ws::LazyReadBuf`
/// reads ahead up to [`WS_SOCKET_READ`] underneath while bytes keep coming.
pub const WS_READ_BUFFER: usize = 2 * 1024;

/// Most bytes a busy session reads from its socket at once, into a buffer
/// that is freed when the socket runs dry (see `mux::ws::LazyReadBuf`).
/// 32 KiB is jemalloc's largest thread-cached size, so taking and giving
/// back the buffer stays cheap.
pub const WS_SOCKET_READ: usize = 32 * 1024;

/// Largest handshake message (JSON text).
pub const MAX_HANDSHAKE_BYTES: usize = 16 * 1024;

/// Bytes a receiver lets each stream have in flight before it returns
/// credit. Bounds per-stream memory on both ends; 512 KiB keeps a loopback
/// transfer from stalling on credit round-trips.
pub const INITIAL_WINDOW: u32 = 512 * 1024;

/// Streams one session may have open at once; past it a visitor gets
/// 503 `tunnel_busy` instead of queueing without bound.
pub const MAX_STREAMS: usize = 1024;

/// How long either side waits for the other's hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the client pings an idle session.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);

/// A session with nothing received for this long is dead; both ends drop
/// it (the client then reconnects).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// WebSocket close code telling a client that a newer session of the same
/// owner took its tunnel name; the client stops instead of reconnecting.
pub const CLOSE_REPLACED: u16 = 4000;

/// WebSocket close code telling a client that its token was revoked; the
/// client stops, since reconnecting would be refused.
pub const CLOSE_REVOKED: u16 = 4001;

/// A bearer token. Its `Debug` and `Display` never show the secret, so it
/// cannot leak through a log line or an error message.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for hashing or sending; never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// The client's first message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientHello {
    /// [`PROTOCOL_VERSION`] of the client.
    pub protocol: u32,
    /// Client software version, for logs.
    pub software: String,
    /// Random id the client generated once and keeps in its config; under
    /// `--open` it is the identity that owns names.
    pub client_id: String,
    /// The tunnel name wanted.
    pub name: String,
    /// Bearer token made by `relay-server token create`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
    /// What the server answers for the tunnel while no client is
    /// connected; kept by the server. `None` (an older client) keeps the
    /// setting the name already has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_offline: Option<WhenOffline>,
    /// The tunnel's edge rules, kept by the server and checked on every
    /// request, also while no client is connected. `None` (an older
    /// client) keeps the rules the name has; an empty set clears them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<crate::edge::EdgeRules>,
    /// The caller deadline (`relay connect --deadline`, `--caller`) in
    /// milliseconds, kept by the server with the session: an exchange that
    /// took longer is marked in its capture. `None` (an older client, or
    /// no deadline): nothing is marked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

/// Longest caller deadline a hello may carry; larger values are refused as
/// malformed (no caller waits a day).
pub const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// The answer a tunnel's URL gives while its client is away. Either way
/// the request is captured and waits to be delivered.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenOffline {
    /// 503 `tunnel_offline` with `Retry-After`: the caller should retry.
    #[default]
    Reject,
    /// 202 `{"queued": true, "request_id": ...}`: the caller goes on, and
    /// the request is delivered when the client is back.
    Accept,
}

impl WhenOffline {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Accept => "accept",
        }
    }
}

/// The server's answer to a [`ClientHello`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerHello {
    /// The tunnel is up; streams may start.
    Welcome(Welcome),
    /// The session is refused; the server closes it after this message.
    Refused(Refusal),
}

/// Accepted handshake.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Welcome {
    /// [`PROTOCOL_VERSION`] of the server.
    pub protocol: u32,
    /// The tunnel name now served by this session.
    pub name: String,
    /// Public URLs that reach the tunnel, host-routed first.
    pub urls: Vec<String>,
    /// Requests that arrived while no client was connected and still wait
    /// to be delivered (count and oldest only).
    #[serde(default)]
    pub missed: crate::api::MissedOverview,
}

/// Refused handshake.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefusalReason,
    /// Sentence for the user, printed by the client as is.
    pub message: String,
}

/// Why a handshake was refused; decides whether the client retries.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Client and server speak different protocol versions.
    VersionMismatch,
    /// The server needs a token and none was sent.
    TokenRequired,
    /// The token is unknown or revoked.
    BadToken,
    /// The name breaks the naming rules or is reserved.
    BadName,
    /// The name belongs to another token or client.
    NameTaken,
    /// The hello could not be parsed.
    Malformed,
    /// The server is shutting down; try again shortly.
    ShuttingDown,
    /// The token already claimed as many names as it may (`--max-names`).
    NameLimit,
    /// The edge rules are malformed or over a size limit.
    BadRules,
    /// A reason a newer server added: not retried, its message printed.
    #[serde(other)]
    Unknown,
}

impl RefusalReason {
    /// Every reason this server version can give, for counting them by
    /// reason (`Unknown` is only ever received).
    pub const ALL: [RefusalReason; 9] = [
        Self::VersionMismatch,
        Self::TokenRequired,
        Self::BadToken,
        Self::BadName,
        Self::NameTaken,
        Self::Malformed,
        Self::ShuttingDown,
        Self::NameLimit,
        Self::BadRules,
    ];

    /// The name on the wire (and in metrics labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VersionMismatch => "version_mismatch",
            Self::TokenRequired => "token_required",
            Self::BadToken => "bad_token",
            Self::BadName => "bad_name",
            Self::NameTaken => "name_taken",
            Self::Malformed => "malformed",
            Self::ShuttingDown => "shutting_down",
            Self::NameLimit => "name_limit",
            Self::BadRules => "bad_rules",
            Self::Unknown => "unknown",
        }
    }

    /// Whether reconnecting later can succeed without the user changing
    /// anything.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::ShuttingDown)
    }
}

impl ServerHello {
    pub fn refused(reason: RefusalReason, message: impl Into<String>) -> Self {
        Self::Refused(Refusal {
            reason,
            message: message.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_names_are_the_wire_names() {
        for reason in RefusalReason::ALL
            .into_iter()
            .chain([RefusalReason::Unknown])
        {
            let wire = serde_json::to_value(reason).expect("serialises");
            assert_eq!(wire, reason.as_str(), "{reason:?}");
        }
    }

    #[test]
    fn token_debug_hides_secret() {
        let t = Token::new("s3cr3t");
        assert_eq!(format!("{t:?}"), "Token(***)");
        let hello = ClientHello {
            protocol: 1,
            software: "x".into(),
            client_id: "c".into(),
            name: "n".into(),
            token: Some(t),
            when_offline: None,
            edge: None,
            deadline_ms: None,
        };
        assert!(!format!("{hello:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_hello_without_the_newer_fields_still_parses() {
        let old = r#"{"protocol":1,"software":"relay/0.0.9","client_id":"c","name":"n"}"#;
        let hello: ClientHello = serde_json::from_str(old).expect("parses");
        assert_eq!((hello.when_offline, hello.deadline_ms), (None, None));
        let text = serde_json::to_string(&hello).expect("serializes");
        assert!(!text.contains("deadline_ms"), "omitted when unset: {text}");
    }

    #[test]
    fn server_hello_is_tagged_snake_case() {
        let json = serde_json::to_string(&ServerHello::refused(RefusalReason::NameTaken, "no"))
            .expect("serializes");
        assert_eq!(
            json,
            r#"{"type":"refused","reason":"name_taken","message":"no"}"#
        );
        let back: ServerHello = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, ServerHello::refused(RefusalReason::NameTaken, "no"));
    }
}
