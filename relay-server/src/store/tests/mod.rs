//! The store's tests. Most run on both engines, through `on_both!`:
//! SQLite in a temp dir and PostgreSQL in a database of its own
//! (`pg/testdb.rs`; `scripts/test` provides the server). Then SQLite's
//! migrations (`sqlite.rs`) and what only PostgreSQL has (`pg.rs`).

use super::*;
use relay_shared::api::{Delivery, Outcome};
use relay_shared::protocol::WhenOffline;

mod captures;
mod pg;
mod sqlite;

/// A fresh, not yet opened database on one engine.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(super::pg::testdb::TestDb),
}

impl Db {
    fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    fn postgres() -> Self {
        Self::Postgres(super::pg::testdb::TestDb::new())
    }

    fn location(&self) -> StoreLocation {
        match self {
            Self::Sqlite(dir) => StoreLocation::Sqlite(dir.path().to_owned()),
            Self::Postgres(db) => StoreLocation::Postgres(db.url.clone()),
        }
    }

    /// Opens (again, after a drop: a restart) the store.
    fn open(&self) -> Store {
        Store::open_at(&self.location()).expect("opens")
    }
}

/// `name` becomes a module with a `sqlite` and a `postgres` test, each
/// calling `fn name(db: &Db)` on a fresh database.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::Db::sqlite());
            }

            #[test]
            fn postgres() {
                super::$name(&super::Db::postgres());
            }
        }
    )*};
}
use on_both;

on_both!(
    tokens_are_hashed_verified_and_revoked,
    a_token_claims_at_most_max_names_and_keeps_reusing_its_own,
    verifying_notes_the_last_use_and_revokes_are_listed,
    edge_rules_are_kept_with_the_name_replaced_or_cleared_by_a_connect,
    names_belong_to_first_owner_and_survive_reopen,
    concurrent_opens_of_a_fresh_database_both_succeed,
);

fn settings(when_offline: WhenOffline) -> NameSettings {
    NameSettings {
        when_offline,
        edge: None,
    }
}

/// Stores one capture as the capture writer does (its own batch).
fn insert(s: &Store, c: NewCapture) -> anyhow::Result<()> {
    s.capture_writer()?.write(&[&c], false, u32::MAX)?;
    Ok(())
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

fn offline(id: &str, time_ms: i64) -> NewCapture {
    NewCapture {
        time_ms,
        ..capture(id, "app", "POST", "/hook", 503)
    }
}

fn tokens_are_hashed_verified_and_revoked(db: &Db) {
    let s = db.open();
    let (id, secret) = s.create_token(Some("laptop"), None).expect("created");
    assert!(secret.starts_with("rly_"));
    assert_eq!(
        s.verify_token(&secret).expect("query").map(|c| c.id),
        Some(id)
    );
    assert_eq!(s.verify_token("rly_wrong").expect("query"), None);
    if let Db::Sqlite(dir) = db {
        let raw = std::fs::read(dir.path().join("relay.db")).unwrap_or_default();
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secret stored in clear"
        );
    }
    assert!(s.revoke_token(id).expect("revoke"));
    assert!(!s.revoke_token(id).expect("revoke twice"));
    assert_eq!(s.verify_token(&secret).expect("query"), None);
    assert_eq!(
        s.list_tokens().expect("list")[0].label.as_deref(),
        Some("laptop")
    );
}

fn a_token_claims_at_most_max_names_and_keeps_reusing_its_own(db: &Db) {
    let s = db.open();
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

fn verifying_notes_the_last_use_and_revokes_are_listed(db: &Db) {
    let s = db.open();
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

fn edge_rules_are_kept_with_the_name_replaced_or_cleared_by_a_connect(db: &Db) {
    let s = db.open();
    let rules = Some(Some(r#"{"allow_ip":["10.0.0.0/8"]}"#.to_owned()));
    let Claim::Granted(kept) = s
        .claim_name("app", "token:1", None, rules, None)
        .expect("claim")
    else {
        panic!("not granted");
    };
    assert_eq!(kept.edge.as_deref(), Some(r#"{"allow_ip":["10.0.0.0/8"]}"#));
    drop(s);
    let s = db.open();
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

fn names_belong_to_first_owner_and_survive_reopen(db: &Db) {
    let s = db.open();
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
    let s = db.open();
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

/// On PostgreSQL, the migrations' advisory lock at work.
fn concurrent_opens_of_a_fresh_database_both_succeed(db: &Db) {
    let at = db.location();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let at = at.clone();
            std::thread::spawn(move || Store::open_at(&at).map(|_| ()))
        })
        .collect();
    for t in threads {
        t.join().expect("thread").expect("open succeeds");
    }
}
