//! The handshake parsers: `ClientHello` (what the server reads) and
//! `ServerHello` (what the client reads) from one JSON text message, after
//! the same size check the server makes. Oracle: no panic, and whatever
//! parses serialises and parses back to an equal message. The serialised
//! form may be longer than the input: fields that the input left out come
//! back with their defaults (`Welcome::missed`, `ClientHello::when_offline`),
//! and no one re-sends a parsed hello, so its length is not bounded here.

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
    let back: T = serde_json::from_str(&json).expect("a serialised hello parses");
    assert_eq!(back, parsed);
}
