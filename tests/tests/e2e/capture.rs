//! Capture (SPEC "Capture and replay", docs/api.md): what the server
//! records for each outcome, `relay requests --json` and its filters, the
//! capture API and its auth, retention, restarts and `--capture off`.
//! Replaying captures is in `replay.rs`.
//!
//! Captures are written by a background writer, so "it shows up" is a
//! bounded poll on `relay requests --json`.

use relay_tests::capture_api::{self, body_of, find, ids, list, record_path, wait_listed, Auth};
use relay_tests::cli;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_outcomes_are_captured_with_their_status_and_filterable() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder()
            .name("cap-fail")
            .server(|c| {
                c.request_timeout = Some("1s".into());
                c.max_body = Some("1KiB".into());
            })
            .start()
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
async fn captures_survive_a_server_restart() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder().name("cap-restart").start().await?;
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
        let s = Stack::builder()
            .name("cap-retain")
            .server(|c| c.extra_args = vec!["--retain".into(), "3".into()])
            .start()
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
        let s = Stack::builder()
            .name("cap-auth")
            .tokens(&["alice", "bob"])
            .start()
            .await?;
        let (alice, bob) = (s.token("alice").to_string(), s.token("bob").to_string());
        let cfg = s.client.cfg.clone();
        let (origin, server, client) = (s.origin, s.server, s.client);
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
        let mut s = Stack::builder()
            .name("cap-off")
            .server(|c| c.extra_args = vec!["--capture".into(), "off".into()])
            .start()
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
        let mut s = Stack::builder().name("cap-lost").start().await?;
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
