//! `relay replay --diff`: what differs between an original's response and
//! its replay's, and how the terminal shows it. Pure functions over the
//! two captured responses; sending and recording are `replay.rs`'s, the
//! JSON shape ([`ResponseDiff`]) is `relay_shared::api`'s.

use std::fmt::Write as _;

use relay_shared::api::{
    BodyDiff, BodyDigest, ChangeKind, HeaderChange, JsonChange, Message, ResponseDiff, StatusChange,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Headers that differ between two answers of the same app without saying
/// anything about it: dates and ages, per-response ids and timings,
/// framing, cache validators.
pub const VOLATILE_HEADERS: &[&str] = &[
    "age",
    "cf-ray",
    "connection",
    "content-length",
    "date",
    "etag",
    "expires",
    "keep-alive",
    "last-modified",
    "proxy-connection",
    "request-id",
    "server-timing",
    "trailer",
    "transfer-encoding",
    "x-relay-request-id",
    "x-request-id",
    "x-response-time",
    "x-runtime",
];

/// JSON changes kept in a diff; more are counted. A body rewritten from
/// scratch says so in a screenful, and the stored record stays small.
pub const MAX_JSON_CHANGES: usize = 200;
/// Bytes of unified diff kept, for the same reason.
pub const MAX_TEXT_DIFF: usize = 64 * 1024;

/// One side of the comparison: the status (none if nothing answered) and
/// the response as captured.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    pub status: Option<u16>,
    pub response: Option<&'a Message>,
}

/// Compares the original's response with the replay's.
pub fn diff(original: Side<'_>, replay: Side<'_>) -> ResponseDiff {
    let empty = Message::default();
    let (before, after) = (
        original.response.unwrap_or(&empty),
        replay.response.unwrap_or(&empty),
    );
    ResponseDiff {
        status: (original.status != replay.status).then_some(StatusChange {
            before: original.status,
            after: replay.status,
        }),
        headers: headers(&before.headers, &after.headers),
        body: body(before, after),
        original_truncated: before.body_truncated,
        replay_truncated: after.body_truncated,
    }
}

/// Header changes, volatile ones left out, names compared without case.
pub fn headers(before: &[(String, String)], after: &[(String, String)]) -> Vec<HeaderChange> {
    let (b, a) = (header_values(before), header_values(after));
    let mut names: Vec<&String> = Vec::new();
    for (name, _) in b.iter().chain(a.iter()) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
        .into_iter()
        .filter_map(|name| {
            let find = |side: &[(String, String)]| {
                side.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
            };
            let (before, after) = (find(&b), find(&a));
            let kind = match (&before, &after) {
                (Some(x), Some(y)) if x == y => return None,
                (Some(_), Some(_)) => ChangeKind::Changed,
                (Some(_), None) => ChangeKind::Removed,
                (None, _) => ChangeKind::Added,
            };
            Some(HeaderChange {
                name: name.clone(),
                kind,
                before,
                after,
            })
        })
        .collect()
}

/// Lower-case name -> values joined with `, `, in first-seen order,
/// without the volatile headers and with cookies' expiry left out.
fn header_values(headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.trim().to_ascii_lowercase();
        if VOLATILE_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value = if name == "set-cookie" {
            without_expiry(value)
        } else {
            value.trim().to_owned()
        };
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            None => out.push((name, value)),
        }
    }
    out
}

/// A `Set-Cookie` value without `Expires` and `Max-Age`, which move with
/// the clock; the cookie and its other attributes still count.
fn without_expiry(value: &str) -> String {
    value
        .split(';')
        .map(str::trim)
        .filter(|attr| {
            let name = attr.split('=').next().unwrap_or_default().trim();
            !name.eq_ignore_ascii_case("expires") && !name.eq_ignore_ascii_case("max-age")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// How the bodies differ: JSON by path when both parse, text as a unified
/// diff, anything else by size and hash.
pub fn body(before: &Message, after: &Message) -> BodyDiff {
    if before.body == after.body && before.body_size == after.body_size {
        return BodyDiff::Same;
    }
    let json = |m: &Message| {
        (!m.body_truncated)
            .then(|| serde_json::from_slice::<Value>(&m.body).ok())
            .flatten()
    };
    if let (Some(b), Some(a)) = (json(before), json(after)) {
        let mut changes = Changes::default();
        changes.walk(String::new(), &b, &a);
        if changes.list.is_empty() {
            // Same values, other bytes (spacing, key order): nothing to say.
            return BodyDiff::Same;
        }
        return BodyDiff::Json {
            changes: changes.list,
            more: changes.more,
        };
    }
    if let (Some(b), Some(a)) = (text(before), text(after)) {
        let unified = similar::TextDiff::from_lines(b, a)
            .unified_diff()
            .context_radius(3)
            .header("original", "replay")
            .to_string();
        return BodyDiff::Text {
            unified: cut(unified, MAX_TEXT_DIFF),
        };
    }
    BodyDiff::Binary {
        before: digest(before),
        after: digest(after),
    }
}

/// The body as text if it is: UTF-8 without NULs. A truncated body may end
/// inside a character; that partial character is not the app's fault.
fn text(m: &Message) -> Option<&str> {
    let bytes = &m.body;
    let valid = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) if m.body_truncated && e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).ok()?
        }
        Err(_) => return None,
    };
    (!valid.contains('\0')).then_some(valid)
}

