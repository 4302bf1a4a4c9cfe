//! SIGTERM: the server stops accepting, lets the request in flight finish,
//! then exits 0; the client notices the connection is gone.

use tokio::net::TcpStream;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_request_then_exits_zero() -> Result<()> {
    run_test(secs(90), async {
        let mut s = Stack::builder().name("drain").start().await?;
        let addr = s.server.addr();
        let req = s
            .client
            .request(Routing::Host, "GET", "/hold?key=drain")
            .body(empty())?;
        let in_flight = tokio::spawn(fetch(addr, req, secs(60)));
        s.origin
            .wait_request("the held request", REQ, |r| r == "/hold?key=drain")
            .await?;

        s.server.proc.signal("TERM")?;
        poll_until(
            "relay-server stops accepting connections after SIGTERM",
            secs(10),
            || async move { TcpStream::connect(addr).await.is_err().then_some(()) },
        )
        .await?;
        ensure!(
            s.server.proc.try_exit()?.is_none(),
            "relay-server exited while a request was still in flight"
        );

        s.origin.release("drain");
        let f = within("the in-flight request", secs(30), in_flight)
            .await?
            .context("the in-flight request task")?
            .context("the request in flight during shutdown")?;
        ensure!(
            f.status == StatusCode::OK,
            "request in flight during shutdown: {} {:?}",
            f.status,
            String::from_utf8_lossy(&f.body)
        );
        assert_eq!(&f.body[..], b"released drain");

        let status = s.server.proc.wait_exit(secs(20)).await?;
        ensure!(
            status.success(),
            "relay-server exited with {status} after SIGTERM; stderr:\n{}",
            s.server.proc.stderr_text()
        );
        s.client
            .proc
            .wait_stderr_line("`connection lost`", secs(20), |l| {
                l.contains("connection lost")
            })
            .await?;
        Ok(())
    })
    .await
}
