//! PostgreSQL only: what several nodes sharing one database rely on.
//! Each "node" is a `Store` handle of its own (its own pool).

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::*;

/// How long a test waits for an event before it fails.
const EVENT_WAIT: Duration = Duration::from_secs(10);

fn missed(s: &Store, tunnel: &str, n: usize) -> Vec<String> {
    let batch: Vec<NewCapture> = (0..n)
        .map(|i| NewCapture {
            tunnel: tunnel.into(),
            ..offline(&format!("{tunnel}-m{i}"), i as i64)
        })
        .collect();
    s.capture_writer()
        .expect("writer")
        .write(&batch.iter().collect::<Vec<_>>(), true, u32::MAX)
        .expect("write");
    batch.into_iter().map(|c| c.id).collect()
}

#[test]
fn concurrent_claims_deliver_each_missed_request_exactly_once() {
    let db = Db::postgres();
    let ids = missed(&db.open(), "app", 30);
    let now = 1_764_000_000_000;
    let nodes = 8;
    let start = Arc::new(Barrier::new(nodes));
    let threads: Vec<_> = (0..nodes)
        .map(|n| {
            let (s, start) = (db.open(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut delivered = Vec::new();
                loop {
                    match s.claim_missed("app", None, now).expect("claim") {
                        ClaimOutcome::Claimed(c) => {
                            let id = c.record.summary.id.clone();
                            let settled = s
                                .settle_delivery(
                                    "app",
                                    &id,
                                    Some(&c.claim),
                                    &format!("r{n}"),
                                    None,
                                    now,
                                )
                                .expect("settle");
                            assert_eq!(settled, Settled::Done, "{id}");
                            delivered.push(id);
                        }
                        // Another node delivers: ask again.
                        ClaimOutcome::Busy => std::thread::yield_now(),
                        ClaimOutcome::Empty => return delivered,
                    }
                }
            })
        })
        .collect();
    let mut times: HashMap<String, usize> = HashMap::new();
    for t in threads {
        for id in t.join().expect("node thread") {
            *times.entry(id).or_default() += 1;
        }
    }
    assert_eq!(times.len(), ids.len(), "every missed request delivered");
    assert!(times.values().all(|&n| n == 1), "{times:?}");
    assert_eq!(db.open().missed_waiting().expect("count"), 0);
}

#[test]
fn of_nodes_claiming_at_once_one_gets_the_claim() {
    let db = Db::postgres();
    missed(&db.open(), "app", 3);
    let nodes = 8;
    let start = Arc::new(Barrier::new(nodes));
    let threads: Vec<_> = (0..nodes)
        .map(|_| {
            let (s, start) = (db.open(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                s.claim_missed("app", None, 1_764_000_000_000)
                    .expect("claim")
            })
        })
        .collect();
    let outcomes: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("node thread"))
        .collect();
    let claimed = outcomes
        .iter()
        .filter(|o| matches!(o, ClaimOutcome::Claimed(_)))
        .count();
    assert_eq!(claimed, 1, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, ClaimOutcome::Claimed(_) | ClaimOutcome::Busy)));
}

#[test]
fn leases_are_taken_over_renewed_expired_and_released() {
    let db = Db::postgres();
    let (a, b) = (db.open(), db.open());
    let (pa, pb) = (a.postgres().expect("pg"), b.postgres().expect("pg"));
    let ttl = Duration::from_secs(30);
    let first = pa
        .take_lease("app", "node-a", "http://a", ttl)
        .expect("take");
    assert_eq!((first.node_id.as_str(), first.epoch), ("node-a", 1));
    assert_eq!(pb.lease_of("app").expect("read"), Some(first.clone()));
    // A client reconnects through node b.
    let second = pb
        .take_lease("app", "node-b", "http://b", ttl)
        .expect("take over");
    assert_eq!((second.node_url.as_str(), second.epoch), ("http://b", 2));
    assert_eq!(
        pa.renew_leases("node-a", &[("app".into(), 1)], ttl)
            .expect("renew"),
        ["app"],
        "node a learns it lost the name"
    );
    assert!(pb
        .renew_leases("node-b", &[("app".into(), 2)], ttl)
        .expect("renew")
        .is_empty());
    pa.release_lease("app", "node-a", 1).expect("stale release");
    let holder = |l: Option<Lease>| l.map(|l| (l.node_id, l.epoch));
    assert_eq!(
        holder(pa.lease_of("app").expect("read")),
        Some(("node-b".to_owned(), second.epoch)),
        "not a's to drop"
    );
    pb.release_lease("app", "node-b", 2).expect("release");
    assert_eq!(pa.lease_of("app").expect("read"), None);

    // A node that stops renewing loses the name by expiry.
    let lapsed = pa
        .take_lease("api", "node-a", "http://a", Duration::ZERO)
        .expect("take");
    assert_eq!(pb.lease_of("api").expect("read"), None, "expired");
    assert!(
        pa.renew_leases("node-a", &[("api".into(), lapsed.epoch)], ttl)
            .expect("renew")
            .is_empty(),
        "no one took it while it lapsed: still a's"
    );
    pa.take_lease("api", "node-a", "http://a", Duration::ZERO)
        .expect("take");
    let taken = pb
        .take_lease("api", "node-b", "http://b", ttl)
        .expect("take");
    assert_eq!(taken.epoch, lapsed.epoch + 2);
    assert_eq!(
        pa.renew_leases("node-a", &[("api".into(), lapsed.epoch + 1)], ttl)
            .expect("renew"),
        ["api"]
    );
}

