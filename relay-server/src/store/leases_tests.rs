//! Leases against a real SQLite file: take, take over, renew, expire,
//! release, and two stores (two nodes) racing on one file.

use std::time::Duration;

use super::*;

const TTL: Duration = Duration::from_secs(10);

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("opens");
    (dir, store)
}

#[test]
fn a_lease_is_taken_over_with_the_next_epoch() {
    let (_dir, s) = store();
    assert_eq!(s.lease_of("app").expect("query"), None);
    let a = s.take_lease("app", "n1", "http://n1", TTL).expect("take");
    assert_eq!((a.node_id.as_str(), a.epoch), ("n1", 1));
    assert!(a.expires_at_ms > now_ms());
    assert_eq!(s.lease_of("app").expect("query"), Some(a.clone()));
    let b = s.take_lease("app", "n2", "http://n2", TTL).expect("take");
    assert_eq!(
        (b.node_id.as_str(), b.node_url.as_str(), b.epoch),
        ("n2", "http://n2", 2)
    );
    assert_eq!(s.lease_of("app").expect("query"), Some(b));
}

#[test]
fn renewal_reports_the_names_a_node_lost() {
    let (_dir, s) = store();
    let a = s.take_lease("a", "n1", "http://n1", TTL).expect("take");
    let b = s.take_lease("b", "n1", "http://n1", TTL).expect("take");
    s.take_lease("b", "n2", "http://n2", TTL)
        .expect("taken over");
    let held = vec![("a".to_owned(), a.epoch), ("b".to_owned(), b.epoch)];
    let lost = s
        .renew_leases("n1", &held, Duration::from_secs(60))
        .expect("renew");
    assert_eq!(lost, vec!["b".to_owned()]);
    let renewed = s.lease_of("a").expect("query").expect("live");
    assert!(renewed.expires_at_ms > a.expires_at_ms, "pushed forward");
    assert_eq!(s.lease_of("b").expect("query").expect("live").node_id, "n2");
    // A stale epoch is lost even on the same node (its session was replaced).
    let again = s.take_lease("a", "n1", "http://n1", TTL).expect("retake");
    let lost = s
        .renew_leases("n1", &[("a".to_owned(), a.epoch)], TTL)
        .expect("renew");
    assert_eq!(lost, vec!["a".to_owned()]);
    assert_eq!(s.lease_of("a").expect("query"), Some(again));
}

#[test]
fn an_expired_lease_is_not_live_and_release_spares_a_newer_holder() {
    let (_dir, s) = store();
    s.take_lease("gone", "n1", "http://n1", Duration::ZERO)
        .expect("take");
    assert_eq!(s.lease_of("gone").expect("query"), None, "expired at once");
    let taken = s.take_lease("gone", "n2", "http://n2", TTL).expect("take");
    assert_eq!(taken.epoch, 2, "the row is kept, so epochs keep rising");

    let old = s.take_lease("app", "n1", "http://n1", TTL).expect("take");
    let new = s.take_lease("app", "n2", "http://n2", TTL).expect("take");
    s.release_lease("app", "n1", old.epoch).expect("release");
    assert_eq!(s.lease_of("app").expect("query"), Some(new.clone()));
    s.release_lease("app", "n2", new.epoch).expect("release");
    assert_eq!(s.lease_of("app").expect("query"), None);
}

#[test]
fn two_nodes_racing_on_one_file_leave_one_holder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes: Vec<Store> = (0..2)
        .map(|_| Store::open(dir.path()).expect("opens"))
        .collect();
    let handles: Vec<_> = nodes
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            std::thread::spawn(move || {
                let id = format!("n{i}");
                (0..50)
                    .map(|_| {
                        s.take_lease("race", &id, "http://x", TTL)
                            .expect("take")
                            .epoch
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut epochs: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    epochs.sort_unstable();
    assert_eq!(
        epochs,
        (1..=100).collect::<Vec<_>>(),
        "every take got its own epoch"
    );
    let s = Store::open(dir.path()).expect("opens");
    let holder = s.lease_of("race").expect("query").expect("live");
    assert_eq!(holder.epoch, 100, "the last taker holds it");
}
