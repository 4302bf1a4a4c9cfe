//! What the inspector page shows of a capture, computed with the
//! terminal's own code so that the page and `relay requests show` cannot
//! drift apart: masked paths and headers ([`crate::secrets`],
//! [`crate::output::redact_query`]), bodies laid out as `show` lays them
//! out (JSON pretty with numbers as written, binary as a hex dump), the
//! HTTP text of the exchange, and the text a search looks through. Pure
//! functions of records; fetching them is `mod.rs`'s.

use relay_shared::api::{Message, Record, ResponseDiff, Summary};
use serde::Serialize;
use serde_json::Value;

use crate::output::redact_query;
use crate::secrets::mask_header;
use crate::show::{as_text, hex_dump, pretty_json, reason, HEX_SHOWN};

/// Bytes of each body a search looks through: more than any webhook or
/// GraphQL call carries, and a bound on what the search cache holds per
/// capture (see `search.rs`).
pub const SEARCH_BODY_BYTES: usize = 256 << 10;

/// Whether secrets are shown as captured or masked (the page's "Show
/// secrets" box).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    Masked,
    Shown,
}

/// One body as the page shows it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ShownBody {
    /// `empty`, `json` (pretty-printed), `text` or `binary` (a hex dump).
    pub kind: &'static str,
    pub text: String,
    /// Captured bytes the text covers (a hex dump shows only the first
    /// [`HEX_SHOWN`]).
    pub shown_bytes: usize,
}

/// Headers (masked unless secrets are shown) and body of one side.
#[derive(Debug, Serialize)]
pub struct ShownMessage {
    pub headers: Vec<(String, String)>,
    pub body: ShownBody,
}

/// The `shown` part of a record the inspector answers.
#[derive(Debug, Serialize)]
pub struct Shown {
    pub path: String,
    pub request: ShownMessage,
    pub response: Option<ShownMessage>,
    /// The exchange as HTTP/1.1 text (`relay requests show --raw`), with
    /// bodies that are not text as a hex dump.
    pub raw: String,
    /// A replay's diff against its original, header values masked as
    /// `relay replay --diff` masks them.
    pub diff: Option<ResponseDiff>,
}

/// The path as shown: secret query parameters masked unless secrets are
/// shown.
pub fn path(path: &str, secrets: Secrets) -> String {
    match secrets {
        Secrets::Masked => redact_query(path).into_owned(),
        Secrets::Shown => path.to_owned(),
    }
}

fn header_value(name: &str, value: &str, secrets: Secrets) -> String {
    match secrets {
        Secrets::Masked => mask_header(name, value),
        Secrets::Shown => value.to_owned(),
    }
}

/// A summary as the page lists it: the API's fields plus `shown_path`,
/// the path with secrets masked as in the terminal's lines.
pub fn summary(s: &Summary) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("shown_path".into(), path(&s.path, Secrets::Masked).into());
    }
    v
}

/// A record as the page gets it: the API's record (headers and bodies as
/// captured, for edit-and-replay), `shown` (what to display), `shown_path`,
/// and `replays`: the summaries of its replays, newest first.
pub fn record(rec: &Record, secrets: Secrets, replays: &[Summary]) -> Value {
    let mut v = serde_json::to_value(rec).unwrap_or(Value::Null);
    let shown = Shown {
        path: path(&rec.summary.path, secrets),
        request: message(&rec.request, secrets),
        response: rec.response.as_ref().map(|m| message(m, secrets)),
        raw: raw(rec, secrets),
        diff: rec.diff.clone().map(|mut d| {
            for h in &mut d.headers {
                for v in [&mut h.before, &mut h.after].into_iter().flatten() {
                    *v = header_value(&h.name, v, secrets);
                }
            }
            d
        }),
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "shown_path".into(),
            path(&rec.summary.path, Secrets::Masked).into(),
        );
        obj.insert(
            "shown".into(),
            serde_json::to_value(shown).unwrap_or(Value::Null),
        );
        obj.insert(
            "replays".into(),
            replays.iter().map(summary).collect::<Vec<_>>().into(),
        );
    }
    v
}

fn message(m: &Message, secrets: Secrets) -> ShownMessage {
    ShownMessage {
        headers: m
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), header_value(n, v, secrets)))
            .collect(),
        body: body(m),
    }
}

