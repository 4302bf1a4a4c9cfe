//! Capture's unit tests: retention, coalescing, budgets and outcomes on a
//! real SQLite database in a temp dir.

use super::*;
use crate::store::{Filter, Store};
use bytes::Bytes;
use http::header;
use http::{HeaderMap, Method, StatusCode};

fn config(limit: usize, retain: u32) -> CaptureConfig {
    CaptureConfig {
        enabled: true,
        limit,
        retain,
    }
}

/// One delivered exchange through a tap, as the proxy drives it.
fn exchange(capture: &Arc<Capture>, id: &str, body: &[u8]) {
    let tap = Tap::new(Some(capture), id, "app", &Method::POST, "/hook");
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, body.len().into());
    tap.request_head(&headers);
    tap.request_chunk(body);
    tap.request_complete();
    tap.response_head(StatusCode::OK, &HeaderMap::new());
    tap.response_chunk(b"ok");
    tap.finish(Outcome::Delivered);
}

fn ids(store: &Store) -> Vec<String> {
    let f = Filter {
        limit: 100,
        ..Filter::default()
    };
    let page = store.list_captures("app", &f).expect("list");
    page.requests.into_iter().map(|r| r.id).collect()
}

#[test]
fn taps_in_progress_share_the_tunnels_budget() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let capture = Capture::start(config(1 << 20, 100), &store).expect("starts");
    let budget = TapBudget::default();
    let chunk = vec![7u8; 64 << 10];
    // Visitors that stopped reading: each exchange stays open with a
    // full prefix, and more of them than the budget holds.
    let taps: Vec<Tap> = (0..(TAP_BUDGET >> 20) + 8)
        .map(|i| {
            let tap = Tap::new(
                Some(&capture),
                &format!("d{i}"),
                "app",
                &Method::GET,
                "/big",
            )
            .with_budget(&budget);
            tap.response_head(StatusCode::OK, &HeaderMap::new());
            for _ in 0..16 {
                tap.response_chunk(&chunk);
            }
            tap
        })
        .collect();
    assert_eq!(
        budget.used(),
        TAP_BUDGET,
        "held prefixes stop at the budget"
    );
    drop(taps);
    assert_eq!(budget.used(), 0, "finished exchanges give their bytes back");
    capture.close();
}

#[test]
fn retention_keeps_the_newest_across_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let capture = Capture::start(config(1024, 3), &store).expect("starts");
    for i in 0..5 {
        exchange(&capture, &format!("r{i}"), b"x");
    }
    capture.close();
    assert_eq!(ids(&store), ["r4", "r3", "r2"]);

    // A new writer counts what is there before trimming.
    let capture = Capture::start(config(1024, 3), &store).expect("restarts");
    exchange(&capture, "r5", b"x");
    capture.close();
    assert_eq!(ids(&store), ["r5", "r4", "r3"]);
    assert_eq!(capture.dropped(), 0);
}

#[test]
fn bodies_past_the_limit_are_cut_and_flagged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let capture = Capture::start(config(4, 10), &store).expect("starts");
    exchange(&capture, "big", b"hello world");
    // The visitor left mid-response: the response body is incomplete.
    let tap = Tap::new(Some(&capture), "gone", "app", &Method::GET, "/");
    tap.request_complete();
    tap.response_head(StatusCode::OK, &HeaderMap::new());
    tap.response_chunk(b"ab");
    drop(tap);
    capture.close();

    let big = store.get_capture("app", "big").expect("get").expect("kept");
    assert_eq!(big.request.body, b"hell");
    assert_eq!(
        (big.request.body_size, big.request.body_truncated),
        (11, true)
    );
    let response = big.response.expect("response");
    assert_eq!(
        (response.body.as_slice(), response.body_truncated),
        (&b"ok"[..], false)
    );

    let gone = store
        .get_capture("app", "gone")
        .expect("get")
        .expect("kept");
    assert_eq!(gone.summary.outcome, Outcome::VisitorGone);
    assert!(!gone.request.body_truncated, "an empty, complete request");
    assert!(gone.response.expect("response").body_truncated);
}

