//! Stream frames: the binary messages of a session after the handshake.
//!
//! Longer than most files on purpose: each kind's encoder and decoder sit
//! side by side with the limits they both enforce, so a limit checked on
//! output cannot be forgotten on input (the fuzz target checks the pair).
//!
//! Every WebSocket binary message is exactly one frame:
//!
//! ```text
//! kind: u8 | stream: u32 (big endian) | payload
//! ```
//!
//! Bodies travel as raw DATA payloads, never re-encoded. Decoding checks
//! every length against the bytes present and the limits in
//! [`crate::protocol`] before it allocates, so hostile input gets a
//! [`FrameError`], never a panic or an outsized allocation.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use crate::http::{RequestHead, ResponseHead};
use crate::protocol::{
    MAX_DATA_PAYLOAD, MAX_FRAME_BYTES, MAX_HEADERS, MAX_HEAD_BYTES, MAX_RESET_MESSAGE,
};

/// Bytes before the payload: kind and stream id.
pub const FRAME_HEADER_LEN: usize = 5;

const KIND_REQUEST_HEAD: u8 = 1;
const KIND_RESPONSE_HEAD: u8 = 2;
const KIND_DATA: u8 = 3;
const KIND_END: u8 = 4;
const KIND_RESET: u8 = 5;
const KIND_CREDIT: u8 = 6;
const KIND_PING: u8 = 7;
const KIND_PONG: u8 = 8;

/// Head flag: no body follows (no DATA, no END), which saves a frame for
/// every GET.
const FLAG_END_STREAM: u8 = 0x01;

/// Head flag: the rest of the frame after the headers is the whole body;
/// no DATA or END follow. Saves two frames for every small message.
const FLAG_INLINE_BODY: u8 = 0x02;

/// What follows a head on its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// DATA frames and then END.
    Streamed,
    /// Nothing: the message has no body.
    Empty,
    /// The whole body, carried in the head frame (at most
    /// [`MAX_DATA_PAYLOAD`] bytes).
    Inline(Bytes),
}

impl Payload {
    /// Whether DATA/END frames follow the head.
    pub fn is_streamed(&self) -> bool {
        matches!(self, Self::Streamed)
    }

    fn flags(&self) -> u8 {
        match self {
            Self::Streamed => 0,
            Self::Empty => FLAG_END_STREAM,
            Self::Inline(_) => FLAG_INLINE_BODY,
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Server → client: open stream `stream` with this request.
    RequestHead {
        stream: u32,
        head: RequestHead,
        body: Payload,
    },
    /// Client → server: the local app's response head for `stream`.
    ResponseHead {
        stream: u32,
        head: ResponseHead,
        body: Payload,
    },
    /// A piece of a body (or of an upgraded connection's bytes).
    Data { stream: u32, data: Bytes },
    /// The sender's body is complete.
    End { stream: u32 },
    /// The stream is aborted in both directions.
    Reset {
        stream: u32,
        code: ResetCode,
        message: String,
    },
    /// The receiver consumed `bytes` more of the sender's DATA; the sender
    /// may send that many more.
    Credit { stream: u32, bytes: u32 },
    /// Liveness probe (stream 0); answered with [`Frame::Pong`].
    Ping { nonce: u64 },
    /// Answer to [`Frame::Ping`].
    Pong { nonce: u64 },
}

/// Why a stream was reset; decides the visitor's status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetCode {
    /// The other side no longer wants the stream (visitor left, request
    /// cancelled).
    Cancel,
    /// The local app could not be reached (refused, DNS, no route).
    LocalUnreachable,
    /// The local app broke the exchange after it started.
    LocalError,
    /// The peer sent more DATA than it had credit for.
    FlowControl,
    /// The peer broke the protocol on this stream.
    Protocol,
    /// The sender is shutting down.
    Shutdown,
    /// `relay connect --fault reset`: the client asks the server to drop
    /// the visitor's connection without an answer, as a crashed app would.
    /// Older servers treat it like `Cancel` (a 502).
    Fault,
    /// A code this version does not know; treated like `Cancel`.
    Other(u8),
}

impl ResetCode {
    fn to_u8(self) -> u8 {
        match self {
            Self::Cancel => 1,
            Self::LocalUnreachable => 2,
            Self::LocalError => 3,
            Self::FlowControl => 4,
            Self::Protocol => 5,
            Self::Shutdown => 6,
            Self::Fault => 7,
            Self::Other(n) => n,
        }
    }

