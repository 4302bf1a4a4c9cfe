//! `Frame::decode` on arbitrary bytes. Oracle: no panic, and whatever
//! decodes is a frame the encoder accepts, re-encodes to exactly as many
//! bytes (no field changes size: header names are lower-cased, unknown flag
//! bits dropped, fields regrouped by name, nothing else), within
//! `MAX_FRAME_BYTES`, and decodes again to an equal frame. So the decoder
//! cannot let in anything the encoder would refuse, nor the reverse for
//! what it produces.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use relay_shared::protocol::MAX_FRAME_BYTES;
use relay_shared::Frame;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = Frame::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let bytes = match frame.encode() {
        Ok(b) => b,
        Err(e) => panic!("decoded {frame:?}, but encode refused it: {e}"),
    };
    assert!(
        bytes.len() <= MAX_FRAME_BYTES,
        "encoded {} bytes",
        bytes.len()
    );
    assert_eq!(bytes.len(), data.len(), "re-encoding changed the size");
    let again = Frame::decode(bytes.clone());
    assert_eq!(
        again.as_ref(),
        Ok(&frame),
        "re-encoded frame decodes differently"
    );
    // Encoding is a function of the frame: the second round is byte-equal.
    assert_eq!(frame.encode().as_ref(), Ok(&bytes));
});