#[test]
fn a_burst_larger_than_retention_keeps_the_newest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let capture = Capture::start(config(64, 10), &store).expect("starts");
    for i in 0..500 {
        exchange(&capture, &format!("r{i:03}"), b"x");
    }
    capture.close();
    let kept = ids(&store);
    assert_eq!(kept.len(), 10);
    assert_eq!(kept[0], "r499");
    assert_eq!(kept[9], "r490");
    assert_eq!(capture.dropped(), 0, "retired, not lost");
}

#[test]
fn a_public_error_is_recorded_as_the_response() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let capture = Capture::start(config(1024, 10), &store).expect("starts");
    let tap = Tap::new(Some(&capture), "off", "app", &Method::POST, "/graphql");
    tap.request_chunk(b"{}");
    tap.request_complete();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("value"),
    );
    let body = Bytes::from_static(b"{\"error\":\"tunnel_offline\"}");
    tap.public_response(StatusCode::SERVICE_UNAVAILABLE, &headers, &body);
    tap.finish(Outcome::Offline);
    capture.close();
    let rec = store.get_capture("app", "off").expect("get").expect("kept");
    assert_eq!(
        (rec.summary.status, rec.summary.outcome.as_str()),
        (Some(503), "offline")
    );
    assert_eq!(rec.request.body, b"{}");
    let response = rec.response.expect("the 503 is kept");
    assert_eq!(
        response.headers,
        [("content-type".to_owned(), "application/json".to_owned())]
    );
    assert_eq!(response.body, body.as_ref());
    assert!(!response.body_truncated);
}

#[test]
fn capture_off_stores_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let off = CaptureConfig {
        enabled: false,
        ..CaptureConfig::default()
    };
    let capture = Capture::start(off, &store).expect("starts");
    let tap = Tap::new(Some(&capture), "x", "app", &Method::GET, "/");
    assert!(!tap.capturing());
    tap.finish(Outcome::Delivered);
    capture.close();
    assert!(ids(&store).is_empty());
}

/// An offline answer as the proxy records it, waiting for the commit.
async fn offline_exchange(capture: &Arc<Capture>, id: &str) -> Option<anyhow::Result<()>> {
    let tap = Tap::new(Some(capture), id, "app", &Method::POST, "/hook");
    tap.request_head(&HeaderMap::new());
    tap.request_chunk(b"{}");
    tap.request_complete();
    tap.public_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &HeaderMap::new(),
        &Bytes::from_static(b"{}"),
    );
    tap.finish_committed(Outcome::Offline).await
}

#[tokio::test]
async fn a_committed_capture_is_readable_by_another_connection_when_the_wait_ends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let capture = Capture::start(config(1024, 100), &store).expect("starts");
    for i in 0..20 {
        let id = format!("o{i}");
        let committed = offline_exchange(&capture, &id).await;
        assert!(matches!(committed, Some(Ok(()))), "{committed:?}");
        let row = store
            .get_capture("app", &id)
            .expect("read")
            .expect("stored");
        assert_eq!(
            row.summary.delivery,
            Some(relay_shared::api::Delivery::Missed)
        );
    }
    capture.close();
}

#[tokio::test]
async fn a_flush_waits_for_captures_queued_before_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let capture = Capture::start(config(1024, 1000), &store).expect("starts");
    for round in 0..20 {
        let id = format!("d{round}");
        exchange(&capture, &id, b"{}");
        capture.flush().await;
        assert!(
            store.get_capture("app", &id).expect("read").is_some(),
            "round {round}: the flush returned before {id} was stored"
        );
    }
    capture.close();
}

#[tokio::test]
async fn coalescing_never_retires_a_missed_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let capture = Capture::start(config(1024, 5), &store).expect("starts");
    // Missed requests among a burst of delivered exchanges, in the writer's
    // pending batches, where coalescing retires all but the newest
    // `retain` of a tunnel.
    for i in 0..100 {
        exchange(&capture, &format!("d{i}"), b"{}");
    }
    for i in 0..3 {
        let committed = offline_exchange(&capture, &format!("m{i}")).await;
        assert!(matches!(committed, Some(Ok(()))), "{committed:?}");
    }
    for i in 100..200 {
        exchange(&capture, &format!("d{i}"), b"{}");
    }
    capture.flush().await;
    let mut stored = ids(&store);
    stored.sort();
    assert_eq!(stored, ["d198", "d199", "m0", "m1", "m2"]);
    assert_eq!(capture.missed_dropped(), 0);
    capture.close();
}
