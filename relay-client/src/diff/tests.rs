use relay_shared::api::Message;
use serde_json::json;

use super::*;

use crate::fixtures::message as msg;

fn side(status: u16, m: &Message) -> Side<'_> {
    Side {
        status: Some(status),
        response: Some(m),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn json_is_compared_by_path() {
    let before = msg(
        &[],
        br#"{"data":{"addUser":{"id":41,"name":"a"}},"items":[{"name":"x"},{"name":"y"},{"name":"z"}],"gone":1,"odd key":true}"#,
    );
    let after = msg(
        &[],
        br#"{"items":[{"name":"x"},{"name":"y"},{"name":"Z"},{"name":"new"}],"data":{"addUser":{"id":42,"name":"a","email":null}},"odd key":false}"#,
    );
    let d = diff(side(200, &before), side(200, &after));
    let BodyDiff::Json { changes, more } = &d.body else {
        panic!("{:?}", d.body);
    };
    assert_eq!(*more, 0);
    let got: Vec<(&str, ChangeKind, Value, Value)> = changes
        .iter()
        .map(|c| (c.path.as_str(), c.kind, c.before.clone(), c.after.clone()))
        .collect();
    let want: Vec<(&str, ChangeKind, Value, Value)> = vec![
        (
            "data.addUser.email",
            ChangeKind::Added,
            Value::Null,
            Value::Null,
        ),
        ("data.addUser.id", ChangeKind::Changed, json!(41), json!(42)),
        ("gone", ChangeKind::Removed, json!(1), Value::Null),
        ("items[2].name", ChangeKind::Changed, json!("z"), json!("Z")),
        (
            "items[3]",
            ChangeKind::Added,
            Value::Null,
            json!({"name": "new"}),
        ),
        (
            r#"["odd key"]"#,
            ChangeKind::Changed,
            json!(true),
            json!(false),
        ),
    ];
    assert_eq!(got, want);
    let text = describe(&d, "01orig");
    assert!(
        text.starts_with("diff against the response of 01orig:\n"),
        "{text}"
    );
    assert!(text.contains("    data.addUser.id: 41 -> 42\n"), "{text}");
    assert!(text.contains("    + data.addUser.email: null\n"), "{text}");
    assert!(text.contains("    - gone: 1\n"), "{text}");
    assert!(
        text.contains("    items[2].name: \"z\" -> \"Z\"\n"),
        "{text}"
    );
    // The JSON form round-trips; `kind` tells an added value from a null.
    let back: ResponseDiff =
        serde_json::from_value(serde_json::to_value(&d).expect("serialises")).expect("parses");
    assert_eq!(back, d);
}

#[test]
fn same_json_in_other_bytes_is_no_difference_and_many_changes_are_counted() {
    let d = diff(
        side(200, &msg(&[], b"{\"a\": 1, \"b\": [1, 2]}")),
        side(200, &msg(&[], b"{\"b\":[1,2],\"a\":1}\n")),
    );
    assert!(d.is_empty(), "{d:?}");
    assert!(describe(&d, "x").contains("no differences"));
    let big = |n: u64| {
        let values: Vec<u64> = (0..500).map(|i| i * n).collect();
        msg(
            &[],
            serde_json::to_string(&values)
                .expect("serialises")
                .as_bytes(),
        )
    };
    let d = diff(side(200, &big(1)), side(200, &big(2)));
    let BodyDiff::Json { changes, more } = &d.body else {
        panic!("{:?}", d.body);
    };
    assert_eq!(
        (changes.len(), *more),
        (MAX_JSON_CHANGES, 499 - MAX_JSON_CHANGES as u64)
    );
    assert!(describe(&d, "x").contains("and 299 more changes"));
    let d = diff(side(200, &msg(&[], b"41")), side(200, &msg(&[], b"42")));
    assert!(describe(&d, "x").contains("(the whole body): 41 -> 42"));
}

#[test]
fn volatile_headers_are_ignored_and_names_have_no_case() {
    let before = msg(
        &[
            ("Date", "Mon, 01 Jan 2029 00:00:00 GMT"),
            ("X-Relay-Request-Id", "01a"),
            ("Content-Length", "10"),
            ("ETag", "\"a\""),
            ("Content-Type", "application/json"),
            ("X-Version", "1"),
            ("X-Gone", "bye"),
            ("Vary", "Accept"),
            ("vary", "Origin"),
            (
                "Set-Cookie",
                "s=1; Path=/; Expires=Mon, 01 Jan 2029 00:00:00 GMT; Max-Age=60",
            ),
        ],
        b"",
    );
    let after = msg(
        &[
            ("date", "Tue, 02 Jan 2029 00:00:00 GMT"),
            ("x-relay-request-id", "01b"),
            ("transfer-encoding", "chunked"),
            ("etag", "\"b\""),
            ("content-type", "application/json"),
            ("x-version", "2"),
            ("x-new", "hi"),
            ("VARY", "Accept"),
            ("Vary", "Origin"),
            (
                "set-cookie",
                "s=1; Path=/; Expires=Tue, 02 Jan 2029 00:00:00 GMT; Max-Age=30",
            ),
        ],
        b"",
    );
    let d = diff(side(200, &before), side(201, &after));
    let names: Vec<(&str, ChangeKind)> = d
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.kind))
        .collect();
    assert_eq!(
        names,
        [
            ("x-version", ChangeKind::Changed),
            ("x-gone", ChangeKind::Removed),
            ("x-new", ChangeKind::Added),
        ]
    );
    assert_eq!(
        d.status,
        Some(StatusChange {
            before: Some(200),
            after: Some(201)
        })
    );
    assert_eq!(d.body, BodyDiff::Same);
    let text = describe(&d, "01a");
    assert!(text.contains("  status: 200 -> 201\n"), "{text}");
    assert!(text.contains("  header x-version: 1 -> 2\n"), "{text}");
    assert!(text.contains("  header - x-gone: bye\n"), "{text}");
    assert!(text.contains("  header + x-new: hi\n"), "{text}");
    // A cookie's value still counts, and is masked on the terminal.
    let other = msg(&[("Set-Cookie", "s=SECRETSECRETSECRET; Path=/")], b"");
    let d = diff(
        side(200, &msg(&[("Set-Cookie", "s=1; Path=/")], b"")),
        side(200, &other),
    );
    assert_eq!(d.headers.len(), 1, "{:?}", d.headers);
    assert_eq!(
        d.headers[0].after.as_deref(),
        Some("s=SECRETSECRETSECRET; Path=/")
    );
    assert!(!describe(&d, "x").contains("SECRETSECRETSECRET"));
}