    fn from_u8(n: u8) -> Self {
        match n {
            1 => Self::Cancel,
            2 => Self::LocalUnreachable,
            3 => Self::LocalError,
            4 => Self::FlowControl,
            5 => Self::Protocol,
            6 => Self::Shutdown,
            7 => Self::Fault,
            n => Self::Other(n),
        }
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame truncated: needed {needed} more bytes")]
    Truncated { needed: usize },
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("{0} bytes left over after the frame")]
    Trailing(usize),
    #[error("head has {0} header fields, more than allowed")]
    TooManyHeaders(usize),
    #[error("head of {0} bytes or more exceeds the limit of {MAX_HEAD_BYTES}")]
    HeadTooLarge(usize),
    #[error("invalid method")]
    InvalidMethod,
    #[error("invalid status code {0}")]
    InvalidStatus(u16),
    #[error("invalid header name")]
    InvalidHeaderName,
    #[error("invalid header value")]
    InvalidHeaderValue,
    #[error("text field is not UTF-8")]
    InvalidUtf8,
    #[error("head flags {0:#x} contradict each other")]
    BadFlags(u8),
    #[error("{0} frame on stream 0, or stream frame without a stream")]
    BadStream(&'static str),
}

impl Frame {
    /// The stream a frame belongs to (0 for ping/pong).
    pub fn stream(&self) -> u32 {
        match self {
            Self::RequestHead { stream, .. }
            | Self::ResponseHead { stream, .. }
            | Self::Data { stream, .. }
            | Self::End { stream }
            | Self::Reset { stream, .. }
            | Self::Credit { stream, .. } => *stream,
            Self::Ping { .. } | Self::Pong { .. } => 0,
        }
    }

    /// Serialises the frame into one buffer, ready to be a WebSocket binary
    /// message. Every limit [`Frame::decode`] enforces is checked first, on
    /// sizes alone, before anything is allocated: a head over
    /// [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`], a body part over
    /// [`MAX_DATA_PAYLOAD`], or a stream frame on stream 0 is an error for
    /// the caller to answer (the visitor gets 400/502), never a frame the
    /// peer must refuse. A reset message is cut to [`MAX_RESET_MESSAGE`] at
    /// a character boundary instead: the reset itself matters more.
    pub fn encode(&self) -> Result<Bytes, FrameError> {
        let len = self.encoded_len()?;
        let mut buf = BytesMut::with_capacity(len);
        buf.put_u8(self.kind());
        buf.put_u32(self.stream());
        // The lengths written below fit their prefixes: `encoded_len`
        // checked each one.
        match self {
            Self::RequestHead { head, body, .. } => {
                buf.put_u8(body.flags());
                let method = head.method.as_str().as_bytes();
                buf.put_u8(method.len() as u8);
                buf.put_slice(method);
                buf.put_u16(head.target.len() as u16);
                buf.put_slice(head.target.as_bytes());
                buf.put_u8(head.id.len() as u8);
                buf.put_slice(head.id.as_bytes());
                put_headers(&mut buf, &head.headers);
                put_inline(&mut buf, body);
            }
            Self::ResponseHead { head, body, .. } => {
                buf.put_u8(body.flags());
                buf.put_u16(head.status.as_u16());
                put_headers(&mut buf, &head.headers);
                put_inline(&mut buf, body);
            }
            Self::Data { data, .. } => buf.put_slice(data),
            Self::End { .. } => {}
            Self::Reset { code, message, .. } => {
                buf.put_u8(code.to_u8());
                buf.put_slice(truncate_utf8(message, MAX_RESET_MESSAGE).as_bytes());
            }
            Self::Credit { bytes, .. } => buf.put_u32(*bytes),
            Self::Ping { nonce } | Self::Pong { nonce } => buf.put_u64(*nonce),
        }
        debug_assert_eq!(buf.len(), len, "encoded_len is exact");
        Ok(buf.freeze())
    }

