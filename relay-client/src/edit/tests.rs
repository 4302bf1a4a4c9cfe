use relay_shared::api::{Outcome, Summary};

use super::*;

fn record(headers: &[(&str, &str)], body: &[u8]) -> Record {
    Record {
        summary: Summary {
            id: "01orig".into(),
            tunnel: "app".into(),
            time: "2026-11-24T10:00:00.000Z".into(),
            method: "POST".into(),
            path: "/hook?x=1".into(),
            status: Some(200),
            outcome: Outcome::Delivered,
            duration_ms: 1,
            request_size: body.len() as u64,
            response_size: 0,
            replay_of: None,
            delivery: None,
            delivered_by: None,
            delivery_error: None,
            deadline_exceeded_ms: None,
            fault: None,
        },
        request: crate::fixtures::message(headers, body),
        response: None,
        diff: None,
    }
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn body_source_reads_like_curl_data_binary() {
    assert_eq!(
        BodySource::parse("@a.bin"),
        BodySource::File("a.bin".into())
    );
    assert_eq!(BodySource::parse("-"), BodySource::Stdin);
    assert_eq!(
        BodySource::parse("{\"a\":1}"),
        BodySource::Text("{\"a\":1}".into())
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("b.bin");
    std::fs::write(&path, [0u8, 0xff, b'\n', 0x80]).expect("writes");
    let bytes = BodySource::File(path).read().expect("reads");
    assert_eq!(bytes, [0u8, 0xff, b'\n', 0x80], "byte for byte");
    let missing = dir.path().join("missing.json");
    let err = BodySource::File(missing.clone())
        .read()
        .expect_err("no such file");
    let text = format!("{err:#}");
    assert!(
        text.contains("--body") && text.contains(&missing.display().to_string()),
        "{text}"
    );
}

#[test]
fn header_args_are_checked() {
    assert_eq!(
        parse_header_arg("X-Env:  staging "),
        Ok(("X-Env".into(), "staging".into()))
    );
    assert_eq!(
        parse_header_arg("X-Empty:"),
        Ok(("X-Empty".into(), "".into()))
    );
    assert!(parse_header_arg("no colon").is_err());
    assert!(parse_header_arg("bad name: x").is_err());
    assert!(parse_header_arg("x: a\rb").is_err());
}

#[test]
fn header_edits_replace_every_value_remove_all_and_add() {
    let captured = pairs(&[
        ("Host", "app.example"),
        ("X-Tag", "a"),
        ("Content-Type", "text/plain"),
        ("x-tag", "b"),
        ("Cookie", "s=1"),
        ("cookie", "t=2"),
    ]);
    let out = apply_headers(
        &captured,
        &pairs(&[("x-TAG", "new"), ("X-Added", "1")]),
        &["COOKIE".into()],
    );
    assert_eq!(
        out,
        pairs(&[
            ("Host", "app.example"),
            ("x-TAG", "new"),
            ("Content-Type", "text/plain"),
            ("X-Added", "1"),
        ])
    );
    // Removed then set: the flag's value wins.
    let out = apply_headers(&captured, &pairs(&[("cookie", "z=9")]), &["cookie".into()]);
    assert_eq!(
        out.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .count(),
        1
    );
}

#[test]
fn flags_change_only_what_they_name() {
    let rec = record(&[("Content-Type", "application/json")], b"{}");
    let none = Flags::default();
    assert!(none.is_empty());
    let e = none.edits(&rec, false);
    assert!(e.method.is_none() && e.path.is_none() && e.headers.is_none() && e.body.is_none());
    let flags = Flags {
        remove: vec!["content-type".into()],
        method: Some("PUT".into()),
        body: Some(vec![1, 2]),
        ..Flags::default()
    };
    let e = flags.edits(&rec, true);
    assert_eq!(e.headers, Some(vec![]));
    assert_eq!(e.method.as_deref(), Some("PUT"));
    assert_eq!(e.body.as_deref(), Some(&[1u8, 2][..]));
    assert!(e.force && e.path.is_none());
}

#[test]
fn a_draft_renders_and_parses_back_to_itself() {
    let rec = record(
        &[
            ("Host", "app.example"),
            ("Content-Length", "99"),
            ("X-A", "b: c"),
        ],
        b"{\"id\":41}",
    );
    let draft = Draft::new(&rec, &Flags::default().edits(&rec, false));
    let text = draft.render();
    assert_eq!(
        text,
        b"POST /hook?x=1 HTTP/1.1\r\nHost: app.example\r\nContent-Length: 9\r\nX-A: b: c\r\n\r\n{\"id\":41}"
    );
    let back = parse(&text, true).expect("parses");
    assert_eq!(back.headers[1], ("Content-Length".into(), "9".into()));
    assert_eq!(back.body, draft.body);
    assert_eq!(
        (back.method.as_str(), back.path.as_str()),
        ("POST", "/hook?x=1")
    );
}

#[test]
fn parse_takes_lf_lines_and_drops_only_the_editors_newline() {
    let d = parse(b"PUT /x HTTP/1.1\nA: 1\n\nbody\n", true).expect("LF lines");
    assert_eq!(d.body, b"body");
    let d = parse(b"PUT /x HTTP/1.1\nA: 1\n\nbody\n", false).expect("LF lines");
    assert_eq!(d.body, b"body\n", "the captured body ended in a newline");
    let d = parse(b"\r\nGET /x HTTP/1.1\r\nA:1\r\n", true).expect("no blank line, no body");
    assert_eq!(d.headers, pairs(&[("A", "1")]));
    assert!(d.body.is_empty());
    let d = parse(b"POST / HTTP/1.1\r\n\r\n\x00\xff\r\n\r\nrest", false).expect("binary body");
    assert_eq!(
        d.body, b"\x00\xff\r\n\r\nrest",
        "the body is every byte after the head"
    );
}

#[test]
fn parse_refuses_what_is_not_a_request() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"hello world\n", "request line"),
        (b"GET /x\n", "request line"),
        (b"GET x HTTP/1.1\n", "request line"),
        (b"G(T /x HTTP/1.1\n", "request line"),
        (b"GET /x HTTP/1.1 extra\n", "request line"),
        (b"GET /x SPDY/3\n", "request line"),
        (b"GET /x HTTP/1.1\nno colon here\n\n", "no colon"),
        (b"GET /x HTTP/1.1\nBad Name: x\n\n", "header name"),
        (b"GET /x HTTP/1.1\n: x\n\n", "header name"),
        (b"GET /x HTTP/1.1\nA: 1\n folded\n\n", "folding"),
        (b"GET /x HTTP/1.1\nA: \x01\n\n", "value"),
        (b"GET /x HTTP/1.1\nA: \xff\n\n", "UTF-8"),
    ];
    for (text, why) in cases {
        let err = parse(text, true).expect_err(why);
        let message = err.to_string();
        assert!(!message.is_empty(), "{why}: {err:?}");
    }
    let err = parse(b"GET /x HTTP/1.1\nA: 1\nnot a header\n\n", true).expect_err("bad line");
    assert_eq!(
        err,
        NotARequest::NoColon(3, "not a header".into()),
        "names the line"
    );
}

