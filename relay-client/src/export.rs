//! `relay requests export`: captures in the formats other tools read. A
//! curl command per request (to send it to the local app from a shell or
//! a bug report), one HAR 1.2 document (browser devtools, Charles,
//! Insomnia), or the API's records as NDJSON (scripts, `jq`).
//!
//! Fetching is here; the formats are pure functions of the records, so
//! their tests need no server. Which tunnel and server is `main.rs`'s.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use relay_shared::api::{Message, Record};
use serde_json::{json, Value};

use crate::api::Api;

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A runnable curl command per request, sending it to the local app.
    Curl,
    /// One HAR 1.2 document (opens in browser devtools).
    Har,
    /// One full capture record (the API's JSON) per line.
    Ndjson,
}

/// Longest text body put on the command line itself: Linux refuses a
/// single argument over 128 KiB (`MAX_ARG_STRLEN`), so longer bodies go
/// to a file like binary ones.
const INLINE_MAX: usize = 64 << 10;

/// The records to export, in output order: `ids` as given, else the
/// newest `limit` requests visitors sent (not replays), oldest first so
/// that a script replays them in arrival order.
///
/// Errors: an unknown id (named), or the server's refusal; nothing is
/// printed before every record is fetched.
pub async fn fetch(api: &Api, ids: &[String], limit: u32) -> anyhow::Result<Vec<Record>> {
    let ids = if ids.is_empty() {
        let page = api.list(&format!("kind=visitor&limit={limit}")).await?;
        page.requests.into_iter().rev().map(|s| s.id).collect()
    } else {
        ids.to_vec()
    };
    let mut records = Vec::with_capacity(ids.len());
    for id in &ids {
        records.push(api.get(id).await.with_context(|| format!("request {id}"))?);
    }
    Ok(records)
}

/// One request as a curl command, and the body file it reads, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Curl {
    /// `#` comment lines, then the command (or only comments when the
    /// request cannot be reproduced).
    pub text: String,
    /// Bytes the command expects at [`Curl::body_path`].
    pub body_file: Option<Vec<u8>>,
    pub body_path: PathBuf,
    /// Why no command was printed (the body was truncated).
    pub refused: Option<String>,
}

/// Headers curl adds on its own unless told otherwise; an empty `-H
/// 'Name:'` removes one, so only the captured headers go out.
const CURL_DEFAULTS: &[&str] = &["user-agent", "accept"];
/// Added by curl when it sends a body (`--data-binary` implies a form
/// type; `Expect: 100-continue` above a size).
const CURL_BODY_DEFAULTS: &[&str] = &["content-type", "expect"];

