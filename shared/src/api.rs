//! JSON shapes of the capture API (`docs/api.md`): what the server stores
//! and answers, and what `relay requests`, `relay replay` and the inspector
//! read. One definition, so the two ends cannot drift apart.

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// How a captured exchange ended: one name for the server, the store, the
/// API and the client (snake_case on the wire and in the database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The local app's response reached the visitor.
    Delivered,
    /// No tunnel has the name; never stored (there is no owner to show it to).
    NotFound,
    /// No client was connected.
    Offline,
    /// The client could not reach the local app.
    LocalUnreachable,
    /// The local app broke the exchange.
    LocalError,
    /// No response head within the request timeout.
    Timeout,
    /// The client's session ended mid-exchange.
    ClientDisconnected,
    /// The body was over `--max-body`.
    BodyTooLarge,
    /// Too many streams in flight on the tunnel.
    TunnelBusy,
    /// The visitor went away (or sent what could not be forwarded) before
    /// the response was complete.
    VisitorGone,
    /// The tunnel's edge rules refused it; it never reached the client.
    Rejected,
}

impl Outcome {
    /// Every outcome a capture can be stored with, in the order users see.
    pub const STORED: [Outcome; 10] = [
        Self::Delivered,
        Self::Offline,
        Self::LocalUnreachable,
        Self::LocalError,
        Self::Timeout,
        Self::ClientDisconnected,
        Self::BodyTooLarge,
        Self::TunnelBusy,
        Self::VisitorGone,
        Self::Rejected,
    ];

    /// The name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::NotFound => "not_found",
            Self::Offline => "offline",
            Self::LocalUnreachable => "local_unreachable",
            Self::LocalError => "local_error",
            Self::Timeout => "timeout",
            Self::ClientDisconnected => "client_disconnected",
            Self::BodyTooLarge => "body_too_large",
            Self::TunnelBusy => "tunnel_busy",
            Self::VisitorGone => "visitor_gone",
            Self::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a stored outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("outcome must be one of {}", Outcome::STORED.map(Outcome::as_str).join(", "))]
pub struct UnknownOutcome;

impl std::str::FromStr for Outcome {
    type Err = UnknownOutcome;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::STORED
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or(UnknownOutcome)
    }
}

/// `GET /_relay/v1/token`: the caller as the server sees it (`relay
/// login` checks a token with it, `relay status` shows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The token's id; `None` for a client without a token on an `--open`
    /// server.
    pub token_id: Option<i64>,
    pub label: Option<String>,
    /// The most names the token may claim; `None`: no cap.
    pub max_names: Option<u32>,
    /// The names it claimed, oldest first.
    pub names: Vec<String>,
    /// The server lets clients connect without a token.
    pub open: bool,
}

/// One line of a request list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub id: String,
    pub tunnel: String,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub method: String,
    /// Path and query as the local app sees them.
    pub path: String,
    /// What the visitor got; `None` when no response was sent.
    pub status: Option<u16>,
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub request_size: u64,
    pub response_size: u64,
    pub replay_of: Option<String>,
    /// Delivery state of an `offline` capture (a missed request); `None`
    /// for every other outcome.
    #[serde(default)]
    pub delivery: Option<Delivery>,
    /// The replay that delivered it.
    #[serde(default)]
    pub delivered_by: Option<String>,
    /// Why the last delivery attempt failed.
    #[serde(default)]
    pub delivery_error: Option<String>,
    /// The tunnel's caller deadline (`--deadline`, `--caller`) in
    /// milliseconds, set only when this exchange took longer: the caller
    /// would have given up before the answer was complete.
    #[serde(default)]
    pub deadline_exceeded_ms: Option<u64>,
    /// The fault `relay connect --fault` played instead of the local app
    /// (`delay=12s`, `status=500`, `reset`); `None` for a real answer.
    #[serde(default)]
    pub fault: Option<String>,
}

/// Where a missed request (an `offline` capture) is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Waiting to reach the local app.
    Missed,
    /// A replay reached the local app and it answered below 500.
    Delivered,
    /// The last attempt could not reach the app, or it answered 5xx; it is
    /// tried again by the next delivery.
    Failed,
}

