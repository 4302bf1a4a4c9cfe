//! `relay requests show ID`: one capture for a terminal: what it was, then
//! the request and the response, curl `-v` style (`>` and `<` heads),
//! bodies as JSON pretty-printed, text as text, anything else as a hex
//! dump; secrets masked ([`crate::secrets`]). A bearer JWT's claims and a
//! Hasura Action call's parts come first ([`crate::provider`]): they are
//! what a developer looks for, and they are buried in a header and an
//! envelope. `--raw` is the captured HTTP text as it was, and `--json` the
//! record itself (in `main.rs`).

use std::fmt::Write as _;

use relay_shared::api::{Delivery, Message, Record};

use crate::output::{printable, redact_query};
use crate::provider;
use crate::secrets::mask_header;

/// Bytes of a binary body shown as hex: a screenful or two is enough to
/// recognise a format; `--raw` and `--json` have all of it.
pub(crate) const HEX_SHOWN: usize = 4096;

/// The capture as `relay requests show` prints it, token expiry relative
/// to now.
pub fn render(record: &Record) -> String {
    render_at(
        record,
        provider::unix_secs(std::time::SystemTime::now()),
        crate::localtime::zone(),
    )
}

/// [`render`] with "now" (seconds since the epoch) and the time zone
/// given, for tests.
pub fn render_at(record: &Record, now: i64, zone: &jiff::tz::TimeZone) -> String {
    let s = &record.summary;
    let mut out = String::new();
    let time = crate::localtime::full_time(&s.time, zone)
        .unwrap_or_else(|| printable(&s.time).into_owned());
    let _ = writeln!(out, "Request   {}", s.id);
    let _ = writeln!(out, "Time      {time}");
    let _ = writeln!(out, "Tunnel    {}", s.tunnel);
    let status = s.status.map_or("no status".to_owned(), |st| st.to_string());
    let _ = writeln!(
        out,
        "Outcome   {} · {status} · {}ms",
        s.outcome, s.duration_ms
    );
    if let Some(d) = s.delivery {
        let _ = writeln!(
            out,
            "Delivery  {}",
            delivery(d, s.delivered_by.as_deref(), s.delivery_error.as_deref())
        );
    }
    if let Some(orig) = &s.replay_of {
        let _ = writeln!(out, "Replay of {orig}");
    }
    for mark in crate::output::marks(s) {
        let _ = writeln!(out, "Marked    {mark}");
    }
    out.push('\n');
    let views = provider::render(&s.method, &record.request, now, zone);
    if !views.is_empty() {
        out.push_str(&views);
        out.push('\n');
    }
    let line = format!("{} {}", s.method, redact_query(&s.path));
    head(&mut out, '>', &line, &record.request);
    body(&mut out, &record.request);
    out.push('\n');
    match &record.response {
        Some(response) => {
            let line = match s.status {
                Some(st) => format!("{st} {}", reason(st)).trim_end().to_owned(),
                None => "(no status)".to_owned(),
            };
            head(&mut out, '<', &line, response);
            body(&mut out, response);
        }
        None => out.push_str("< (no response captured)\n"),
    }
    out
}

/// `missed`, `delivered by ID`, `failed (retried by the next delivery): why`.
fn delivery(d: Delivery, by: Option<&str>, error: Option<&str>) -> String {
    match d {
        Delivery::Missed => "missed: waiting to be delivered (relay replay --missed)".to_owned(),
        Delivery::Delivered => match by {
            Some(id) => format!("delivered by {id}"),
            None => "delivered".to_owned(),
        },
        Delivery::Failed => format!(
            "failed, tried again by the next delivery: {}",
            error.unwrap_or("no reason recorded")
        ),
    }
}

pub(crate) fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// `> LINE` then `> name: value` per header, secrets masked, then `>`.
fn head(out: &mut String, mark: char, line: &str, m: &Message) {
    let _ = writeln!(out, "{mark} {}", printable(line));
    for (name, value) in &m.headers {
        let shown = mask_header(name, value);
        let _ = writeln!(out, "{mark} {}: {}", printable(name), printable(&shown));
    }
    let _ = writeln!(out, "{mark}");
}

