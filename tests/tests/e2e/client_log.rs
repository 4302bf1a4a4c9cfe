//! The client's per-request lines on stdout.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_local_target_logs_one_502_line_per_request() -> Result<()> {
    run_test(secs(60), async {
        let dead = ReservedPort::new()?;
        let mut s = Stack::builder()
            .name("nothing-here")
            .target(dead.port().to_string())
            .start()
            .await?;
        let client = &mut s.client;

        let mut ids = Vec::new();
        for (i, routing) in Routing::BOTH.into_iter().enumerate() {
            let pq = format!("/echo?n={i}");
            let req = client.request(routing, "GET", &pq).body(empty())?;
            let f = fetch(client.public_addr(), req, REQ).await?;
            check_error(&f, StatusCode::BAD_GATEWAY, "local_unreachable")?;
            let id = f.request_id().context("no x-relay-request-id on the 502")?;
            let line = client.wait_request_line(&id, REQ).await?;
            assert_eq!(line.method, "GET", "{line:?}");
            assert!(line.path.starts_with("/echo"), "{line:?}");
            assert_eq!(line.status, "502", "{line:?}");
            ids.push(id);
        }
        // The second request's line came after the first's: by then any
        // duplicate line for the first request would have been printed.
        let first = &ids[0];
        let lines_for_first = client
            .proc
            .stdout_seen()
            .iter()
            .filter_map(|l| relay_tests::client::RequestLine::parse(l))
            .filter(|r| &r.id == first)
            .count();
        ensure!(
            lines_for_first == 1,
            "expected one request line for {first}, got {lines_for_first}; stdout:\n{}",
            client.proc.stdout_seen().join("\n")
        );
        Ok(())
    })
    .await
}
