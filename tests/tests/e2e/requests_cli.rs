//! `relay requests` beyond the plain listing (SPEC "Looking at captures"):
//! `show ID` with secrets masked, `--raw` and `--json`; `--follow` from the
//! live event stream; `--missed` with the delivery state; and which tunnel
//! `relay requests` / `relay replay` act for when no `--name` is given
//! (the running `relay connect` of the config, else the last one).
//!
//! Delivery itself (order, once, across restarts and racing clients) is
//! `missed.rs`'s; here a delivery only moves states the listing shows.

use relay_tests::capture_api::{self, body_of, find, ids, list, pair_values, Auth};
use relay_tests::cli::{self, relay, relay_saved, Tunnel};
use relay_tests::process::Proc;

use super::inspector::inspector_url;
use super::*;

/// A JWT-shaped bearer token: masked as `Bearer eyJhbGci… [N chars]`.
const JWT: &str =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg";
const COOKIE_VALUE: &str = "sess-0123456789abcdef";
const API_KEY: &str = "key-live-fedcba9876543210";
/// How long a `relay requests --follow` may take to show a capture.
const FOLLOWED: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_show_masks_secrets_and_prints_raw_and_json() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("show-it").start().await?;
        let cfg = &s.client.cfg;
        let body = r#"{"event":"login","user":{"id":42,"tags":["a","b"]}}"#;
        // Not /echo, whose answer would carry the headers back in its body
        // (bodies are shown as captured): the origin answers 404.
        let req = s
            .client
            .request(Routing::Host, "POST", "/webhook?token=qs-secret-1&n=1")
            .header(CONTENT_TYPE, "application/json")
            .header("authorization", format!("Bearer {JWT}"))
            .header("cookie", format!("session={COOKIE_VALUE}; theme=dark"))
            .header("x-api-key", API_KEY)
            .body(full(body))?;
        let (f, id) = visit(&s.client, req).await?;
        ensure!(
            f.status == StatusCode::NOT_FOUND,
            "the origin's 404: {}",
            f.status
        );
        let binary: Vec<u8> = (0u8..=255).collect();
        let bin_id = visit_ok(
            &s.client,
            s.client
                .request(Routing::Host, "PUT", "/echo?bin=1")
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(full(binary.clone()))?,
        )
        .await?;

        // Human: heads with secrets masked (a prefix and the length), the
        // JSON body pretty-printed, the response after it.
        let out = relay(cfg, "requests", &["show", &id], CLI).await?;
        out.ensure_success()?;
        let text = &out.stdout;
        for secret in [JWT, COOKIE_VALUE, API_KEY, "qs-secret-1"] {
            ensure!(
                !text.contains(secret),
                "`show` printed the secret {secret:?}:\n{text}"
            );
        }
        let want_lines = [
            format!("Request   {id}"),
            "> POST /webhook?token=***&n=1".to_owned(),
            format!("> authorization: Bearer eyJhbGci… [{} chars]", JWT.len()),
            format!(
                "> cookie: session=sess-… [{} chars]; theme=d… [4 chars]",
                COOKIE_VALUE.len()
            ),
            format!("> x-api-key: key-li… [{} chars]", API_KEY.len()),
            "> content-type: application/json".to_owned(),
            "  \"event\": \"login\",".to_owned(),
            "    \"tags\": [".to_owned(),
            format!("[{} bytes, JSON]", body.len()),
            "< 404 Not Found".to_owned(),
        ];
        for want in &want_lines {
            ensure!(
                text.lines().any(|l| l == want),
                "`show` lacks the line {want:?}:\n{text}"
            );
        }

        // Binary bodies are a hex dump.
        let out = relay(cfg, "requests", &["show", &bin_id], CLI).await?;
        out.ensure_success()?;
        ensure!(
            out.stdout.contains(
                "00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  ................"
            ) && out.stdout.contains("00000040  40 41 42 43")
                && out.stdout.contains("[256 bytes, binary]"),
            "the binary body is not a hex dump:\n{}",
            out.stdout
        );

        // --raw: the captured HTTP text, secrets and all.
        let out = relay(cfg, "requests", &["show", &id, "--raw"], CLI).await?;
        out.ensure_success()?;
        let raw = &out.stdout;
        ensure!(
            raw.starts_with("POST /webhook?token=qs-secret-1&n=1 HTTP/1.1\r\n"),
            "--raw should start with the request line: {raw:?}"
        );
        ensure!(
            raw.contains(&format!("\r\nauthorization: Bearer {JWT}\r\n"))
                && raw.contains(&format!("\r\nx-api-key: {API_KEY}\r\n")),
            "--raw should keep the headers as captured: {raw:?}"
        );
        ensure!(
            raw.contains(&format!("\r\n\r\n{body}HTTP/1.1 404 Not Found\r\n")),
            "--raw should have the body then the response: {raw:?}"
        );

        // --json: the full record, as the API has it.
        let out = relay(cfg, "requests", &["show", &id, "--json"], CLI).await?;
        out.ensure_success()?;
        let record = out.json()?;
        ensure!(
            record["id"] == id.as_str() && record["method"] == "POST",
            "--json is not the record: {record}"
        );
        ensure!(
            body_of(&record["request"])? == body.as_bytes(),
            "--json request body: {record}"
        );
        ensure!(
            pair_values(&record["request"]["headers"], "authorization")?
                == [format!("Bearer {JWT}")],
            "--json keeps headers as captured: {record}"
        );

        // A wrong id is an error that says so.
        let out = relay(cfg, "requests", &["show", "01nosuchrequest0000000000"], CLI).await?;
        out.ensure_failure()?;
        ensure!(
            out.stderr.contains("no captured request"),
            "unclear error for an unknown id:\n{}",
            out.dump()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_follow_prints_the_list_then_each_new_capture_until_sigterm() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder().name("follow-me").start().await?;
        let before = visit_ok(
            &s.client,
            s.client
                .request(Routing::Host, "GET", "/echo?n=before")
                .body(empty())?,
        )
        .await?;

        let cmd = cli::command(
            &s.client.cfg,
            Tunnel::Flags,
            "requests",
            &["--follow", "--json"],
        );
        let mut follow = Proc::spawn("relay requests --follow", cmd)?;
        // Printed once the stream is open and the list is out.
        follow
            .wait_stderr_line("the `following` line", FOLLOWED, |l| {
                l.starts_with("following follow-me")
            })
            .await?;
        let first = follow.next_line(FOLLOWED).await?;
        let first: serde_json::Value = serde_json::from_str(&first)
            .with_context(|| format!("--follow --json printed a non-JSON line {first:?}"))?;
        ensure!(
            first["id"] == before.as_str(),
            "the list should come first: {first}"
        );

        // New captures, as they arrive: a delivered one, then an offline one.
        let mut sent = Vec::new();
        for n in 0..2 {
            sent.push(
                visit_ok(
                    &s.client,
                    s.client
                        .request(Routing::Path, "POST", &format!("/echo?n=live-{n}"))
                        .body(full("x"))?,
                )
                .await?,
            );
        }
        for id in &sent {
            let line = follow
                .wait_line(&format!("the followed capture {id}"), FOLLOWED, |l| {
                    l.contains(id.as_str())
                })
                .await?;
            let v: serde_json::Value = serde_json::from_str(&line)?;
            ensure!(
                v["outcome"] == "delivered" && v["method"] == "POST",
                "followed: {v}"
            );
        }
        s.go_offline().await?;
        let (f, offline_id) = visit(
            &s.client,
            s.client
                .request(Routing::Host, "POST", "/echo?n=offline")
                .body(full("y"))?,
        )
        .await?;
        ensure!(
            f.status == StatusCode::SERVICE_UNAVAILABLE,
            "offline: {}",
            f.status
        );
        let line = follow
            .wait_line("the followed offline capture", FOLLOWED, |l| {
                l.contains(offline_id.as_str())
            })
            .await?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        ensure!(
            v["outcome"] == "offline" && v["delivery"] == "missed",
            "followed offline capture: {v}"
        );

        follow.signal("TERM")?;
        let status = follow.wait_exit(secs(10)).await?;
        ensure!(
            status.success(),
            "--follow should exit 0 on SIGTERM: {status}"
        );
        // Each capture once: the list and the stream do not both print one.
        let rest = follow.rest_of_stdout(secs(5)).await?;
        let printed: Vec<&String> = follow.stdout_seen().iter().collect();
        let once = |id: &str| printed.iter().filter(|l| l.contains(id)).count() == 1;
        ensure!(
            once(&before) && sent.iter().all(|id| once(id)) && once(&offline_id),
            "a capture printed twice or not at all: {printed:?} (after exit: {rest:?})"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_missed_lists_the_waiting_and_the_delivery_state_follows() -> Result<()> {
    run_test(secs(90), async {
        let mut s = Stack::builder().name("miss-list").start().await?;
        let delivered = visit_ok(
            &s.client,
            s.client
                .request(Routing::Host, "GET", "/echo?n=online")
                .body(empty())?,
        )
        .await?;
        s.go_offline().await?;
        let mut missed = Vec::new();
        for n in 0..2 {
            let (f, id) = visit(
                &s.client,
                s.client
                    .request(Routing::Host, "POST", &format!("/echo?n=missed-{n}"))
                    .body(full("m"))?,
            )
            .await?;
            ensure!(
                f.status == StatusCode::SERVICE_UNAVAILABLE,
                "offline: {}",
                f.status
            );
            missed.push(id);
        }

        // Listed with --missed (go_offline's probes are missed too), oldest
        // last; the delivered request is not.
        let cfg = s.client.cfg.clone();
        let waiting = list(&cfg, &["--missed"]).await?;
        ensure!(
            missed.iter().all(|id| find(&waiting, id).is_some())
                && find(&waiting, &delivered).is_none(),
            "--missed should list {missed:?} and not {delivered}: {:?}",
            ids(&waiting)
        );
        ensure!(
            waiting
                .iter()
                .all(|r| r["outcome"] == "offline" && r["delivery"] == "missed"),
            "--missed lists only waiting offline captures: {waiting:?}"
        );
        let table = relay(&cfg, "requests", &["--missed"], CLI).await?;
        table.ensure_success()?;
        let header = table.stdout.lines().next().unwrap_or_default();
        ensure!(
            header.split_whitespace().any(|c| c == "DELIVERY"),
            "no DELIVERY column: {header:?}"
        );
        for id in &missed {
            let row = table.stdout.lines().find(|l| l.starts_with(id.as_str()));
            ensure!(
                row.is_some_and(|r| r.ends_with("  missed")),
                "row of {id} should say missed:\n{}",
                table.stdout
            );
        }

        // Back online, the client says how many wait and how to deliver them.
        let mut cfg = cfg;
        cfg.inspect = Some("127.0.0.1:0".into());
        let mut client = RelayClient::connect(cfg.clone()).await?;
        let notice = client
            .proc
            .wait_line("the missed-requests line", secs(10), |l| {
                l.contains("arrived while you were offline")
            })
            .await?;
        let count = waiting.len();
        let (head, tail) = notice
            .split_once(" ago): ")
            .with_context(|| format!("no age in {notice:?}"))?;
        let prefix = format!("{count} requests arrived while you were offline (oldest ");
        let age = head.strip_prefix(&prefix).with_context(|| {
            format!("expected {prefix:?}... for {count} missed requests, got {notice:?}")
        })?;
        ensure!(
            tail == "relay replay --missed"
                && ["s", "min", "h", "d"].iter().any(|u| age
                    .strip_suffix(u)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))),
            "bad missed-requests line {notice:?}"
        );

        // The inspector shows the server's overview, and refuses a delivery
        // that is not JSON (a cross-site form could send that).
        let inspector = inspector_url(&mut client).await?;
        let addr: std::net::SocketAddr = inspector["http://".len()..].parse()?;
        let get = Request::get("/api/missed?limit=0")
            .header(HOST, addr.to_string())
            .body(empty())?;
        let overview = fetch(addr, get, REQ).await?.json()?;
        ensure!(overview["count"] == count, "/api/missed: {overview}");
        let post = Request::post("/api/missed/deliver")
            .header(HOST, addr.to_string())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(full("a=1"))?;
        let refused = fetch(addr, post, REQ).await?;
        ensure!(
            refused.status == StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a form POST must not deliver: {} {:?}",
            refused.status,
            String::from_utf8_lossy(&refused.body)
        );

        // Delivered (to the running client's local app, from its running
        // file): nothing is left waiting, and the state says by which replay.
        let out = relay_saved(&cfg, "replay", &["--missed"], CLI).await?;
        out.ensure_success()?;
        ensure!(
            out.stdout
                .contains(&format!("delivered {count} missed requests")),
            "replay --missed should say what it delivered:\n{}",
            out.dump()
        );
        let after = list(&cfg, &["--missed"]).await?;
        ensure!(after.is_empty(), "still listed as missed: {after:?}");
        let all = list(&cfg, &[]).await?;
        for id in &missed {
            let row = find(&all, id).with_context(|| format!("{id} no longer listed"))?;
            let by = row["delivered_by"].as_str().unwrap_or_default();
            ensure!(
                row["delivery"] == "delivered"
                    && find(&all, by).is_some_and(|r| r["replay_of"] == id.as_str()),
                "{id} should be delivered by a listed replay of it: {row}"
            );
            let shown = relay(&cfg, "requests", &["show", id], CLI).await?;
            shown.ensure_success()?;
            ensure!(
                shown
                    .stdout
                    .contains(&format!("Delivery  delivered by {by}")),
                "`show` should say who delivered it:\n{}",
                shown.stdout
            );
        }
        let table = relay(&cfg, "requests", &[], CLI).await?;
        ensure!(
            table
                .stdout
                .lines()
                .any(|l| l.starts_with(missed[0].as_str()) && l.ends_with("  delivered")),
            "the table should show the delivery state:\n{}",
            table.stdout
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_replay_act_for_the_running_connect_else_the_last() -> Result<()> {
    run_test(secs(90), async {
        let mut s = Stack::builder().name("alpha").start().await?;
        let running_dir = s.client.cfg.home.join("running");
        let alpha_file = running_dir.join(format!("{}.json", s.client.proc.pid()));
        ensure!(
            alpha_file.is_file(),
            "no running file {}",
            alpha_file.display()
        );

        // A second tunnel from the same config, killed: its running file
        // is stale, and it is the last one `relay connect` started.
        let mut beta = RelayClient::connect(s.client.cfg.clone().name("beta")).await?;
        let beta_file = running_dir.join(format!("{}.json", beta.proc.pid()));
        ensure!(
            beta_file.is_file(),
            "no running file {}",
            beta_file.display()
        );
        beta.proc.kill().await?;

        // No --name: the running alpha, not the last-started beta; the
        // stale file goes.
        let id = visit_ok(
            &s.client,
            s.client
                .request(Routing::Host, "POST", "/echo?for=alpha")
                .body(full("a"))?,
        )
        .await?;
        let out = relay_saved(&s.client.cfg, "requests", &["--json"], CLI).await?;
        out.ensure_success()?;
        let listed = out.json_lines()?;
        ensure!(
            find(&listed, &id).is_some() && listed.iter().all(|r| r["tunnel"] == "alpha"),
            "`relay requests` should act for the running alpha: {:?}",
            ids(&listed)
        );
        ensure!(
            !beta_file.exists(),
            "the stale running file of beta is still there"
        );
        ensure!(alpha_file.is_file(), "alpha's running file went away");

        // `relay replay --last` too, to the running client's local app.
        let out = relay_saved(&s.client.cfg, "replay", &["--last", "--json"], CLI).await?;
        out.ensure_success()?;
        check_replay_result(&out.json()?, &id, Some(200), "delivered")?;
        ensure!(
            count(&s.origin, "/echo?for=alpha") == 2,
            "the replay should reach alpha's local app: {:?}",
            s.origin.requests()
        );

        // alpha stops: its file goes, and the last one (beta) is used.
        s.client.proc.signal("TERM")?;
        s.client.proc.wait_exit(secs(15)).await?;
        ensure!(!alpha_file.exists(), "alpha's running file outlived it");
        // Whatever the server answers for the killed beta, it is captured.
        let (_, beta_id) = visit(
            &beta,
            beta.request(Routing::Host, "GET", "/echo?for=beta")
                .body(empty())?,
        )
        .await?;
        let out = relay_saved(&s.client.cfg, "requests", &["--json"], CLI).await?;
        out.ensure_success()?;
        let listed = out.json_lines()?;
        ensure!(
            find(&listed, &beta_id).is_some() && listed.iter().all(|r| r["tunnel"] == "beta"),
            "with nothing running, `relay requests` should act for the last (beta): {:?}",
            ids(&listed)
        );

        // --name still wins.
        let client_id = cli::client_id(&s.client.cfg)?;
        let out = relay_saved(
            &s.client.cfg,
            "requests",
            &["--json", "--name", "alpha"],
            CLI,
        )
        .await?;
        out.ensure_success()?;
        ensure!(
            find(&out.json_lines()?, &id).is_some(),
            "--name alpha should list alpha's: {}",
            out.dump()
        );
        let api = capture_api::get_json(
            &s.server,
            "/_relay/v1/tunnels/alpha/requests?kind=visitor&limit=1",
            Auth::ClientId(&client_id),
        )
        .await?;
        ensure!(
            api["requests"][0]["id"] == id.as_str(),
            "--last's listing (kind=visitor) should be the visitor's request, not its replay: {api}"
        );
        Ok(())
    })
    .await
}
