//! The store against a real SQLite file in a temp dir.

use super::*;
use relay_shared::api::{Delivery, Outcome};
use relay_shared::protocol::WhenOffline;
use rusqlite::Connection;

fn settings(when_offline: WhenOffline) -> NameSettings {
    NameSettings {
        when_offline,
        edge: None,
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("opens");
    (dir, store)
}

#[test]
fn tokens_are_hashed_verified_and_revoked() {
    let (dir, s) = store();
    let (id, secret) = s.create_token(Some("laptop"), None).expect("created");
    assert!(secret.starts_with("rly_"));
    assert_eq!(
        s.verify_token(&secret).expect("query").map(|c| c.id),
        Some(id)
    );
    assert_eq!(s.verify_token("rly_wrong").expect("query"), None);
    let raw = std::fs::read(dir.path().join("relay.db")).unwrap_or_default();
    assert!(
        !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "secret stored in clear"
    );
    assert!(s.revoke_token(id).expect("revoke"));
    assert!(!s.revoke_token(id).expect("revoke twice"));
    assert_eq!(s.verify_token(&secret).expect("query"), None);
    assert_eq!(
        s.list_tokens().expect("list")[0].label.as_deref(),
        Some("laptop")
    );
}

#[test]
fn a_token_claims_at_most_max_names_and_keeps_reusing_its_own() {
    let (_dir, s) = store();
    let (id, secret) = s.create_token(None, Some(2)).expect("created");
    let check = s.verify_token(&secret).expect("query").expect("live");
    assert_eq!(check.max_names, Some(2));
    let owner = format!("token:{id}");
    for name in ["one", "two"] {
        assert_eq!(
            s.claim_name(name, &owner, None, None, check.max_names)
                .expect("claim"),
            Claim::Granted(settings(WhenOffline::Reject))
        );
    }
    assert_eq!(
        s.claim_name("three", &owner, None, None, check.max_names)
            .expect("claim"),
        Claim::LimitReached(2)
    );
    assert_eq!(
        s.claim_name("one", &owner, None, None, check.max_names)
            .expect("again"),
        Claim::Granted(settings(WhenOffline::Reject)),
        "a name it has is not one more"
    );
    assert_eq!(s.names_of(&owner).expect("names"), ["one", "two"]);
    let listed = &s.list_tokens().expect("list")[0];
    assert_eq!(listed.names, ["one", "two"]);
    assert_eq!(listed.max_names, Some(2));
}

#[test]
fn verifying_notes_the_last_use_and_revokes_are_listed() {
    let (_dir, s) = store();
    let (a, secret) = s.create_token(Some("a"), None).expect("created");
    let (b, _) = s.create_token(Some("b"), None).expect("created");
    assert_eq!(s.list_tokens().expect("list")[0].last_used_at, None);
    s.verify_token(&secret).expect("query").expect("live");
    let used = s.list_tokens().expect("list")[0].last_used_at;
    assert!(used.is_some_and(|t| (now() - t).abs() <= 2), "{used:?}");
    assert_eq!(s.revoked_tokens().expect("none"), Vec::<i64>::new());
    assert!(s.revoke_token(b).expect("revoke"));
    assert_eq!(s.revoked_tokens().expect("one"), [b]);
    assert_eq!(s.token_label(a).expect("label").as_deref(), Some("a"));
}

#[test]
fn edge_rules_are_kept_with_the_name_replaced_or_cleared_by_a_connect() {
    let (dir, s) = store();
    let rules = Some(Some(r#"{"allow_ip":["10.0.0.0/8"]}"#.to_owned()));
    let Claim::Granted(kept) = s
        .claim_name("app", "token:1", None, rules, None)
        .expect("claim")
    else {
        panic!("not granted");
    };
    assert_eq!(kept.edge.as_deref(), Some(r#"{"allow_ip":["10.0.0.0/8"]}"#));
    drop(s);
    let s = Store::open(dir.path()).expect("reopens");
    assert_eq!(
        s.known_names().expect("names")[0].1.edge.as_deref(),
        Some(r#"{"allow_ip":["10.0.0.0/8"]}"#),
        "the rules outlive the session and the server"
    );
    // An older client says nothing: the rules stay.
    let Claim::Granted(kept) = s
        .claim_name("app", "token:1", None, None, None)
        .expect("claim")
    else {
        panic!("not granted");
    };
    assert!(kept.edge.is_some());
    // A connect without rules clears them.
    let Claim::Granted(kept) = s
        .claim_name("app", "token:1", None, Some(None), None)
        .expect("claim")
    else {
        panic!("not granted");
    };
    assert_eq!(kept.edge, None);
    assert_eq!(s.known_names().expect("names")[0].1.edge, None);
}

#[test]
fn names_belong_to_first_owner_and_survive_reopen() {
    let (dir, s) = store();
    let accept = Some(WhenOffline::Accept);
    assert_eq!(
        s.claim_name("app", "token:1", None, None, None)
            .expect("claim"),
        Claim::Granted(settings(WhenOffline::Reject)),
        "the default answer"
    );
    assert_eq!(
        s.claim_name("app", "token:1", accept, None, None)
            .expect("again"),
        Claim::Granted(settings(WhenOffline::Accept))
    );
    assert_eq!(
        s.claim_name("app", "token:2", accept, None, None)
            .expect("other"),
        Claim::Taken
    );
    drop(s);
    let s = Store::open(dir.path()).expect("reopens");
    assert_eq!(
        s.known_names().expect("names"),
        [("app".to_owned(), settings(WhenOffline::Accept))],
        "the setting outlives the session"
    );
    assert_eq!(
        s.claim_name("app", "token:1", None, None, None)
            .expect("an older client"),
        Claim::Granted(settings(WhenOffline::Accept)),
        "a client that says nothing keeps it"
    );
    assert_eq!(
        s.claim_name("app", "client:x", None, None, None)
            .expect("other"),
        Claim::Taken
    );
}

#[test]
fn concurrent_opens_of_a_fresh_database_both_succeed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_owned();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let p = path.clone();
            std::thread::spawn(move || Store::open(&p).map(|_| ()))
        })
        .collect();
    for t in threads {
        t.join().expect("thread").expect("open succeeds");
    }
}

fn capture(id: &str, tunnel: &str, method: &str, path: &str, status: u16) -> NewCapture {
    NewCapture {
        id: id.into(),
        tunnel: tunnel.into(),
        time_ms: 1_764_000_000_000,
        method: method.into(),
        path: path.into(),
        status: Some(status),
        outcome: if status == 503 {
            Outcome::Offline
        } else {
            Outcome::Delivered
        },
        duration_ms: 3,
        replay_of: None,
        request: NewMessage {
            headers: b"host: a\r\nx-k: v\r\n".to_vec(),
            body: b"{}".to_vec(),
            size: 2,
            truncated: false,
        },
        response: (status != 503).then(|| NewMessage {
            headers: b"content-type: text/plain\r\n".to_vec(),
            body: b"ok".to_vec(),
            size: 10,
            truncated: true,
        }),
        diff: None,
        deadline_exceeded_ms: None,
        fault: None,
    }
}

#[test]
fn migrates_a_version_1_database_keeping_its_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let conn = Connection::open(dir.path().join("relay.db")).expect("open");
        conn.execute_batch(MIGRATIONS[0]).expect("schema 1");
        conn.execute(
            "INSERT INTO names (name, owner, claimed_at) VALUES ('app', 'client:x', 1)",
            [],
        )
        .expect("a name");
        conn.pragma_update(None, "user_version", 1)
            .expect("version");
    }
    let s = Store::open(dir.path()).expect("migrates");
    assert_eq!(
        s.name_owner("app").expect("query").as_deref(),
        Some("client:x")
    );
    let version: i64 = s
        .lock()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(version as usize, MIGRATIONS.len());
    insert_capture(&s.lock(), &capture("r1", "app", "GET", "/", 200)).expect("insert");
    assert_eq!(
        s.list_captures("app", &Filter::default())
            .expect("list")
            .requests
            .len(),
        1
    );
}

#[test]
fn lists_newest_first_with_filters_and_cursor_and_reads_back_in_full() {
    let (_dir, s) = store();
    {
        let conn = s.lock();
        insert_capture(&conn, &capture("a1", "app", "POST", "/hook?x=1", 200)).expect("insert");
        insert_capture(&conn, &capture("a2", "app", "GET", "/other", 404)).expect("insert");
        insert_capture(&conn, &capture("a3", "app", "POST", "/hook", 503)).expect("insert");
        insert_capture(&conn, &capture("b1", "other", "POST", "/hook", 200)).expect("insert");
    }
    let ids = |f: Filter| -> Vec<String> {
        s.list_captures("app", &Filter { limit: 50, ..f })
            .expect("list")
            .requests
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(ids(Filter::default()), ["a3", "a2", "a1"]);
    let f = |m: Option<&str>, st: Option<u16>, o: Option<&str>, p: Option<&str>| Filter {
        method: m.map(Into::into),
        status: st,
        outcome: o.map(|o| o.parse().expect("test outcomes are known")),
        path: p.map(Into::into),
        ..Filter::default()
    };
    assert_eq!(ids(f(Some("post"), None, None, None)), ["a3", "a1"]);
    assert_eq!(ids(f(None, Some(404), None, None)), ["a2"]);
    assert_eq!(ids(f(None, None, Some("offline"), None)), ["a3"]);
    assert_eq!(ids(f(None, None, None, Some("x=1"))), ["a1"]);
    let page = s
        .list_captures(
            "app",
            &Filter {
                limit: 2,
                ..Filter::default()
            },
        )
        .expect("list");
    assert_eq!(page.next_before.as_deref(), Some("a2"));
    let rest = s
        .list_captures(
            "app",
            &Filter {
                limit: 2,
                before: page.next_before,
                ..Filter::default()
            },
        )
        .expect("list");
    assert_eq!(rest.requests.len(), 1);
    assert_eq!(rest.next_before, None);

    let full = s.get_capture("app", "a1").expect("get").expect("found");
    assert_eq!(full.summary.path, "/hook?x=1");
    assert_eq!(full.request.headers[1], ("x-k".to_owned(), "v".to_owned()));
    assert_eq!(full.request.body, b"{}");
    let response = full.response.expect("has a response");
    assert_eq!((response.body_size, response.body_truncated), (10, true));
    assert!(
        s.get_capture("app", "b1").expect("get").is_none(),
        "other tunnel's"
    );
    let offline = s.get_capture("app", "a3").expect("get").expect("found");
    assert!(offline.response.is_none());
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let conn = Connection::open(dir.path().join("relay.db")).expect("open");
        conn.pragma_update(None, "user_version", 99)
            .expect("set version");
    }
    let err = Store::open(dir.path()).err().expect("must refuse");
    assert!(err.to_string().contains("newer"), "{err}");
}

/// Schema 2 (the last before delivery state) with a name, a delivered
/// exchange, two offline captures and a replay that delivered the first.
fn version_2_database(dir: &std::path::Path) {
    let conn = Connection::open(dir.join("relay.db")).expect("open");
    conn.execute_batch(MIGRATIONS[0]).expect("schema 1");
    conn.execute_batch(MIGRATIONS[1]).expect("schema 2");
    conn.execute(
        "INSERT INTO names (name, owner, claimed_at) VALUES ('app', 'client:x', 1)",
        [],
    )
    .expect("a name");
    let row = |seq: i64, id: &str, outcome: &str, status: Option<u16>, replay_of: Option<&str>| {
        conn.execute(
            "INSERT INTO requests (seq, id, tunnel, time_ms, method, path, status, outcome,
                duration_ms, replay_of, request_size, request_truncated, response_size,
                response_truncated, request_headers, response_headers, request_body, response_body)
             VALUES (?1, ?2, 'app', ?1, 'POST', '/hook', ?3, ?4, 1, ?5, 2, 0, NULL, NULL,
                X'686f73743a20610d0a', NULL, X'7b7d', NULL)",
            rusqlite::params![seq, id, status, outcome, replay_of],
        )
        .expect("a capture");
    };
    row(1, "d1", "delivered", Some(200), None);
    row(2, "o1", "offline", Some(503), None);
    row(3, "o2", "offline", Some(503), None);
    row(4, "r1", "delivered", Some(200), Some("o1"));
    conn.pragma_update(None, "user_version", 2)
        .expect("version");
}