impl Delivery {
    /// The name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missed => "missed",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// Whether the request still waits for a delivery.
    pub fn is_waiting(self) -> bool {
        matches!(self, Self::Missed | Self::Failed)
    }
}

impl std::str::FromStr for Delivery {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Missed, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown delivery state {s:?}"))
    }
}

/// The missed requests of a tunnel that still wait (`missed` or `failed`):
/// `GET .../missed`, and the count in the handshake's welcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissedOverview {
    pub count: u64,
    /// Arrival time of the oldest (RFC 3339, UTC).
    pub oldest: Option<String>,
    /// The oldest first, at most the `limit` asked for (none in the welcome).
    #[serde(default)]
    pub requests: Vec<Summary>,
}

/// What `POST .../missed/claim` asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// Only requests that arrived within this many milliseconds.
    #[serde(default)]
    pub within_ms: Option<u64>,
}

/// The oldest waiting missed request, reserved for one deliverer until its
/// replay is recorded with `claim`, or the claim's lease runs out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claimed {
    /// Pass as `claim` when recording the replay.
    pub claim: String,
    pub record: Record,
    /// Missed requests waiting, this one included.
    pub waiting: u64,
}

/// A summary with both messages in full (as far as captured).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(flatten)]
    pub summary: Summary,
    pub request: Message,
    pub response: Option<Message>,
    /// For a replay made with `--diff`: how its response differed from
    /// the original's, kept so the inspector can show it later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<ResponseDiff>,
}

/// Headers and captured body of one side of an exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `[name, value]` pairs in their order.
    pub headers: Vec<(String, String)>,
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
    /// Size of the whole body, as far as it is known.
    pub body_size: u64,
    /// The captured bytes are not the whole body.
    pub body_truncated: bool,
}

/// A page of summaries, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Page {
    pub requests: Vec<Summary>,
    /// Pass as `before` to get the next (older) page.
    pub next_before: Option<String>,
}

/// A replay the client performed, sent to the server to be recorded as a
/// new entry linked to the original.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewReplay {
    pub replay_of: String,
    pub method: String,
    pub path: String,
    pub status: Option<u16>,
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub request: Message,
    pub response: Option<Message>,
    /// Why it was not delivered, kept as a missed request's last error.
    #[serde(default)]
    pub error: Option<String>,
    /// The claim under which a missed request is being delivered.
    #[serde(default)]
    pub claim: Option<String>,
    /// The response compared with the original's, stored with the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<ResponseDiff>,
}

/// What a replay did (`relay replay --json`, the inspector's replay button).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayResult {
    /// The new entry's id; `None` when the server could not record it.
    pub id: Option<String>,
    pub replay_of: String,
    /// The URL the request went to.
    pub target: String,
    pub status: Option<u16>,
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub response: Option<Message>,
    /// Why the replay was not delivered (or not recorded).
    pub error: Option<String>,
    /// When asked for (`--diff`): what differs from the original's response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<ResponseDiff>,
}

/// What differs between an original's response and its replay's. Volatile
/// headers (dates, ids, framing, validators) are left out, so an empty
/// diff means "the app answered the same".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseDiff {
    /// `None`: the same status (or neither got a response).
    pub status: Option<StatusChange>,
    /// By lower-case name, in the order they first appear.
    pub headers: Vec<HeaderChange>,
    pub body: BodyDiff,
    /// The original's captured body is only a prefix of it.
    pub original_truncated: bool,
    /// The replay's kept body is only a prefix of it.
    pub replay_truncated: bool,
}

impl ResponseDiff {
    /// Nothing differs.
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.headers.is_empty() && self.body == BodyDiff::Same
    }
}

/// A status that changed; `None` where there was no response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub before: Option<u16>,
    pub after: Option<u16>,
}

/// Whether something is new in the replay, gone from it, or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