/// The body as text, pretty JSON or hex, with a note on its size.
fn body(out: &mut String, m: &Message) {
    let kept = m.body.len();
    if kept == 0 {
        if m.body_size > 0 {
            let _ = writeln!(out, "[body of {} bytes not captured]", m.body_size);
        }
        return;
    }
    let truncated = if m.body_truncated {
        format!(", truncated: {kept} of {} bytes captured", m.body_size)
    } else {
        String::new()
    };
    let is_json_type = m.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("content-type") && v.to_ascii_lowercase().contains("json")
    });
    match as_text(&m.body, m.body_truncated) {
        Some(text) => {
            let looks_json = is_json_type || text.trim_start().starts_with(['{', '[']);
            match looks_json.then(|| pretty_json(text)).flatten() {
                Some(pretty) => {
                    out.push_str(&printable_text(&pretty));
                    let _ = writeln!(out, "\n[{} bytes, JSON{truncated}]", m.body_size);
                }
                None => {
                    out.push_str(&printable_text(text));
                    if !text.ends_with('\n') {
                        out.push('\n');
                    }
                    let _ = writeln!(out, "[{} bytes{truncated}]", m.body_size);
                }
            }
        }
        None => {
            out.push_str(&hex_dump(&m.body[..kept.min(HEX_SHOWN)]));
            let more = if kept > HEX_SHOWN {
                format!("; first {HEX_SHOWN} shown, --raw prints all")
            } else {
                String::new()
            };
            let _ = writeln!(out, "[{} bytes, binary{truncated}{more}]", m.body_size);
        }
    }
}

/// `bytes` as text, or `None` when they look binary: not UTF-8, or with
/// control characters text does not have. A truncated capture may end in
/// the middle of a character, so up to 3 trailing bytes may be dropped.
pub fn as_text(bytes: &[u8], truncated: bool) -> Option<&str> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) if truncated && bytes.len() - e.valid_up_to() <= 3 && e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).ok()?
        }
        Err(_) => return None,
    };
    let binary = text
        .bytes()
        .any(|b| matches!(b, 0x00..=0x08 | 0x0e..=0x1f | 0x7f));
    (!binary).then_some(text)
}

