//! Missed requests (issue 12; SPEC "Capture and replay", Missed requests):
//! what an offline tunnel answers (`--when-offline reject|accept`), the
//! count `relay connect` prints, and delivery (`relay connect
//! --deliver-missed`, `relay replay --missed`): each missed request reaches
//! the local app once, in arrival order, across client runs, with several
//! deliverers racing, and stopping at the first the app refuses.
//!
//! The local app is the origin's `/inbox`, which keeps each request it takes
//! in (method, path, headers, body); the delivery states are read from the
//! server's API (docs/api.md "Delivering missed requests").

use relay_tests::capture_api::{self, TunnelApi};
use relay_tests::cli;
use relay_tests::delivery::{self, check_inbox, send_missed, wait_inbox, Answer, Missed};
use relay_tests::Stop;

use super::*;

/// A delivery of a few requests, the client's start included.
const DELIVERY: Duration = Duration::from_secs(30);

/// Starts `relay connect --deliver-missed` with `cfg`'s other settings and
/// waits for its banner.
async fn connect_delivering(cfg: &ClientConfig) -> Result<RelayClient> {
    RelayClient::connect(cfg.clone().deliver_missed()).await
}

/// The replay records linked to `original` (newest first).
async fn replays_of(api: &TunnelApi, original: &str) -> Result<Vec<serde_json::Value>> {
    Ok(api
        .list("limit=1000&kind=replay")
        .await?
        .into_iter()
        .filter(|r| r["replay_of"] == original)
        .collect())
}

/// Checks that each of `delivered` is `delivered` by a replay record that
/// names it as `replay_of` and answered below 500.
async fn check_delivered_by(api: &TunnelApi, delivered: &[Missed]) -> Result<()> {
    let summaries = api.wait_delivered(&delivery::ids(delivered)).await?;
    for (m, s) in delivered.iter().zip(&summaries) {
        let by = s["delivered_by"]
            .as_str()
            .with_context(|| format!("a delivered request names no `delivered_by`: {s}"))?;
        let replay = api.summary(by).await?;
        ensure!(
            replay["replay_of"] == m.id.as_str()
                && replay["status"].as_u64().is_some_and(|st| st < 500),
            "{}'s delivered_by {by} should be a replay of it that the app answered below 500: {replay}",
            m.id
        );
        ensure!(
            s["outcome"] == "offline" && s["delivery_error"].is_null(),
            "a delivered missed request: {s}"
        );
    }
    Ok(())
}

