//! The store against a real SQLite file in a temp dir.

use super::*;
use relay_shared::api::Outcome;
use rusqlite::Connection;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("opens");
    (dir, store)
}

#[test]
fn tokens_are_hashed_verified_and_revoked() {
    let (dir, s) = store();
    let (id, secret) = s.create_token(Some("laptop")).expect("created");
    assert!(secret.starts_with("rly_"));
    assert_eq!(s.verify_token(&secret).expect("query"), Some(id));
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
fn names_belong_to_first_owner_and_survive_reopen() {
    let (dir, s) = store();
    assert_eq!(
        s.claim_name("app", "token:1").expect("claim"),
        Claim::Granted
    );
    assert_eq!(
        s.claim_name("app", "token:1").expect("again"),
        Claim::Granted
    );
    assert_eq!(s.claim_name("app", "token:2").expect("other"), Claim::Taken);
    drop(s);
    let s = Store::open(dir.path()).expect("reopens");
    assert_eq!(s.known_names().expect("names"), ["app"]);
    assert_eq!(
        s.claim_name("app", "client:x").expect("other"),
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