#[test]
fn migrating_version_2_keeps_captures_and_marks_offline_ones_missed_or_delivered() {
    let dir = tempfile::tempdir().expect("temp dir");
    version_2_database(dir.path());
    let s = Store::open(dir.path()).expect("migrates");
    let all = s
        .list_captures(
            "app",
            &Filter {
                limit: 50,
                ..Filter::default()
            },
        )
        .expect("list")
        .requests;
    let state: Vec<_> = all
        .iter()
        .map(|r| (r.id.as_str(), r.delivery, r.delivered_by.as_deref()))
        .collect();
    assert_eq!(
        state,
        [
            ("r1", None, None),
            ("o2", Some(Delivery::Missed), None),
            ("o1", Some(Delivery::Delivered), Some("r1")),
            ("d1", None, None),
        ]
    );
    let full = s.get_capture("app", "o2").expect("get").expect("found");
    assert_eq!(full.request.body, b"{}", "bodies survive the table rebuild");
    assert_eq!(full.request.headers, [("host".to_owned(), "a".to_owned())]);
    let overview = s.missed_overview("app", 10).expect("overview");
    assert_eq!(overview.count, 1);
    assert_eq!(overview.requests[0].id, "o2");
    assert_eq!(
        s.known_names().expect("names"),
        [("app".to_owned(), settings(WhenOffline::Reject))]
    );
}