#[test]
fn nodes_taking_one_name_at_once_each_get_their_own_epoch_and_the_last_holds_it() {
    let db = Db::postgres();
    let nodes = 8;
    let start = Arc::new(Barrier::new(nodes));
    let threads: Vec<_> = (0..nodes)
        .map(|n| {
            let (s, start) = (db.open(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let pg = s.postgres().expect("pg");
                pg.take_lease(
                    "app",
                    &format!("node-{n}"),
                    "http://n",
                    Duration::from_secs(30),
                )
                .expect("take")
            })
        })
        .collect();
    let mut taken: Vec<Lease> = threads
        .into_iter()
        .map(|t| t.join().expect("node thread"))
        .collect();
    taken.sort_by_key(|l| l.epoch);
    let epochs: Vec<i64> = taken.iter().map(|l| l.epoch).collect();
    assert_eq!(
        epochs,
        (1..=nodes as i64).collect::<Vec<_>>(),
        "one takeover at a time"
    );
    let last = taken.last().expect("taken");
    let s = db.open();
    let holder = s.postgres().expect("pg").lease_of("app").expect("read");
    assert_eq!(
        holder.map(|l| (l.node_id, l.epoch)),
        Some((last.node_id.clone(), last.epoch))
    );
}

/// The next event, or a failure after [`EVENT_WAIT`].
async fn next(rx: &mut tokio::sync::mpsc::Receiver<String>) -> String {
    tokio::time::timeout(EVENT_WAIT, rx.recv())
        .await
        .expect("an event in time")
        .expect("the listener is running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_node_reach_another_nodes_listener() {
    let db = Db::postgres();
    let (a, b) = (db.open(), db.open());
    let mut events = b.listen_events().await.expect("listen").expect("postgres");
    // Called on a runtime thread rather than through `Store::call`: it
    // blocks the thread for the round trip, and does not panic.
    let (id, _) = a.create_token(None, None).expect("token");
    a.call(move |s| s.revoke_token(id)).await.expect("revoke");
    assert_eq!(next(&mut events).await, format!("token:{id}"));
    a.call(|s| s.claim_name("app", "token:1", Some(WhenOffline::Accept), None, None))
        .await
        .expect("claim");
    assert_eq!(next(&mut events).await, "name:app");
    a.call(|s| {
        let mut writer = s.capture_writer()?;
        writer.write(&[&offline("m1", 1)], true, 100)
    })
    .await
    .expect("capture");
    assert_eq!(next(&mut events).await, "capture:m1");
    let summary = b.call(|s| s.summary_by_id("m1")).await.expect("read");
    assert_eq!(summary.map(|s| s.tunnel), Some("app".to_owned()));
    a.call(|s| s.settle_delivery("app", "m1", None, "r1", None, 2))
        .await
        .expect("settle");
    assert_eq!(next(&mut events).await, "delivery:m1");

    let sqlite = Db::sqlite().open();
    assert!(sqlite.listen_events().await.expect("listen").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_when_its_connection_drops() {
    let db = Db::postgres();
    let (a, b) = (db.open(), db.open());
    let mut events = b.listen_events().await.expect("listen").expect("postgres");
    let ended = a
        .call(|s| {
            s.postgres().expect("pg").execute_for_test(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            )
        })
        .await
        .expect("terminate");
    assert_eq!(ended, 1, "the listener's connection was found");
    // What is sent while it reconnects is lost: send until one arrives.
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        let (id, _) = a.call(|s| s.create_token(None, None)).await.expect("token");
        a.call(move |s| s.revoke_token(id)).await.expect("revoke");
        let wait = tokio::time::timeout(Duration::from_millis(200), events.recv()).await;
        if let Ok(Some(p)) = wait {
            assert!(p.starts_with("token:"), "{p}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event after the reconnect"
        );
    }
}

#[test]
fn refuses_a_newer_schema() {
    let db = Db::postgres();
    db.open()
        .postgres()
        .expect("pg")
        .execute_for_test("UPDATE relay_schema SET version = 99")
        .expect("set version");
    let err = Store::open_at(&db.location()).err().expect("must refuse");
    assert!(format!("{err:#}").contains("newer"), "{err:#}");
}
