//! The handshake parsers: `ClientHello` (what the server reads) and
//! `ServerHello` (what the client reads) from one JSON text message, after
//! the same size check the server makes. Oracle: no panic, and whatever
//! parses serialises within `MAX_HANDSHAKE_BYTES` and parses back to an
//! equal message.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use relay_shared::protocol::MAX_HANDSHAKE_BYTES;
use relay_shared::{ClientHello, ServerHello};
use serde::de::DeserializeOwned;
use serde::Serialize;

fuzz_target!(|data: &[u8]| {
    // A WebSocket text message is UTF-8; the server refuses a longer hello
    // before it parses it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() > MAX_HANDSHAKE_BYTES {
        return;
    }
    round_trip::<ClientHello>(text);
    round_trip::<ServerHello>(text);
});

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(text: &str) {
    let Ok(parsed) = serde_json::from_str::<T>(text) else {
        return;
    };
    let json = serde_json::to_string(&parsed).expect("a parsed hello serialises");
    assert!(
        json.len() <= MAX_HANDSHAKE_BYTES,
        "{} bytes parsed, {} serialised",
        text.len(),
        json.len()
    );
    let back: T = serde_json::from_str(&json).expect("a serialised hello parses");
    assert_eq!(back, parsed);
}