fn offline(id: &str, time_ms: i64) -> NewCapture {
    NewCapture {
        time_ms,
        ..capture(id, "app", "POST", "/hook", 503)
    }
}

#[test]
fn claims_go_oldest_first_one_deliverer_at_a_time_and_settle_once() {
    let (_dir, s) = store();
    let now = 1_764_000_000_000;
    {
        let conn = s.lock();
        for (i, id) in ["m1", "m2", "m3"].iter().enumerate() {
            insert_capture(&conn, &offline(id, now - 3_000 + i as i64 * 1000)).expect("insert");
        }
        insert_capture(&conn, &capture("d1", "app", "GET", "/", 200)).expect("insert");
    }
    let ClaimOutcome::Claimed(first) = s.claim_missed("app", None, now).expect("claim") else {
        panic!("m1 waits");
    };
    assert_eq!((first.record.summary.id.as_str(), first.waiting), ("m1", 3));
    assert!(
        matches!(
            s.claim_missed("app", None, now + 1).expect("claim"),
            ClaimOutcome::Busy
        ),
        "a second deliverer waits while the first holds its claim"
    );
    assert_eq!(
        s.settle_delivery("app", "m1", Some("not-the-claim"), "r0", None, now)
            .expect("settle"),
        Settled::ClaimLost
    );
    assert_eq!(
        s.settle_delivery("app", "m1", None, "r0", None, now)
            .expect("settle"),
        Settled::Untouched,
        "a plain replay leaves a claimed request to its deliverer"
    );
    assert_eq!(
        s.settle_delivery("app", "m1", Some(&first.claim), "r1", None, now)
            .expect("settle"),
        Settled::Done
    );
    let ClaimOutcome::Claimed(second) = s.claim_missed("app", None, now).expect("claim") else {
        panic!("m2 waits");
    };
    assert_eq!(
        (second.record.summary.id.as_str(), second.waiting),
        ("m2", 2)
    );
    s.settle_delivery(
        "app",
        "m2",
        Some(&second.claim),
        "r2",
        Some("the local app answered 500"),
        now,
    )
    .expect("settle");
    let m2 = s
        .get_capture("app", "m2")
        .expect("get")
        .expect("found")
        .summary;
    assert_eq!(m2.delivery, Some(Delivery::Failed));
    assert_eq!(
        m2.delivery_error.as_deref(),
        Some("the local app answered 500")
    );
    let ClaimOutcome::Claimed(again) = s.claim_missed("app", None, now).expect("claim") else {
        panic!("m2 waits again");
    };
    assert_eq!(
        again.record.summary.id, "m2",
        "a failed request is retried first"
    );
    assert!(
        matches!(
            s.claim_missed("app", None, now + CLAIM_LEASE.as_millis() as i64 + 1)
                .expect("claim"),
            ClaimOutcome::Claimed(c) if c.record.summary.id == "m2"
        ),
        "a claim whose lease ran out is taken over"
    );
    assert_eq!(
        s.settle_delivery("app", "m2", Some(&again.claim), "r3", None, now)
            .expect("settle"),
        Settled::ClaimLost,
        "the old holder lost it"
    );
    let m1 = s
        .get_capture("app", "m1")
        .expect("get")
        .expect("found")
        .summary;
    assert_eq!(
        (m1.delivery, m1.delivered_by.as_deref()),
        (Some(Delivery::Delivered), Some("r1"))
    );
    let overview = s.missed_overview("app", 0).expect("overview");
    assert_eq!(overview.count, 2, "m2 (claimed) and m3 still wait");
    assert!(overview.requests.is_empty());
    let within = s
        .claim_missed("app", Some(1_500), now + 3 * CLAIM_LEASE.as_millis() as i64)
        .expect("claim");
    assert!(
        matches!(within, ClaimOutcome::Empty),
        "none arrived within the window"
    );
    let missed = s
        .list_captures(
            "app",
            &Filter {
                limit: 50,
                missed: true,
                ..Filter::default()
            },
        )
        .expect("list");
    assert_eq!(missed.requests.len(), 2);
}