/// `record` as a curl command against `base` (`http://host:port`). A body
/// that is not short single-line-safe text is written by the caller to
/// `out_dir/ID.body` and read with `--data-binary @FILE`, so its bytes
/// survive any shell and terminal.
///
/// Every captured header goes out in order except hop-by-hop ones (they
/// described the tunnel's connection) and a `Content-Length` that does not
/// match the body (curl counts it then); curl's own defaults are removed.
/// `--globoff` and `--path-as-is` keep the path's bytes; `--compressed`
/// is never used, so `Accept-Encoding` is sent as captured and the answer
/// printed as the app sends it.
pub fn curl(record: &Record, base: &str, out_dir: &Path) -> Curl {
    let s = &record.summary;
    let req = &record.request;
    let body_path = out_dir.join(format!("{}.body", s.id));
    let mut text = format!(
        "# {} {} {} ({}, {})\n",
        s.id,
        one_line(&s.method),
        one_line(&s.path),
        s.time,
        s.status
            .map_or_else(|| s.outcome.to_string(), |st| format!("{} {st}", s.outcome))
    );
    if req.body_truncated {
        let why = format!(
            "the body is truncated ({} of {} bytes were captured; see the server's --capture-limit): \
             no command, it would send a different request",
            req.body.len(),
            req.body_size
        );
        text.push_str(&format!("# {}: {why}\n", s.id));
        return Curl {
            text,
            body_file: None,
            body_path,
            refused: Some(why),
        };
    }
    let headers = end_to_end(&req.headers);
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let body = &req.body;
    let method = if s.method == "HEAD" {
        "--head".to_owned()
    } else {
        format!("-X {}", shell_quote(&s.method))
    };
    let mut lines = vec![format!(
        "curl --globoff --path-as-is {method} {}",
        shell_quote(&format!("{base}{}", s.path))
    )];
    for (name, value) in &headers {
        if name.eq_ignore_ascii_case("content-length") && value.trim() != body.len().to_string() {
            continue;
        }
        lines.push(header_arg(name, value));
    }
    let mut defaults: Vec<&str> = CURL_DEFAULTS.to_vec();
    if !body.is_empty() {
        defaults.extend_from_slice(CURL_BODY_DEFAULTS);
    }
    for name in defaults.into_iter().filter(|n| !has(n)) {
        lines.push(format!("-H {}", shell_quote(&format!("{name}:"))));
    }
    let mut body_file = None;
    if !body.is_empty() {
        match inline_text(body) {
            Some(t) => lines.push(format!("--data-binary {}", shell_quote(t))),
            None => {
                lines.push(format!(
                    "--data-binary {}",
                    shell_quote(&format!("@{}", body_path.display()))
                ));
                body_file = Some(body.clone());
            }
        }
    }
    text.push_str(&lines.join(" \\\n  "));
    text.push('\n');
    Curl {
        text,
        body_file,
        body_path,
        refused: None,
    }
}

/// `-H 'name: value'`; an empty value is `name;` in curl's syntax (`name:`
/// would remove the header).
fn header_arg(name: &str, value: &str) -> String {
    let h = if value.is_empty() {
        format!("{name};")
    } else {
        format!("{name}: {value}")
    };
    format!("-H {}", shell_quote(&h))
}

/// The captured headers without hop-by-hop ones, in order.
fn end_to_end(headers: &[(String, String)]) -> Vec<(String, String)> {
    let named: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    headers
        .iter()
        .filter(|(n, _)| {
            let hop = http::HeaderName::from_bytes(n.trim().as_bytes())
                .is_ok_and(|h| relay_shared::http::is_hop_by_hop(&h));
            !hop && !named.contains(&n.trim().to_ascii_lowercase())
        })
        .cloned()
        .collect()
}

/// POSIX single quotes: everything literal, a `'` as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `body` as text safe on a command line: UTF-8, no control characters
/// but newline and tab (a CR or an escape sequence would not survive a
/// terminal's copy and paste), not starting with `@` (curl would read a
/// file), and short enough to be one argument.
pub fn inline_text(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    let safe = !text.starts_with('@')
        && text.len() <= INLINE_MAX
        && !text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t');
    safe.then_some(text)
}

/// A capture's method or path in a comment line: control characters
/// would end the comment.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// All `records` as one HAR 1.2 document. `local` is the local app's base
/// URL, used when a capture does not say which public URL the visitor
/// used.
pub fn har(records: &[Record], local: Option<&str>) -> Value {
    json!({
        "log": {
            "version": "1.2",
            "creator": { "name": "relay", "version": env!("CARGO_PKG_VERSION") },
            "entries": records.iter().map(|r| har_entry(r, local)).collect::<Vec<_>>(),
        }
    })
}