#[test]
fn editor_comes_from_visual_then_editor_split_on_whitespace() {
    assert_eq!(
        editor_command(None, Some("code --wait")),
        Some(vec!["code".into(), "--wait".into()])
    );
    assert_eq!(
        editor_command(Some("vim"), Some("nano")),
        Some(vec!["vim".into()])
    );
    assert_eq!(
        editor_command(Some("  "), Some("nano")),
        Some(vec!["nano".into()])
    );
    assert_eq!(editor_command(None, None), None);
    assert_eq!(editor_command(Some(""), Some("")), None);
}

#[cfg(unix)]
#[test]
fn edit_runs_the_editor_and_keeps_invalid_text() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let script = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{body}\n")).expect("writes");
        vec!["sh".to_string(), path.display().to_string()]
    };
    let rec = record(&[("X-A", "1")], b"{\"id\":41}");
    let draft = Draft::new(&rec, &Flags::default().edits(&rec, false));

    let sed = script("sed.sh", r#"sed -i -e 's/^POST/PATCH/' -e 's/41/42/' "$1""#);
    let edited = edit(&draft, &sed).expect("edits");
    assert_eq!(edited.method, "PATCH");
    assert_eq!(
        edited.body, b"{\"id\":42}",
        "sed's added newline is dropped"
    );

    let fail = script("fail.sh", "exit 3");
    let err = edit(&draft, &fail).expect_err("non-zero exit");
    assert!(err.to_string().contains("nothing was sent"), "{err}");

    let bad = script(
        "bad.sh",
        r#"printf 'GET /x HTTP/1.1\nnot a header\n\n' > "$1""#,
    );
    let err = edit(&draft, &bad).expect_err("not a request");
    let Some(EditFailed::Invalid(NotARequest::NoColon(2, _), kept)) = err.downcast_ref() else {
        panic!("{err:#}");
    };
    assert!(kept.exists(), "the text is kept for the user");
    let _ = std::fs::remove_file(kept);

    let missing = vec![dir.path().join("no-such-editor").display().to_string()];
    assert!(edit(&draft, &missing).is_err());
    assert!(matches!(
        edit(&draft, &[]).expect_err("none").downcast_ref(),
        Some(EditFailed::NoEditor)
    ));
}