#[test]
fn retention_spares_waiting_missed_requests_unless_they_alone_exceed_it() {
    let (_dir, s) = store();
    let conn = s.lock();
    for i in 0..3 {
        insert_capture(&conn, &offline(&format!("m{i}"), i)).expect("insert");
    }
    for i in 0..4 {
        insert_capture(&conn, &capture(&format!("d{i}"), "app", "GET", "/", 200)).expect("insert");
    }
    let trimmed = trim(&conn, "app", 7, 4).expect("trim");
    assert_eq!(
        trimmed,
        Trimmed {
            left: 4,
            undelivered: 0
        }
    );
    drop(conn);
    let ids = |s: &Store| -> Vec<String> {
        s.list_captures(
            "app",
            &Filter {
                limit: 50,
                ..Filter::default()
            },
        )
        .expect("list")
        .requests
        .into_iter()
        .map(|r| r.id)
        .collect()
    };
    assert_eq!(ids(&s), ["d3", "m2", "m1", "m0"]);
    let conn = s.lock();
    let trimmed = trim(&conn, "app", 4, 2).expect("trim");
    assert_eq!(
        trimmed,
        Trimmed {
            left: 2,
            undelivered: 1
        },
        "three waiting requests over a retention of two: the oldest goes, counted"
    );
    drop(conn);
    assert_eq!(ids(&s), ["m2", "m1"]);
}

