//! `relay replay --diff` (SPEC "Replay"): what changed between the
//! original's response and the replay's is printed, carried in `--json`,
//! and stored with the replay's record for the inspector.

use relay_tests::capture_api::{self, record_path, wait_listed, Auth};
use relay_tests::cli;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_shows_what_the_app_answers_differently() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("diff-app").start().await?;
        let cfg = &s.client.cfg;
        let req = s
            .client
            .request(Routing::Host, "POST", "/echo?d=1")
            .header(CONTENT_TYPE, "application/json")
            .body(full(&br#"{"id":41}"#[..]))?;
        let id = visit_ok(&s.client, req).await?;
        wait_listed(cfg, &[&id]).await?;

        // The same app, another body: the echo's JSON differs by path;
        // its Date and the relay's request id do not count.
        let out = cli::relay(
            cfg,
            "replay",
            &[&id, "--body", r#"{"id":4242}"#, "--diff"],
            CLI,
        )
        .await?;
        out.ensure_success()?;
        ensure!(
            out.stdout
                .contains(&format!("diff against the response of {id}:\n"))
                && out.stdout.contains("    body_len: 9 -> 11\n")
                && out.stdout.contains("    body_sha256: \"")
                && !out.stdout.contains("  status:")
                && !out.stdout.contains("  header "),
            "printed diff:\n{}",
            out.dump()
        );

        // The app broke: status and body, in --json, and kept on the server.
        s.origin.fail("/echo?d=1");
        let out = cli::relay(cfg, "replay", &[&id, "--diff", "--json"], CLI).await?;
        let r = out.json()?;
        let replay_id = check_replay_result(&r, &id, Some(500), "delivered")?;
        let d = &r["diff"];
        ensure!(
            d["status"] == serde_json::json!({"before": 200, "after": 500}),
            "status in the diff: {d}"
        );
        let changes = d["body"]["changes"]
            .as_array()
            .context("JSON body changes")?;
        ensure!(
            d["body"]["kind"] == "json"
                && changes
                    .iter()
                    .any(|c| c["path"] == "origin_error" && c["kind"] == "added")
                && changes
                    .iter()
                    .any(|c| c["path"] == "method" && c["kind"] == "removed"),
            "body in the diff: {d}"
        );
        ensure!(
            d["headers"]
                .as_array()
                .is_some_and(|h| h.iter().all(|h| h["name"] != "date"
                    && h["name"] != "x-relay-request-id"
                    && h["name"] != "content-length")),
            "volatile headers in the diff: {d}"
        );
        let rec = capture_api::get_json(
            &s.server,
            &record_path("diff-app", &replay_id),
            Auth::ClientId(&cli::client_id(cfg)?),
        )
        .await?;
        ensure!(
            rec["diff"] == *d,
            "stored diff {} != printed {d}",
            rec["diff"]
        );
        let original = capture_api::get_json(
            &s.server,
            &record_path("diff-app", &id),
            Auth::ClientId(&cli::client_id(cfg)?),
        )
        .await?;
        ensure!(
            original.get("diff").is_none(),
            "an original has no diff: {original}"
        );
        Ok(())
    })
    .await
}
