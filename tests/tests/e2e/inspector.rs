//! The inspector page in a real browser: `tests/browser/inspector.mjs` drives
//! Debian's Chromium (through playwright-core) against `relay connect
//! --inspect 127.0.0.1:0`: the banner of missed requests and Deliver all, a
//! live row for a new request (its time in the browser's zone), its detail
//! (secrets masked), Replay (by key) and Edit & replay with the diff, search
//! in bodies, Copy as curl and HAR, the claims of a bearer JWT and a Hasura
//! Action call's name and session variables. This side checks what the
//! local app actually received, and runs the copied curl command.
//!
//! Needs `node`/`npm` and Chromium (`apt-get install chromium`, or
//! `CHROMIUM=/path`); playwright-core is installed from
//! `tests/browser/package-lock.json` on first run.

use std::path::{Path, PathBuf};

use relay_tests::capture_api::{self, Auth};
use relay_tests::cli;
use relay_tests::pattern::sha256_hex;
use relay_tests::process::Proc;
use tokio::process::Command;

use super::*;

/// Deadline for each wait inside the browser script.
const STEP_MS: &str = "10000";
/// The whole browser run: Chromium start-up plus a dozen waits of at most
/// `STEP_MS`; normally a few seconds.
const BROWSER_RUN: Duration = Duration::from_secs(90);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

fn chromium() -> Result<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    ensure!(
        path.is_file(),
        "no Chromium at {}: the inspector test drives a real browser; \
         `apt-get install chromium` (or set CHROMIUM to its path)",
        path.display()
    );
    Ok(path)
}

/// The `Inspector   http://ADDR` line; `relay connect` prints it before its
/// banner, so it may already be among the lines read while connecting.
pub(crate) async fn inspector_url(client: &mut RelayClient) -> Result<String> {
    let is_inspector = |l: &str| l.starts_with("Inspector ");
    let seen = client
        .proc
        .stdout_seen()
        .iter()
        .find(|l| is_inspector(l))
        .cloned();
    let line = match seen {
        Some(l) => l,
        None => {
            client
                .proc
                .wait_line("the `Inspector   URL` line", secs(10), is_inspector)
                .await?
        }
    };
    let url = line
        .strip_prefix("Inspector   ")
        .with_context(|| format!("expected `Inspector   URL` (three spaces), got {line:?}"))?;
    ensure!(
        url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
        "inspector URL should be loopback with the bound port: {line:?}"
    );
    Ok(url.to_string())
}

