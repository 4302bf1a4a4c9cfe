//! `relay requests export` (SPEC "Looking at captures"): the curl commands
//! are run with the real `curl` against the origin's `/inbox`, which must
//! receive what it received through the tunnel, byte for byte; the HAR is
//! checked by the HAR 1.2 JSON schema (npm `har-validator`, installed from
//! `tests/har/package-lock.json`); NDJSON lines are the API's records.
//!
//! Needs `curl`, `node` and `npm` (scripts/test installs what is missing).

use std::path::{Path, PathBuf};

use base64::Engine;
use relay_tests::cli::{self, relay};
use relay_tests::origin::Received;
use tokio::process::Command;

use super::*;

/// A text body a shell could mangle: quotes, `$`, backslashes, newlines,
/// non-ASCII.
const TEXT: &str = "{\"msg\": \"it's $HOME `id` \\\\ done\",\n  \"who\": \"Zoë 🦀\"}\n";

/// Sends a text and a binary request to `/inbox` through the tunnel;
/// answers their ids.
async fn send_text_and_binary(s: &Stack, binary: &[u8]) -> Result<(String, String)> {
    let text_id = visit_ok(
        &s.client,
        s.client
            .request(Routing::Host, "POST", "/inbox?kind=text&q=[1]")
            .header(CONTENT_TYPE, "application/json")
            .header("x-quote", "it's \"quoted\"")
            .header("x-multi", "one")
            .header("x-multi", "two")
            .header("x-empty", "")
            .header("accept-encoding", "gzip")
            .body(full(TEXT))?,
    )
    .await?;
    let bin_id = visit_ok(
        &s.client,
        s.client
            .request(Routing::Path, "PUT", "/inbox?kind=bin")
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(full(binary.to_vec()))?,
    )
    .await?;
    Ok((text_id, bin_id))
}

