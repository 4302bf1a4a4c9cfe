//! The codec's limits, checked from both ends: every limit in
//! [`crate::protocol`] holds at its value and fails one byte past it, in
//! [`Frame::encode`] and in [`Frame::decode`] alike, and whatever the
//! decoder accepts the encoder turns back into an equal frame. Frames over
//! a limit are built here byte by byte, without the encoder, which refuses
//! them.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use proptest::prelude::*;

use super::*;

/// A header block as the wire carries it.
type Fields<'a> = &'a [(&'a [u8], &'a [u8])];

fn put_fields(buf: &mut BytesMut, fields: Fields<'_>) {
    buf.put_u16(fields.len() as u16);
    for (name, value) in fields {
        buf.put_u16(name.len() as u16);
        buf.put_slice(name);
        buf.put_u32(value.len() as u32);
        buf.put_slice(value);
    }
}

fn raw_response_head(flags: u8, fields: Fields<'_>, inline: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u8(KIND_RESPONSE_HEAD);
    buf.put_u32(1);
    buf.put_u8(flags);
    buf.put_u16(200);
    put_fields(&mut buf, fields);
    buf.put_slice(inline);
    buf.freeze()
}

fn raw_request_head(method: &[u8], target: &[u8], id: &[u8], fields: Fields<'_>) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u8(KIND_REQUEST_HEAD);
    buf.put_u32(1);
    buf.put_u8(FLAG_END_STREAM);
    buf.put_u8(method.len() as u8);
    buf.put_slice(method);
    buf.put_u16(target.len() as u16);
    buf.put_slice(target);
    buf.put_u8(id.len() as u8);
    buf.put_slice(id);
    put_fields(&mut buf, fields);
    buf.freeze()
}

fn header_map(fields: Fields<'_>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        map.append(
            HeaderName::from_bytes(name).expect("test names are valid"),
            HeaderValue::from_bytes(value).expect("test values are valid"),
        );
    }
    map
}

fn response(fields: Fields<'_>, body: Payload) -> Frame {
    Frame::ResponseHead {
        stream: 1,
        head: ResponseHead {
            status: StatusCode::OK,
            headers: header_map(fields),
        },
        body,
    }
}

fn request(method: &[u8], target: &[u8], id: &[u8], fields: Fields<'_>) -> Frame {
    Frame::RequestHead {
        stream: 1,
        head: RequestHead {
            id: String::from_utf8(id.to_vec()).expect("test ids are UTF-8"),
            method: Method::from_bytes(method).expect("test methods are tokens"),
            target: String::from_utf8(target.to_vec()).expect("test targets are UTF-8"),
            headers: header_map(fields),
        },
        body: Payload::Empty,
    }
}

/// Head bytes a response head with `fields` takes: status, count, fields.
fn response_head_bytes(fields: Fields<'_>) -> usize {
    2 + 2
        + fields
            .iter()
            .map(|(n, v)| 2 + n.len() + 4 + v.len())
            .sum::<usize>()
}

/// The oracle the fuzz target also applies: a frame the decoder accepts is
/// one the encoder accepts, within the frame limit, and it decodes again
/// to the same frame.
fn check_reencodes(bytes: Bytes) -> Result<(), TestCaseError> {
    let Ok(frame) = Frame::decode(bytes) else {
        return Ok(());
    };
    let again = match frame.encode() {
        Ok(b) => b,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "decoded {frame:?}, encode: {e}"
            )))
        }
    };
    prop_assert!(again.len() <= MAX_FRAME_BYTES);
    prop_assert_eq!(Frame::decode(again), Ok(frame));
    Ok(())
}

#[test]
fn issue_10_a_header_value_over_the_head_limit_is_refused_when_decoded() {
    // The issue's case: a 262,145-byte value, which the encoder refused
    // and the decoder accepted.
    let value = vec![b'a'; MAX_HEAD_BYTES + 1];
    let fields: Fields<'_> = &[(b"x", &value)];
    assert!(matches!(
        response(fields, Payload::Empty).encode(),
        Err(FrameError::HeadTooLarge(_))
    ));
    assert!(matches!(
        Frame::decode(raw_response_head(FLAG_END_STREAM, fields, b"")),
        Err(FrameError::HeadTooLarge(_))
    ));
}

#[test]
fn issue_10_a_270_kib_head_of_many_values_is_refused_both_ways() {
    // 27 values of 10 KiB: each small, the head over the limit, the frame
    // under MAX_FRAME_BYTES. Both ends let it through before.
    let value = vec![b'v'; 10 * 1024];
    let names: Vec<String> = (0..27).map(|i| format!("x-big-{i}")).collect();
    let fields: Vec<(&[u8], &[u8])> = names
        .iter()
        .map(|n| (n.as_bytes(), value.as_slice()))
        .collect();
    let raw = raw_request_head(b"GET", b"/", b"id", &fields);
    assert!(
        raw.len() < MAX_FRAME_BYTES,
        "the frame limit alone let it in"
    );
    assert!(matches!(
        Frame::decode(raw),
        Err(FrameError::HeadTooLarge(_))
    ));
    assert!(matches!(
        request(b"GET", b"/", b"id", &fields).encode(),
        Err(FrameError::HeadTooLarge(_))
    ));
}