/// Fails unless the tunnel has no missed request waiting.
async fn check_none_waiting(api: &TunnelApi) -> Result<()> {
    let m = api.missed().await?;
    ensure!(
        m["count"] == 0 && m["oldest"].is_null() && m["requests"] == serde_json::json!([]),
        "nothing should wait any more: {m}"
    );
    let listed = api.list("limit=1000&missed=1").await?;
    ensure!(
        listed.is_empty(),
        "`missed=1` should list nothing: {listed:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_answers_202_queued_and_deliver_missed_brings_the_request_byte_for_byte(
) -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder()
            .name("accept-202")
            .when_offline("accept")
            .start()
            .await?;
        s.go_offline_quietly().await?;

        let sent = send_missed(&s.client, "queued", 1, Answer::Accept).await?;
        let id = &sent[0].id;
        let api = TunnelApi::new(&s.server, &s.client.cfg, "accept-202")?;
        // Read your writes: listed as soon as the visitor has its answer.
        let sum = api.summary(id).await?;
        ensure!(
            sum["outcome"] == "offline" && sum["status"] == 202 && sum["delivery"] == "missed",
            "a queued request waits as a missed request: {sum}"
        );
        let m = api.missed().await?;
        ensure!(
            m["count"] == 1 && m["requests"][0]["id"] == id.as_str() && m["oldest"] == sum["time"],
            "GET .../missed: {m}"
        );
        ensure!(
            s.origin.requests().is_empty(),
            "nothing reaches the app while the client is away: {:?}",
            s.origin.requests()
        );

        s.client = connect_delivering(&s.client.cfg).await?;
        wait_inbox(&s.origin, 1, DELIVERY).await?;
        check_delivered_by(&api, &sent).await?;
        check_inbox(&s.origin, &sent)?;
        check_none_waiting(&api).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_answers_503_with_retry_after_and_each_connect_sets_the_answer() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder().name("reject-503").start().await?;
        let cfg = s.client.cfg.clone();
        let mut sent = Vec::new();

        // The default is reject.
        s.go_offline_quietly().await?;
        sent.extend(send_missed(&s.client, "default", 1, Answer::Reject).await?);

        // The server keeps what the latest connect said.
        s.client = RelayClient::connect(cfg.clone().when_offline("accept")).await?;
        s.go_offline_quietly().await?;
        sent.extend(send_missed(&s.client, "accept", 1, Answer::Accept).await?);

        s.client = RelayClient::connect(cfg.clone().when_offline("reject")).await?;
        s.go_offline_quietly().await?;
        sent.extend(send_missed(&s.client, "reject", 1, Answer::Reject).await?);

        // Either way the request is captured and waits to be delivered.
        let api = TunnelApi::new(&s.server, &cfg, "reject-503")?;
        let m = api.missed().await?;
        let waiting = capture_api::ids(m["requests"].as_array().context("requests")?);
        ensure!(
            m["count"] == 3 && waiting == delivery::ids(&sent),
            "all three wait, oldest first ({:?}): {m}",
            delivery::ids(&sent)
        );
        for w in m["requests"].as_array().context("requests")? {
            ensure!(
                w["outcome"] == "offline" && w["delivery"] == "missed",
                "a missed request: {w}"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_says_how_many_requests_were_missed_and_delivers_none_by_itself() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder().name("missed-count").start().await?;
        s.go_offline_quietly().await?;
        let sent = send_missed(&s.client, "count", 3, Answer::Unavailable).await?;

        s.client = RelayClient::connect(s.client.cfg.clone()).await?;
        let line = s
            .client
            .proc
            .wait_line("the missed-requests line", secs(15), |l| {
                l.contains("arrived while you were offline")
            })
            .await?;
        ensure!(
            line.starts_with("3 requests arrived while you were offline (oldest ")
                && line.ends_with("relay replay --missed"),
            "SPEC: `3 requests arrived while you were offline (oldest 2h ago): relay replay \
             --missed`; the client printed {line:?}"
        );

        // Without --deliver-missed nothing is delivered: a live request
        // goes through, and the missed ones are still waiting.
        echo_ok(&s.client, Routing::Host).await?;
        ensure!(
            s.origin.inbox().is_empty(),
            "delivered without --deliver-missed: {:?}",
            s.origin.inbox_paths()
        );
        let api = TunnelApi::new(&s.server, &s.client.cfg, "missed-count")?;
        ensure!(
            api.missed().await?["count"] == sent.len(),
            "the three still wait"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_missed_across_two_client_runs_delivers_each_once_in_order() -> Result<()> {
    run_test(secs(90), async {
        let mut s = Stack::builder().name("two-runs").start().await?;
        let cfg = s.client.cfg.clone();
        let api = TunnelApi::new(&s.server, &cfg, "two-runs")?;

        // Run 1 delivers what waited when it connected.
        s.go_offline_quietly().await?;
        let mut sent = send_missed(&s.client, "run1", 3, Answer::Unavailable).await?;
        s.client = connect_delivering(&cfg).await?;
        wait_inbox(&s.origin, 3, DELIVERY).await?;
        check_delivered_by(&api, &sent).await?;

        // Run 1 stops; more arrive; run 2 delivers those, and only those.
        s.go_offline_quietly().await?;
        let second = send_missed(&s.client, "run2", 3, Answer::Unavailable).await?;
        let m = api.missed().await?;
        ensure!(
            m["count"] == 3
                && capture_api::ids(m["requests"].as_array().context("requests")?)
                    == delivery::ids(&second),
            "only the second batch waits: {m}"
        );
        sent.extend(second);
        s.client = connect_delivering(&cfg).await?;
        wait_inbox(&s.origin, 6, DELIVERY).await?;
        check_delivered_by(&api, &sent).await?;
        check_none_waiting(&api).await?;
        check_inbox(&s.origin, &sent)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stopped_mid_delivery_finishes_that_one_and_the_next_run_delivers_the_rest(
) -> Result<()> {
    run_test(secs(90), async {
        let mut s = Stack::builder().name("stopped-mid").start().await?;
        let cfg = s.client.cfg.clone();
        s.go_offline_quietly().await?;
        // The first is one the app holds until the test releases it.
        let path = "/hold?key=mid";
        let f = delivery::post(&s.client, path, b"held".to_vec()).await?;
        let held = Missed {
            id: delivery::check_offline(&f)?,
            path: path.to_string(),
            body: b"held".to_vec(),
        };
        let rest = send_missed(&s.client, "rest", 3, Answer::Unavailable).await?;
        let api = TunnelApi::new(&s.server, &cfg, "stopped-mid")?;

        // Run 1 is stopped (SIGTERM) while the app holds its first delivery.
        s.client = connect_delivering(&cfg).await?;
        s.origin
            .wait_request("the held delivery", DELIVERY, |p| p == path)
            .await?;
        s.client.proc.signal("TERM")?;
        s.origin.release("mid");
        s.client
            .proc
            .wait_exit(secs(20))
            .await
            .context("relay connect after SIGTERM mid-delivery")?;
        // The delivery under way was finished and recorded, not abandoned
        // under a live claim.
        check_delivered_by(&api, std::slice::from_ref(&held)).await?;

        // Run 2 delivers the rest (whatever run 1 did not), each once.
        s.client = connect_delivering(&cfg).await?;
        wait_inbox(&s.origin, rest.len(), DELIVERY).await?;
        check_delivered_by(&api, &rest).await?;
        check_none_waiting(&api).await?;
        check_inbox(&s.origin, &rest)?;
        ensure!(
            count(&s.origin, path) == 1,
            "the held request reached the app {} times: {:?}",
            count(&s.origin, path),
            s.origin.requests()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_missed_stopped_mid_delivery_records_that_one_and_frees_the_rest_at_once(
) -> Result<()> {
    run_test(secs(90), async {
        let mut s = Stack::builder().name("replay-stop").start().await?;
        let cfg = s.client.cfg.clone();
        s.go_offline_quietly().await?;
        let path = "/hold?key=rs";
        let f = delivery::post(&s.client, path, b"held".to_vec()).await?;
        let held = Missed {
            id: delivery::check_offline(&f)?,
            path: path.to_string(),
            body: b"held".to_vec(),
        };
        let rest = send_missed(&s.client, "rs-rest", 2, Answer::Unavailable).await?;
        let api = TunnelApi::new(&s.server, &cfg, "replay-stop")?;

        // A `relay replay --missed` gets SIGTERM while the app holds its
        // first delivery.
        let cmd = cli::command(&cfg, cli::Tunnel::Flags, "replay", &["--missed"]);
        let mut run = relay_tests::process::Proc::spawn("relay replay --missed", cmd)?;
        s.origin
            .wait_request("the held delivery", DELIVERY, |p| p == path)
            .await?;
        run.signal("TERM")?;
        run.wait_stderr_line("the stop notice", secs(10), |l| {
            l.contains("stopping after the request being delivered")
        })
        .await?;
        s.origin.release("rs");
        let status = run.wait_exit(secs(20)).await?;
        ensure!(!status.success(), "a stopped run exits non-zero: {status}");
        // The request under way was finished and recorded, so its claim
        // ended: a second run starts at once (no 409 for the lease).
        check_delivered_by(&api, std::slice::from_ref(&held)).await?;
        ensure!(
            rest.iter().all(|m| count(&s.origin, &m.path) == 0),
            "the run went on after the stop: {:?}",
            s.origin.requests()
        );
        let again = cli::relay(&cfg, "replay", &["--missed"], DELIVERY).await?;
        again.ensure_success()?;
        check_delivered_by(&api, &rest).await?;
        check_none_waiting(&api).await?;
        ensure!(
            count(&s.origin, path) == 1,
            "the held request reached the app {} times",
            count(&s.origin, path)
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_is_kept_across_a_server_restart() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder()
            .name("accept-kept")
            .when_offline("accept")
            .start()
            .await?;
        s.go_offline_quietly().await?;
        // A server restarted (a deploy) while the laptop is closed.
        s.server.restart(Stop::Term).await?;
        let sent = send_missed(&s.client, "restarted", 1, Answer::Accept)
            .await
            .context("the tunnel's --when-offline accept after a server restart")?;
        let api = TunnelApi::new(&s.server, &s.client.cfg, "accept-kept")?;
        ensure!(
            api.summary(&sent[0].id).await?["delivery"] == "missed",
            "queued after the restart, and waiting"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_deliverers_deliver_each_missed_request_once_in_order() -> Result<()> {
    run_test(secs(90), async {
        let mut s = Stack::builder().name("racers").start().await?;
        let cfg = s.client.cfg.clone();
        s.go_offline_quietly().await?;
        let sent = send_missed(&s.client, "race", 8, Answer::Unavailable).await?;

        // Three deliverers for one tunnel at once: a `relay connect
        // --deliver-missed` and two `relay replay --missed`.
        let (client, first, second) = tokio::join!(
            connect_delivering(&cfg),
            cli::relay(&cfg, "replay", &["--missed"], CLI),
            cli::relay(&cfg, "replay", &["--missed"], CLI),
        );
        s.client = client?;
        for out in [first?, second?] {
            ensure!(
                !out.stderr.contains("panicked"),
                "`relay replay --missed` panicked:\n{}",
                out.dump()
            );
        }

        let api = TunnelApi::new(&s.server, &cfg, "racers")?;
        wait_inbox(&s.origin, sent.len(), DELIVERY).await?;
        check_delivered_by(&api, &sent).await?;
        check_none_waiting(&api).await?;
        check_inbox(&s.origin, &sent)?;
        // One successful replay each: a loser of the race records none.
        for m in &sent {
            let replays = replays_of(&api, &m.id).await?;
            ensure!(
                replays.len() == 1,
                "{} should have been replayed once, it has {} replay records: {replays:?}",
                m.id,
                replays.len()
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_stops_at_the_first_refusal_keeps_the_states_and_the_next_run_resumes(
) -> Result<()> {
    run_test(secs(90), async {
        let mut s = Stack::builder().name("refused").start().await?;
        let cfg = s.client.cfg.clone();
        s.go_offline_quietly().await?;
        let sent = send_missed(&s.client, "refuse", 3, Answer::Unavailable).await?;
        let api = TunnelApi::new(&s.server, &cfg, "refused")?;

        // The app answers 500 to the 2nd: `relay replay --missed` delivers
        // the 1st, fails the 2nd, and stops there.
        s.origin.fail(&sent[1].path);
        let out = cli::relay(&cfg, "replay", &["--missed"], CLI).await?;
        let inbox_requests = |origin: &Origin| -> Vec<String> {
            origin
                .requests()
                .into_iter()
                .filter(|p| p.starts_with("/inbox"))
                .collect()
        };
        ensure!(
            inbox_requests(&s.origin) == [sent[0].path.clone(), sent[1].path.clone()],
            "the app should see the 1st, then the 2nd (answered 500), and not the 3rd: {:?}\n{}",
            s.origin.requests(),
            out.dump()
        );
        check_inbox(&s.origin, &sent[..1])?;

        let states = api
            .wait_summaries(
                "the states after the refusal",
                capture_api::LISTED,
                &delivery::ids(&sent),
                |l| l[1]["delivery"] == "failed",
            )
            .await?;
        check_delivered_by(&api, &sent[..1]).await?;
        ensure!(
            states[1]["delivery_error"]
                .as_str()
                .is_some_and(|e| !e.is_empty())
                && states[1]["delivered_by"].is_null(),
            "the refused one is `failed` with its error: {}",
            states[1]
        );
        ensure!(
            states[2]["delivery"] == "missed"
                && states[2]["delivered_by"].is_null()
                && states[2]["delivery_error"].is_null(),
            "the one after it was never tried: {}",
            states[2]
        );
        let failed_replays = replays_of(&api, &sent[1].id).await?;
        ensure!(
            failed_replays.len() == 1 && failed_replays[0]["status"] == 500,
            "the failed attempt is recorded as a replay answered 500: {failed_replays:?}"
        );

        // What is left, as the API and `relay requests --missed` show it.
        let m = api.missed().await?;
        ensure!(
            m["count"] == 2
                && capture_api::ids(m["requests"].as_array().context("requests")?)
                    == [sent[1].id.clone(), sent[2].id.clone()]
                && m["oldest"] == states[1]["time"],
            "the 2nd and 3rd wait, the 2nd first: {m}"
        );
        let listed = capture_api::list(&cfg, &["--missed"]).await?;
        ensure!(
            capture_api::ids(&listed) == [sent[2].id.clone(), sent[1].id.clone()],
            "`relay requests --missed --json` lists the waiting ones, newest first: {listed:?}"
        );

        // The app is fixed; the next run starts with the 2nd.
        s.origin.heal(&sent[1].path);
        s.client = connect_delivering(&cfg).await?;
        wait_inbox(&s.origin, 3, DELIVERY).await?;
        check_delivered_by(&api, &sent).await?;
        check_none_waiting(&api).await?;
        check_inbox(&s.origin, &sent)?;
        ensure!(
            inbox_requests(&s.origin)
                == [
                    sent[0].path.clone(),
                    sent[1].path.clone(),
                    sent[1].path.clone(),
                    sent[2].path.clone()
                ],
            "the second run resumes at the 2nd: {:?}",
            s.origin.requests()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_missed_leaves_the_delivery_visible_in_the_api() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder().name("replay-missed").start().await?;
        let cfg = s.client.cfg.clone();
        s.go_offline_quietly().await?;
        let sent = send_missed(&s.client, "by-hand", 2, Answer::Unavailable).await?;

        // By hand, with no client running: the target of the last connect.
        let out = cli::relay(&cfg, "replay", &["--missed"], CLI).await?;
        out.ensure_success()?;
        check_inbox(&s.origin, &sent)?;

        // Stored before `relay replay` got its answers: no wait.
        let api = TunnelApi::new(&s.server, &cfg, "replay-missed")?;
        for m in &sent {
            let sum = api.summary(&m.id).await?;
            let replays = replays_of(&api, &m.id).await?;
            ensure!(
                replays.len() == 1,
                "one replay of {}: {replays:?}",
                m.id
            );
            ensure!(
                sum["delivery"] == "delivered"
                    && sum["delivered_by"] == replays[0]["id"]
                    && sum["delivery_error"].is_null()
                    && sum["outcome"] == "offline"
                    && sum["status"] == 503,
                "after `relay replay --missed`, {} is delivered by its replay {}: {sum}",
                m.id,
                replays[0]["id"]
            );
            let rec = api.record(&m.id).await?;
            ensure!(
                rec["delivery"] == "delivered" && rec["delivered_by"] == replays[0]["id"],
                "the full record carries the state too: {}",
                serde_json::json!({"delivery": rec["delivery"], "delivered_by": rec["delivered_by"]})
            );
        }
        check_none_waiting(&api).await?;
        let listed = capture_api::list(&cfg, &["--missed"]).await?;
        ensure!(
            listed.is_empty(),
            "`relay requests --missed` lists nothing: {listed:?}"
        );

        // A second `relay replay --missed` finds nothing to do.
        let out = cli::relay(&cfg, "replay", &["--missed"], CLI).await?;
        out.ensure_success()?;
        ensure!(
            s.origin.inbox().len() == sent.len(),
            "a second run delivered again: {:?}",
            s.origin.inbox_paths()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_not_running_yet_fails_the_first_keeps_the_rest_and_replay_missed_delivers_later(
) -> Result<()> {
    run_test(secs(60), async {
        let dead = ReservedPort::new()?;
        let mut s = Stack::builder().name("app-down").start().await?;
        let cfg = s.client.cfg.clone();
        s.go_offline_quietly().await?;
        let sent = send_missed(&s.client, "down", 2, Answer::Unavailable).await?;
        let api = TunnelApi::new(&s.server, &cfg, "app-down")?;

        // The laptop wakes before the app is started: nothing listens.
        let mut down = cfg.clone().deliver_missed();
        down.target = dead.port().to_string();
        s.client = RelayClient::connect(down).await?;
        let states = api
            .wait_summaries(
                "the first failed (connection refused)",
                DELIVERY,
                &delivery::ids(&sent),
                |l| l[0]["delivery"] == "failed",
            )
            .await?;
        ensure!(
            states[0]["delivery_error"]
                .as_str()
                .is_some_and(|e| e.to_ascii_lowercase().contains("refused")),
            "the error should say the app refused the connection: {}",
            states[0]
        );
        ensure!(
            states[1]["delivery"] == "missed",
            "the second was not tried: {}",
            states[1]
        );
        let out = cli::relay(
            &cfg,
            "replay",
            &["--missed", "--to", &dead.port().to_string()],
            CLI,
        )
        .await?;
        out.ensure_failure().context(
            "`relay replay --missed` that delivered nothing should say so by its exit code",
        )?;

        // The app runs now: one `relay replay --missed` delivers both.
        let port = s.origin.port().to_string();
        let out = cli::relay(&cfg, "replay", &["--missed", "--to", &port], CLI).await?;
        out.ensure_success()?;
        check_inbox(&s.origin, &sent)?;
        check_delivered_by(&api, &sent).await?;
        check_none_waiting(&api).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_request_with_a_truncated_body_is_not_delivered_in_part_unless_forced(
) -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder()
            .name("trunc-missed")
            .server(|c| c.extra_args = vec!["--capture-limit".into(), "1KiB".into()])
            .start()
            .await?;
        let cfg = s.client.cfg.clone();
        s.go_offline_quietly().await?;
        let big = Pattern::new(3, 4096).collect();
        let f = delivery::post(&s.client, "/inbox?big=1", big.clone()).await?;
        let big_id = delivery::check_offline(&f)?;
        let after = send_missed(&s.client, "after", 1, Answer::Unavailable).await?;
        let api = TunnelApi::new(&s.server, &cfg, "trunc-missed")?;

        // Only 1 KiB of its 4 KiB body was kept: delivery stops there.
        let out = cli::relay(&cfg, "replay", &["--missed"], CLI).await?;
        out.ensure_failure()?;
        ensure!(
            s.origin.requests().is_empty(),
            "a partial body reached the app: {:?}",
            s.origin.requests()
        );
        let st = api.summary(&big_id).await?;
        ensure!(
            st["delivery"] == "failed"
                && st["delivery_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("truncated")),
            "the truncated one fails, saying why: {st}"
        );
        ensure!(
            api.summary(&after[0].id).await?["delivery"] == "missed",
            "the one after it waits"
        );

        // --force sends the part kept, then the rest.
        let out = cli::relay(&cfg, "replay", &["--missed", "--force"], CLI).await?;
        out.ensure_success()?;
        let inbox = s.origin.inbox();
        ensure!(
            inbox.len() == 2 && inbox[0].body[..] == big[..1024] && inbox[1].path == after[0].path,
            "forced: the kept 1 KiB, then the next: {:?}",
            inbox
                .iter()
                .map(|r| (r.path.as_str(), r.body.len()))
                .collect::<Vec<_>>()
        );
        check_none_waiting(&api).await
    })
    .await
}