    /// The exact size of the encoded frame, once every limit is checked.
    fn encoded_len(&self) -> Result<usize, FrameError> {
        let is_conn = matches!(self, Self::Ping { .. } | Self::Pong { .. });
        if !is_conn && self.stream() == 0 {
            return Err(FrameError::BadStream(self.kind_name()));
        }
        let payload = match self {
            Self::RequestHead { head, body, .. } => 1 + request_head_len(head)? + inline_len(body)?,
            Self::ResponseHead { head, body, .. } => {
                1 + response_head_len(head)? + inline_len(body)?
            }
            Self::Data { data, .. } => {
                if data.len() > MAX_DATA_PAYLOAD {
                    return Err(FrameError::TooLarge(data.len()));
                }
                data.len()
            }
            Self::End { .. } => 0,
            Self::Reset { message, .. } => 1 + truncate_utf8(message, MAX_RESET_MESSAGE).len(),
            Self::Credit { .. } => 4,
            Self::Ping { .. } | Self::Pong { .. } => 8,
        };
        // Implied by the checks above; kept so that a new limit cannot
        // make the encoder produce a frame the decoder refuses unseen.
        let len = FRAME_HEADER_LEN + payload;
        if len > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge(len));
        }
        Ok(len)
    }

    /// The kind byte this frame is encoded with.
    fn kind(&self) -> u8 {
        match self {
            Self::RequestHead { .. } => KIND_REQUEST_HEAD,
            Self::ResponseHead { .. } => KIND_RESPONSE_HEAD,
            Self::Data { .. } => KIND_DATA,
            Self::End { .. } => KIND_END,
            Self::Reset { .. } => KIND_RESET,
            Self::Credit { .. } => KIND_CREDIT,
            Self::Ping { .. } => KIND_PING,
            Self::Pong { .. } => KIND_PONG,
        }
    }

    fn kind_name(&self) -> &'static str {
        kind_name(self.kind())
    }

    /// Parses one frame. DATA payloads and header values are slices of
    /// `bytes`, not copies.
    ///
    /// Enforces the same limits as [`Frame::encode`]: every length is
    /// checked against the limits in [`crate::protocol`] and against the
    /// bytes present before anything is taken or allocated, so a frame the
    /// encoder would refuse (a head over [`MAX_HEAD_BYTES`], a 4 GiB
    /// length claim) is an error here too. Whatever this accepts, `encode`
    /// accepts and turns back into an equal frame.
    pub fn decode(mut bytes: Bytes) -> Result<Frame, FrameError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge(bytes.len()));
        }
        need(&bytes, FRAME_HEADER_LEN)?;
        let kind = bytes.get_u8();
        let stream = bytes.get_u32();
        let is_conn = matches!(kind, KIND_PING | KIND_PONG);
        if is_conn != (stream == 0) {
            return Err(FrameError::BadStream(kind_name(kind)));
        }
        let frame = match kind {
            KIND_REQUEST_HEAD => {
                let flags = get_u8(&mut bytes)?;
                let mut head = HeadReader::new(&mut bytes);
                let method = head.field8()?;
                let method = Method::from_bytes(&method).map_err(|_| FrameError::InvalidMethod)?;
                let target = String::from_utf8(head.field16()?.to_vec())
                    .map_err(|_| FrameError::InvalidUtf8)?;
                let id = String::from_utf8(head.field8()?.to_vec())
                    .map_err(|_| FrameError::InvalidUtf8)?;
                let headers = head.headers()?;
                Frame::RequestHead {
                    stream,
                    head: RequestHead {
                        id,
                        method,
                        target,
                        headers,
                    },
                    body: get_payload(flags, &mut bytes)?,
                }
            }
            KIND_RESPONSE_HEAD => {
                let flags = get_u8(&mut bytes)?;
                let mut head = HeadReader::new(&mut bytes);
                let code = head.u16()?;
                let status =
                    StatusCode::from_u16(code).map_err(|_| FrameError::InvalidStatus(code))?;
                let headers = head.headers()?;
                Frame::ResponseHead {
                    stream,
                    head: ResponseHead { status, headers },
                    body: get_payload(flags, &mut bytes)?,
                }
            }
            KIND_DATA => {
                if bytes.len() > MAX_DATA_PAYLOAD {
                    return Err(FrameError::TooLarge(bytes.len()));
                }
                let data = bytes.split_to(bytes.len());
                Frame::Data { stream, data }
            }
            KIND_END => Frame::End { stream },
            KIND_RESET => {
                let code = ResetCode::from_u8(get_u8(&mut bytes)?);
                if bytes.len() > MAX_RESET_MESSAGE {
                    return Err(FrameError::TooLarge(bytes.len()));
                }
                let message = String::from_utf8(bytes.split_to(bytes.len()).to_vec())
                    .map_err(|_| FrameError::InvalidUtf8)?;
                Frame::Reset {
                    stream,
                    code,
                    message,
                }
            }
            KIND_CREDIT => {
                need(&bytes, 4)?;
                Frame::Credit {
                    stream,
                    bytes: bytes.get_u32(),
                }
            }
            KIND_PING => {
                need(&bytes, 8)?;
                Frame::Ping {
                    nonce: bytes.get_u64(),
                }
            }
            KIND_PONG => {
                need(&bytes, 8)?;
                Frame::Pong {
                    nonce: bytes.get_u64(),
                }
            }
            other => return Err(FrameError::UnknownKind(other)),
        };
        if !bytes.is_empty() {
            return Err(FrameError::Trailing(bytes.len()));
        }
        Ok(frame)
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_REQUEST_HEAD => "request head",
        KIND_RESPONSE_HEAD => "response head",
        KIND_DATA => "data",
        KIND_END => "end",
        KIND_RESET => "reset",
        KIND_CREDIT => "credit",
        KIND_PING => "ping",
        KIND_PONG => "pong",
        _ => "unknown",
    }
}