#[test]
fn text_is_a_unified_diff() {
    let d = diff(
        side(200, &msg(&[], b"one\ntwo\nthree\n")),
        side(200, &msg(&[], b"one\n2\nthree\n")),
    );
    let BodyDiff::Text { unified } = &d.body else {
        panic!("{:?}", d.body);
    };
    assert!(
        unified.starts_with("--- original\n+++ replay\n@@"),
        "{unified}"
    );
    assert!(unified.contains("\n-two\n+2\n"), "{unified}");
    let text = describe(&d, "x");
    assert!(
        text.contains("  body (text):\n") && text.contains("    +2\n"),
        "{text}"
    );
    // An original never answered (offline) has no status, headers or body.
    let d = diff(
        Side {
            status: None,
            response: None,
        },
        side(200, &msg(&[("x-a", "1")], b"hello\n")),
    );
    assert!(matches!(d.body, BodyDiff::Text { .. }), "{:?}", d.body);
    assert!(describe(&d, "x").contains("status: no response -> 200"));
    assert_eq!(d.headers[0].kind, ChangeKind::Added);
    assert_eq!(
        cut("é".repeat(10), 5),
        "éé\n… (diff cut at 4 of 20 bytes)\n"
    );
}

#[test]
fn binary_is_compared_by_size_and_hash_and_truncation_is_said() {
    let d = diff(
        side(200, &msg(&[], &[0, 1, 2, 0xff])),
        side(200, &msg(&[], &[0, 1, 2, 0xfe, 9])),
    );
    let BodyDiff::Binary { before, after } = &d.body else {
        panic!("{:?}", d.body);
    };
    assert_eq!((before.size, after.size), (4, 5));
    assert_eq!(before.sha256, sha256_hex(&[0, 1, 2, 0xff]));
    let text = describe(&d, "x");
    assert!(
        text.contains(&format!(
            "  body: 4 bytes (sha256 {}) -> 5 bytes",
            &before.sha256[..12]
        )),
        "{text}"
    );

    // A truncated side, cut inside a character: still text, and said.
    let mut cut_json = msg(&[], "{\"name\": \"é".as_bytes());
    cut_json.body.pop();
    cut_json.body_size = 100;
    cut_json.body_truncated = true;
    let d = diff(
        side(200, &cut_json),
        side(200, &msg(&[], b"{\"name\": \"e\"}")),
    );
    assert!(d.original_truncated && !d.replay_truncated);
    assert!(matches!(d.body, BodyDiff::Text { .. }), "{:?}", d.body);
    assert!(describe(&d, "x").contains("the original's body was truncated"));
    // Equal kept prefixes of bodies of other sizes are not "the same".
    let mut long = msg(&[], b"abc");
    long.body_size = 10;
    long.body_truncated = true;
    let d = diff(side(200, &msg(&[], b"abc")), side(200, &long));
    assert_ne!(d.body, BodyDiff::Same);
}