#[test]
fn listing_visitors_only_leaves_replays_out() {
    let (_dir, s) = store();
    {
        let conn = s.lock();
        insert_capture(&conn, &capture("v1", "app", "POST", "/hook", 200)).expect("insert");
        let replay = NewCapture {
            replay_of: Some("v1".into()),
            ..capture("r1", "app", "POST", "/hook", 200)
        };
        insert_capture(&conn, &replay).expect("insert");
    }
    let newest = |replays| {
        s.list_captures(
            "app",
            &Filter {
                limit: 1,
                replays,
                ..Filter::default()
            },
        )
        .expect("list")
        .requests[0]
            .id
            .clone()
    };
    assert_eq!(newest(None), "r1");
    assert_eq!(newest(Some(false)), "v1");
    assert_eq!(newest(Some(true)), "r1");
}

#[test]
fn a_replays_diff_is_kept_with_its_full_record_only() {
    let (_dir, s) = store();
    let diff = relay_shared::api::ResponseDiff {
        status: Some(relay_shared::api::StatusChange {
            before: Some(200),
            after: Some(500),
        }),
        ..Default::default()
    };
    {
        let conn = s.lock();
        insert_capture(&conn, &capture("v1", "app", "POST", "/hook", 200)).expect("insert");
        let replay = NewCapture {
            replay_of: Some("v1".into()),
            diff: Some(serde_json::to_string(&diff).expect("serialises")),
            ..capture("r1", "app", "POST", "/hook", 200)
        };
        insert_capture(&conn, &replay).expect("insert");
        let unreadable = NewCapture {
            replay_of: Some("v1".into()),
            diff: Some("{not json".into()),
            ..capture("r2", "app", "POST", "/hook", 200)
        };
        insert_capture(&conn, &unreadable).expect("insert");
    }
    let get = |id| s.get_capture("app", id).expect("get").expect("stored");
    assert_eq!(get("r1").diff, Some(diff));
    assert_eq!(get("v1").diff, None);
    assert_eq!(get("r2").diff, None, "left out, the record still read");
}