fn har_entry(record: &Record, local: Option<&str>) -> Value {
    let s = &record.summary;
    let req = &record.request;
    let query: Vec<Value> = s
        .path
        .split_once('?')
        .map(|(_, q)| form_urlencoded::parse(q.as_bytes()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| json!({ "name": n, "value": v }))
        .collect();
    let mut request = json!({
        "method": s.method,
        "url": url(record, local),
        "httpVersion": "HTTP/1.1",
        "cookies": request_cookies(&req.headers),
        "headers": har_headers(&req.headers),
        "queryString": query,
        "headersSize": -1,
        "bodySize": req.body_size,
    });
    if req.body_size > 0 || !req.body.is_empty() {
        let mut post = json!({ "mimeType": header(&req.headers, "content-type").unwrap_or("") });
        put_text(&mut post, &req.body);
        request["postData"] = post;
    }
    let response = match (&record.response, s.status) {
        (Some(res), Some(status)) => har_response(status, res),
        // Browsers record a request that got no answer with status 0.
        _ => json!({
            "status": 0,
            "statusText": "",
            "httpVersion": "",
            "cookies": [],
            "headers": [],
            "content": { "size": 0, "mimeType": "x-unknown" },
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
        }),
    };
    let mut notes = vec![format!("relay request {}: {}", s.id, s.outcome)];
    if let Some(orig) = &s.replay_of {
        notes.push(format!("replay of {orig}"));
    }
    for (side, m) in [
        ("request", Some(req)),
        ("response", record.response.as_ref()),
    ] {
        if let Some(m) = m.filter(|m| m.body_truncated) {
            notes.push(format!(
                "{side} body truncated: {} of {} bytes captured",
                m.body.len(),
                m.body_size
            ));
        }
    }
    json!({
        "startedDateTime": s.time,
        "time": s.duration_ms,
        "request": request,
        "response": response,
        "cache": {},
        "timings": { "send": 0, "wait": s.duration_ms, "receive": 0 },
        "comment": notes.join("; "),
    })
}

fn har_response(status: u16, res: &Message) -> Value {
    let mut content = json!({
        "size": res.body_size,
        "mimeType": header(&res.headers, "content-type").unwrap_or("x-unknown"),
    });
    put_text(&mut content, &res.body);
    json!({
        "status": status,
        "statusText": http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or(""),
        "httpVersion": "HTTP/1.1",
        "cookies": response_cookies(&res.headers),
        "headers": har_headers(&res.headers),
        "content": content,
        "redirectURL": header(&res.headers, "location").unwrap_or(""),
        "headersSize": -1,
        "bodySize": res.body_size,
    })
}

/// `text` as UTF-8, or base64 with `encoding` (HAR's rule for content;
/// the same field on postData is what HAR readers accept for binary).
fn put_text(obj: &mut Value, body: &[u8]) {
    if body.is_empty() {
        return;
    }
    match std::str::from_utf8(body) {
        Ok(t) => obj["text"] = t.into(),
        Err(_) => {
            obj["text"] = base64::engine::general_purpose::STANDARD
                .encode(body)
                .into();
            obj["encoding"] = "base64".into();
        }
    }
}

/// The URL the visitor used, from the `X-Forwarded-*` headers the server
/// added (proto, host, `/t/NAME` prefix); else the local app's.
fn url(record: &Record, local: Option<&str>) -> String {
    let h = &record.request.headers;
    let path = &record.summary.path;
    let host = header(h, "x-forwarded-host").or_else(|| header(h, "host"));
    match (header(h, "x-forwarded-proto"), host) {
        (Some(proto), Some(host)) => {
            let prefix = header(h, "x-forwarded-prefix").unwrap_or("");
            format!("{proto}://{host}{}{path}", prefix.trim_end_matches('/'))
        }
        _ => format!("{}{path}", local.unwrap_or("http://localhost")),
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn har_headers(headers: &[(String, String)]) -> Vec<Value> {
    headers
        .iter()
        .map(|(n, v)| json!({ "name": n, "value": v }))
        .collect()
}

/// `Cookie: a=1; b=2` as HAR cookies.
fn request_cookies(headers: &[(String, String)]) -> Vec<Value> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .map(|(n, v)| json!({ "name": n, "value": v }))
        .collect()
}

/// The name and value of each `Set-Cookie` (attributes stay in the header).
fn response_cookies(headers: &[(String, String)]) -> Vec<Value> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| v.split(';').next()?.trim().split_once('='))
        .map(|(n, v)| json!({ "name": n, "value": v }))
        .collect()
}

/// One record as one NDJSON line (the API's JSON; bodies in base64).
pub fn ndjson_line(record: &Record) -> serde_json::Result<String> {
    serde_json::to_string(record)
}

#[cfg(test)]
mod tests;