fn get_u8(b: &mut Bytes) -> Result<u8, FrameError> {
    need(b, 1)?;
    Ok(b.get_u8())
}

fn need(b: &Bytes, n: usize) -> Result<(), FrameError> {
    if b.len() < n {
        Err(FrameError::Truncated {
            needed: n - b.len(),
        })
    } else {
        Ok(())
    }
}

/// Encoded size of a request head (what [`MAX_HEAD_BYTES`] bounds): the
/// method, target and id with their length prefixes, then the headers.
/// Errors when a field does not fit its length prefix or a limit is passed.
fn request_head_len(head: &RequestHead) -> Result<usize, FrameError> {
    let method = prefixed(head.method.as_str().len(), u8::MAX.into())?;
    let target = prefixed(head.target.len(), u16::MAX.into())?;
    let id = prefixed(head.id.len(), u8::MAX.into())?;
    // The three fields are at most 64 KiB together: no overflow below.
    head_len(1 + method + 2 + target + 1 + id, &head.headers)
}

/// Encoded size of a response head: the status, then the headers.
fn response_head_len(head: &ResponseHead) -> Result<usize, FrameError> {
    head_len(2, &head.headers)
}

/// `fixed` plus the encoded headers, refused over [`MAX_HEAD_BYTES`] or
/// [`MAX_HEADERS`]. The sum saturates, so no value is too large to count.
fn head_len(fixed: usize, headers: &HeaderMap) -> Result<usize, FrameError> {
    if headers.len() > MAX_HEADERS {
        return Err(FrameError::TooManyHeaders(headers.len()));
    }
    let mut len = fixed + 2;
    for (name, value) in headers {
        // `http` keeps names under 64 KiB, but the prefix is checked
        // anyway: the encoder must never write a length it truncated.
        let name = prefixed(name.as_str().len(), u16::MAX.into())?;
        len = len.saturating_add(2 + name + 4).saturating_add(value.len());
    }
    if len > MAX_HEAD_BYTES {
        return Err(FrameError::HeadTooLarge(len));
    }
    Ok(len)
}