#[test]
fn the_deadline_and_fault_marks_are_stored_and_listed() {
    let (_dir, s) = store();
    {
        let conn = s.lock();
        let slow = NewCapture {
            deadline_exceeded_ms: Some(10_000),
            fault: Some("delay=12s".into()),
            ..capture("m1", "app", "POST", "/hook", 200)
        };
        insert_capture(&conn, &slow).expect("insert");
        insert_capture(&conn, &capture("m2", "app", "POST", "/hook", 200)).expect("insert");
    }
    let marks: Vec<_> = s
        .list_captures(
            "app",
            &Filter {
                limit: 10,
                ..Filter::default()
            },
        )
        .expect("list")
        .requests
        .into_iter()
        .map(|r| (r.id, r.deadline_exceeded_ms, r.fault))
        .collect();
    assert_eq!(
        marks,
        [
            ("m2".to_owned(), None, None),
            ("m1".to_owned(), Some(10_000), Some("delay=12s".to_owned()))
        ]
    );
    let full = s.get_capture("app", "m1").expect("get").expect("stored");
    assert_eq!(full.summary.fault.as_deref(), Some("delay=12s"));
    assert_eq!(full.summary.deadline_exceeded_ms, Some(10_000));
    assert_eq!(full.response.expect("response").body, b"ok");
}

#[test]
fn migrating_version_4_keeps_captures_and_their_diffs_without_marks() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let conn = Connection::open(dir.path().join("relay.db")).expect("open");
        for m in &MIGRATIONS[..4] {
            conn.execute_batch(m).expect("schema");
        }
        conn.execute(
            "INSERT INTO requests (seq, id, tunnel, time_ms, method, path, status, outcome,
                duration_ms, replay_of, request_size, request_truncated, response_size,
                response_truncated, request_headers, response_headers, request_body,
                response_body, diff)
             VALUES (1, 'v4', 'app', 1, 'POST', '/hook', 200, 'delivered', 1, NULL, 2, 0, 2, 0,
                X'686f73743a20610d0a', X'', X'7b7d', X'6f6b', ?1)",
            [serde_json::to_string(&relay_shared::api::ResponseDiff::default()).expect("json")],
        )
        .expect("a capture");
        conn.pragma_update(None, "user_version", 4)
            .expect("version");
    }
    let s = Store::open(dir.path()).expect("migrates");
    let full = s.get_capture("app", "v4").expect("get").expect("kept");
    assert_eq!(full.request.body, b"{}");
    assert_eq!(full.response.expect("response").body, b"ok");
    assert!(full.diff.is_some(), "the diff survives the rebuild");
    assert_eq!(full.summary.deadline_exceeded_ms, None);
    assert_eq!(full.summary.fault, None);
}

#[test]
fn record_width_counts_record_columns() {
    assert_eq!(RECORD_COLUMNS.split(',').count(), RECORD_WIDTH);
}
