//! `Frame::decode` on arbitrary bytes. Oracle: no panic, and whatever
//! decodes is a frame the encoder accepts, re-encodes to exactly as many
//! bytes (no field changes size: header names are lower-cased, unknown flag
//! bits dropped, fields regrouped by name, nothing else), within
//! `MAX_FRAME_BYTES`, and decodes again to an equal frame. So the decoder
//! cannot let in anything the encoder would refuse, nor the reverse for
//! what it produces.
//!
//! The limits sit at 64 KiB to 320 KiB, far beyond the inputs libFuzzer
//! grows in minutes, and a frame that long only parses with every length
//! prefix right. So an input starting with 0xFF (no frame kind) is read as
//! a [`Sketch`]: a frame whose prefixes the harness writes, with runs that
//! stretch a field to any length. Crossing a limit is then one mutation.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use relay_shared::protocol::MAX_FRAME_BYTES;
use relay_shared::Frame;

/// Longest sketched frame: past `MAX_FRAME_BYTES`, so its check is reached.
const MAX_SKETCH: usize = 400_000;

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0xFF, rest)) => {
            if let Ok(sketch) = Sketch::arbitrary_take_rest(Unstructured::new(rest)) {
                check(&sketch.build());
            }
        }
        _ => check(data),
    }
});

fn check(data: &[u8]) {
    let Ok(frame) = Frame::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let bytes = match frame.encode() {
        Ok(b) => b,
        Err(e) => panic!("decoded {}, but encode refused it: {e}", describe(&frame)),
    };
    assert!(
        bytes.len() <= MAX_FRAME_BYTES,
        "encoded {} bytes",
        bytes.len()
    );
    assert_eq!(bytes.len(), data.len(), "re-encoding changed the size");
    let again = Frame::decode(bytes.clone());
    assert!(
        again.as_ref() == Ok(&frame),
        "re-encoded frame decodes differently"
    );
    // Encoding is a function of the frame: the second round is byte-equal.
    assert!(
        frame.encode().as_ref() == Ok(&bytes),
        "encoding is not stable"
    );
}

/// A frame too long to print whole.
fn describe(frame: &Frame) -> String {
    let text = format!("{frame:?}");
    match text.char_indices().nth(500) {
        Some((cut, _)) => format!("{}... ({} chars)", &text[..cut], text.len()),
        None => text,
    }
}

/// A frame as fields; [`Sketch::build`] writes the kind, stream id and
/// length prefixes (a count or length too large for its prefix wraps, as a
/// lying peer's would).
#[derive(Debug, Arbitrary)]
struct Sketch {
    kind: Kind,
    stream: u32,
    flags: u8,
    fields: Vec<Field>,
    /// Inline body, DATA payload or reset message.
    body: Run,
}

#[derive(Debug, Arbitrary)]
enum Kind {
    Request { method: Run, target: Run, id: Run },
    Response { status: u16 },
    Data,
    Reset { code: u8 },
}

#[derive(Debug, Arbitrary)]
struct Field {
    name: Run,
    value: Run,
}

/// `bytes`, then its last byte (or `v`) repeated `extra` times.
#[derive(Debug, Arbitrary)]
struct Run {
    bytes: Vec<u8>,
    extra: u32,
}

impl Run {
    fn expand(&self, room: usize) -> Vec<u8> {
        let fill = self.bytes.last().copied().unwrap_or(b'v');
        let mut out = self.bytes.clone();
        let extra = (self.extra as usize) % (MAX_SKETCH + 1);
        out.resize((out.len() + extra).min(room.max(self.bytes.len())), fill);
        out
    }
}

impl Sketch {
    fn build(&self) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let room = |buf: &BytesMut| MAX_SKETCH.saturating_sub(buf.len());
        let head = |buf: &mut BytesMut, kind: u8| {
            buf.put_u8(kind);
            buf.put_u32(self.stream);
        };
        match &self.kind {
            Kind::Request { method, target, id } => {
                head(&mut buf, 1);
                buf.put_u8(self.flags);
                for (run, wide) in [(method, false), (target, true), (id, false)] {
                    let bytes = run.expand(room(&buf));
                    if wide {
                        buf.put_u16(bytes.len() as u16);
                    } else {
                        buf.put_u8(bytes.len() as u8);
                    }
                    buf.put_slice(&bytes);
                }
                self.put_fields(&mut buf);
            }
            Kind::Response { status } => {
                head(&mut buf, 2);
                buf.put_u8(self.flags);
                buf.put_u16(*status);
                self.put_fields(&mut buf);
            }
            Kind::Data => head(&mut buf, 3),
            Kind::Reset { code } => {
                head(&mut buf, 5);
                buf.put_u8(*code);
            }
        }
        let body = self.body.expand(room(&buf));
        buf.put_slice(&body);
        buf.to_vec()
    }

    fn put_fields(&self, buf: &mut BytesMut) {
        buf.put_u16(self.fields.len() as u16);
        for field in &self.fields {
            let name = field.name.expand(MAX_SKETCH.saturating_sub(buf.len()));
            buf.put_u16(name.len() as u16);
            buf.put_slice(&name);
            let value = field.value.expand(MAX_SKETCH.saturating_sub(buf.len()));
            buf.put_u32(value.len() as u32);
            buf.put_slice(&value);
        }
    }
}