/// The body as `relay requests show` lays it out: pretty JSON when the
/// type says JSON or the text looks like it, text as text, anything else
/// as a hex dump of its first [`HEX_SHOWN`] bytes.
pub fn body(m: &Message) -> ShownBody {
    if m.body.is_empty() {
        return ShownBody {
            kind: "empty",
            text: String::new(),
            shown_bytes: 0,
        };
    }
    let json_type = m.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("content-type") && v.to_ascii_lowercase().contains("json")
    });
    match as_text(&m.body, m.body_truncated) {
        Some(text) => {
            let looks_json = json_type || text.trim_start().starts_with(['{', '[']);
            match looks_json.then(|| pretty_json(text)).flatten() {
                Some(pretty) => ShownBody {
                    kind: "json",
                    text: pretty,
                    shown_bytes: m.body.len(),
                },
                None => ShownBody {
                    kind: "text",
                    text: text.to_owned(),
                    shown_bytes: text.len(),
                },
            }
        }
        None => {
            let shown = m.body.len().min(HEX_SHOWN);
            ShownBody {
                kind: "binary",
                text: hex_dump(&m.body[..shown]),
                shown_bytes: shown,
            }
        }
    }
}

/// The exchange as HTTP/1.1 text, lines ended by `\n` for the page:
/// request line, headers, blank line, body (text as captured, anything
/// else as a hex dump), then the response the same way. Notes in `[...]`
/// say what was not captured.
pub fn raw(rec: &Record, secrets: Secrets) -> String {
    let s = &rec.summary;
    let mut out = format!("{} {} HTTP/1.1\n", s.method, path(&s.path, secrets));
    raw_message(&mut out, &rec.request, secrets);
    match &rec.response {
        Some(res) => {
            out.push('\n');
            match s.status {
                Some(st) => out.push_str(format!("HTTP/1.1 {st} {}", reason(st)).trim_end()),
                None => out.push_str("HTTP/1.1 (no status)"),
            }
            out.push('\n');
            raw_message(&mut out, res, secrets);
        }
        None => out.push_str("\n[no response captured]\n"),
    }
    out
}

