//! `relay connect --deadline / --caller` and `--fault / --fault-rate`: a
//! slow answer is marked against the caller's deadline, and each fault
//! (a status without the app, a dropped connection, a late answer) is
//! played and marked, in the capture and the request line.

use super::*;

use relay_tests::capture_api::TunnelApi;
use relay_tests::cli::relay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request on the stack's tunnel; its status, body and request id.
async fn get(s: &Stack, path: &str) -> Result<(Fetched, String)> {
    let req = s.client.request(Routing::Host, "GET", path).body(empty())?;
    let f = fetch(s.client.public_addr(), req, REQ).await?;
    let id = f
        .request_id()
        .with_context(|| format!("no request id on {path}: {}", f.status))?;
    Ok((f, id))
}

fn api(s: &Stack) -> Result<TunnelApi> {
    TunnelApi::new(&s.server, &s.client.cfg, &s.client.name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_slower_than_the_callers_deadline_is_marked() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder()
            .name("deadline")
            .client_args(["--deadline", "1s"])
            .start()
            .await?;
        // The origin takes 1.5 s: over the 1 s deadline.
        let (slow, slow_id) = get(&s, "/delay?ms=1500").await?;
        ensure!(slow.status == 200, "slow: {}", slow.status);
        let (fast, fast_id) = get(&s, "/echo").await?;
        ensure!(fast.status == 200, "fast: {}", fast.status);

        let line = s.client.wait_request_line(&slow_id, REQ).await?;
        ensure!(
            line.note.starts_with("slow: ") && line.note.ends_with("> deadline 1s"),
            "slow line: {line:?}"
        );
        let line = s.client.wait_request_line(&fast_id, REQ).await?;
        ensure!(line.note.is_empty(), "fast line: {line:?}");

        let api = api(&s)?;
        let slow = api.summary(&slow_id).await?;
        ensure!(slow["deadline_exceeded_ms"] == 1000, "slow: {slow}");
        ensure!(slow["fault"].is_null(), "slow: {slow}");
        let fast = api.summary(&fast_id).await?;
        ensure!(fast["deadline_exceeded_ms"].is_null(), "fast: {fast}");

        // `relay requests --json` carries the mark; the table and `show` say it.
        let out = relay(&s.client.cfg, "requests", &["--json"], REQ).await?;
        let rows = out.ensure_success()?.json_lines()?;
        let row = rows
            .iter()
            .find(|r| r["id"] == slow_id.as_str())
            .context("slow request not listed")?;
        ensure!(row["deadline_exceeded_ms"] == 1000, "{row}");
        let table = relay(&s.client.cfg, "requests", &[], REQ).await?;
        let table = &table.ensure_success()?.stdout;
        let slow_row = table
            .lines()
            .find(|l| l.starts_with(&slow_id))
            .context("slow row")?;
        ensure!(slow_row.contains("slow: over the 1s deadline"), "{table}");
        let fast_row = table
            .lines()
            .find(|l| l.starts_with(&fast_id))
            .context("fast row")?;
        ensure!(!fast_row.contains("slow"), "{table}");
        let show = relay(&s.client.cfg, "requests", &["show", &slow_id], REQ).await?;
        ensure!(
            show.ensure_success()?
                .stdout
                .contains("Marked    slow: over the 1s deadline"),
            "{}",
            show.stdout
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_caller_sets_its_deadline() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder()
            .name("caller")
            .client_args(["--caller", "auth0"])
            .start()
            .await?;
        let (f, id) = get(&s, "/echo").await?;
        ensure!(f.status == 200, "{}", f.status);
        let line = s.client.wait_request_line(&id, REQ).await?;
        ensure!(
            line.note.is_empty(),
            "a fast answer is not marked: {line:?}"
        );
        let summary = api(&s)?.summary(&id).await?;
        ensure!(summary["deadline_exceeded_ms"].is_null(), "{summary}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_fault_answers_without_asking_the_app() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder()
            .name("fault-status")
            .client_args(["--fault", "status=500"])
            .start()
            .await?;
        let (f, id) = get(&s, "/echo?n=1").await?;
        ensure!(f.status == 500, "{} {:?}", f.status, f.body);
        ensure!(
            f.headers.get("x-relay-fault").map(|v| v.as_bytes()) == Some(b"status=500"),
            "{:?}",
            f.headers
        );
        let body = f.json()?;
        ensure!(body["error"] == "fault_injected", "{body}");
        let line = s.client.wait_request_line(&id, REQ).await?;
        ensure!(line.status == "500", "{line:?}");
        ensure!(line.note == "fault: status=500", "{line:?}");
        let summary = api(&s)?.summary(&id).await?;
        ensure!(summary["fault"] == "status=500", "{summary}");
        ensure!(summary["outcome"] == "delivered", "{summary}");
        // With a body larger than one frame, still streaming when the
        // fault answers.
        let req = s
            .client
            .request(Routing::Host, "POST", "/upload")
            .body(PatternBody::new(3, 300_000).boxed())?;
        let f = fetch(s.client.public_addr(), req, REQ).await?;
        ensure!(f.status == 500, "POST: {} {:?}", f.status, f.body);
        ensure!(f.json()?["error"] == "fault_injected", "{:?}", f.body);
        // The capture was read after the request line: the app would have
        // been asked by then.
        ensure!(
            s.origin.requests().is_empty(),
            "the origin was asked: {:?}",
            s.origin.requests()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_fault_drops_the_visitors_connection() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder()
            .name("fault-reset")
            .client_args(["--fault", "reset"])
            .start()
            .await?;
        let (target, host) = s.client.target(Routing::Host, "/echo?dropped=1");
        let mut tcp = tokio::net::TcpStream::connect(s.client.public_addr()).await?;
        // A body of several frames: the client resets the stream while it
        // is still arriving.
        let body = vec![b'x'; 300_000];
        tcp.write_all(
            format!(
                "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
        // The server may close before it has read it all: a failed write
        // is part of a dropped connection.
        let _ = tcp.write_all(&body).await;
        let mut answer = Vec::new();
        // EOF or a reset: either way, no HTTP response.
        let read = tokio::time::timeout(REQ, tcp.read_to_end(&mut answer))
            .await
            .context("the connection stayed open")?;
        ensure!(
            answer.is_empty(),
            "got an answer ({read:?}): {:?}",
            String::from_utf8_lossy(&answer)
        );
        let line = s
            .client
            .proc
            .wait_line("the reset's request line", REQ, |l| {
                l.contains("/echo?dropped=1")
            })
            .await?;
        let line = relay_tests::client::RequestLine::parse(&line).context("request line")?;
        ensure!(
            line.status == "---" && line.note == "fault: reset",
            "{line:?}"
        );
        let summary = api(&s)?.summary(&line.id).await?;
        ensure!(summary["fault"] == "reset", "{summary}");
        ensure!(summary["status"].is_null(), "{summary}");

        // An HTTP/2 visitor's stream is reset: no response either.
        let mut h2 = relay_tests::http::connect_h2(s.client.public_addr()).await?;
        let port = s.server.port();
        let req = Request::builder()
            .uri(format!("http://fault-reset.localhost:{port}/echo?h2=1"))
            .version(http::Version::HTTP_2)
            .body(empty())?;
        let got = relay_tests::http::fetch_h2(&mut h2, req, REQ).await;
        ensure!(
            got.is_err(),
            "HTTP/2 got an answer: {:?}",
            got.map(|f| f.status)
        );
        let err = format!("{:#}", got.err().context("an error")?);
        ensure!(
            !err.contains("no complete response"),
            "timed out instead: {err}"
        );
        ensure!(s.origin.requests().is_empty(), "the origin was asked");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_fault_answers_late_with_the_apps_answer() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder()
            .name("fault-delay")
            .client_args(["--fault", "delay=1s"])
            .start()
            .await?;
        let started = Instant::now();
        let (f, id) = get(&s, "/echo").await?;
        let took = started.elapsed();
        ensure!(f.status == 200, "{}", f.status);
        ensure!(took >= secs(1), "answered after {took:?}, before the delay");
        let echo = f.json()?;
        ensure!(echo["path"] == "/echo", "not the app's answer: {echo}");
        ensure!(
            f.headers.get("x-relay-fault").map(|v| v.as_bytes()) == Some(b"delay=1s"),
            "{:?}",
            f.headers
        );
        let line = s.client.wait_request_line(&id, REQ).await?;
        ensure!(line.note == "fault: delay=1s", "{line:?}");
        let summary = api(&s)?.summary(&id).await?;
        ensure!(summary["fault"] == "delay=1s", "{summary}");
        ensure!(
            s.origin.requests() == ["/echo"],
            "{:?}",
            s.origin.requests()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_rate_faults_some_requests_and_not_others() -> Result<()> {
    run_test(secs(90), async {
        const N: usize = 40;
        let s = Stack::builder()
            .name("fault-rate")
            .client_args(["--fault", "status=503", "--fault-rate", "0.5"])
            .start()
            .await?;
        let mut faulted = Vec::new();
        for i in 0..N {
            let (f, id) = get(&s, &format!("/echo?i={i}")).await?;
            match f.status.as_u16() {
                503 => faulted.push(id),
                200 => {}
                other => anyhow::bail!("request {i}: {other}"),
            }
        }
        // Each is faulted with probability 1/2: all or none of 40 happens
        // with probability 2^-39.
        ensure!(
            !faulted.is_empty() && faulted.len() < N,
            "{} of {N} faulted",
            faulted.len()
        );
        ensure!(
            s.origin.requests().len() == N - faulted.len(),
            "the origin saw {} requests, {} were not faulted",
            s.origin.requests().len(),
            N - faulted.len()
        );
        let summary = api(&s)?.summary(&faulted[0]).await?;
        ensure!(summary["fault"] == "status=503", "{summary}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deadline_and_fault_flags_are_refused_at_start() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().offline().start().await?;
        let cases: [(&[&str], &str); 6] = [
            (&["--fault", "status=99"], "200 to 599"),
            (&["--fault", "bogus"], "not a fault"),
            (&["--fault", "reset", "--fault-rate", "2"], "at most 1"),
            (&["--fault-rate", "0.5"], "--fault"),
            (
                &["--deadline", "5s", "--caller", "auth0"],
                "cannot be used with",
            ),
            (&["--host-header", "a b"], "not a Host value"),
        ];
        for (args, says) in cases {
            let mut cfg = s.client.clone();
            cfg.extra_args.extend(args.iter().map(|a| a.to_string()));
            let mut proc = RelayClient::spawn(&cfg)?;
            let status = proc.wait_exit(REQ).await?;
            ensure!(!status.success(), "{args:?} was accepted");
            let err = proc.stderr_text();
            ensure!(err.contains(says), "{args:?}: stderr {err:?}");
        }
        Ok(())
    })
    .await
}