/// `len` when it fits a length prefix whose largest value is `max`.
fn prefixed(len: usize, max: usize) -> Result<usize, FrameError> {
    if len > max {
        Err(FrameError::TooLarge(len))
    } else {
        Ok(len)
    }
}

fn inline_len(body: &Payload) -> Result<usize, FrameError> {
    match body {
        Payload::Inline(b) if b.len() > MAX_DATA_PAYLOAD => Err(FrameError::TooLarge(b.len())),
        Payload::Inline(b) => Ok(b.len()),
        _ => Ok(0),
    }
}

fn put_inline(buf: &mut BytesMut, body: &Payload) {
    if let Payload::Inline(data) = body {
        buf.put_slice(data);
    }
}

/// The body part of a head frame: with the inline flag, every byte left
/// (a zero-copy slice); otherwise there must be none.
fn get_payload(flags: u8, b: &mut Bytes) -> Result<Payload, FrameError> {
    match (flags & FLAG_END_STREAM != 0, flags & FLAG_INLINE_BODY != 0) {
        (true, true) => Err(FrameError::BadFlags(flags)),
        (false, true) => {
            if b.len() > MAX_DATA_PAYLOAD {
                return Err(FrameError::TooLarge(b.len()));
            }
            Ok(Payload::Inline(b.split_to(b.len())))
        }
        (true, false) => Ok(Payload::Empty),
        (false, false) => Ok(Payload::Streamed),
    }
}

/// Writes the header block; [`head_len`] has checked the count and sizes.
fn put_headers(buf: &mut BytesMut, headers: &HeaderMap) {
    buf.put_u16(headers.len() as u16);
    for (name, value) in headers {
        buf.put_u16(name.as_str().len() as u16);
        buf.put_slice(name.as_str().as_bytes());
        buf.put_u32(value.len() as u32);
        buf.put_slice(value.as_bytes());
    }
}

/// Reads the fields of a head, counting each byte against
/// [`MAX_HEAD_BYTES`] before it is taken: the same sum the encoder's
/// [`head_len`] makes, so both ends draw the line at the same byte, and a
/// length claim past the limit fails before anything is allocated for it.
struct HeadReader<'a> {
    bytes: &'a mut Bytes,
    used: usize,
}

impl<'a> HeadReader<'a> {
    fn new(bytes: &'a mut Bytes) -> Self {
        Self { bytes, used: 0 }
    }

    /// Counts `n` more bytes of the head, which must be present.
    fn claim(&mut self, n: usize) -> Result<(), FrameError> {
        let used = self.used.saturating_add(n);
        if used > MAX_HEAD_BYTES {
            return Err(FrameError::HeadTooLarge(used));
        }
        need(self.bytes, n)?;
        self.used = used;
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        self.claim(1)?;
        Ok(self.bytes.get_u8())
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        self.claim(2)?;
        Ok(self.bytes.get_u16())
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        self.claim(4)?;
        Ok(self.bytes.get_u32())
    }

    /// The next `len` bytes, as a slice of the frame.
    fn take(&mut self, len: usize) -> Result<Bytes, FrameError> {
        self.claim(len)?;
        Ok(self.bytes.split_to(len))
    }

    fn field8(&mut self) -> Result<Bytes, FrameError> {
        let len = self.u8()?;
        self.take(len.into())
    }

    fn field16(&mut self) -> Result<Bytes, FrameError> {
        let len = self.u16()?;
        self.take(len.into())
    }

