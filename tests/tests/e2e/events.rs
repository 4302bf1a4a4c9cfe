//! `relay connect --json` / `relay start --json` (SPEC "relay connect"):
//! NDJSON events on stdout (`ready`, `request`, `missed`, `reconnecting`,
//! `reconnected`), every line a JSON object; and times in the terminal in
//! the user's time zone (`TZ`), JSON keeping UTC.

use relay_tests::cli::{self, relay, run_command, Tunnel};
use relay_tests::client::{start_command, wait_event};
use relay_tests::process::Proc;
use relay_tests::Stop;
use serde_json::Value;

use super::*;

/// How long an event may take to show.
const EVENT: Duration = Duration::from_secs(20);

/// `time` is RFC 3339 with milliseconds and a numeric offset.
fn check_time(e: &Value) -> Result<jiff::Timestamp> {
    let t = e["time"].as_str().context("no time")?;
    ensure!(
        t.len() == "2026-11-24T10:15:02.123+00:00".len() && t.as_bytes()[19] == b'.',
        "time {t:?} is not RFC 3339 with milliseconds and an offset"
    );
    t.parse().with_context(|| format!("time {t:?}"))
}

fn urls(e: &Value) -> Vec<String> {
    e["urls"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON-mode client of `s`'s config, spawned.
fn spawn_json(cfg: &ClientConfig) -> Result<Proc> {
    Proc::spawn("relay --json", cfg.command())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_prints_ready_then_a_request_event_per_request() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder()
            .name("evt")
            .client_args(["--json"])
            .offline()
            .start()
            .await?;
        let mut p = spawn_json(&s.client)?;
        let (ready, before) = wait_event(&mut p, "ready", EVENT, |_| true).await?;
        ensure!(before.is_empty(), "events before ready: {before:?}");
        check_time(&ready)?;
        let port = s.server.port();
        ensure!(ready["tunnel"] == "evt", "{ready}");
        ensure!(
            urls(&ready)
                == [
                    format!("http://evt.localhost:{port}/"),
                    format!("http://localhost:{port}/t/evt/")
                ],
            "{ready}"
        );
        ensure!(
            ready["target"] == format!("http://localhost:{}", s.origin.port()),
            "{ready}"
        );
        ensure!(ready["inspector"].is_null(), "--no-inspect: {ready}");

        let mut sent = Vec::new();
        for (method, path, want) in [
            ("GET", "/echo?token=secret-1&x=1", 200),
            ("POST", "/nope", 404),
        ] {
            let req = public_request(port, "evt", Routing::Host, method, path)
                .body(relay_tests::http::empty())?;
            let f = fetch(s.server.addr(), req, REQ).await?;
            ensure!(f.status.as_u16() == want, "{method} {path}: {}", f.status);
            sent.push((f.request_id().context("request id")?, method, path, want));
        }
        for (id, method, path, status) in sent {
            let (e, _) = wait_event(&mut p, "request", EVENT, |e| e["id"] == id).await?;
            check_time(&e)?;
            ensure!(e["method"] == method && e["status"] == status, "{e}");
            ensure!(e["tunnel"] == "evt" && e["duration_ms"].is_u64(), "{e}");
            let shown = path.replace("secret-1", "***");
            ensure!(e["path"] == shown.as_str(), "secrets hidden: {e}");
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_reports_reconnecting_and_reconnected_across_a_server_restart() -> Result<()> {
    run_test(secs(90), async {
        let mut s = Stack::builder()
            .name("evt-back")
            .client_args(["--json"])
            .offline()
            .start()
            .await?;
        let mut p = spawn_json(&s.client)?;
        let (ready, _) = wait_event(&mut p, "ready", EVENT, |_| true).await?;
        s.server.restart(Stop::Term).await?;
        let (down, _) = wait_event(&mut p, "reconnecting", EVENT, |_| true).await?;
        check_time(&down)?;
        ensure!(down["attempt"] == 1, "{down}");
        ensure!(
            down["delay_ms"].as_u64().is_some_and(|d| d <= 10_000),
            "{down}"
        );
        ensure!(
            down["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("connection lost")),
            "{down}"
        );
        let (back, between) = wait_event(&mut p, "reconnected", secs(45), |_| true).await?;
        ensure!(
            between.iter().all(|e| e["type"] == "reconnecting"),
            "{between:?}"
        );
        ensure!(urls(&back) == urls(&ready), "same URLs: {back} vs {ready}");
        ensure!(back["tunnel"] == "evt-back", "{back}");
        let req = public_request(s.server.port(), "evt-back", Routing::Path, "GET", "/echo")
            .body(relay_tests::http::empty())?;
        let f = fetch(s.server.addr(), req, REQ).await?;
        ensure!(
            f.status == StatusCode::OK,
            "after reconnecting: {}",
            f.status
        );
        let id = f.request_id().context("request id")?;
        wait_event(&mut p, "request", EVENT, |e| e["id"] == id).await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_reports_missed_requests_after_connecting() -> Result<()> {
    run_test(secs(90), async {
        let s = Stack::builder()
            .name("evt-missed")
            .client_args(["--json"])
            .offline()
            .start()
            .await?;
        let mut p = spawn_json(&s.client)?;
        wait_event(&mut p, "ready", EVENT, |_| true).await?;
        p.kill().await?;
        s.wait_no_live_tunnel().await?;
        for n in 0..2 {
            let req = public_request(
                s.server.port(),
                "evt-missed",
                Routing::Host,
                "POST",
                &format!("/hook?n={n}"),
            )
            .body(relay_tests::http::empty())?;
            let f = fetch(s.server.addr(), req, REQ).await?;
            ensure!(f.status == StatusCode::SERVICE_UNAVAILABLE, "{}", f.status);
        }
        let mut p = spawn_json(&s.client)?;
        let (ready, _) = wait_event(&mut p, "ready", EVENT, |_| true).await?;
        let (missed, between) = wait_event(&mut p, "missed", EVENT, |_| true).await?;
        ensure!(between.is_empty(), "missed follows ready: {between:?}");
        check_time(&missed)?;
        ensure!(missed["tunnel"] == "evt-missed", "{missed}");
        ensure!(
            missed["count"] == 2 && missed["delivering"] == false,
            "{missed}"
        );
        let oldest: jiff::Timestamp = missed["oldest"]
            .as_str()
            .context("oldest")?
            .parse()
            .context("oldest is RFC 3339")?;
        ensure!(
            oldest <= check_time(&ready)?,
            "oldest {oldest} is before ready"
        );
        Ok(())
    })
    .await
}

/// Requests that arrive while the client waits out its backoff are
/// reported when it is back: the server is stopped, and started again
/// only once a `reconnecting` event says the next attempt is seconds away,
/// so the requests sent then find no client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_reports_missed_requests_after_reconnecting() -> Result<()> {
    run_test(secs(120), async {
        let mut s = Stack::builder()
            .name("evt-gap")
            .client_args(["--json"])
            .offline()
            .start()
            .await?;
        let mut p = spawn_json(&s.client)?;
        wait_event(&mut p, "ready", EVENT, |_| true).await?;
        let status = s.server.terminate(secs(15)).await?;
        ensure!(status.success(), "relay-server exited with {status}");
        // Backoff doubles to 10 s: this comes within a few attempts.
        let (gap, _) = wait_event(&mut p, "reconnecting", secs(40), |e| {
            e["delay_ms"].as_u64().is_some_and(|d| d >= 3000)
        })
        .await?;
        let mut cfg = s.server.config().clone();
        cfg.listen = s.server.addr().to_string();
        s.server = RelayServer::start(cfg).await?;
        for n in 0..3 {
            let req = public_request(
                s.server.port(),
                "evt-gap",
                Routing::Host,
                "POST",
                &format!("/gap?n={n}"),
            )
            .body(relay_tests::http::empty())?;
            let f = fetch(s.server.addr(), req, REQ).await?;
            ensure!(
                f.status == StatusCode::SERVICE_UNAVAILABLE,
                "request {n} while the client waits ({gap}): {}",
                f.status
            );
        }
        let (back, _) = wait_event(&mut p, "reconnected", secs(30), |_| true).await?;
        let (missed, between) = wait_event(&mut p, "missed", EVENT, |_| true).await?;
        ensure!(
            between.is_empty(),
            "missed follows reconnected: {between:?}"
        );
        ensure!(missed["count"] == 3, "{missed}");
        ensure!(back["tunnel"] == "evt-gap" && missed["tunnel"] == "evt-gap");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_json_names_the_tunnel_of_every_event() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().offline().start().await?;
        let toml = format!(
            "[tunnels.one]\ntarget = {p}\n[tunnels.two]\ntarget = {p}\n",
            p = s.origin.port()
        );
        let cmd = start_command(&s.client, &toml, &["--json", "--inspect", "127.0.0.1:0"])?;
        let mut p = Proc::spawn("relay start --json", cmd)?;
        let (first, _) = wait_event(&mut p, "ready", EVENT, |_| true).await?;
        let (second, _) = wait_event(&mut p, "ready", EVENT, |_| true).await?;
        let mut names = [first["tunnel"].clone(), second["tunnel"].clone()];
        names.sort_by_key(|v| v.to_string());
        ensure!(names == ["one", "two"], "{first} {second}");
        for e in [&first, &second] {
            ensure!(
                e["inspector"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("http://127.0.0.1:")),
                "one inspector, in both ready events: {e}"
            );
        }
        let req = public_request(s.server.port(), "two", Routing::Host, "GET", "/echo")
            .body(relay_tests::http::empty())?;
        let id = fetch(s.server.addr(), req, REQ)
            .await?
            .request_id()
            .context("id")?;
        let (e, _) = wait_event(&mut p, "request", EVENT, |e| e["id"] == id).await?;
        ensure!(e["tunnel"] == "two", "{e}");
        Ok(())
    })
    .await
}

/// `YYYY-MM-DD HH:MM:SS` of `utc` (RFC 3339) in the zone `tz`.
fn local(utc: &str, tz: &str) -> Result<String> {
    let t: jiff::Timestamp = utc.parse()?;
    let zone = jiff::tz::TimeZone::get(tz)?;
    Ok(t.to_zoned_datetime(zone).strftime("%F %T").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_shows_times_in_the_tz_zone_and_json_in_utc() -> Result<()> {
    run_test(secs(90), async {
        let s = Stack::builder().name("tz").offline().start().await?;
        let mut cmd = s.client.command();
        cmd.env("TZ", "Asia/Tokyo");
        let mut client = RelayClient::from_proc(s.client.clone(), Proc::spawn("relay", cmd)?)?;
        client.wait_connected(secs(20)).await?;
        let id = visit_ok(
            &client,
            client
                .request(Routing::Host, "GET", "/echo?tz=1")
                .body(relay_tests::http::empty())?,
        )
        .await?;
        let line = client.wait_request_line(&id, REQ).await?;

        let out = relay(&s.client, "requests", &["--json"], CLI).await?;
        out.ensure_success()?;
        let utc = out.json_lines()?[0]["time"]
            .as_str()
            .context("time")?
            .to_owned();
        ensure!(utc.ends_with('Z'), "--json keeps UTC: {utc}");
        let tokyo = local(&utc, "Asia/Tokyo")?;

        // The request line's clock is Tokyo's (within a second or two of
        // the capture's arrival).
        let secs_of = |hms: &str| -> Option<i64> {
            let mut f = hms
                .split(':')
                .map(|x| x.split('.').next()?.parse::<i64>().ok());
            Some(f.next()?? * 3600 + f.next()?? * 60 + f.next()??)
        };
        let shown = secs_of(&line.time).context("line clock")?;
        let want = secs_of(&tokyo[11..]).context("capture clock")?;
        let diff = (shown - want).rem_euclid(86_400);
        ensure!(
            diff <= 2 || diff >= 86_398,
            "request line at {} for a capture at {utc} (Tokyo {tokyo})",
            line.time
        );

        for (tz, want_title, want_time) in [
            ("Asia/Tokyo", "TIME (Asia/Tokyo)", tokyo.clone()),
            ("UTC", "TIME (UTC)", local(&utc, "UTC")?),
        ] {
            let mut cmd = cli::command(&s.client, Tunnel::Flags, "requests", &[]);
            cmd.env("TZ", tz);
            let out = run_command(cmd, CLI).await?;
            out.ensure_success()?;
            let header = out.stdout.lines().next().unwrap_or_default();
            ensure!(header.contains(want_title), "TZ={tz}:\n{}", out.stdout);
            let row = out
                .stdout
                .lines()
                .find(|l| l.starts_with(&id))
                .context("the row")?;
            ensure!(row.contains(&want_time), "TZ={tz}, want {want_time}: {row}");

            let mut cmd = cli::command(&s.client, Tunnel::Flags, "requests", &["show", &id]);
            cmd.env("TZ", tz);
            let out = run_command(cmd, CLI).await?;
            out.ensure_success()?;
            let offset = if tz == "UTC" { "+00:00" } else { "+09:00" };
            let want_line = format!("Time      {want_time}.");
            let time_line = out
                .stdout
                .lines()
                .find(|l| l.starts_with("Time "))
                .unwrap_or_default();
            ensure!(
                time_line.starts_with(&want_line)
                    && time_line.ends_with(&format!(" {offset} ({tz})")),
                "TZ={tz}: {time_line:?}"
            );
        }
        Ok(())
    })
    .await
}