fn raw_message(out: &mut String, m: &Message, secrets: Secrets) {
    for (n, v) in &m.headers {
        out.push_str(&format!("{n}: {}\n", header_value(n, v, secrets)));
    }
    out.push('\n');
    let kept = m.body.len();
    if kept == 0 {
        if m.body_size > 0 {
            out.push_str(&format!("[body of {} bytes not captured]\n", m.body_size));
        }
        return;
    }
    match as_text(&m.body, m.body_truncated) {
        Some(text) => {
            out.push_str(text);
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
        None => {
            out.push_str(&hex_dump(&m.body[..kept.min(HEX_SHOWN)]));
            if kept > HEX_SHOWN {
                out.push_str(&format!("[first {HEX_SHOWN} of {kept} bytes shown]\n"));
            }
        }
    }
    if m.body_truncated {
        out.push_str(&format!(
            "[truncated: {kept} of {} bytes captured]\n",
            m.body_size
        ));
    }
}

/// Lower-case text a search looks through beyond the summary: both
/// sides' headers (`name: value` lines, as captured) and the first
/// [`SEARCH_BODY_BYTES`] of each body (bytes that are not UTF-8 become
/// U+FFFD, so text around them is still found).
pub fn haystack(rec: &Record) -> String {
    let mut out = String::new();
    for m in std::iter::once(&rec.request).chain(rec.response.as_ref()) {
        for (n, v) in &m.headers {
            out.push_str(n);
            out.push_str(": ");
            out.push_str(v);
            out.push('\n');
        }
        let body = &m.body[..m.body.len().min(SEARCH_BODY_BYTES)];
        out.push_str(&String::from_utf8_lossy(body));
        out.push('\n');
    }
    out.to_lowercase()
}

/// Whether a summary matches the lower-case `needle` by itself: id,
/// method, path (as captured) or status.
pub fn summary_matches(s: &Summary, needle: &str) -> bool {
    s.id.to_lowercase().contains(needle)
        || s.method.to_lowercase().contains(needle)
        || s.path.to_lowercase().contains(needle)
        || s.status.is_some_and(|st| st.to_string() == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(req_headers: &[(&str, &str)], req_body: &[u8], res_body: Option<&[u8]>) -> Record {
        let msg = crate::fixtures::message;
        Record {
            summary: serde_json::from_value(serde_json::json!({
                "id": "01abc", "tunnel": "app", "time": "2026-11-24T10:15:02.123Z",
                "method": "POST", "path": "/hook?token=s3cr3t&x=1", "status": 200,
                "outcome": "delivered", "duration_ms": 3, "request_size": req_body.len(),
                "response_size": 0, "replay_of": null,
            }))
            .expect("a summary"),
            request: msg(req_headers, req_body),
            response: res_body.map(|b| msg(&[("content-type", "text/plain")], b)),
            diff: None,
        }
    }

    #[test]
    fn masking_is_the_terminals() {
        let auth = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig";
        let headers = [
            ("authorization", auth),
            ("cookie", "session=abcdefghijklmnop; theme=dark"),
            ("x-api-key", "0123456789abcdef"),
            ("content-type", "application/json"),
        ];
        let rec = record(&headers, b"{}", None);
        let v = record_json(&rec, Secrets::Masked);
        let shown = &v["shown"]["request"]["headers"];
        for (i, (n, value)) in headers.iter().enumerate() {
            assert_eq!(shown[i][1], mask_header(n, value), "{n}");
        }
        assert_eq!(shown[0][1], "Bearer eyJhbGci… [40 chars]");
        assert_eq!(v["shown"]["path"], "/hook?token=***&x=1");
        assert_eq!(v["shown_path"], "/hook?token=***&x=1");
        // The record itself keeps what was captured, for edit-and-replay.
        assert_eq!(v["request"]["headers"][0][1], auth);
        assert!(!v["shown"]["raw"].as_str().expect("raw").contains("s3cr3t"));

        let open = record_json(&rec, Secrets::Shown);
        assert_eq!(open["shown"]["request"]["headers"][0][1], auth);
        assert_eq!(open["shown"]["path"], "/hook?token=s3cr3t&x=1");
        assert_eq!(
            open["shown_path"], "/hook?token=***&x=1",
            "the list stays masked"
        );
        assert_eq!(summary(&rec.summary)["shown_path"], "/hook?token=***&x=1");
    }

    #[test]
    fn a_replays_diff_has_its_header_values_masked() {
        let mut rec = record(&[], b"", None);
        rec.diff = Some(ResponseDiff {
            headers: vec![relay_shared::api::HeaderChange {
                name: "set-cookie".into(),
                kind: relay_shared::api::ChangeKind::Changed,
                before: Some("sid=0123456789abcdef; Path=/".into()),
                after: Some("sid=fedcba9876543210; Path=/".into()),
            }],
            ..ResponseDiff::default()
        });
        let v = record_json(&rec, Secrets::Masked);
        let h = &v["shown"]["diff"]["headers"][0];
        assert_eq!(h["before"], "sid=0123… [16 chars]; Path=/");
        assert_eq!(h["after"], "sid=fedc… [16 chars]; Path=/");
        assert_eq!(
            v["diff"]["headers"][0]["after"],
            "sid=fedcba9876543210; Path=/"
        );
        assert!(record_json(&record(&[], b"", None), Secrets::Masked)["shown"]["diff"].is_null());
    }

    fn record_json(rec: &Record, secrets: Secrets) -> Value {
        super::record(rec, secrets, &[])
    }

    #[test]
    fn bodies_are_laid_out_as_show_does() {
        let rec = record(
            &[("content-type", "application/json")],
            br#"{"n":1.50,"a":[]}"#,
            Some(b"\x00\x01binary"),
        );
        let b = body(&rec.request);
        assert_eq!(
            (b.kind, b.text.as_str()),
            ("json", "{\n  \"n\": 1.50,\n  \"a\": []\n}")
        );
        let b = body(rec.response.as_ref().expect("a response"));
        assert_eq!(b.kind, "binary");
        assert!(b.text.starts_with("00000000  00 01 62 69"), "{}", b.text);
        let text = record(&[], b"plain words", None);
        assert_eq!(body(&text.request).kind, "text");
        assert_eq!(body(&Message::default()).kind, "empty");
    }

    #[test]
    fn raw_is_the_http_text_with_hex_for_binary() {
        let rec = record(
            &[("authorization", "Bearer abcdefghijkl")],
            b"{\"a\":1}",
            Some(b"\x00\x01"),
        );
        assert_eq!(
            raw(&rec, Secrets::Shown),
            "POST /hook?token=s3cr3t&x=1 HTTP/1.1\nauthorization: Bearer abcdefghijkl\n\n{\"a\":1}\n\
             \nHTTP/1.1 200 OK\ncontent-type: text/plain\n\n\
             00000000  00 01                                            ..\n"
        );
        assert!(raw(&rec, Secrets::Masked).contains("authorization: Bearer abc… [12 chars]\n"));
        let none = record(&[], b"", None);
        assert!(raw(&none, Secrets::Masked).ends_with("\n\n[no response captured]\n"));
    }

    #[test]
    fn search_text_covers_headers_and_bodies_in_any_case() {
        let rec = record(
            &[("X-Signature", "AbC")],
            b"{\"user\":\"Ada Lovelace\"}",
            Some(b"Created"),
        );
        let hay = haystack(&rec);
        for needle in ["ada lovelace", "x-signature: abc", "created"] {
            assert!(hay.contains(needle), "{needle} in {hay}");
        }
        assert!(summary_matches(&rec.summary, "token=s3"));
        assert!(summary_matches(&rec.summary, "200"));
        assert!(!summary_matches(&rec.summary, "lovelace"));
    }
}
