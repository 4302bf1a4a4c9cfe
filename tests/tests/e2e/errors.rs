//! The SPEC error table (404 / 503 / 502 / 504 JSON) and the health endpoint.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_name_without_client_answers_503_at_once() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder().name("offline").start().await?;
        echo_ok(&s.client, Routing::Host).await?;
        let (port, name) = (s.server.port(), s.client.name.clone());
        let addr = s.server.addr();
        s.go_offline().await?;

        for routing in Routing::BOTH {
            let req = public_request(port, &name, routing, "POST", "/echo").body(full("lost"))?;
            let started = Instant::now();
            let f = fetch(addr, req, REQ).await?;
            let took = started.elapsed();
            check_error(&f, StatusCode::SERVICE_UNAVAILABLE, "tunnel_offline")?;
            ensure!(
                f.request_id().is_some(),
                "{routing:?}: no {REQUEST_ID} on the 503"
            );
            // "At once": without waiting for anything. The nearest wait the
            // server could make is the request timeout (60 s by default), so
            // 5 s tells the two apart and leaves a busy 2-core machine
            // seconds of scheduling delay.
            ensure!(
                took < secs(5),
                "{routing:?}: tunnel_offline took {took:?}, expected < 5 s"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_app_down_answers_502() -> Result<()> {
    run_test(secs(60), async {
        let dead = ReservedPort::new()?;
        let s = Stack::builder()
            .name("nobody-home")
            .target(format!("127.0.0.1:{}", dead.port()))
            .start()
            .await?;
        let client = &s.client;
        for routing in Routing::BOTH {
            let req = client.request(routing, "GET", "/echo").body(empty())?;
            let f = fetch(client.public_addr(), req, REQ).await?;
            check_error(&f, StatusCode::BAD_GATEWAY, "local_unreachable")?;
            let hdr = f.request_id().context("no x-relay-request-id on the 502")?;
            let body_id = f
                .error_body()?
                .request_id
                .context("no request_id in the 502 body")?;
            ensure!(
                hdr == body_id,
                "{routing:?}: header id {hdr} != body id {body_id}"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_app_that_hangs_up_answers_502_with_spec_code() -> Result<()> {
    run_test(secs(60), async {
        // Accepts, reads the request, and closes without a word: an app
        // that crashed mid-request.
        let app = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = app.local_addr()?.port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = app.accept().await {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await;
            }
        });
        let s = Stack::builder()
            .name("hangs-up")
            .target(format!("127.0.0.1:{port}"))
            .start()
            .await?;
        let client = &s.client;
        let req = client
            .request(Routing::Host, "GET", "/echo")
            .body(empty())?;
        let f = fetch(client.public_addr(), req, REQ).await?;
        // SPEC's table has one code for "refuses / errors"; the message
        // says which of the two happened.
        check_error(&f, StatusCode::BAD_GATEWAY, "local_unreachable")?;
        let message = f.error_body()?.message;
        ensure!(
            message.contains("failed while answering"),
            "message {message:?} does not say the app failed"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_name_answers_404() -> Result<()> {
    run_test(secs(30), async {
        let s = Stack::builder().offline().start().await?;
        let server = &s.server;
        for routing in Routing::BOTH {
            let req = public_request(server.port(), "no-such-tunnel", routing, "GET", "/x")
                .body(empty())?;
            let f = fetch(server.addr(), req, REQ).await?;
            check_error(&f, StatusCode::NOT_FOUND, "tunnel_not_found")
                .with_context(|| format!("{routing:?} routing"))?;
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_local_app_answers_504() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder()
            .name("slowpoke")
            .server(|c| c.request_timeout = Some("1s".into()))
            .start()
            .await?;
        let req = s
            .client
            .request(Routing::Host, "GET", "/slow")
            .body(empty())?;
        let started = Instant::now();
        let f = fetch(s.client.public_addr(), req, secs(20)).await?;
        let took = started.elapsed();
        check_error(&f, StatusCode::GATEWAY_TIMEOUT, "local_timeout")?;
        ensure!(f.request_id().is_some(), "no {REQUEST_ID} on the 504");
        ensure!(
            took >= Duration::from_millis(900) && took < secs(10),
            "504 after {took:?} with --request-timeout 1s"
        );
        Ok(())
    })
    .await
}

/// A request body of `chunks` chunks of `size` bytes, `gap` apart: a slow
/// visitor, whose pauses are the behaviour under test.
fn trickle(chunks: usize, size: usize, gap: Duration) -> relay_tests::http::ReqBody {
    let stream = futures_util::stream::unfold(0usize, move |i| async move {
        if i == chunks {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        let frame = hyper::body::Frame::data(Bytes::from(vec![b'x'; size]));
        Some((Ok::<_, relay_tests::http::BoxError>(frame), i + 1))
    });
    BodyExt::boxed(http_body_util::StreamBody::new(stream))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_outlasts_the_timeout_but_keeps_moving_is_delivered() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder()
            .name("trickle")
            .server(|c| c.request_timeout = Some("1s".into()))
            .start()
            .await?;
        // Chunks 250 ms apart: the upload takes about three times the
        // timeout and is never still for more than a quarter of it. The
        // pauses are the slow visitor under test, not synchronisation.
        const CHUNKS: usize = 12;
        const CHUNK: usize = 1000;
        let body = trickle(CHUNKS, CHUNK, Duration::from_millis(250));
        let req = s
            .client
            .request(Routing::Host, "POST", "/echo")
            .body(body)?;
        let started = Instant::now();
        let f = fetch(s.client.public_addr(), req, secs(20)).await?;
        let took = started.elapsed();
        ensure!(
            f.status == StatusCode::OK,
            "{} after {took:?} with --request-timeout 1s: {}",
            f.status,
            String::from_utf8_lossy(&f.body)
        );
        let echo = f.json()?;
        ensure!(
            echo["body_len"] == serde_json::json!(CHUNKS * CHUNK),
            "the app got {} bytes, sent {}",
            echo["body_len"],
            CHUNKS * CHUNK
        );
        ensure!(
            took > Duration::from_millis(2500),
            "the upload took {took:?}: too short to test the timeout"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_upload_times_out() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder()
            .name("trickle-loris")
            .server(|c| c.request_timeout = Some("1s".into()))
            .start()
            .await?;
        // 10 bytes every 200 ms: the body keeps moving, but at 50 B/s, far
        // below the server's minimum upload rate, so it must not hold the
        // stream past the timeout. (The pauses are the visitor under test.)
        let body = trickle(100, 10, Duration::from_millis(200));
        let req = s
            .client
            .request(Routing::Host, "POST", "/echo")
            .body(body)?;
        let started = Instant::now();
        let f = fetch(s.client.public_addr(), req, secs(20)).await?;
        let took = started.elapsed();
        check_error(&f, StatusCode::GATEWAY_TIMEOUT, "local_timeout")?;
        ensure!(
            took < secs(5),
            "a 50 B/s upload held the request for {took:?} with --request-timeout 1s"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoint_answers_json() -> Result<()> {
    run_test(secs(30), async {
        let s = Stack::builder().offline().start().await?;
        let server = &s.server;
        for host in [
            format!("localhost:{}", server.port()),
            server.addr().to_string(),
        ] {
            let req = Request::builder()
                .uri("/_relay/health")
                .header(HOST, &host)
                .body(empty())?;
            let f = fetch(server.addr(), req, REQ).await?;
            ensure!(
                f.status == StatusCode::OK,
                "health via Host {host}: {}",
                f.status
            );
            f.json()
                .with_context(|| format!("health via Host {host}"))?;
        }
        Ok(())
    })
    .await
}