#[test]
fn header_count_limit_holds_both_ways() {
    let names: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("h{i}")).collect();
    let all: Vec<(&[u8], &[u8])> = names.iter().map(|n| (n.as_bytes(), &b"v"[..])).collect();
    let at = &all[..MAX_HEADERS];
    let raw = raw_response_head(FLAG_END_STREAM, at, b"");
    assert_eq!(response(at, Payload::Empty).encode().as_ref(), Ok(&raw));
    assert_eq!(Frame::decode(raw), Ok(response(at, Payload::Empty)));

    let over = &all[..];
    assert_eq!(
        response(over, Payload::Empty).encode(),
        Err(FrameError::TooManyHeaders(MAX_HEADERS + 1))
    );
    assert_eq!(
        Frame::decode(raw_response_head(FLAG_END_STREAM, over, b"")),
        Err(FrameError::TooManyHeaders(MAX_HEADERS + 1))
    );
}

#[test]
fn data_and_inline_body_limits_hold_both_ways() {
    let at = Bytes::from(vec![7; MAX_DATA_PAYLOAD]);
    let over = Bytes::from(vec![7; MAX_DATA_PAYLOAD + 1]);

    let data = |d: &Bytes| Frame::Data {
        stream: 1,
        data: d.clone(),
    };
    let raw_data = |d: &Bytes| {
        let mut b = vec![KIND_DATA, 0, 0, 0, 1];
        b.extend_from_slice(d);
        Bytes::from(b)
    };
    assert_eq!(data(&at).encode().as_ref(), Ok(&raw_data(&at)));
    assert_eq!(Frame::decode(raw_data(&at)), Ok(data(&at)));
    assert!(matches!(data(&over).encode(), Err(FrameError::TooLarge(_))));
    assert!(matches!(
        Frame::decode(raw_data(&over)),
        Err(FrameError::TooLarge(_))
    ));

    let inline = |d: &Bytes| response(&[], Payload::Inline(d.clone()));
    let raw = raw_response_head(FLAG_INLINE_BODY, &[], &at);
    assert_eq!(inline(&at).encode().as_ref(), Ok(&raw));
    assert_eq!(Frame::decode(raw), Ok(inline(&at)));
    assert!(matches!(
        inline(&over).encode(),
        Err(FrameError::TooLarge(_))
    ));
    assert!(matches!(
        Frame::decode(raw_response_head(FLAG_INLINE_BODY, &[], &over)),
        Err(FrameError::TooLarge(_))
    ));
}

#[test]
fn the_largest_frame_is_a_full_head_with_a_full_inline_body() {
    let value = vec![b'a'; MAX_HEAD_BYTES - response_head_bytes(&[(b"x", b"")])];
    let fields: Fields<'_> = &[(b"x", &value)];
    let body = vec![b'b'; MAX_DATA_PAYLOAD];
    let raw = raw_response_head(FLAG_INLINE_BODY, fields, &body);
    assert_eq!(raw.len(), MAX_FRAME_BYTES);
    let frame = response(fields, Payload::Inline(Bytes::from(body)));
    assert_eq!(frame.encode().as_ref(), Ok(&raw));
    assert_eq!(Frame::decode(raw), Ok(frame));
}

#[test]
fn reset_message_limit_is_refused_on_input_and_cut_on_output() {
    let reset = |message: String| Frame::Reset {
        stream: 1,
        code: ResetCode::Protocol,
        message,
    };
    let raw = |message: &[u8]| {
        let mut b = vec![KIND_RESET, 0, 0, 0, 1, 5];
        b.extend_from_slice(message);
        Bytes::from(b)
    };
    let at = "m".repeat(MAX_RESET_MESSAGE);
    assert_eq!(reset(at.clone()).encode().as_ref(), Ok(&raw(at.as_bytes())));
    assert_eq!(Frame::decode(raw(at.as_bytes())), Ok(reset(at.clone())));

    let over = "m".repeat(MAX_RESET_MESSAGE + 1);
    assert_eq!(
        Frame::decode(raw(over.as_bytes())),
        Err(FrameError::TooLarge(MAX_RESET_MESSAGE + 1))
    );
    // The sender cuts instead of refusing: a reset must still go out.
    assert_eq!(reset(over).encode().as_ref(), Ok(&raw(at.as_bytes())));
    // ... at a character boundary, so what is sent is valid UTF-8.
    let wide = format!("{}é", "m".repeat(MAX_RESET_MESSAGE - 1));
    let sent = reset(wide).encode().expect("resets always encode");
    assert_eq!(
        Frame::decode(sent),
        Ok(reset("m".repeat(MAX_RESET_MESSAGE - 1)))
    );
}