/// Body text safe for a terminal: newlines and tabs kept (CRLF as LF),
/// other control characters and bidi overrides replaced like
/// [`printable`] does.
fn printable_text(text: &str) -> String {
    text.replace("\r\n", "\n")
        .split('\n')
        .map(|line| {
            line.split('\t')
                .map(|part| printable(part).into_owned())
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` (valid JSON) re-indented by two spaces, keys in their order and
/// numbers as written; `None` if it is not one JSON value.
pub fn pretty_json(text: &str) -> Option<String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&" ".repeat(depth * 2));
    };
    let mut chars = text.chars().peekable();
    let (mut in_string, mut escaped) = (false, false);
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                let close = if c == '{' { '}' } else { ']' };
                out.push(c);
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

/// `00000000  7b 22 61 22 ...  {"a"...`: offset, 16 bytes, their ASCII.
pub fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4 + 16);
    for (i, row) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = row
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(out, "{:08x}  {:<47}  {ascii}", i * 16, hex.join(" "));
    }
    out
}

/// The exact captured HTTP/1.1 text: the request, then the response if
/// one was captured. Header values are as the API gives them (UTF-8;
/// bytes that were not are Latin-1 characters).
pub fn raw(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    let s = &record.summary;
    out.extend_from_slice(format!("{} {} HTTP/1.1\r\n", s.method, s.path).as_bytes());
    message(&mut out, &record.request);
    if let Some(response) = &record.response {
        let status = s.status.unwrap_or(0);
        out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
        message(&mut out, response);
    }
    out
}

fn message(out: &mut Vec<u8>, m: &Message) {
    for (name, value) in &m.headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&m.body);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Headers and body of one side.
    type Side<'a> = (&'a [(&'a str, &'a str)], &'a [u8]);

    fn record(req: Side<'_>, res: Option<Side<'_>>) -> Record {
        let msg = |(headers, body): Side<'_>| {
            serde_json::json!({
                "headers": headers.iter().map(|(n, v)| [n, v]).collect::<Vec<_>>(),
                "body": base64(body), "body_size": body.len(), "body_truncated": false,
            })
        };
        serde_json::from_value(serde_json::json!({
            "id": "01abc", "tunnel": "app", "time": "2026-11-24T10:15:02.123Z",
            "method": "POST", "path": "/graphql?token=s3cr3t&x=1", "status": 503,
            "outcome": "offline", "duration_ms": 0, "request_size": req.1.len(),
            "response_size": 0, "replay_of": null, "delivery": "delivered",
            "delivered_by": "01new", "delivery_error": null,
            "request": msg(req), "response": res.map(msg),
        }))
        .expect("a record")
    }

    fn base64(bytes: &[u8]) -> String {
        // The record's own (de)serialiser, through a Message.
        let m = Message {
            body: bytes.to_vec(),
            ..Message::default()
        };
        serde_json::to_value(&m).expect("encodes")["body"]
            .as_str()
            .expect("a string")
            .to_owned()
    }

    #[test]
    fn show_prints_heads_masked_bodies_pretty_and_the_delivery() {
        let r = record(
            (
                &[
                    ("content-type", "application/json"),
                    (
                        "authorization",
                        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
                    ),
                ],
                br#"{"query":"{ users { id } }","variables":{},"n":1.50}"#,
            ),
            Some((&[("content-type", "text/plain")], b"offline\r\nbye")),
        );
        let shown = render_at(
            &r,
            provider::unix_secs(std::time::SystemTime::now()),
            &jiff::tz::TimeZone::UTC,
        );
        let want = "\
Request   01abc
Time      2026-11-24 10:15:02.123 +00:00 (UTC)
Tunnel    app
Outcome   offline · 503 · 0ms
Delivery  delivered by 01new

JWT (not verified, HS256)
  sub    1

> POST /graphql?token=***&x=1
> content-type: application/json
> authorization: Bearer eyJhbGci… [40 chars]
>
{
  \"query\": \"{ users { id } }\",
  \"variables\": {},
  \"n\": 1.50
}
[52 bytes, JSON]

< 503 Service Unavailable
< content-type: text/plain
<
offline
bye
[12 bytes]
";
        assert_eq!(shown, want);
        assert!(!shown.contains("s3cr3t"));
    }

    #[test]
    fn raw_is_the_exact_http_text() {
        let r = record(
            (&[("authorization", "Bearer abc")], b"\x00\x01"),
            Some((&[("x", "y")], b"ok")),
        );
        assert_eq!(
            raw(&r),
            b"POST /graphql?token=s3cr3t&x=1 HTTP/1.1\r\nauthorization: Bearer abc\r\n\r\n\x00\x01\
HTTP/1.1 503 Service Unavailable\r\nx: y\r\n\r\nok"
                .to_vec()
        );
    }

    #[test]
    fn binary_bodies_are_a_hex_dump() {
        let bytes: Vec<u8> = (0u8..20).chain(*b"AB").collect();
        assert_eq!(
            hex_dump(&bytes),
            "00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  ................\n\
             00000010  10 11 12 13 41 42                                ....AB\n"
        );
        let r = record((&[], &bytes), None);
        let shown = render(&r);
        assert!(shown.contains("00000010  10 11"), "{shown}");
        assert!(shown.contains("[22 bytes, binary]"), "{shown}");
        assert!(shown.ends_with("< (no response captured)\n"), "{shown}");
    }

    #[test]
    fn text_detection_and_json_layout() {
        assert_eq!(as_text(b"plain\ttext\n", false), Some("plain\ttext\n"));
        assert_eq!(as_text(b"\x00bin", false), None);
        assert_eq!(as_text(b"\xff\xfe", false), None);
        // A truncated capture cut inside "é" is still text.
        assert_eq!(as_text(b"caf\xc3", true), Some("caf"));
        assert_eq!(as_text(b"caf\xc3", false), None);
        assert_eq!(pretty_json("[]").as_deref(), Some("[]"));
        assert_eq!(
            pretty_json(r#"{"a":[1,{"b":"x,\"y\":{"}],"c":{ }}"#).as_deref(),
            Some("{\n  \"a\": [\n    1,\n    {\n      \"b\": \"x,\\\"y\\\":{\"\n    }\n  ],\n  \"c\": {}\n}")
        );
        assert_eq!(pretty_json("{\"a\":"), None);
        assert_eq!(pretty_json("not json"), None);
        assert_eq!(printable_text("a\r\nb\x1b[31m\tc"), "a\nb\u{fffd}[31m\tc");
    }
}