fn digest(m: &Message) -> BodyDigest {
    BodyDigest {
        size: m.body_size.max(m.body.len() as u64),
        sha256: Sha256::digest(&m.body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    }
}

/// `text` cut to at most `max` bytes on a character boundary, saying so.
fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let total = text.len();
    text.truncate(end);
    let _ = write!(text, "\n… (diff cut at {end} of {total} bytes)\n");
    text
}

/// JSON changes as they are found, up to [`MAX_JSON_CHANGES`].
#[derive(Default)]
struct Changes {
    list: Vec<JsonChange>,
    more: u64,
}

impl Changes {
    fn push(&mut self, path: String, kind: ChangeKind, before: &Value, after: &Value) {
        if self.list.len() < MAX_JSON_CHANGES {
            self.list.push(JsonChange {
                path,
                kind,
                before: before.clone(),
                after: after.clone(),
            });
        } else {
            self.more += 1;
        }
    }

    /// Walks both values together, recording where they differ; objects
    /// by key (sorted, so the output is stable), arrays by index.
    fn walk(&mut self, path: String, b: &Value, a: &Value) {
        match (b, a) {
            (Value::Object(bo), Value::Object(ao)) => {
                let keys: std::collections::BTreeSet<&String> =
                    bo.keys().chain(ao.keys()).collect();
                for key in keys {
                    self.pair(key_path(&path, key), bo.get(key), ao.get(key));
                }
            }
            (Value::Array(ba), Value::Array(aa)) => {
                for i in 0..ba.len().max(aa.len()) {
                    self.pair(format!("{path}[{i}]"), ba.get(i), aa.get(i));
                }
            }
            _ if b == a => {}
            _ => self.push(path, ChangeKind::Changed, b, a),
        }
    }

    fn pair(&mut self, path: String, b: Option<&Value>, a: Option<&Value>) {
        match (b, a) {
            (Some(x), Some(y)) => self.walk(path, x, y),
            (Some(x), None) => self.push(path, ChangeKind::Removed, x, &Value::Null),
            (None, Some(y)) => self.push(path, ChangeKind::Added, &Value::Null, y),
            (None, None) => {}
        }
    }
}

/// `path.key`, or `path["odd key"]` when the key is not a plain name.
fn key_path(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$');
    match (plain, path.is_empty()) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{path}.{key}"),
        (false, _) => format!("{path}[{}]", Value::String(key.to_owned())),
    }
}

/// Longest JSON value shown on one line of the terminal's diff.
const SHOWN_VALUE: usize = 120;

/// What `relay replay --diff` prints, after the replay's own lines.
pub fn describe(d: &ResponseDiff, original_id: &str) -> String {
    let mut out = format!("diff against the response of {original_id}:\n");
    if d.is_empty() {
        out.push_str(
            "  no differences in status, headers (volatile ones such as Date ignored) or body\n",
        );
    }
    if let Some(s) = &d.status {
        let show = |s: Option<u16>| s.map_or("no response".to_owned(), |s| s.to_string());
        let _ = writeln!(out, "  status: {} -> {}", show(s.before), show(s.after));
    }
    for h in &d.headers {
        // Terminals get the same masking as `relay requests show`.
        let v = |v: &Option<String>| {
            let masked = crate::secrets::mask_header(&h.name, v.as_deref().unwrap_or_default());
            crate::output::printable(&masked).into_owned()
        };
        let _ = match h.kind {
            ChangeKind::Added => writeln!(out, "  header + {}: {}", h.name, v(&h.after)),
            ChangeKind::Removed => writeln!(out, "  header - {}: {}", h.name, v(&h.before)),
            ChangeKind::Changed => writeln!(
                out,
                "  header {}: {} -> {}",
                h.name,
                v(&h.before),
                v(&h.after)
            ),
        };
    }
    match &d.body {
        BodyDiff::Same => {}
        BodyDiff::Json { changes, more } => {
            out.push_str("  body (JSON):\n");
            for c in changes {
                let path = if c.path.is_empty() {
                    "(the whole body)"
                } else {
                    &c.path
                };
                let _ = match c.kind {
                    ChangeKind::Added => writeln!(out, "    + {path}: {}", shown(&c.after)),
                    ChangeKind::Removed => writeln!(out, "    - {path}: {}", shown(&c.before)),
                    ChangeKind::Changed => writeln!(
                        out,
                        "    {path}: {} -> {}",
                        shown(&c.before),
                        shown(&c.after)
                    ),
                };
            }
            if *more > 0 {
                let _ = writeln!(out, "    … and {more} more changes");
            }
        }
        BodyDiff::Text { unified } => {
            out.push_str("  body (text):\n");
            for line in unified.lines() {
                let _ = writeln!(out, "    {}", crate::output::printable(line));
            }
        }
        BodyDiff::Binary { before, after } => {
            let _ = writeln!(
                out,
                "  body: {} bytes (sha256 {}) -> {} bytes (sha256 {})",
                before.size,
                short(&before.sha256),
                after.size,
                short(&after.sha256)
            );
        }
    }
    for (truncated, side) in [
        (d.original_truncated, "the original's"),
        (d.replay_truncated, "the replay's"),
    ] {
        if truncated {
            let _ = writeln!(
                out,
                "  {side} body was truncated: only its captured part was compared"
            );
        }
    }
    out
}

fn shown(v: &Value) -> String {
    let json = v.to_string();
    let text = crate::output::printable(&json);
    match text.char_indices().nth(SHOWN_VALUE) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.into_owned(),
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[cfg(test)]
mod tests;
