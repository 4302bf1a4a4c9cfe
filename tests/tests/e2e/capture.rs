//! Capture and replay (SPEC "Capture and replay", docs/api.md): what the
//! server records for each outcome, `relay requests --json` and its filters,
//! the capture API and its auth, `relay replay` (plain, `--last`, `--to`,
//! `--force`), truncation, retention, restarts and `--capture off`.
//!
//! Captures are written by a background writer, so "it shows up" is a
//! bounded poll on `relay requests --json`; what a replay sends is checked
//! through the origin's own `/echo` answer (carried back in the replay
//! result) and the origin's record of the paths it received.

use relay_tests::capture_api::{self, body_of, find, ids, pair_values, record_path, Auth};
use relay_tests::cli;

use super::*;

/// Deadline for one `relay requests` / `relay replay` run.
const CLI: Duration = Duration::from_secs(20);
/// How long a capture may take to show up in the listing.
const LISTED: Duration = Duration::from_secs(10);

/// `relay requests --json --limit 100 EXTRA...` for `cfg`'s tunnel: the summaries.
async fn list(cfg: &ClientConfig, extra: &[&str]) -> Result<Vec<serde_json::Value>> {
    let mut args = vec!["--json", "--limit", "100"];
    args.extend_from_slice(extra);
    let out = cli::relay(cfg, "requests", &args, CLI).await?;
    out.ensure_success()?;
    out.json_lines()
}

/// Polls `relay requests --json` until every id in `want` is listed; returns
/// the whole listing. A failing `relay requests` fails at once.
async fn wait_listed(cfg: &ClientConfig, want: &[&str]) -> Result<Vec<serde_json::Value>> {
    let what = format!("`relay requests --json` lists {want:?}");
    poll_until(&what, LISTED, || async {
        match list(cfg, &[]).await {
            Err(e) => Some(Err(e)),
            Ok(l) => want
                .iter()
                .all(|id| find(&l, id).is_some())
                .then_some(Ok(l)),
        }
    })
    .await?
}

/// Sends `req` through the tunnel; returns the response and its relay request id.
async fn visit(
    client: &RelayClient,
    req: Request<relay_tests::http::ReqBody>,
) -> Result<(Fetched, String)> {
    let f = fetch(client.public_addr(), req, REQ).await?;
    let id = f
        .request_id()
        .with_context(|| format!("no {REQUEST_ID} on a {} response", f.status))?;
    Ok((f, id))
}

/// A 200 through the tunnel; returns its request id.
async fn visit_ok(
    client: &RelayClient,
    req: Request<relay_tests::http::ReqBody>,
) -> Result<String> {
    let (f, id) = visit(client, req).await?;
    ensure!(
        f.status == StatusCode::OK,
        "expected 200, got {} {:?}",
        f.status,
        String::from_utf8_lossy(&f.body)
    );
    Ok(id)
}

/// Kills the client and waits until the server answers 503 for its tunnel.
async fn go_offline(s: &mut Stack) -> Result<()> {
    s.client.proc.kill().await?;
    let (port, name, addr) = (s.server.port(), s.client.name.clone(), s.server.addr());
    poll_until(
        "the server answers 503 for a tunnel whose client was killed",
        secs(20),
        || {
            let req = public_request(port, &name, Routing::Host, "GET", "/probe").body(empty());
            async move {
                let f = fetch(addr, req.ok()?, REQ).await.ok()?;
                (f.status == StatusCode::SERVICE_UNAVAILABLE).then_some(())
            }
        },
    )
    .await
}

/// The origin's `/echo` JSON carried in a replay result's response.
fn replay_echo(result: &serde_json::Value) -> Result<serde_json::Value> {
    let body = body_of(&result["response"]).context("the replay result's response")?;
    serde_json::from_slice(&body).with_context(|| {
        format!(
            "the replay's response is not the origin's /echo JSON: {:?}",
            String::from_utf8_lossy(&body)
        )
    })
}