    fn headers(&mut self) -> Result<HeaderMap, FrameError> {
        let count = usize::from(self.u16()?);
        if count > MAX_HEADERS {
            return Err(FrameError::TooManyHeaders(count));
        }
        // A field takes at least 7 bytes (prefixes and a one-byte name):
        // the map is sized for what the frame can hold, not what it claims.
        let mut headers = HeaderMap::with_capacity(count.min(self.bytes.len() / 7));
        for _ in 0..count {
            // The name is parsed from the buffer in place: `HeaderName`
            // copies what it keeps, so a shared slice would only cost two
            // refcounts.
            let len = usize::from(self.u16()?);
            self.claim(len)?;
            let name = HeaderName::from_bytes(&self.bytes[..len])
                .map_err(|_| FrameError::InvalidHeaderName)?;
            self.bytes.advance(len);
            let len = self.u32()? as usize;
            let value = self.take(len)?;
            let value = HeaderValue::from_maybe_shared(value)
                .map_err(|_| FrameError::InvalidHeaderValue)?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod limit_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_request() -> Frame {
        let mut headers = HeaderMap::new();
        headers.append("x-dup", HeaderValue::from_static("1"));
        headers.append("x-dup", HeaderValue::from_static("2"));
        headers.append(
            "x-bin",
            HeaderValue::from_bytes(&[0x80, 0xff, b' ', b'a']).expect("obs-text is valid"),
        );
        Frame::RequestHead {
            stream: 7,
            head: RequestHead {
                id: "01jabc".into(),
                method: Method::from_bytes(b"PROPFIND").expect("extension method"),
                target: "/a/b?c=d&e".into(),
                headers,
            },
            body: Payload::Empty,
        }
    }

    #[test]
    fn heads_round_trip_with_repeated_and_binary_values() {
        let f = sample_request();
        let back = Frame::decode(f.encode().expect("encodes")).expect("decodes");
        assert_eq!(back, f);
        if let Frame::RequestHead { head, .. } = back {
            let dups: Vec<_> = head.headers.get_all("x-dup").iter().collect();
            assert_eq!(dups, ["1", "2"]);
        }
    }

    #[test]
    fn inline_body_rides_in_the_head_frame() {
        let f = Frame::ResponseHead {
            stream: 3,
            head: ResponseHead {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
            },
            body: Payload::Inline(Bytes::from_static(b"{\"ok\":true}")),
        };
        let bytes = f.encode().expect("encodes");
        assert_eq!(Frame::decode(bytes.clone()).expect("decodes"), f);
        // Both flags at once is a contradiction, not a guess.
        let mut bad = bytes.to_vec();
        bad[FRAME_HEADER_LEN] = FLAG_END_STREAM | FLAG_INLINE_BODY;
        assert_eq!(
            Frame::decode(Bytes::from(bad)),
            Err(FrameError::BadFlags(FLAG_END_STREAM | FLAG_INLINE_BODY))
        );
    }

    #[test]
    fn every_truncation_of_a_head_is_an_error() {
        let bytes = sample_request().encode().expect("encodes");
        for cut in 0..bytes.len() {
            assert!(Frame::decode(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn rejects_unknown_kind_trailing_and_bad_stream() {
        assert_eq!(
            Frame::decode(Bytes::from_static(&[99, 0, 0, 0, 1])),
            Err(FrameError::UnknownKind(99))
        );
        assert_eq!(
            Frame::decode(Bytes::from_static(&[KIND_END, 0, 0, 0, 1, 0])),
            Err(FrameError::Trailing(1))
        );
        assert!(matches!(
            Frame::decode(Bytes::from_static(&[KIND_DATA, 0, 0, 0, 0])),
            Err(FrameError::BadStream(_))
        ));
        assert!(matches!(
            Frame::decode(Bytes::from_static(&[
                KIND_PING, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0
            ])),
            Err(FrameError::BadStream(_))
        ));
    }

    #[test]
    fn rejects_oversized_data_and_huge_claimed_lengths() {
        let mut big = vec![KIND_DATA, 0, 0, 0, 1];
        big.resize(FRAME_HEADER_LEN + MAX_DATA_PAYLOAD + 1, 0);
        assert!(matches!(
            Frame::decode(Bytes::from(big)),
            Err(FrameError::TooLarge(_))
        ));
        // A header value claiming 4 GiB fails on the head limit, before the
        // bytes are looked for or anything is allocated.
        let claim = [
            KIND_RESPONSE_HEAD,
            0,
            0,
            0,
            1,
            0,
            0,
            200,
            0,
            1,
            0,
            1,
            b'x',
            0xff,
            0xff,
            0xff,
            0xff,
        ];
        assert!(matches!(
            Frame::decode(Bytes::copy_from_slice(&claim)),
            Err(FrameError::HeadTooLarge(_))
        ));
        let data = Frame::Data {
            stream: 1,
            data: Bytes::from(vec![0; MAX_DATA_PAYLOAD + 1]),
        };
        assert!(data.encode().is_err());
    }

    #[test]
    fn rejects_invalid_status_and_header_name() {
        let bad_status = [KIND_RESPONSE_HEAD, 0, 0, 0, 1, 0, 0x03, 0xe8, 0, 0];
        assert_eq!(
            Frame::decode(Bytes::copy_from_slice(&bad_status)),
            Err(FrameError::InvalidStatus(1000))
        );
        let bad_name = [
            KIND_RESPONSE_HEAD,
            0,
            0,
            0,
            1,
            0,
            0,
            200,
            0,
            1,
            0,
            2,
            b'a',
            b' ',
            0,
            0,
            0,
            0,
        ];
        assert_eq!(
            Frame::decode(Bytes::copy_from_slice(&bad_name)),
            Err(FrameError::InvalidHeaderName)
        );
    }

    fn arb_headers() -> impl Strategy<Value = HeaderMap> {
        let name = "[a-z][a-z0-9-]{0,20}";
        let value =
            proptest::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..40);
        proptest::collection::vec((name, value), 0..12).prop_map(|pairs| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).expect("strategy makes valid names"),
                    HeaderValue::from_bytes(&v).expect("strategy makes valid values"),
                );
            }
            h
        })
    }

    fn arb_payload() -> impl Strategy<Value = Payload> {
        prop_oneof![
            Just(Payload::Streamed),
            Just(Payload::Empty),
            proptest::collection::vec(any::<u8>(), 1..300)
                .prop_map(|b| Payload::Inline(Bytes::from(b))),
        ]
    }

    pub(super) fn arb_frame() -> impl Strategy<Value = Frame> {
        let stream = 1u32..;
        prop_oneof![
            (
                stream.clone(),
                arb_headers(),
                "/[ -~]{0,60}",
                "[A-Z]{1,10}",
                arb_payload()
            )
                .prop_map(|(stream, headers, target, method, body)| {
                    Frame::RequestHead {
                        stream,
                        head: RequestHead {
                            id: "01abc".into(),
                            method: Method::from_bytes(method.as_bytes()).expect("token chars"),
                            target,
                            headers,
                        },
                        body,
                    }
                }),
            (stream.clone(), arb_headers(), 100u16..1000, arb_payload()).prop_map(
                |(stream, headers, code, body)| Frame::ResponseHead {
                    stream,
                    head: ResponseHead {
                        status: StatusCode::from_u16(code).expect("100..1000 is valid"),
                        headers,
                    },
                    body,
                }
            ),
            (
                stream.clone(),
                proptest::collection::vec(any::<u8>(), 0..2048)
            )
                .prop_map(|(stream, d)| Frame::Data {
                    stream,
                    data: Bytes::from(d)
                }),
            stream.clone().prop_map(|stream| Frame::End { stream }),
            (stream.clone(), 1u8..=6, "[ -~]{0,40}").prop_map(|(stream, c, message)| {
                Frame::Reset {
                    stream,
                    code: ResetCode::from_u8(c),
                    message,
                }
            }),
            (stream, any::<u32>()).prop_map(|(stream, bytes)| Frame::Credit { stream, bytes }),
            any::<u64>().prop_map(|nonce| Frame::Ping { nonce }),
            any::<u64>().prop_map(|nonce| Frame::Pong { nonce }),
        ]
    }

    proptest! {
        #[test]
        fn any_frame_round_trips(f in arb_frame()) {
            let bytes = f.encode().expect("valid frames encode");
            prop_assert_eq!(Frame::decode(bytes).expect("own encoding decodes"), f);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Frame::decode(Bytes::from(bytes));
        }

        #[test]
        fn corrupted_frames_never_panic(f in arb_frame(), pos in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
            let mut bytes = f.encode().expect("valid frames encode").to_vec();
            let i = pos % bytes.len();
            bytes[i] = byte;
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = Frame::decode(Bytes::from(bytes));
        }
    }
}