/// A header that differs; repeated values are joined with `, `.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderChange {
    pub name: String,
    pub kind: ChangeKind,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// How the bodies differ, by what they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BodyDiff {
    /// The same bytes.
    #[default]
    Same,
    /// Both JSON: the values that differ, by path (`data.addUser.id`,
    /// `items[2].name`).
    Json {
        changes: Vec<JsonChange>,
        /// Changes left out to keep the diff small.
        #[serde(default)]
        more: u64,
    },
    /// Both text: a unified diff (original first).
    Text { unified: String },
    /// Anything else: what can be said of bytes.
    Binary {
        before: BodyDigest,
        after: BodyDigest,
    },
}

/// One value that differs between two JSON bodies; `null` for the side it
/// is missing from (`kind` tells a missing value from a JSON `null`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonChange {
    pub path: String,
    pub kind: ChangeKind,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

/// A body described by its size and the SHA-256 of its captured bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyDigest {
    /// The whole body's size.
    pub size: u64,
    /// Hex, of the captured bytes (a prefix when truncated).
    pub sha256: String,
}

/// Edits applied to a captured request before replaying it; a field left
/// out keeps the captured value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplayEdits {
    pub method: Option<String>,
    pub path: Option<String>,
    /// Replaces all captured headers.
    pub headers: Option<Vec<(String, String)>>,
    /// Replaces the body. JSON carries it as text (the inspector's
    /// `"body": "text"`); the CLI's `--body @FILE` may set any bytes.
    #[serde(default, with = "text_body")]
    pub body: Option<Vec<u8>>,
    /// Replay even though the captured body was truncated.
    #[serde(default)]
    pub force: bool,
    /// Compare the replay's response with the original's, and keep the
    /// diff with the replay's entry.
    #[serde(default)]
    pub diff: bool,
}

/// A body edit in JSON: a string, sent as its UTF-8 bytes. Bytes that are
/// not UTF-8 have no such form, and fail to serialise rather than be
/// silently changed.
mod text_body {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(body: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match body.as_deref().map(std::str::from_utf8) {
            None => s.serialize_none(),
            Some(Ok(text)) => s.serialize_some(text),
            Some(Err(_)) => Err(serde::ser::Error::custom(
                "a body edit that is not UTF-8 has no JSON text form",
            )),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(String::into_bytes))
    }
}

/// Headers as JSON pairs. Values that are not UTF-8 (obs-text) are read as
/// Latin-1, which keeps every byte visible.
pub fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), value_text(v.as_bytes())))
        .collect()
}

fn value_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Pairs back to a header map, in order; names or values HTTP cannot
/// carry are an error naming the header. Values go out as UTF-8 bytes.
pub fn header_map(pairs: &[(String, String)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        let n = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("{name:?} is not a valid header name"))?;
        let v = HeaderValue::from_bytes(value.trim().as_bytes())
            .map_err(|_| format!("the value of header {name:?} is not valid"))?;
        map.append(n, v);
    }
    Ok(map)
}

/// Headers in the compact form the store keeps: `name: value\r\n` per
/// field, bytes as received. Neither part can contain CR or LF, so the
/// form is unambiguous and costs one copy.
pub fn encode_headers(headers: &HeaderMap) -> Vec<u8> {
    let len = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(len);
    for (n, v) in headers {
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The inverse of [`encode_headers`], as JSON pairs; malformed lines are
/// skipped rather than failing a whole listing.
pub fn decode_headers(blob: &[u8]) -> Vec<(String, String)> {
    blob.split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r")?;
            let colon = line.windows(2).position(|w| w == b": ")?;
            Some((value_text(&line[..colon]), value_text(&line[colon + 2..])))
        })
        .collect()
}

