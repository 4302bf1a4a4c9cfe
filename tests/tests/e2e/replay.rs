//! Replay (SPEC "Capture and replay"): `relay replay` plain, `--last`,
//! `--to` and `--force`, with or without a running client, and the
//! replay's own record, linked to the original.
//!
//! What a replay sends is checked through the origin's own `/echo` answer
//! (carried back in the replay result) and the origin's record of the
//! paths it received.

use relay_tests::capture_api::{
    self, body_of, find, ids, list, pair_values, record_path, wait_listed, Auth,
};
use relay_tests::cli;

use super::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_request_is_captured_and_replayed() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("cap-ok").start().await?;
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
        let mut s = Stack::builder().name("cap-offline").start().await?;
        echo_ok(&s.client, Routing::Host).await?;
        s.go_offline().await?;

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
async fn truncated_capture_is_refused_unless_forced() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("cap-trunc").server(|c| {
            c.extra_args = vec!["--capture-limit".into(), "1KiB".into()]
        }).start()
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
