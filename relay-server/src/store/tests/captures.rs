//! Captures and missed requests, on both engines.

use super::*;

on_both!(
    lists_newest_first_with_filters_and_cursor_and_reads_back_in_full,
    claims_go_oldest_first_one_deliverer_at_a_time_and_settle_once,
    retention_spares_waiting_missed_requests_unless_they_alone_exceed_it,
    listing_visitors_only_leaves_replays_out,
    a_replays_diff_is_kept_with_its_full_record_only,
    the_deadline_and_fault_marks_are_stored_and_listed,
    a_summary_is_found_by_id_alone,
);

fn lists_newest_first_with_filters_and_cursor_and_reads_back_in_full(db: &Db) {
    let s = db.open();
    {
        insert(&s, capture("a1", "app", "POST", "/hook?x=1", 200)).expect("insert");
        insert(&s, capture("a2", "app", "GET", "/other", 404)).expect("insert");
        insert(&s, capture("a3", "app", "POST", "/hook", 503)).expect("insert");
        insert(&s, capture("b1", "other", "POST", "/hook", 200)).expect("insert");
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

fn claims_go_oldest_first_one_deliverer_at_a_time_and_settle_once(db: &Db) {
    let s = db.open();
    let now = 1_764_000_000_000;
    {
        for (i, id) in ["m1", "m2", "m3"].iter().enumerate() {
            insert(&s, offline(id, now - 3_000 + i as i64 * 1000)).expect("insert");
        }
        insert(&s, capture("d1", "app", "GET", "/", 200)).expect("insert");
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

fn retention_spares_waiting_missed_requests_unless_they_alone_exceed_it(db: &Db) {
    let s = db.open();
    let mut writer = s.capture_writer().expect("writer");
    let mut batch: Vec<NewCapture> = (0..3).map(|i| offline(&format!("m{i}"), i)).collect();
    batch.extend((0..4).map(|i| capture(&format!("d{i}"), "app", "GET", "/", 200)));
    let undelivered = writer
        .write(&batch.iter().collect::<Vec<_>>(), false, 4)
        .expect("write");
    assert_eq!(undelivered, 0);
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
    let undelivered = writer
        .write(&[&capture("d4", "app", "GET", "/", 200)], true, 2)
        .expect("write");
    assert_eq!(
        undelivered, 1,
        "three waiting requests over a retention of two: the oldest goes, counted"
    );
    assert_eq!(ids(&s), ["m2", "m1"]);
}

fn listing_visitors_only_leaves_replays_out(db: &Db) {
    let s = db.open();
    {
        insert(&s, capture("v1", "app", "POST", "/hook", 200)).expect("insert");
        let replay = NewCapture {
            replay_of: Some("v1".into()),
            ..capture("r1", "app", "POST", "/hook", 200)
        };
        insert(&s, replay).expect("insert");
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

fn a_replays_diff_is_kept_with_its_full_record_only(db: &Db) {
    let s = db.open();
    let diff = relay_shared::api::ResponseDiff {
        status: Some(relay_shared::api::StatusChange {
            before: Some(200),
            after: Some(500),
        }),
        ..Default::default()
    };
    {
        insert(&s, capture("v1", "app", "POST", "/hook", 200)).expect("insert");
        let replay = NewCapture {
            replay_of: Some("v1".into()),
            diff: Some(serde_json::to_string(&diff).expect("serialises")),
            ..capture("r1", "app", "POST", "/hook", 200)
        };
        insert(&s, replay).expect("insert");
        let unreadable = NewCapture {
            replay_of: Some("v1".into()),
            diff: Some("{not json".into()),
            ..capture("r2", "app", "POST", "/hook", 200)
        };
        insert(&s, unreadable).expect("insert");
    }
    let get = |id| s.get_capture("app", id).expect("get").expect("stored");
    assert_eq!(get("r1").diff, Some(diff));
    assert_eq!(get("v1").diff, None);
    assert_eq!(get("r2").diff, None, "left out, the record still read");
}

fn the_deadline_and_fault_marks_are_stored_and_listed(db: &Db) {
    let s = db.open();
    {
        let slow = NewCapture {
            deadline_exceeded_ms: Some(10_000),
            fault: Some("delay=12s".into()),
            ..capture("m1", "app", "POST", "/hook", 200)
        };
        insert(&s, slow).expect("insert");
        insert(&s, capture("m2", "app", "POST", "/hook", 200)).expect("insert");
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

fn a_summary_is_found_by_id_alone(db: &Db) {
    let s = db.open();
    insert(&s, offline("m1", 5)).expect("insert");
    let found = s.summary_by_id("m1").expect("query").expect("found");
    assert_eq!(
        (found.tunnel.as_str(), found.delivery),
        ("app", Some(Delivery::Missed))
    );
    assert_eq!(s.summary_by_id("nope").expect("query"), None);
}