/// Checks the common fields of a `relay replay --json` result.
fn check_replay_result(
    r: &serde_json::Value,
    original: &str,
    status: Option<u16>,
    outcome: &str,
) -> Result<String> {
    ensure!(
        r["replay_of"] == original,
        "replay_of should be {original}: {r}"
    );
    ensure!(r["outcome"] == outcome, "outcome should be {outcome}: {r}");
    match status {
        Some(st) => ensure!(r["status"] == st, "status should be {st}: {r}"),
        None => ensure!(r["status"].is_null(), "status should be null: {r}"),
    }
    ensure!(r["duration_ms"].is_u64(), "no duration_ms: {r}");
    if outcome == "delivered" {
        ensure!(r["error"].is_null(), "a delivered replay has an error: {r}");
    } else {
        ensure!(
            r["error"].as_str().is_some_and(|e| !e.is_empty()),
            "a failed replay should say why in `error`: {r}"
        );
    }
    let id = r["id"]
        .as_str()
        .with_context(|| format!("the replay was not recorded (id null): {r}"))?;
    ensure!(id != original, "the replay reuses the original's id: {r}");
    Ok(id.to_string())
}

fn count(origin: &Origin, pq: &str) -> usize {
    origin.requests().iter().filter(|r| *r == pq).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_request_is_captured_and_replayed() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::start("cap-ok", |_| {}).await?;
        let cfg = &s.client.cfg;
        let body: &[u8] = br#"{"event":"user.created","user":{"id":42}}"#;
        let pq = "/echo?source=hook&n=1";
        let req = s
            .client
            .request(Routing::Host, "POST", pq)
            .header(CONTENT_TYPE, "application/json")
            .header("x-hook-signature", "sha256=c0ffee")
            .body(full(body))?;
        let (f, id) = visit(&s.client, req).await?;
        ensure!(f.status == StatusCode::OK, "tunnelled POST: {}", f.status);
        let original_echo = f.json()?;

        // Path routing: the listed path is what the local app saw, without /t/NAME.
        let path_id = visit_ok(
            &s.client,
            s.client
                .request(Routing::Path, "GET", "/echo?via=path")
                .body(empty())?,
        )
        .await?;

        let listed = wait_listed(cfg, &[&id, &path_id]).await?;
        let sum = find(&listed, &id).context("listed")?;
        ensure!(
            sum["method"] == "POST"
                && sum["path"] == pq
                && sum["status"] == 200
                && sum["outcome"] == "delivered"
                && sum["tunnel"] == "cap-ok"
                && sum["replay_of"].is_null(),
            "summary of the POST: {sum}"
        );
        ensure!(
            sum["request_size"] == body.len() && sum["response_size"] == f.body.len(),
            "sizes in the summary (sent {} bytes, got {}): {sum}",
            body.len(),
            f.body.len()
        );
        let via_path = find(&listed, &path_id).context("listed")?;
        ensure!(
            via_path["path"] == "/echo?via=path" && via_path["method"] == "GET",
            "a /t/NAME request should be listed with the local app's path: {via_path}"
        );
        ensure!(
            ids(&listed)[..2] == [path_id.clone(), id.clone()],
            "listing should be newest first: {:?}",
            ids(&listed)
        );

        // The full record from the API.
        let client_id = cli::client_id(cfg)?;
        let rec = capture_api::get_json(
            &s.server,
            &record_path("cap-ok", &id),
            Auth::ClientId(&client_id),
        )
        .await?;
        ensure!(
            rec["id"] == id.as_str() && rec["path"] == pq,
            "record: {rec}"
        );
        let rq = &rec["request"];
        ensure!(
            body_of(rq)? == body,
            "captured request body {:?} != sent {:?}",
            String::from_utf8_lossy(&body_of(rq)?),
            String::from_utf8_lossy(body)
        );
        ensure!(
            rq["body_size"] == body.len() && rq["body_truncated"] == false,
            "request body size/truncation: {rq}"
        );
        ensure!(
            pair_values(&rq["headers"], "x-hook-signature")? == ["sha256=c0ffee"]
                && pair_values(&rq["headers"], "content-type")? == ["application/json"],
            "captured request headers: {}",
            rq["headers"]
        );
        let rs = &rec["response"];
        ensure!(
            body_of(rs)? == f.body,
            "captured response body differs from what the visitor got: {rs}"
        );
        ensure!(
            rs["body_size"] == f.body.len() && rs["body_truncated"] == false,
            "response body size/truncation: {rs}"
        );
        ensure!(
            pair_values(&rs["headers"], "x-resp-multi")? == ["one", "two"],
            "captured response headers: {}",
            rs["headers"]
        );

        // Replay it to the local app (the target of the last `relay connect`).
        let out = cli::relay(cfg, "replay", &[&id, "--json"], CLI).await?;
        out.ensure_success()?;
        let r = out.json()?;
        let replay_id = check_replay_result(&r, &id, Some(200), "delivered")?;
        ensure!(
            r["target"]
                .as_str()
                .is_some_and(|t| t.ends_with(&format!(":{}{pq}", s.origin.port()))),
            "replay target should be the local app's URL for {pq}: {r}"
        );
        let echo = replay_echo(&r)?;
        ensure!(
            echo["method"] == "POST" && echo["path"] == pq,
            "the replay arrived as {} {}",
            echo["method"],
            echo["path"]
        );
        ensure!(
            echo["body_len"] == original_echo["body_len"]
                && echo["body_sha256"] == original_echo["body_sha256"]
                && echo["body_sha256"] == sha256_hex(body),
            "the replayed body differs: original {original_echo}, replay {echo}"
        );
        let (h1, h2) = (echoed_headers(&original_echo)?, echoed_headers(&echo)?);
        for name in ["x-hook-signature", "content-type"] {
            ensure!(
                header_values(&h1, name) == header_values(&h2, name)
                    && !header_values(&h2, name).is_empty(),
                "header {name}: original {:?}, replay {:?}",
                header_values(&h1, name),
                header_values(&h2, name)
            );
        }
        ensure!(
            count(&s.origin, pq) == 2,
            "the local app should have received {pq} twice; it saw {:?}",
            s.origin.requests()
        );

        // The replay is listed, linked to the original (it is stored before
        // the API answers, so no wait).
        let listed = list(cfg, &[]).await?;
        let entry = find(&listed, &replay_id)
            .with_context(|| format!("replay {replay_id} not listed: {listed:?}"))?;
        ensure!(
            entry["replay_of"] == id.as_str()
                && entry["outcome"] == "delivered"
                && entry["status"] == 200
                && entry["method"] == "POST"
                && entry["path"] == pq,
            "replay entry: {entry}"
        );
        ensure!(
            find(&listed, &id).is_some_and(|o| o["replay_of"].is_null()),
            "the original must stay listed and unlinked: {listed:?}"
        );
        ensure!(
            ids(&listed)[0] == replay_id,
            "the replay should be the newest entry: {:?}",
            ids(&listed)
        );

        let health = capture_api::get_json(&s.server, "/_relay/health", Auth::None).await?;
        ensure!(
            health["captures_dropped"] == 0,
            "no capture should be dropped: {health}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_request_is_captured_and_replays_without_the_client() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::start("cap-offline", |_| {}).await?;
        echo_ok(&s.client, Routing::Host).await?;
        go_offline(&mut s).await?;

        let body: &[u8] = br#"{"type":"payment.succeeded","amount":1234}"#;
        let pq = "/echo?missed=1";
        let req = s
            .client
            .request(Routing::Host, "POST", pq)
            .header(CONTENT_TYPE, "application/json")
            .body(full(body))?;
        let (f, id) = visit(&s.client, req).await?;
        check_error(&f, StatusCode::SERVICE_UNAVAILABLE, "tunnel_offline")?;

        let cfg = &s.client.cfg;
        let listed = wait_listed(cfg, &[&id]).await?;
        let sum = find(&listed, &id).context("listed")?;
        ensure!(
            sum["outcome"] == "offline"
                && sum["status"] == 503
                && sum["method"] == "POST"
                && sum["path"] == pq
                && sum["request_size"] == body.len(),
            "summary of the offline POST: {sum}"
        );
        let client_id = cli::client_id(cfg)?;
        let rec = capture_api::get_json(
            &s.server,
            &record_path("cap-offline", &id),
            Auth::ClientId(&client_id),
        )
        .await?;
        ensure!(
            body_of(&rec["request"])? == body && rec["request"]["body_truncated"] == false,
            "the offline capture should keep the whole body: {}",
            rec["request"]
        );
        let resp: serde_json::Value = serde_json::from_slice(&body_of(&rec["response"])?)
            .with_context(|| format!("captured 503 body: {}", rec["response"]))?;
        ensure!(
            resp["error"] == "tunnel_offline",
            "captured response should be the 503 the visitor got: {resp}"
        );

        // The client is not running: `relay replay --last --to PORT` with the
        // name and server saved by the last `relay connect`.
        ensure!(
            s.client.proc.try_exit()?.is_some(),
            "the client should be gone"
        );
        let port = s.origin.port().to_string();
        let out =
            cli::relay_saved(cfg, "replay", &["--last", "--to", &port, "--json"], CLI).await?;
        out.ensure_success()?;
        let r = out.json()?;
        check_replay_result(&r, &id, Some(200), "delivered")?;
        let echo = replay_echo(&r)?;
        ensure!(
            echo["method"] == "POST"
                && echo["path"] == pq
                && echo["body_len"] == body.len()
                && echo["body_sha256"] == sha256_hex(body),
            "the local app did not get the offline request's body: {echo}"
        );
        ensure!(
            count(&s.origin, pq) == 1,
            "the local app should have received {pq} once (the replay); it saw {:?}",
            s.origin.requests()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_outcomes_are_captured_with_their_status_and_filterable() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::start("cap-fail", |c| {
            c.request_timeout = Some("1s".into());
            c.max_body = Some("1KiB".into());
        })
        .await?;

        let ok = visit_ok(
            &s.client,
            s.client
                .request(Routing::Host, "GET", "/echo?fine=1")
                .body(empty())?,
        )
        .await?;

        let (f, timeout) = visit(
            &s.client,
            s.client
                .request(Routing::Host, "GET", "/slow?t=1")
                .body(empty())?,
        )
        .await?;
        check_error(&f, StatusCode::GATEWAY_TIMEOUT, "local_timeout")?;

        let (f, too_large) = visit(
            &s.client,
            s.client
                .request(Routing::Host, "POST", "/upload?big=1")
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(PatternBody::new(3, 4096).boxed())?,
        )
        .await?;
        check_error(&f, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")?;

        // The same tunnel (same config, same name), now pointing at a dead port.
        s.client.proc.kill().await?;
        let mut down_cfg = s.client.cfg.clone();
        let dead = ReservedPort::new()?;
        down_cfg.target = format!("127.0.0.1:{}", dead.port());
        s.client = RelayClient::connect(down_cfg).await?;
        let (f, unreachable) = visit(
            &s.client,
            s.client
                .request(Routing::Host, "GET", "/echo?down=1")
                .body(empty())?,
        )
        .await?;
        check_error(&f, StatusCode::BAD_GATEWAY, "local_unreachable")?;

        let cfg = &s.client.cfg;
        let expected = [
            (&ok, 200, "delivered", "GET", "/echo?fine=1"),
            (&timeout, 504, "timeout", "GET", "/slow?t=1"),
            (&too_large, 413, "body_too_large", "POST", "/upload?big=1"),
            (
                &unreachable,
                502,
                "local_unreachable",
                "GET",
                "/echo?down=1",
            ),
        ];
        let listed = wait_listed(cfg, &expected.map(|e| e.0.as_str())).await?;
        ensure!(
            listed.len() == 4,
            "expected exactly the 4 requests: {listed:?}"
        );
        for (id, status, outcome, method, path) in expected {
            let sum = find(&listed, id).context("listed")?;
            ensure!(
                sum["status"] == status
                    && sum["outcome"] == outcome
                    && sum["method"] == method
                    && sum["path"] == path,
                "expected {method} {path} {status} {outcome}, got {sum}"
            );
        }

        // Filters return exactly the matching entries.
        for (id, status, outcome, _, _) in expected {
            let got = ids(&list(cfg, &["--outcome", outcome]).await?);
            ensure!(
                got == [id.clone()],
                "--outcome {outcome}: expected [{id}], got {got:?}"
            );
            let got = ids(&list(cfg, &["--status", &status.to_string()]).await?);
            ensure!(
                got == [id.clone()],
                "--status {status}: expected [{id}], got {got:?}"
            );
        }
        let got = ids(&list(cfg, &["--method", "POST"]).await?);
        ensure!(
            got == [too_large.clone()],
            "--method POST: expected [{too_large}], got {got:?}"
        );
        let got = ids(&list(cfg, &["--path", "/echo"]).await?);
        ensure!(
            got == [unreachable.clone(), ok.clone()],
            "--path /echo: expected [{unreachable}, {ok}], got {got:?}"
        );
        let got = ids(&list(cfg, &["--outcome", "offline"]).await?);
        ensure!(
            got.is_empty(),
            "--outcome offline: expected none, got {got:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_capture_is_refused_unless_forced() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::start("cap-trunc", |c| {
            c.extra_args = vec!["--capture-limit".into(), "1KiB".into()]
        })
        .await?;
        let cfg = &s.client.cfg;
        let data = Pattern::new(11, 4096).collect();
        let pq = "/echo?big=1";
        let req = s
            .client
            .request(Routing::Host, "POST", pq)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(full(data.clone()))?;
        let (f, id) = visit(&s.client, req).await?;
        ensure!(f.status == StatusCode::OK, "4 KiB POST: {}", f.status);
        ensure!(
            f.json()?["body_len"] == 4096,
            "the local app should get the whole 4 KiB: {}",
            f.json()?
        );

        let listed = wait_listed(cfg, &[&id]).await?;
        let sum = find(&listed, &id).context("listed")?;
        ensure!(
            sum["outcome"] == "delivered" && sum["status"] == 200 && sum["request_size"] == 4096,
            "summary: {sum}"
        );
        let client_id = cli::client_id(cfg)?;
        let rec = capture_api::get_json(
            &s.server,
            &record_path("cap-trunc", &id),
            Auth::ClientId(&client_id),
        )
        .await?;
        let rq = &rec["request"];
        ensure!(
            rq["body_truncated"] == true && rq["body_size"] == 4096,
            "a 4 KiB body with --capture-limit 1KiB: {}",
            serde_json::json!({"body_size": rq["body_size"], "body_truncated": rq["body_truncated"]})
        );
        let kept = body_of(rq)?;
        ensure!(
            kept.len() == 1024 && kept[..] == data[..1024],
            "expected the first 1024 bytes kept, got {} bytes (prefix matches: {})",
            kept.len(),
            data.starts_with(&kept)
        );

        // Refused without --force; nothing reaches the local app.
        let out = cli::relay(cfg, "replay", &[&id], CLI).await?;
        out.ensure_failure()?;
        ensure!(
            format!("{}{}", out.stdout, out.stderr)
                .to_ascii_lowercase()
                .contains("truncated"),
            "the refusal should say the body was truncated:\n{}",
            out.dump()
        );
        ensure!(
            count(&s.origin, pq) == 1,
            "a refused replay reached the local app: it saw {:?}",
            s.origin.requests()
        );

        // Forced: the kept prefix is sent.
        let out = cli::relay(cfg, "replay", &[&id, "--force", "--json"], CLI).await?;
        out.ensure_success()?;
        let r = out.json()?;
        let replay_id = check_replay_result(&r, &id, Some(200), "delivered")?;
        let echo = replay_echo(&r)?;
        ensure!(
            echo["body_len"] == 1024 && echo["body_sha256"] == sha256_hex(&data[..1024]),
            "a forced replay should send the 1024 captured bytes: {echo}"
        );
        ensure!(
            count(&s.origin, pq) == 2,
            "the forced replay should reach the local app: it saw {:?}",
            s.origin.requests()
        );
        let listed = list(cfg, &[]).await?;
        ensure!(
            find(&listed, &replay_id).is_some_and(|e| e["replay_of"] == id.as_str()),
            "the forced replay should be listed, linked to {id}: {listed:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_survive_a_server_restart() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::start("cap-restart", |_| {}).await?;
        let mut sent = Vec::new();
        for i in 0..3 {
            let req = s
                .client
                .request(Routing::Host, "POST", &format!("/echo?n={i}"))
                .body(full(format!("body {i}")))?;
            sent.push(visit_ok(&s.client, req).await?);
        }
        let cfg = s.client.cfg.clone();
        let before =
            ids(&wait_listed(&cfg, &sent.iter().map(String::as_str).collect::<Vec<_>>()).await?);
        let want: Vec<String> = sent.iter().rev().cloned().collect();
        ensure!(
            before == want,
            "before the restart: {before:?}, expected {want:?}"
        );

        // One more, then stop at once: a graceful stop stores what is queued.
        let req = s
            .client
            .request(Routing::Host, "POST", "/echo?n=last")
            .body(full("last body"))?;
        let last = visit_ok(&s.client, req).await?;
        s.client.proc.kill().await?;
        let status = s.server.terminate(secs(15)).await?;
        ensure!(
            status.success(),
            "relay-server exited with {status} on SIGTERM"
        );

        let mut server_cfg = s.server.config().clone();
        server_cfg.listen = s.server.addr().to_string();
        s.server = RelayServer::start(server_cfg)
            .await
            .context("restarting on the same port and data dir")?;

        let after = ids(&list(&cfg, &[]).await?);
        let mut want_after = vec![last.clone()];
        want_after.extend(before.iter().cloned());
        ensure!(
            after == want_after,
            "after the restart: {after:?}, expected {want_after:?} (the 3 listed before plus \
             the one sent just before SIGTERM)"
        );
        let client_id = cli::client_id(&cfg)?;
        for (id, body) in [(&sent[0], "body 0"), (&last, "last body")] {
            let rec = capture_api::get_json(
                &s.server,
                &record_path("cap-restart", id),
                Auth::ClientId(&client_id),
            )
            .await?;
            ensure!(
                body_of(&rec["request"])? == body.as_bytes() && rec["status"] == 200,
                "record {id} after the restart: {rec}"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_captures() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::start("cap-retain", |c| {
            c.extra_args = vec!["--retain".into(), "3".into()]
        })
        .await?;
        let cfg = &s.client.cfg;
        let mut sent = Vec::new();
        for i in 0..5 {
            let req = s
                .client
                .request(Routing::Host, "GET", &format!("/echo?n={i}"))
                .body(empty())?;
            sent.push(visit_ok(&s.client, req).await?);
        }
        let listed = ids(&wait_listed(cfg, &[&sent[4]]).await?);
        let want = vec![sent[4].clone(), sent[3].clone(), sent[2].clone()];
        ensure!(
            listed == want,
            "--retain 3 after 5 requests: listed {listed:?}, expected the newest 3 {want:?}"
        );
        let client_id = cli::client_id(cfg)?;
        let f = capture_api::get(
            &s.server,
            &record_path("cap-retain", &sent[0]),
            Auth::ClientId(&client_id),
        )
        .await?;
        ensure!(
            f.status == StatusCode::NOT_FOUND,
            "a capture dropped by retention should be gone, got {} {:?}",
            f.status,
            String::from_utf8_lossy(&f.body)
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_api_checks_ownership_and_failed_replays_are_recorded() -> Result<()> {
    run_test(secs(60), async {
        let sandbox = Sandbox::new()?;
        let origin = Origin::start().await?;
        let data = sandbox.subdir("data")?;
        let alice = create_token(&data, "alice").await?;
        let bob = create_token(&data, "bob").await?;
        let mut scfg = ServerConfig::new(data);
        scfg.open = false;
        let server = RelayServer::start(scfg).await?;
        let cfg = ClientConfig::new(
            origin.port().to_string(),
            server.url(),
            sandbox.subdir("alice")?,
        )
        .name("cap-auth")
        .token(&alice);
        let client = RelayClient::connect(cfg.clone()).await?;
        let id = visit_ok(
            &client,
            client
                .request(Routing::Host, "POST", "/echo?auth=1")
                .body(full("secret payload"))?,
        )
        .await?;
        wait_listed(&cfg, &[&id]).await?;

        let list_path = "/_relay/v1/tunnels/cap-auth/requests";
        let rec_path = record_path("cap-auth", &id);
        let client_id = cli::client_id(&cfg)?;
        for (what, auth) in [
            ("no credentials", Auth::None),
            ("an unknown token", Auth::Bearer("not-a-real-token")),
            // Not a credential on a server that needs tokens.
            ("only the client id", Auth::ClientId(&client_id)),
        ] {
            for path in [list_path, rec_path.as_str()] {
                let f = capture_api::get(&server, path, auth).await?;
                check_error(&f, StatusCode::UNAUTHORIZED, "unauthorized")
                    .with_context(|| format!("GET {path} with {what}"))?;
            }
        }
        for path in [list_path, rec_path.as_str()] {
            let f = capture_api::get(&server, path, Auth::Bearer(&bob)).await?;
            check_error(&f, StatusCode::NOT_FOUND, "tunnel_not_found")
                .with_context(|| format!("GET {path} with another user's token"))?;
            ensure!(
                !String::from_utf8_lossy(&f.body).contains("secret payload"),
                "the 404 leaks the capture: {:?}",
                f.body
            );
        }
        let page = capture_api::get_json(&server, list_path, Auth::Bearer(&alice)).await?;
        let listed = page["requests"]
            .as_array()
            .with_context(|| format!("no requests array: {page}"))?;
        ensure!(
            find(listed, &id).is_some(),
            "the owner's listing lacks {id}: {page}"
        );
        let rec = capture_api::get_json(&server, &rec_path, Auth::Bearer(&alice)).await?;
        ensure!(
            body_of(&rec["request"])? == b"secret payload",
            "owner's record: {rec}"
        );

        // The CLI with someone else's token gets nothing.
        let mut as_bob = cfg.clone();
        as_bob.token = Some(bob.clone());
        let out = cli::relay(&as_bob, "requests", &["--json"], CLI).await?;
        out.ensure_failure()?;
        ensure!(
            !out.stdout.contains(&id),
            "another token's `relay requests` shows the capture:\n{}",
            out.dump()
        );

        // A replay to a dead port fails, and is still recorded.
        let dead = ReservedPort::new()?;
        let dead_port = dead.port().to_string();
        let out = cli::relay(&cfg, "replay", &[&id, "--to", &dead_port, "--json"], CLI).await?;
        out.ensure_failure()?;
        let r = out.json()?;
        let replay_id = check_replay_result(&r, &id, None, "local_unreachable")?;
        ensure!(
            count(&origin, "/echo?auth=1") == 1,
            "the local app got a replay meant for a dead port: {:?}",
            origin.requests()
        );
        let page = capture_api::get_json(&server, list_path, Auth::Bearer(&alice)).await?;
        let listed = page["requests"].as_array().context("requests array")?;
        let entry = find(listed, &replay_id)
            .with_context(|| format!("the failed replay {replay_id} is not listed: {page}"))?;
        ensure!(
            entry["replay_of"] == id.as_str()
                && entry["outcome"] == "local_unreachable"
                && entry["status"].is_null(),
            "failed replay entry: {entry}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_off_forwards_but_records_nothing() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::start("cap-off", |c| {
            c.extra_args = vec!["--capture".into(), "off".into()]
        })
        .await?;
        let cfg = s.client.cfg.clone();
        echo_ok(&s.client, Routing::Host).await?;
        let id = visit_ok(
            &s.client,
            s.client
                .request(Routing::Path, "POST", "/echo?off=1")
                .body(full("not kept"))?,
        )
        .await?;
        // The client has logged it, so the exchange is over on both sides.
        s.client.wait_request_line(&id, REQ).await?;

        // Nothing to replay...
        let port = s.origin.port().to_string();
        let out = cli::relay(&cfg, "replay", &["--last", "--to", &port], CLI).await?;
        out.ensure_failure()?;
        ensure!(
            count(&s.origin, "/echo?off=1") == 1,
            "`relay replay --last` with capture off reached the local app: {:?}",
            s.origin.requests()
        );
        // ...and nothing listed, through the CLI or the API.
        let listed = list(&cfg, &[]).await?;
        ensure!(listed.is_empty(), "--capture off, yet listed: {listed:?}");
        let client_id = cli::client_id(&cfg)?;
        let f = capture_api::get(
            &s.server,
            &record_path("cap-off", &id),
            Auth::ClientId(&client_id),
        )
        .await?;
        ensure!(
            f.status == StatusCode::NOT_FOUND,
            "--capture off, yet the record exists: {} {:?}",
            f.status,
            String::from_utf8_lossy(&f.body)
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_lost_mid_request_is_captured_as_client_disconnected() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::start("cap-lost", |_| {}).await?;
        let req = s
            .client
            .request(Routing::Host, "POST", "/hold?key=lost")
            .header(CONTENT_TYPE, "application/json")
            .body(full("{\"n\":1}"))?;
        let in_flight = tokio::spawn(fetch(s.client.public_addr(), req, REQ));
        s.origin
            .wait_request("the held request", REQ, |r| r == "/hold?key=lost")
            .await?;
        // The laptop drops off the network while the app is still working.
        s.client.proc.kill().await?;
        let f = within("the visitor's answer", REQ, in_flight)
            .await?
            .context("the visitor task")??;
        check_error(&f, StatusCode::BAD_GATEWAY, "client_disconnected")?;
        let id = f.request_id().context("request id on the 502")?;
        s.origin.release("lost");

        let listed = wait_listed(&s.client.cfg, &[id.as_str()]).await?;
        let sum = find(&listed, &id).context("listed")?;
        ensure!(
            sum["outcome"] == "client_disconnected" && sum["status"] == 502,
            "expected 502 client_disconnected, got {sum}"
        );
        let rec = capture_api::get_json(
            &s.server,
            &record_path(&s.client.cfg.name.clone().unwrap_or_default(), &id),
            Auth::ClientId(&relay_tests::cli::client_id(&s.client.cfg)?),
        )
        .await?;
        ensure!(
            body_of(&rec["request"])? == b"{\"n\":1}",
            "the request body is kept for a replay: {rec}"
        );
        Ok(())
    })
    .await
}
