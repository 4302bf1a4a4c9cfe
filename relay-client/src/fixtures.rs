//! Test records shared by the unit tests of the modules that read captures
//! (diff, edit, export, the inspector's views).

use relay_shared::api::Message;

/// A message captured whole: `body_size` is its length, nothing cut.
pub fn message(headers: &[(&str, &str)], body: &[u8]) -> Message {
    Message {
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
        body_size: body.len() as u64,
        body_truncated: false,
    }
}
