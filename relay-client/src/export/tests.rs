use std::process::Command;

use super::*;

/// Headers and body of one side.
type Side<'a> = (&'a [(&'a str, &'a str)], &'a [u8]);

fn message((headers, body): Side<'_>) -> Message {
    crate::fixtures::message(headers, body)
}

fn record(method: &str, path: &str, req: Side<'_>, res: Option<(u16, Side<'_>)>) -> Record {
    let summary = serde_json::from_value(json!({
        "id": "01abc", "tunnel": "app", "time": "2026-11-24T10:15:02.123Z",
        "method": method, "path": path, "status": res.map(|r| r.0),
        "outcome": if res.is_some() { "delivered" } else { "offline" },
        "duration_ms": 42, "request_size": req.1.len(), "response_size": 0,
        "replay_of": null,
    }))
    .expect("a summary");
    Record {
        summary,
        request: message(req),
        response: res.map(|(_, side)| message(side)),
        diff: None,
    }
}

/// What a POSIX shell makes of `words` (the `sh -c 'printf ...'` round
/// trip): proves the quoting, not just its look.
fn shell_words(command_line: &str) -> Vec<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for w in {command_line}; do printf '%s\\0' \"$w\"; done"
        ))
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8 back")
        .split_terminator('\0')
        .map(str::to_owned)
        .collect()
}

#[test]
fn quoting_survives_a_shell_with_quotes_newlines_and_unicode() {
    let hostile = [
        "it's",
        "'",
        "''\\'",
        "line one\nline two\n",
        "$(rm -rf /) `id` $HOME ${x} !! \\",
        "naïve — 日本語 🦀 \u{202e}",
        "\ttab",
        "",
    ];
    for s in hostile {
        assert_eq!(shell_words(&shell_quote(s)), [s], "{s:?}");
    }
}

#[test]
fn text_bodies_go_inline_others_to_a_file() {
    assert_eq!(inline_text(b"{\"a\":1}\n"), Some("{\"a\":1}\n"));
    assert_eq!(
        inline_text("caf\u{e9}\t🦀".as_bytes()),
        Some("caf\u{e9}\t🦀")
    );
    assert_eq!(inline_text(b"\x00\x01"), None, "control bytes");
    assert_eq!(inline_text(b"\xff\xfe"), None, "not UTF-8");
    assert_eq!(
        inline_text(b"a\r\nb"),
        None,
        "a CR does not survive a paste"
    );
    assert_eq!(inline_text(b"\x1b[31mred"), None, "escape sequences");
    assert_eq!(
        inline_text(b"@/etc/passwd"),
        None,
        "curl would read the file"
    );
    assert_eq!(inline_text(&vec![b'a'; INLINE_MAX + 1]), None, "too long");
}

#[test]
fn curl_sends_every_header_in_order_and_the_body_exactly() {
    let body = "it's\n\"quoted\" ✓\n";
    let len = body.len().to_string();
    let r = record(
        "POST",
        "/hook?a=[1]&b={2}",
        (
            &[
                ("host", "app.localhost:8080"),
                ("content-type", "application/json"),
                ("x-empty", ""),
                ("x-multi", "one"),
                ("x-multi", "two"),
                ("content-length", &len),
                ("connection", "keep-alive, x-conn"),
                ("x-conn", "per-hop"),
                ("keep-alive", "timeout=5"),
                ("x-forwarded-proto", "http"),
            ],
            body.as_bytes(),
        ),
        Some((200, (&[], b"ok"))),
    );
    let c = curl(&r, "http://localhost:4000", Path::new("out"));
    assert!(c.refused.is_none() && c.body_file.is_none());
    let mut lines = c.text.lines();
    assert_eq!(
        lines.next(),
        Some("# 01abc POST /hook?a=[1]&b={2} (2026-11-24T10:15:02.123Z, delivered 200)")
    );
    let command: String = c.text.lines().skip(1).collect::<Vec<_>>().join("\n");
    let words = shell_words(&command.replace(" \\\n  ", " "));
    let want: Vec<String> = [
        "curl",
        "--globoff",
        "--path-as-is",
        "-X",
        "POST",
        "http://localhost:4000/hook?a=[1]&b={2}",
        "-H",
        "host: app.localhost:8080",
        "-H",
        "content-type: application/json",
        "-H",
        "x-empty;",
        "-H",
        "x-multi: one",
        "-H",
        "x-multi: two",
        "-H",
        &format!("content-length: {len}"),
        "-H",
        "x-forwarded-proto: http",
        "-H",
        "user-agent:",
        "-H",
        "accept:",
        "-H",
        "expect:",
        "--data-binary",
        body,
    ]
    .map(str::to_owned)
    .to_vec();
    assert_eq!(words, want, "{}", c.text);
}

#[test]
fn curl_reads_binary_bodies_from_a_file_named_by_id() {
    let bytes: Vec<u8> = (0u8..=255).collect();
    let r = record("PUT", "/up", (&[("content-length", "999")], &bytes), None);
    let c = curl(&r, "http://127.0.0.1:9", Path::new("dir with 'quote"));
    assert_eq!(c.body_file.as_deref(), Some(&bytes[..]));
    assert_eq!(c.body_path, Path::new("dir with 'quote").join("01abc.body"));
    assert!(
        c.text
            .ends_with("--data-binary '@dir with '\\''quote/01abc.body'\n"),
        "{}",
        c.text
    );
    assert!(
        !c.text.contains("content-length"),
        "a length that is not the body's is curl's to set: {}",
        c.text
    );
    assert!(c.text.contains("-H 'content-type:'"), "{}", c.text);
}