fn str_at<'a>(v: &'a serde_json::Value, pointer: &str) -> Result<&'a str> {
    v.pointer(pointer)
        .and_then(|x| x.as_str())
        .with_context(|| format!("no string at {pointer} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_page_shows_live_requests_and_replays_them_in_chromium() -> Result<()> {
    run_test(secs(420), async {
        let chromium = chromium()?;
        let dir = browser_dir();
        relay_tests::process::npm_ci(&dir, "playwright-core").await?;

        let mut s = Stack::builder()
            .name("inspected")
            .client(|c| c.inspect = Some("127.0.0.1:0".into()))
            .start()
            .await?;
        // Missed requests for the banner: sent while the client is away,
        // waiting when it is back.
        s.go_offline().await?;
        let missed_paths = ["/echo?missed=browser-0", "/echo?missed=browser-1"];
        for pq in missed_paths {
            let req = s
                .client
                .request(Routing::Host, "POST", pq)
                .body(full("m"))?;
            let (f, _) = visit(&s.client, req).await?;
            ensure!(
                f.status == StatusCode::SERVICE_UNAVAILABLE,
                "offline POST: {}",
                f.status
            );
        }
        s.client = RelayClient::connect(s.client.cfg.clone()).await?;
        // go_offline's probes are missed requests too.
        let overview = capture_api::get_json(
            &s.server,
            "/_relay/v1/tunnels/inspected/missed?limit=0",
            Auth::ClientId(&cli::client_id(&s.client.cfg)?),
        )
        .await?;
        let missed = overview["count"]
            .as_u64()
            .with_context(|| format!("no count in {overview}"))?;
        ensure!(
            missed >= 2,
            "the server should have the missed POSTs: {overview}"
        );
        let (origin, client) = (&s.origin, &mut s.client);
        let inspector = inspector_url(client).await?;
        let public = format!(
            "http://127.0.0.1:{}/t/{}",
            client.server_port(),
            client.name
        );

        let mut cmd = Command::new("node");
        cmd.arg(dir.join("inspector.mjs"))
            .args(["--inspector", &inspector, "--public", &public])
            .args(["--missed", &missed.to_string()])
            .args(["--timeout-ms", STEP_MS])
            .env("CHROMIUM", &chromium)
            .current_dir(&dir);
        let mut node = Proc::spawn("inspector.mjs", cmd).context("running node")?;
        let status = node.wait_exit(BROWSER_RUN).await?;
        let stdout = node.rest_of_stdout(secs(5)).await?;
        ensure!(
            status.success(),
            "the browser run failed ({status}):\n{}",
            node.stderr_text()
        );
        let last = stdout.last().context("inspector.mjs printed no report")?;
        let report: serde_json::Value = serde_json::from_str(last)
            .with_context(|| format!("inspector.mjs report is not JSON: {last:?}"))?;

        // Deliver all reached the local app once per missed request, in the
        // order they arrived.
        let seen = origin.requests();
        let at = |p: &str| seen.iter().position(|r| r == p);
        ensure!(
            missed_paths.iter().all(|p| count(origin, p) == 1)
                && at(missed_paths[0]) < at(missed_paths[1]),
            "each missed POST should reach the app once, in order; it saw {seen:?}"
        );
        let delivered = report
            .pointer("/missed/results")
            .and_then(|r| r.as_array())
            .with_context(|| format!("no missed results in {report}"))?;
        ensure!(
            delivered.len() as u64 == missed,
            "Deliver all results: {report}"
        );

        // The Hasura Action call of step (e) reached the local app once.
        let views_path = str_at(&report, "/views/path")?;
        ensure!(
            count(origin, views_path) == 1 && str_at(&report, "/views/action")? == "addUser",
            "the Hasura Action call: {report}; the app saw {:?}",
            origin.requests()
        );

        // Three entries, both replays linked to the original.
        let original = str_at(&report, "/original/id")?;
        let replay = str_at(&report, "/replay/id")?;
        let edited = str_at(&report, "/edited/id")?;
        ensure!(
            original != replay && replay != edited && original != edited,
            "entry ids not distinct: {report}"
        );
        for which in ["replay", "edited"] {
            ensure!(
                str_at(&report, &format!("/{which}/replay_of"))? == original,
                "{which} is not linked to {original}: {report}"
            );
        }

        // The local app got the original and the plain replay on the same
        // path, and the edited replay on its edited path.
        let path = str_at(&report, "/original/path")?;
        let edited_path = str_at(&report, "/edited/path")?;
        let seen = origin.requests();
        let count = |p: &str| seen.iter().filter(|r| *r == p).count();
        ensure!(
            count(path) == 2 && count(edited_path) == 1,
            "the local app should have seen {path} twice and {edited_path} once; it saw {seen:?}"
        );

        // What the local app received for the edited replay, from its own
        // /echo answer: the edited method, path, headers and body.
        let echo: serde_json::Value =
            serde_json::from_str(str_at(&report, "/edited/response_body")?)
                .context("the edited replay's response is not the origin's /echo JSON")?;
        let edited_body = str_at(&report, "/edited/body")?;
        ensure!(
            echo["method"] == "POST" && echo["path"] == edited_path,
            "edited replay arrived as {} {}",
            echo["method"],
            echo["path"]
        );
        ensure!(
            echo["body_len"] == edited_body.len()
                && echo["body_sha256"] == sha256_hex(edited_body.as_bytes()),
            "the local app did not receive the edited body {edited_body:?}: {echo}"
        );
        let headers = echoed_headers(&echo)?;
        ensure!(
            header_values(&headers, "x-hook") == ["edited"]
                && header_values(&headers, "x-edited-by") == ["inspector"],
            "the local app did not receive the edited headers: {headers:?}"
        );

        // And the inspector API recorded the edited replay as sent.
        let addr: std::net::SocketAddr = inspector["http://".len()..].parse()?;
        let req = Request::get(format!("/api/requests/{edited}"))
            .header(HOST, addr.to_string())
            .body(empty())?;
        let record = fetch(addr, req, REQ).await?.json()?;
        ensure!(
            record["path"] == edited_path
                && record["replay_of"] == original
                && record["request_size"] == edited_body.len(),
            "recorded edited replay differs from what was sent: {record}"
        );
        // Made from the page, the edited replay carries its diff.
        ensure!(
            record["diff"]["body"]["kind"] == "json",
            "the edited replay's record has no JSON diff: {record}"
        );

        // Copy as curl is the command `relay requests export` prints, and
        // the real curl sends the original body byte for byte.
        let curl_id = str_at(&report, "/curl/id")?;
        let curl_text = str_at(&report, "/curl/text")?;
        let export = cli::relay(
            &client.cfg,
            "requests",
            &["export", curl_id, "--format", "curl"],
            secs(30),
        )
        .await?;
        export.ensure_success()?;
        ensure!(
            export.stdout == curl_text,
            "the page's curl differs from `relay requests export`:\n{curl_text}\n---\n{}",
            export.stdout
        );
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(curl_text);
        let ran = cli::run_command(sh, secs(30)).await?;
        ran.ensure_success()?;
        let echo: serde_json::Value = serde_json::from_str(&ran.stdout)
            .with_context(|| format!("curl's answer is not /echo JSON: {:?}", ran.stdout))?;
        let body = str_at(&report, "/original/body")?;
        ensure!(
            echo["method"] == "POST"
                && echo["path"] == path
                && echo["body_len"] == body.len()
                && echo["body_sha256"] == sha256_hex(body.as_bytes()),
            "curl did not reproduce the request (body {body:?}): {echo}"
        );
        Ok(())
    })
    .await
}

/// Without `--inspect`, a second `relay connect` does not lose its page to
/// the first: each takes the next free port. The range starts at a port
/// this test holds (as a running inspector or anything else would), so
/// neither client may take it, and nothing here meets a real 4040.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_client_gets_the_next_free_inspector_port() -> Result<()> {
    run_test(secs(120), async {
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let first = taken.local_addr()?.port();
        ensure!(first < u16::MAX - 10, "port {first} leaves no range to try");
        let s = Stack::builder()
            .name("inspect-one")
            .client(move |c| c.inspect_first_port = Some(first))
            .start()
            .await?;
        let mut s = s;
        let cfg = s
            .client_config("second")?
            .name("inspect-two")
            .inspect_default(first);
        let mut two = RelayClient::connect(cfg).await?;
        let mut ports = Vec::new();
        for client in [&mut s.client, &mut two] {
            let url = inspector_url(client).await?;
            let addr: std::net::SocketAddr = url["http://".len()..].parse()?;
            // The page answers there, for this client's tunnel.
            let req = Request::get("/api/status")
                .header(HOST, addr.to_string())
                .body(empty())?;
            let status = fetch(addr, req, REQ).await?.json()?;
            ensure!(
                status["name"] == client.name.as_str(),
                "{url} serves {status}, not tunnel {}",
                client.name
            );
            ports.push(addr.port());
        }
        ensure!(
            ports.iter().all(|p| *p > first && *p < first + 10) && ports[0] != ports[1],
            "expected two different ports after the taken {first}, got {ports:?}"
        );
        drop(taken);
        Ok(())
    })
    .await
}
