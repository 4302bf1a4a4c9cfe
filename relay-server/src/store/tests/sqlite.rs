//! SQLite only: its migrations from every older schema.

use super::*;
use rusqlite::Connection;

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