/// Standard base64 for bodies in JSON.
pub mod base64_bytes {
    use super::*;

    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// A short, printable preview of a body for terminals: text as text (cut
/// at `max` characters), anything else as its size.
pub fn body_preview(body: &[u8], max: usize) -> String {
    match std::str::from_utf8(body) {
        Ok(text) => {
            let one_line: String = text
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(max)
                .collect();
            if text.chars().count() > max {
                format!("{one_line}…")
            } else {
                one_line
            }
        }
        Err(_) => format!("({} bytes of binary data)", body.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_have_one_name_on_the_wire_in_the_store_and_in_filters() {
        for o in Outcome::STORED {
            let json = serde_json::to_string(&o).expect("serializes");
            assert_eq!(json, format!("\"{}\"", o.as_str()));
            assert_eq!(serde_json::from_str::<Outcome>(&json).expect("parses"), o);
            assert_eq!(o.as_str().parse::<Outcome>(), Ok(o));
        }
        assert!("not_found".parse::<Outcome>().is_err(), "never stored");
        assert!("bogus".parse::<Outcome>().is_err());
    }

    #[test]
    fn header_blob_round_trips_order_repeats_and_obs_text() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("set-cookie", HeaderValue::from_static("a=b: c"));
        h.append("set-cookie", HeaderValue::from_static("d=e"));
        h.append(
            "x-obs",
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is valid"),
        );
        let pairs = decode_headers(&encode_headers(&h));
        assert_eq!(pairs, header_pairs(&h));
        assert_eq!(pairs[1], ("set-cookie".into(), "a=b: c".into()));
        assert_eq!(pairs[3].1, "café");
        assert_eq!(header_map(&pairs[..3]).expect("valid"), {
            let mut m = h.clone();
            m.remove("x-obs");
            m
        });
    }

    #[test]
    fn header_map_rejects_what_http_cannot_carry() {
        let err = header_map(&[("bad name".into(), "x".into())]).expect_err("space in name");
        assert!(err.contains("bad name"), "{err}");
        assert!(header_map(&[("x".into(), "a\nb".into())]).is_err());
        let utf8 = header_map(&[("x-name".into(), "héllo".into())]).expect("non-ASCII is sent");
        assert_eq!(utf8["x-name"].as_bytes(), "héllo".as_bytes());
    }

    #[test]
    fn record_json_uses_base64_bodies_and_flat_summary() {
        let rec = Record {
            summary: Summary {
                id: "01".into(),
                tunnel: "app".into(),
                time: "2026-11-24T10:00:00.000Z".into(),
                method: "POST".into(),
                path: "/hook".into(),
                status: Some(200),
                outcome: Outcome::Delivered,
                duration_ms: 3,
                request_size: 3,
                response_size: 0,
                replay_of: None,
                delivery: None,
                delivered_by: None,
                delivery_error: None,
                deadline_exceeded_ms: None,
                fault: None,
            },
            request: Message {
                headers: vec![("a".into(), "b".into())],
                body: vec![0, 255, 7],
                body_size: 3,
                body_truncated: false,
            },
            response: None,
            diff: None,
        };
        let json = serde_json::to_value(&rec).expect("serialises");
        assert!(json.get("diff").is_none(), "no diff, no field");
        assert_eq!(json["id"], "01");
        assert_eq!(json["request"]["body"], "AP8H");
        let back: Record = serde_json::from_value(json).expect("parses");
        assert_eq!(back, rec);
    }

    #[test]
    fn a_body_edit_is_text_in_json_and_bytes_in_rust() {
        let e: ReplayEdits = serde_json::from_str(r#"{"body": "héllo", "force": true}"#)
            .expect("the inspector's form parses");
        assert_eq!(e.body.as_deref(), Some("héllo".as_bytes()));
        let none: ReplayEdits = serde_json::from_str("{}").expect("every field is optional");
        assert!(none.body.is_none() && !none.force);
        let back = serde_json::to_value(&e).expect("UTF-8 serialises");
        assert_eq!(back["body"], "héllo");
        let binary = ReplayEdits {
            body: Some(vec![0xff, 0]),
            ..ReplayEdits::default()
        };
        assert!(
            serde_json::to_string(&binary).is_err(),
            "not silently mangled"
        );
    }

    #[test]
    fn previews_cut_text_and_describe_binary() {
        assert_eq!(body_preview(b"{\"ok\":true}\n", 80), "{\"ok\":true} ");
        assert_eq!(body_preview(b"abcdef", 3), "abc…");
        assert_eq!(body_preview(&[0xff, 0xfe], 10), "(2 bytes of binary data)");
    }
}