/// Method, path, every header in order and the body, for a comparison
/// that shows both sides.
fn exact(r: &Received) -> (String, String, Vec<(String, String)>, Bytes) {
    let headers = r
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), escape(v)))
        .collect();
    (r.method.clone(), r.path.clone(), headers, r.body.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_curl_commands_reproduce_the_exact_requests_with_real_curl() -> Result<()> {
    run_test(secs(90), async {
        let s = Stack::builder().name("export-curl").start().await?;
        let sandbox = Sandbox::new()?;
        let out_dir = sandbox.subdir("bodies")?;
        let binary: Vec<u8> = (0u8..=255).rev().chain(*b"\r\n'@end").collect();
        let (text_id, bin_id) = send_text_and_binary(&s, &binary).await?;
        let originals = s.origin.inbox();
        ensure!(originals.len() == 2, "inbox: {:?}", s.origin.inbox_paths());

        // No --to: the target of the running `relay connect`.
        let dir = out_dir.to_str().context("a UTF-8 temp dir")?;
        let out = relay(
            &s.client.cfg,
            "requests",
            &[
                "export",
                &text_id,
                &bin_id,
                "--format",
                "curl",
                "--out-dir",
                dir,
            ],
            CLI,
        )
        .await?;
        out.ensure_success()?;
        let script = &out.stdout;
        ensure!(
            script.contains("--data-binary '{\"msg\"")
                && !script.contains("--compressed")
                && script.contains(&format!(
                    "@{}",
                    out_dir.join(format!("{bin_id}.body")).display()
                )),
            "text inline, binary from its file, never --compressed:\n{script}"
        );
        ensure!(
            std::fs::read(out_dir.join(format!("{bin_id}.body")))? == binary,
            "the body file is not the captured bytes"
        );

        let mut sh = Command::new("sh");
        sh.arg("-c").arg(script);
        let ran = cli::run_command(sh, CLI).await?;
        ran.ensure_success()?;
        let inbox = s.origin.inbox();
        ensure!(inbox.len() == 4, "inbox: {:?}", s.origin.inbox_paths());
        for (original, replayed) in originals.iter().zip(&inbox[2..]) {
            ensure!(
                exact(replayed) == exact(original),
                "curl sent something else:\n  through the tunnel: {:?}\n  by curl:            {:?}",
                exact(original),
                exact(replayed)
            );
        }
        ensure!(inbox[3].body == binary, "binary body changed");
        ensure!(inbox[2].body == TEXT.as_bytes(), "text body changed");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_curl_of_a_truncated_body_is_only_a_comment() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder()
            .name("export-trunc")
            .server(|c| c.extra_args = vec!["--capture-limit".into(), "1KiB".into()])
            .start()
            .await?;
        let id = visit_ok(
            &s.client,
            s.client
                .request(Routing::Host, "POST", "/inbox?big=1")
                .body(full(vec![b'x'; 4096]))?,
        )
        .await?;
        let port = s.origin.port().to_string();
        let out = relay(
            &s.client.cfg,
            "requests",
            &["export", &id, "--format", "curl", "--to", &port],
            CLI,
        )
        .await?;
        out.ensure_success()?;
        ensure!(
            out.stdout.lines().all(|l| l.starts_with('#'))
                && out.stdout.contains("truncated (1024 of 4096 bytes"),
            "a truncated body must not become a command:\n{}",
            out.dump()
        );
        ensure!(out.stderr.contains("truncated"), "{}", out.dump());
        Ok(())
    })
    .await
}

fn har_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("har")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_har_passes_the_har_1_2_schema_with_binary_bodies() -> Result<()> {
    run_test(secs(360), async {
        let dir = har_dir();
        relay_tests::process::npm_ci(&dir, "har-validator").await?;
        let mut s = Stack::builder().name("export-har").start().await?;
        let binary: Vec<u8> = (0u8..=255).collect();
        let (text_id, bin_id) = send_text_and_binary(&s, &binary).await?;
        // A binary response body, and an answer without the local app.
        let download = visit_ok(
            &s.client,
            s.client
                .request(Routing::Host, "GET", "/download?bytes=300")
                .body(empty())?,
        )
        .await?;
        s.go_offline().await?;
        let (offline, offline_id) = visit(
            &s.client,
            s.client
                .request(Routing::Host, "POST", "/inbox?while=offline")
                .body(full("queued?"))?,
        )
        .await?;
        ensure!(
            offline.status == StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            offline.status
        );

        // (Ids, since going offline sends a probe of its own.)
        let out = relay(
            &s.client.cfg,
            "requests",
            &[
                "export",
                &text_id,
                &bin_id,
                &download,
                &offline_id,
                "--format",
                "har",
            ],
            CLI,
        )
        .await?;
        out.ensure_success()?;
        let sandbox = Sandbox::new()?;
        let file = sandbox.subdir("har")?.join("export.har");
        std::fs::write(&file, &out.stdout)?;
        let mut node = Command::new("node");
        node.arg(dir.join("validate.mjs"))
            .arg(&file)
            .current_dir(&dir);
        let checked = cli::run_command(node, CLI).await?;
        ensure!(
            checked.success() && checked.stdout.contains("valid HAR 1.2 with 4 entries"),
            "the HAR 1.2 schema rejects the export:\n{}",
            checked.dump()
        );

        let har: serde_json::Value =
            serde_json::from_str(&out.stdout).context("the HAR is JSON")?;
        let entries = har["log"]["entries"].as_array().context("entries")?;
        let comments: Vec<&str> = entries
            .iter()
            .filter_map(|e| e["comment"].as_str())
            .collect();
        for (entry, id) in comments
            .iter()
            .zip([&text_id, &bin_id, &download, &offline_id])
        {
            ensure!(
                entry.contains(id.as_str()),
                "not oldest first: {comments:?}"
            );
        }
        let text = &entries[0]["request"];
        ensure!(
            text["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://export-har.localhost:")
                    && u.ends_with("/inbox?kind=text&q=[1]"))
                && text["postData"]["text"] == TEXT
                && text["queryString"][1] == serde_json::json!({"name": "q", "value": "[1]"}),
            "the text entry: {text}"
        );
        let post = &entries[1]["request"]["postData"];
        ensure!(
            post["encoding"] == "base64"
                && post["mimeType"] == "application/octet-stream"
                && base64::engine::general_purpose::STANDARD
                    .decode(post["text"].as_str().context("postData.text")?)?
                    == binary,
            "the binary request body: {post}"
        );
        ensure!(
            entries[1]["request"]["url"]
                .as_str()
                .is_some_and(|u| u.contains("/t/export-har/inbox?kind=bin")),
            "a /t/NAME visitor's URL keeps the prefix: {}",
            entries[1]["request"]["url"]
        );
        let content = &entries[2]["response"]["content"];
        ensure!(
            content["encoding"] == "base64" && content["size"] == 300,
            "the binary response body: {content}"
        );
        ensure!(
            entries[3]["response"]["status"] == 503,
            "the offline answer: {}",
            entries[3]["response"]
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_ndjson_is_records_and_errors_are_clear() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("export-nd").start().await?;
        let binary = [0u8, 159, 146, 150];
        let (text_id, bin_id) = send_text_and_binary(&s, &binary).await?;
        let out = relay(
            &s.client.cfg,
            "requests",
            &["export", "--format", "ndjson", "--limit", "2"],
            CLI,
        )
        .await?;
        out.ensure_success()?;
        let lines = out.json_lines()?;
        ensure!(
            lines.len() == 2
                && lines[0]["id"] == text_id.as_str()
                && lines[1]["id"] == bin_id.as_str(),
            "two records, oldest first:\n{}",
            out.stdout
        );
        ensure!(
            relay_tests::capture_api::body_of(&lines[1]["request"])? == binary
                && lines[0]["response"]["headers"].is_array(),
            "full records with bodies: {}",
            lines[1]
        );

        let missing = "01nosuchrequest0000000000";
        let out = relay(
            &s.client.cfg,
            "requests",
            &["export", &text_id, missing, "--format", "har"],
            CLI,
        )
        .await?;
        out.ensure_failure()?;
        ensure!(
            out.stderr.contains(missing) && out.stdout.is_empty(),
            "an unknown id is named and nothing is half-exported:\n{}",
            out.dump()
        );
        let out = relay(
            &s.client.cfg,
            "requests",
            &["export", "--format", "xml"],
            CLI,
        )
        .await?;
        out.ensure_failure()?;
        ensure!(
            out.stderr.contains("curl")
                && out.stderr.contains("har")
                && out.stderr.contains("ndjson"),
            "an unknown format lists the known ones:\n{}",
            out.dump()
        );
        Ok(())
    })
    .await
}