#[test]
fn length_prefixed_fields_hold_at_their_width_and_fail_past_it() {
    let m255 = vec![b'M'; 255];
    let t = {
        let mut t = vec![b'/'];
        t.resize(u16::MAX as usize, b't');
        t
    };
    let id = vec![b'i'; 255];
    let raw = raw_request_head(&m255, &t, &id, &[]);
    let frame = request(&m255, &t, &id, &[]);
    assert_eq!(frame.encode().as_ref(), Ok(&raw));
    assert_eq!(Frame::decode(raw), Ok(frame));

    // One past each prefix: the encoder refuses, since it cannot say it
    // (and the decoder cannot be sent it).
    let mut long_t = t.clone();
    long_t.push(b't');
    let too_long = [
        request(&[b'M'; 256], b"/", b"", &[]),
        request(b"GET", &long_t, b"", &[]),
        request(b"GET", b"/", &[b'i'; 256], &[]),
    ];
    for f in too_long {
        assert!(matches!(f.encode(), Err(FrameError::TooLarge(_))), "{f:?}");
    }
}

#[test]
fn stream_frames_on_stream_zero_are_refused_both_ways() {
    let frames = [
        Frame::Data {
            stream: 0,
            data: Bytes::from_static(b"x"),
        },
        Frame::End { stream: 0 },
        Frame::Credit {
            stream: 0,
            bytes: 1,
        },
        response(&[], Payload::Empty),
    ];
    for mut f in frames {
        if let Frame::ResponseHead { stream, .. } = &mut f {
            *stream = 0;
        }
        assert!(matches!(f.encode(), Err(FrameError::BadStream(_))), "{f:?}");
    }
    assert!(matches!(
        Frame::decode(Bytes::from_static(&[KIND_END, 0, 0, 0, 0])),
        Err(FrameError::BadStream(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Heads within a few bytes of [`MAX_HEAD_BYTES`], the bytes spread
    /// over one to four fields: both ends accept exactly the same ones.
    #[test]
    fn head_limit_is_the_same_byte_both_ways(
        delta in -3i64..=3,
        fields in 1usize..=4,
        is_request in any::<bool>(),
    ) {
        let names: Vec<String> = (0..fields).map(|i| format!("x-f{i}")).collect();
        let empty: Vec<(&[u8], &[u8])> =
            names.iter().map(|n| (n.as_bytes(), &b""[..])).collect();
        // A request head adds its method, target and id to the same sum.
        let (method, target, id) = (&b"POST"[..], &b"/hook?x=1"[..], &b"01abc"[..]);
        let fixed = response_head_bytes(&empty) - 2
            + if is_request { 1 + method.len() + 2 + target.len() + 1 + id.len() } else { 2 };
        let total = (MAX_HEAD_BYTES as i64 + delta) as usize;
        let spread = total - fixed;
        let values: Vec<Vec<u8>> = (0..fields)
            .map(|i| vec![b'v'; spread / fields + usize::from(i < spread % fields)])
            .collect();
        let fields: Vec<(&[u8], &[u8])> = names
            .iter()
            .zip(&values)
            .map(|(n, v)| (n.as_bytes(), v.as_slice()))
            .collect();
        let (frame, raw) = if is_request {
            (request(method, target, id, &fields), raw_request_head(method, target, id, &fields))
        } else {
            (response(&fields, Payload::Empty), raw_response_head(FLAG_END_STREAM, &fields, b""))
        };
        prop_assert_eq!(raw.len(), FRAME_HEADER_LEN + 1 + total);
        if delta <= 0 {
            prop_assert_eq!(frame.encode(), Ok(raw.clone()));
            prop_assert_eq!(Frame::decode(raw), Ok(frame));
        } else {
            prop_assert_eq!(frame.encode(), Err(FrameError::HeadTooLarge(total)));
            prop_assert!(matches!(Frame::decode(raw), Err(FrameError::HeadTooLarge(_))));
        }
    }
}

proptest! {
    #[test]
    fn what_decodes_re_encodes_to_an_equal_frame(
        f in super::tests::arb_frame(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let mut bytes = f.encode().expect("valid frames encode").to_vec();
        for (pos, byte) in edits {
            let i = pos % bytes.len();
            bytes[i] = byte;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        check_reencodes(Bytes::from(bytes))?;
    }

    #[test]
    fn arbitrary_bytes_that_decode_re_encode(
        kind in 1u8..=9,
        stream in prop_oneof![Just(0u32), Just(1), any::<u32>()],
        rest in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.extend_from_slice(&rest);
        check_reencodes(Bytes::from(bytes))?;
    }
}
