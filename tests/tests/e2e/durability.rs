//! The capture guarantees (issue 12; SPEC "Capture and replay",
//! Guarantees): a request answered without the local app is committed
//! before its answer, so a `kill -9` of the server loses none of them; read
//! your writes (`curl ... && relay replay --last` replays *that* request);
//! and missed-request delivery that survives a server crash without
//! delivering anything twice.

use relay_tests::capture_api::{self, TunnelApi};
use relay_tests::cli;
use relay_tests::delivery::{self, check_inbox, send_missed, wait_inbox, Answer};
use relay_tests::Stop;

use super::*;

/// Fails unless every id in `want` is listed after the restart, with
/// `outcome`.
async fn check_listed(api: &TunnelApi, want: &[&str], outcome: &str) -> Result<()> {
    let listed = api.list("limit=1000").await?;
    let missing: Vec<&&str> = want
        .iter()
        .filter(|id| capture_api::find(&listed, id).is_none())
        .collect();
    ensure!(
        missing.is_empty(),
        "{} of the {} requests answered before the kill -9 are not listed after the restart: \
         {missing:?}\nlisted: {:?}",
        missing.len(),
        want.len(),
        capture_api::ids(&listed)
    );
    for id in want {
        let s = capture_api::find(&listed, id).context("listed")?;
        ensure!(s["outcome"] == outcome, "{id} should be {outcome}: {s}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_answers_survive_a_kill_9_of_the_server() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder().name("crash-offline").start().await?;
        let api = TunnelApi::new(&s.server, &s.client.cfg, "crash-offline")?;
        s.go_offline_quietly().await?;
        let sent = send_missed(&s.client, "crash", 20, Answer::Unavailable).await?;
        // At once: each 503 promised its request was on disk.
        s.server.restart(Stop::Kill).await?;

        check_listed(&api, &delivery::ids(&sent), "offline").await?;
        let m = api.missed().await?;
        ensure!(
            m["count"] == sent.len()
                && capture_api::ids(m["requests"].as_array().context("requests")?)
                    == delivery::ids(&sent),
            "all {} wait to be delivered, oldest first: {m}",
            sent.len()
        );
        let rec = api.record(&sent[7].id).await?;
        ensure!(
            capture_api::body_of(&rec["request"])? == sent[7].body,
            "the body survives too: {}",
            rec["request"]
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_answers_survive_a_kill_9_of_the_server() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder()
            .name("crash-413")
            .server(|c| c.max_body = Some("1KiB".into()))
            .start()
            .await?;
        let mut sent = Vec::new();
        for i in 0..5 {
            let req = s
                .client
                .request(Routing::Host, "POST", &format!("/upload?big={i}"))
                .body(PatternBody::new(i, 2048).boxed())?;
            let f = fetch(s.client.public_addr(), req, REQ).await?;
            check_error(&f, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")?;
            sent.push(f.request_id().context("no request id on the 413")?);
        }
        s.server.restart(Stop::Kill).await?;

        let api = TunnelApi::new(&s.server, &s.client.cfg, "crash-413")?;
        let want: Vec<&str> = sent.iter().map(String::as_str).collect();
        check_listed(&api, &want, "body_too_large").await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_listed_as_soon_as_its_visitor_has_the_answer_50_times() -> Result<()> {
    run_test(secs(120), async {
        let mut s = Stack::builder().name("ryw").start().await?;
        let cfg = &s.client.cfg.clone();
        let api = TunnelApi::new(&s.server, cfg, "ryw")?;
        for i in 0..50 {
            let pq = format!("/echo?ryw={i}");
            let req = s
                .client
                .request(Routing::Host, "POST", &pq)
                .body(full("x"))?;
            let id = visit_ok(&s.client, req).await?;
            let ctx = || format!("round {i}: {id} for POST {pq}");

            // At once, with no wait: even rounds `relay replay --last`,
            // odd ones `relay requests --json --limit 1`.
            if i % 2 == 0 {
                let out = cli::relay(cfg, "replay", &["--last", "--json"], CLI).await?;
                out.ensure_success().with_context(ctx)?;
                let r = out.json()?;
                ensure!(
                    r["replay_of"] == id.as_str(),
                    "{}: `relay replay --last` replayed {} instead",
                    ctx(),
                    r["replay_of"]
                );
            } else {
                let out = cli::relay(cfg, "requests", &["--json", "--limit", "1"], CLI).await?;
                out.ensure_success().with_context(ctx)?;
                let newest = capture_api::ids(&out.json_lines()?);
                ensure!(
                    newest == [id.clone()],
                    "{}: `relay requests --json --limit 1` listed {newest:?}",
                    ctx()
                );
            }
        }

        // The same for requests answered without the app.
        s.go_offline_quietly().await?;
        for i in 0..10 {
            let f = delivery::post(&s.client, &format!("/inbox?ryw-offline={i}"), vec![]).await?;
            let id = delivery::check_offline(&f)?;
            let newest = capture_api::ids(&api.list("limit=1&kind=visitor").await?);
            ensure!(
                newest == [id.clone()],
                "offline round {i}: the API's newest visitor request is {newest:?}, not {id}"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_means_the_visitors_newest_request_never_a_replay() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("last-visitor").start().await?;
        let cfg = &s.client.cfg;
        let req = s
            .client
            .request(Routing::Host, "POST", "/echo?visitor=1")
            .body(full("from a visitor"))?;
        let id = visit_ok(&s.client, req).await?;

        let mut replays = Vec::new();
        for round in 0..2 {
            let out = cli::relay(cfg, "replay", &["--last", "--json"], CLI).await?;
            out.ensure_success()?;
            let r = out.json()?;
            let replay_id = check_replay_result(&r, &id, Some(200), "delivered")?;
            ensure!(
                !replays.contains(&replay_id),
                "round {round}: a new record each time: {r}"
            );
            replays.push(replay_id);
        }

        // The newest capture is the second replay's record, but the newest
        // visitor request is still the visitor's.
        let api = TunnelApi::new(&s.server, cfg, "last-visitor")?;
        let newest = capture_api::ids(&api.list("limit=1").await?);
        ensure!(
            newest == [replays[1].clone()],
            "the newest capture is the last replay's record: {newest:?}"
        );
        let visitor = capture_api::ids(&api.list("limit=1&kind=visitor").await?);
        ensure!(
            visitor == [id.clone()],
            "kind=visitor: {visitor:?}, expected {id}"
        );
        let replay_kind = capture_api::ids(&api.list("limit=10&kind=replay").await?);
        ensure!(
            replay_kind == [replays[1].clone(), replays[0].clone()],
            "kind=replay lists the two replays, newest first: {replay_kind:?}"
        );
        ensure!(
            count(&s.origin, "/echo?visitor=1") == 3,
            "the app got the visit and two replays of it: {:?}",
            s.origin.requests()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_survives_kill_9_of_the_server_without_delivering_twice() -> Result<()> {
    run_test(secs(120), async {
        let mut s = Stack::builder()
            .name("crash-deliver")
            .when_offline("accept")
            .deliver_missed()
            .start()
            .await?;
        let cfg = s.client.cfg.clone();
        let api = TunnelApi::new(&s.server, &cfg, "crash-deliver")?;
        s.go_offline_quietly().await?;
        let sent = send_missed(&s.client, "crash", 5, Answer::Accept).await?;
        // Each 202 promised its request was kept.
        s.server.restart(Stop::Kill).await?;
        let m = api.missed().await?;
        ensure!(
            m["count"] == sent.len(),
            "all {} queued requests wait after the crash: {m}",
            sent.len()
        );

        // The client is back while the app refuses the 3rd: the 1st and
        // 2nd are delivered, the 3rd fails, the rest wait.
        s.origin.fail(&sent[2].path);
        s.client = RelayClient::connect(cfg.clone()).await?;
        let ids = delivery::ids(&sent);
        api.wait_summaries(
            "the 1st and 2nd delivered, the 3rd failed",
            capture_api::DELIVERED,
            &ids,
            |l| {
                l[0]["delivery"] == "delivered"
                    && l[1]["delivery"] == "delivered"
                    && l[2]["delivery"] == "failed"
            },
        )
        .await?;
        check_inbox(&s.origin, &sent[..2])?;

        // Crash again at once: the two deliveries must not be forgotten.
        s.origin.heal(&sent[2].path);
        s.server.restart(Stop::Kill).await?;
        // The client reconnects by itself and delivers the rest.
        s.client
            .wait_connected(secs(45))
            .await
            .context("the client's reconnect after the crash")?;
        wait_inbox(&s.origin, sent.len(), capture_api::DELIVERED).await?;
        api.wait_delivered(&ids).await?;
        check_inbox(&s.origin, &sent)?;
        let seen: Vec<String> = s
            .origin
            .requests()
            .into_iter()
            .filter(|p| p.starts_with("/inbox"))
            .collect();
        let want: Vec<&str> = [0, 1, 2, 2, 3, 4]
            .iter()
            .map(|&i| sent[i].path.as_str())
            .collect();
        ensure!(
            seen == want,
            "the app should see 1, 2, 3 (refused), 3, 4, 5 and nothing twice: {seen:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_spares_waiting_missed_requests_unless_they_alone_are_over_retain() -> Result<()>
{
    run_test(secs(60), async {
        let mut s = Stack::builder()
            .name("retain-missed")
            .server(|c| c.extra_args = vec!["--retain".into(), "3".into()])
            .start()
            .await?;
        let cfg = s.client.cfg.clone();
        let api = TunnelApi::new(&s.server, &cfg, "retain-missed")?;
        s.go_offline_quietly().await?;
        let mut missed = send_missed(&s.client, "kept", 2, Answer::Unavailable).await?;

        // Six delivered exchanges on a tunnel that keeps 3: the oldest go,
        // the two waiting missed requests stay.
        s.client = RelayClient::connect(cfg.clone()).await?;
        let mut live = Vec::new();
        for i in 0..6 {
            let req = s
                .client
                .request(Routing::Host, "GET", &format!("/echo?live={i}"))
                .body(empty())?;
            live.push(visit_ok(&s.client, req).await?);
        }
        let listed = api.list("limit=1000").await?;
        ensure!(
            capture_api::find(&listed, &live[0]).is_none(),
            "retention should have deleted the oldest delivered exchange: {:?}",
            capture_api::ids(&listed)
        );
        let m = api.missed().await?;
        ensure!(
            m["count"] == 2
                && capture_api::ids(m["requests"].as_array().context("requests")?)
                    == delivery::ids(&missed),
            "retention deleted missed requests that still wait: {m}"
        );

        // Five waiting on a tunnel that keeps 3: the two oldest go, counted.
        s.go_offline_quietly().await?;
        missed.extend(send_missed(&s.client, "over", 3, Answer::Unavailable).await?);
        let m = api.missed().await?;
        let newest: Vec<&str> = delivery::ids(&missed)[2..].to_vec();
        ensure!(
            m["count"] == 3
                && capture_api::ids(m["requests"].as_array().context("requests")?) == newest,
            "with 5 waiting and --retain 3 the newest 3 should wait ({newest:?}): {m}"
        );
        let health =
            capture_api::get_json(&s.server, "/_relay/health", capture_api::Auth::None).await?;
        ensure!(
            health["missed_dropped"] == 2,
            "two undelivered missed requests were deleted, and counted: {health}"
        );
        Ok(())
    })
    .await
}