#[test]
fn curl_refuses_a_truncated_body_in_a_comment() {
    let mut r = record("POST", "/big", (&[], b"partial"), None);
    r.request.body_size = 5_000_000;
    r.request.body_truncated = true;
    let c = curl(&r, "http://localhost:4000", Path::new("."));
    assert!(c.refused.is_some() && c.body_file.is_none());
    assert!(
        c.text.lines().all(|l| l.starts_with('#')),
        "only comments: {}",
        c.text
    );
    assert!(
        c.text.contains("truncated (7 of 5000000 bytes"),
        "{}",
        c.text
    );
}

#[test]
fn curl_heads_and_hostile_paths_stay_commands() {
    let r = record("HEAD", "/x\n; rm -rf ~", (&[], b""), None);
    let c = curl(&r, "http://localhost:4000", Path::new("."));
    assert!(
        c.text.starts_with("# 01abc HEAD /x\u{fffd}; rm -rf ~ ("),
        "{}",
        c.text
    );
    let command = c.text.lines().skip(1).collect::<Vec<_>>().join("\n");
    let words = shell_words(&command.replace(" \\\n  ", " "));
    assert_eq!(words[3], "--head");
    assert_eq!(words[4], "http://localhost:4000/x\n; rm -rf ~");
    assert!(!words.iter().any(|w| w == "content-type:"), "no body");
}

#[test]
fn har_has_the_fields_of_har_1_2() {
    let bin = [0u8, 0xff, 0x10];
    let r = record(
        "POST",
        "/graphql?q=a%20b&x=1",
        (
            &[
                ("host", "app.example.com"),
                ("cookie", "sid=abc; theme=dark"),
                ("content-type", "application/octet-stream"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "app.example.com"),
                ("x-forwarded-prefix", "/t/app"),
            ],
            &bin,
        ),
        Some((
            302,
            (
                &[
                    ("content-type", "text/plain"),
                    ("location", "/next"),
                    ("set-cookie", "sid=new; Path=/; HttpOnly"),
                ],
                "moved ✓".as_bytes(),
            ),
        )),
    );
    let doc = har(&[r], Some("http://localhost:4000"));
    let log = &doc["log"];
    assert_eq!(log["version"], "1.2");
    assert_eq!(log["creator"]["name"], "relay");
    assert_eq!(log["creator"]["version"], env!("CARGO_PKG_VERSION"));
    let e = &log["entries"][0];
    assert_eq!(e["startedDateTime"], "2026-11-24T10:15:02.123Z");
    assert_eq!(e["time"], 42);
    assert_eq!(e["timings"], json!({ "send": 0, "wait": 42, "receive": 0 }));
    assert_eq!(e["cache"], json!({}));
    let req = &e["request"];
    assert_eq!(
        req["url"],
        "https://app.example.com/t/app/graphql?q=a%20b&x=1"
    );
    assert_eq!(req["httpVersion"], "HTTP/1.1");
    assert_eq!(
        req["queryString"],
        json!([{ "name": "q", "value": "a b" }, { "name": "x", "value": "1" }])
    );
    assert_eq!(
        req["cookies"],
        json!([{ "name": "sid", "value": "abc" }, { "name": "theme", "value": "dark" }])
    );
    assert_eq!(
        req["headers"][1],
        json!({ "name": "cookie", "value": "sid=abc; theme=dark" })
    );
    assert_eq!(
        req["postData"],
        json!({ "mimeType": "application/octet-stream", "text": "AP8Q", "encoding": "base64" })
    );
    assert_eq!(
        (req["headersSize"].clone(), req["bodySize"].clone()),
        (json!(-1), json!(3))
    );
    let res = &e["response"];
    assert_eq!(res["status"], 302);
    assert_eq!(res["statusText"], "Found");
    assert_eq!(res["redirectURL"], "/next");
    assert_eq!(res["cookies"], json!([{ "name": "sid", "value": "new" }]));
    assert_eq!(
        res["content"],
        json!({ "size": "moved ✓".len(), "mimeType": "text/plain", "text": "moved ✓" })
    );
}

#[test]
fn har_gives_an_unanswered_request_status_0_and_a_local_url() {
    let r = record("GET", "/only-local", (&[], b""), None);
    let e = &har(&[r], Some("http://localhost:4000"))["log"]["entries"][0];
    assert_eq!(e["request"]["url"], "http://localhost:4000/only-local");
    assert!(e["request"].get("postData").is_none());
    assert_eq!(e["response"]["status"], 0);
    assert_eq!(e["response"]["content"]["size"], 0);
    assert_eq!(e["comment"], "relay request 01abc: offline");
}

#[test]
fn ndjson_is_the_record_on_one_line() {
    let r = record("POST", "/x", (&[("a", "b")], b"line\nbreak\x00"), None);
    let line = ndjson_line(&r).expect("encodes");
    assert!(!line.contains('\n'));
    let back: Record = serde_json::from_str(&line).expect("the API's JSON");
    assert_eq!(back, r);
}
