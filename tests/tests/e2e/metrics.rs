//! `--metrics-listen`: after requests of each kind (delivered, rejected by
//! an edge rule, too large, offline, unknown tunnel) and refused
//! handshakes, the scrape is parsed and every series checked by name and
//! label: counters by outcome and reason, bytes, the duration histogram,
//! and the tunnels / streams / missed gauges.

use relay_tests::metrics::{metrics_addr, scrape, Scrape};

use super::hostile::{connect_ws, expect_refused, hello_json};
use super::*;

const KEY: (&str, &str) = ("x-key", "k");

async fn send_to(s: &Stack, method: &str, path: &str, key: bool, body: Vec<u8>) -> Result<Fetched> {
    let mut req = s.client.request(Routing::Host, method, path);
    if key {
        req = req.header(KEY.0, KEY.1);
    }
    fetch(s.client.public_addr(), req.body(full(body))?, REQ).await
}

fn requests(m: &Scrape, outcome: &str) -> Result<f64> {
    m.get("relay_requests_total", &[("outcome", outcome)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_each_outcome_refusal_byte_and_duration() -> Result<()> {
    run_test(secs(90), async {
        let mut s = Stack::builder()
            .name("metered")
            .server(|c| {
                c.max_body = Some("1KiB".into());
                c.extra_args
                    .extend(["--metrics-listen".into(), "127.0.0.1:0".into()]);
            })
            .client_args(["--require-header", "X-Key: k"])
            .start()
            .await?;
        let at = metrics_addr(&mut s.server).await?;

        // Nothing yet: every outcome and reason is there, at zero.
        let (m, _) = scrape(at).await?;
        for outcome in [
            "delivered",
            "offline",
            "rejected",
            "body_too_large",
            "not_found",
        ] {
            ensure!(
                requests(&m, outcome)? == 0.0,
                "{outcome} before any request"
            );
        }
        ensure!(m.get("relay_handshake_refusals_total", &[("reason", "bad_name")])? == 0.0);
        ensure!(m.get("relay_tunnels_connected", &[])? == 1.0);

        let mut response_bytes = 0;
        for _ in 0..3 {
            let f = send_to(&s, "POST", "/echo", true, vec![b'a'; 100]).await?;
            ensure!(f.status == StatusCode::OK, "delivered: {}", f.status);
            response_bytes += f.body.len();
        }
        for _ in 0..2 {
            let f = send_to(&s, "GET", "/echo", false, Vec::new()).await?;
            ensure!(
                f.status == StatusCode::UNAUTHORIZED || f.status == StatusCode::FORBIDDEN,
                "rejected: {}",
                f.status
            );
        }
        let f = send_to(&s, "POST", "/echo", true, vec![b'b'; 4096]).await?;
        ensure!(
            f.status == StatusCode::PAYLOAD_TOO_LARGE,
            "too large: {}",
            f.status
        );
        let req = public_request(s.server.port(), "nobody", Routing::Host, "GET", "/");
        let f = fetch(s.server.addr(), req.body(empty())?, REQ).await?;
        ensure!(
            f.status == StatusCode::NOT_FOUND,
            "unknown tunnel: {}",
            f.status
        );

        // Handshakes refused: a reserved name, a protocol from the future.
        let mut ws = connect_ws(&s.server).await?;
        expect_refused(&mut ws, &hello_json("m1", "www", 1), "bad_name").await?;
        let mut ws = connect_ws(&s.server).await?;
        expect_refused(&mut ws, &hello_json("m2", "later", 999), "version_mismatch").await?;

        // A request held open by the local app is a stream in flight.
        let held = {
            let req = s
                .client
                .request(Routing::Host, "GET", "/hold?key=m")
                .header(KEY.0, KEY.1)
                .body(empty())?;
            let addr = s.client.public_addr();
            tokio::spawn(async move { fetch(addr, req, REQ).await })
        };
        s.origin
            .wait_request("the held request", REQ, |p| p.starts_with("/hold"))
            .await?;
        let (m, text) = scrape(at).await?;
        ensure!(m.get("relay_streams_in_flight", &[])? == 1.0, "{text}");
        s.origin.release("m");
        let f = held.await??;
        ensure!(f.status == StatusCode::OK, "held: {}", f.status);
        response_bytes += f.body.len();

        // The delivered count lands when the answer's last byte is handed
        // to the visitor's connection: wait for it rather than assume.
        let m = poll_until("4 delivered requests counted", secs(10), || async {
            let (m, _) = scrape(at).await.ok()?;
            (requests(&m, "delivered").ok()? == 4.0).then_some(m)
        })
        .await?;
        ensure!(requests(&m, "rejected")? == 2.0);
        ensure!(requests(&m, "body_too_large")? == 1.0);
        ensure!(requests(&m, "not_found")? == 1.0);
        ensure!(requests(&m, "offline")? == 0.0);
        ensure!(m.get("relay_handshake_refusals_total", &[("reason", "bad_name")])? == 1.0);
        ensure!(
            m.get(
                "relay_handshake_refusals_total",
                &[("reason", "version_mismatch")]
            )? == 1.0
        );
        ensure!(m.get("relay_handshake_refusals_total", &[("reason", "bad_token")])? == 0.0);
        let sent = m.get("relay_request_bytes_total", &[])?;
        ensure!(sent >= 300.0, "request bytes {sent}");
        let got = m.get("relay_response_bytes_total", &[])?;
        ensure!(
            got >= response_bytes as f64,
            "response bytes {got} < {response_bytes}"
        );
        ensure!(m.get("relay_streams_in_flight", &[])? == 0.0);
        ensure!(m.get("relay_tunnels_connected", &[])? == 1.0);
        ensure!(m.get("relay_missed_requests_waiting", &[])? == 0.0);
        ensure!(m.get("relay_capture_dropped_total", &[])? == 0.0);

        // Offline: the gauge drops, the request is counted and waits.
        s.go_offline_quietly().await?;
        let f = send_to(&s, "POST", "/echo?while-away", true, b"later".to_vec()).await?;
        ensure!(
            f.status == StatusCode::SERVICE_UNAVAILABLE,
            "offline: {}",
            f.status
        );
        let (m, text) = scrape(at).await?;
        ensure!(requests(&m, "offline")? == 1.0, "{text}");
        ensure!(m.get("relay_tunnels_connected", &[])? == 0.0, "{text}");
        ensure!(
            m.get("relay_missed_requests_waiting", &[])? == 1.0,
            "{text}"
        );

        // Every exchange with a known tunnel is timed: 4 + 2 + 1 + 1.
        let count = m.get("relay_request_duration_seconds_count", &[])?;
        ensure!(count == 8.0, "histogram count {count}\n{text}");
        ensure!(
            m.get("relay_request_duration_seconds_bucket", &[("le", "+Inf")])? == count,
            "{text}"
        );
        let fast = m.get("relay_request_duration_seconds_bucket", &[("le", "10.0")])?;
        ensure!(fast == count, "all took under 10 s: {fast}\n{text}");
        ensure!(
            m.get("relay_request_duration_seconds_sum", &[])? > 0.0,
            "{text}"
        );

        for (family, kind) in [
            ("relay_requests", "counter"),
            ("relay_request_bytes", "counter"),
            ("relay_response_bytes", "counter"),
            ("relay_handshake_refusals", "counter"),
            ("relay_capture_dropped", "counter"),
            ("relay_tunnels_connected", "gauge"),
            ("relay_streams_in_flight", "gauge"),
            ("relay_missed_requests_waiting", "gauge"),
            ("relay_request_duration_seconds", "histogram"),
        ] {
            ensure!(
                m.types.get(family).map(String::as_str) == Some(kind),
                "# TYPE {family} {kind} missing: {:?}",
                m.types
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_refuses_a_public_address_unless_confirmed() -> Result<()> {
    run_test(secs(30), async {
        let sandbox = Sandbox::new()?;
        let mut cfg = ServerConfig::new(sandbox.subdir("data")?);
        cfg.extra_args = vec!["--metrics-listen".into(), "0.0.0.0:0".into()];
        let err = match RelayServer::start(cfg).await {
            Ok(_) => {
                anyhow::bail!("a server with metrics on 0.0.0.0 started without --metrics-public")
            }
            Err(e) => format!("{e:#}"),
        };
        ensure!(
            err.contains("--metrics-public"),
            "the refusal should say how: {err}"
        );
        Ok(())
    })
    .await
}
