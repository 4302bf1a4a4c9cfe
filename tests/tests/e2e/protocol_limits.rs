//! Issue 10, item 8: the protocol's limits hold on input as on output, and
//! requests whose target is ambiguous get a clear answer. Each case runs
//! the real binaries; a hostile tunnel client is a bare WebSocket.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use relay_tests::http::RawResponse;

use super::hostile::{next_request_stream, welcomed_client};
use super::*;

/// The start of a body, for messages about responses that may be huge.
fn body_start(f: &Fetched) -> String {
    String::from_utf8_lossy(&f.body[..f.body.len().min(300)]).into_owned()
}

/// `n` headers `x-big-I` of `size` bytes each: about `n * size` bytes of head.
fn big_headers(mut req: http::request::Builder, n: usize, size: usize) -> http::request::Builder {
    let value = "v".repeat(size);
    for i in 0..n {
        req = req.header(format!("x-big-{i}"), value.as_str());
    }
    req
}

/// A 270 KiB request head: hyper takes it (its HTTP/1.1 buffer is about
/// 400 KiB), and the server used to frame it and send it on, because the
/// encoder only checked each value against the head limit, and the client
/// decoded and forwarded it. Now it is over MAX_HEAD_BYTES (256 KiB) and
/// the visitor gets 400 JSON; the local app never sees it. A 200 KiB head
/// still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_request_head_over_the_limit_gets_400_and_is_not_forwarded() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("bighead").start().await?;
        for routing in Routing::BOTH {
            let path = format!("/echo?big={routing:?}");
            let req = big_headers(s.client.request(routing, "GET", &path), 27, 10 * 1024);
            let f = fetch(s.client.public_addr(), req.body(empty())?, REQ).await?;
            ensure!(
                f.status == StatusCode::BAD_REQUEST,
                "270 KiB head, {routing:?} routing: expected 400, got {} {:?}...",
                f.status,
                body_start(&f)
            );
            check_error(&f, StatusCode::BAD_REQUEST, "bad_request")?;
            ensure!(
                f.request_id().is_some(),
                "{routing:?}: no {REQUEST_ID} on the 400"
            );

            let ok_path = format!("/echo?fits={routing:?}");
            let req = big_headers(s.client.request(routing, "GET", &ok_path), 20, 10 * 1024);
            let f = fetch(s.client.public_addr(), req.body(empty())?, REQ).await?;
            ensure!(
                f.status == StatusCode::OK,
                "{routing:?}: a 200 KiB head should reach the app, got {} {:?}...",
                f.status,
                body_start(&f)
            );
        }
        let seen = s.origin.requests();
        ensure!(
            !seen.iter().any(|r| r.contains("big=")),
            "the local app received a head over the limit: {seen:?}"
        );
        Ok(())
    })
    .await
}

/// The issue's other half: a tunnel client answering with a 262,145-byte
/// header value (a frame well under the WebSocket limit). The server used to
/// decode it and hand it to the visitor; now it refuses the frame, ends
/// that session, and the visitor gets 502 JSON without the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_response_head_over_the_limit_from_a_client_is_refused() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().offline().start().await?;
        let server = &s.server;
        let mut ws = welcomed_client(server, "hugeresp").await?;
        let port = server.port();
        let addr = server.addr();
        let visitor = tokio::spawn(async move {
            let req = public_request(port, "hugeresp", Routing::Host, "GET", "/").body(empty())?;
            fetch(addr, req, REQ).await
        });
        let stream = next_request_stream(&mut ws).await?;
        // RESPONSE_HEAD (kind 2), END_STREAM, 200, one header `x-big` whose
        // value is MAX_HEAD_BYTES + 1 bytes.
        let value_len: u32 = 256 * 1024 + 1;
        let mut frame = vec![2u8];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.push(0x01);
        frame.extend_from_slice(&200u16.to_be_bytes());
        frame.extend_from_slice(&1u16.to_be_bytes());
        frame.extend_from_slice(&5u16.to_be_bytes());
        frame.extend_from_slice(b"x-big");
        frame.extend_from_slice(&value_len.to_be_bytes());
        frame.resize(frame.len() + value_len as usize, b'a');
        within(
            "sending the oversized response head",
            REQ,
            ws.send(Message::Binary(Bytes::from(frame))),
        )
        .await??;
        let f = visitor.await??;
        ensure!(
            !f.headers.contains_key("x-big"),
            "the visitor got the oversized header (status {})",
            f.status
        );
        check_error(&f, StatusCode::BAD_GATEWAY, "client_disconnected")?;
        // The session that sent it is over.
        within("the server to end the hostile session", REQ, async {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Close(_) = m {
                    break;
                }
            }
        })
        .await?;
        Ok(())
    })
    .await
}

/// Checks a raw response is relay's JSON error `code` with `status`, its
/// request id in body and header.
fn check_raw_error(r: &RawResponse, status: u16, code: &str, what: &str) -> Result<()> {
    let body = String::from_utf8_lossy(&r.body);
    ensure!(
        r.status == status,
        "{what}: expected {status} `{code}`, got {} {body:?}",
        r.status
    );
    let json: serde_json::Value =
        serde_json::from_slice(&r.body).with_context(|| format!("{what}: body {body:?}"))?;
    ensure!(
        json["error"] == code && json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: expected error {code} with a message, got {json}"
    );
    let header = r.header_values(REQUEST_ID);
    ensure!(
        header.len() == 1 && json["request_id"] == String::from_utf8_lossy(&header[0]).as_ref(),
        "{what}: request_id {} does not match the {REQUEST_ID} header {header:?}",
        json["request_id"]
    );
    Ok(())
}

/// Sends raw HTTP/1.x bytes to the server and expects a 400 `bad_request`
/// that never reached the local app (whose requests carry `marker`).
async fn expect_bad_request(s: &Stack, request: String, marker: &str, what: &str) -> Result<()> {
    let r = raw_exchange(s.server.addr(), request.as_bytes(), REQ).await?;
    check_raw_error(&r, 400, "bad_request", what)?;
    let seen = s.origin.requests();
    ensure!(
        !seen.iter().any(|p| p.contains(marker)),
        "{what}: the local app received it: {seen:?}"
    );
    Ok(())
}

/// Two Host headers: the server used to route by the first. RFC 9112
/// §3.2: 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_two_host_headers_get_400() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("twohosts").start().await?;
        let port = s.server.port();
        let request = format!(
            "GET /echo?two=1 HTTP/1.1\r\nHost: twohosts.localhost:{port}\r\n\
             Host: elsewhere.localhost:{port}\r\n\r\n"
        );
        expect_bad_request(&s, request, "two=1", "two Host headers").await
    })
    .await
}

/// An absolute-form target naming another host than Host: the server used
/// to route by Host. Now 400; the same host in both is routed as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_absolute_form_target_must_name_the_host_headers_host() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("absform").start().await?;
        let port = s.server.port();
        let request = format!(
            "GET http://elsewhere.localhost:{port}/echo?abs=other HTTP/1.1\r\n\
             Host: absform.localhost:{port}\r\n\r\n"
        );
        expect_bad_request(&s, request, "abs=other", "absolute-form to another host").await?;

        let request = format!(
            "GET http://absform.localhost:{port}/echo?abs=same HTTP/1.1\r\n\
             Host: ABSFORM.localhost:{port}\r\n\r\n"
        );
        let r = raw_exchange(s.server.addr(), request.as_bytes(), REQ).await?;
        ensure!(
            r.status == 200,
            "absolute-form naming the Host's host: {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        s.origin
            .wait_request("the absolute-form request", REQ, |p| p == "/echo?abs=same")
            .await?;
        Ok(())
    })
    .await
}

/// HTTP/1.1 without Host (and without an absolute-form target): RFC 9112
/// §3.2 requires 400; the server used to route it by path. HTTP/1.0 may
/// leave Host out and is still routed by path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_http_1_1_without_host_gets_400() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("nohost").start().await?;
        let request = "GET /t/nohost/echo?nohost=11 HTTP/1.1\r\n\r\n".to_string();
        expect_bad_request(&s, request, "nohost=11", "HTTP/1.1 without Host").await?;

        let request = b"GET /t/nohost/echo?nohost=10 HTTP/1.0\r\n\r\n";
        let r = raw_exchange(s.server.addr(), request, REQ).await?;
        ensure!(
            r.status == 200,
            "HTTP/1.0 without Host, path-routed: {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        Ok(())
    })
    .await
}

/// A local app that answers every request with `response` (raw bytes),
/// counting the requests it gets.
async fn raw_app(response: Vec<u8>) -> Result<(u16, Arc<AtomicUsize>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let response = Arc::new(response);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (count, response) = (count.clone(), response.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = tcp.write_all(&response).await;
            });
        }
    });
    Ok((port, seen))
}

/// A local app answering `200 ok` to anything, as catch-all dev servers do.
async fn catch_all_app() -> Result<(u16, Arc<AtomicUsize>)> {
    raw_app(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()).await
}

/// The response side of the 270 KiB head: a local app answering with 27
/// headers of 10 KiB. The client used to frame and send it (each value
/// under the limit) and the server to decode it; now the client refuses to
/// frame it and resets the stream, so the visitor gets 502 JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_response_head_over_the_limit_from_the_local_app_gets_502() -> Result<()> {
    run_test(secs(60), async {
        let mut response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_vec();
        let value = "v".repeat(10 * 1024);
        for i in 0..27 {
            response.extend_from_slice(format!("x-big-{i}: {value}\r\n").as_bytes());
        }
        response.extend_from_slice(b"\r\nok");
        let (app, _) = raw_app(response).await?;
        let s = Stack::builder()
            .name("bigresp")
            .target(app.to_string())
            .start()
            .await?;
        let server = &s.server;
        let req =
            public_request(server.port(), "bigresp", Routing::Host, "GET", "/").body(empty())?;
        let f = fetch(server.addr(), req, REQ).await?;
        ensure!(
            f.status == StatusCode::BAD_GATEWAY && !f.headers.contains_key("x-big-0"),
            "expected 502 without the app's headers, got {} {:?}...",
            f.status,
            body_start(&f)
        );
        check_error(&f, StatusCode::BAD_GATEWAY, "local_unreachable")
    })
    .await
}

fn check_405(r: &RawResponse, what: &str) -> Result<()> {
    check_raw_error(r, 405, "method_not_allowed", what)?;
    let allow = r.header_values("allow");
    ensure!(
        allow.len() == 1 && allow[0].starts_with(b"GET"),
        "{what}: expected an Allow header listing GET, got {allow:?}"
    );
    Ok(())
}

/// CONNECT to a tunnel used to be forwarded; a local app answering 2xx
/// (the usual catch-all) made hyper treat the visitor's connection as a
/// CONNECT tunnel and drop it: no response at all. CONNECT to the bare
/// domain got 404. Both now get 405 with `Allow`, over HTTP/1.1 and
/// HTTP/2, and the local app never sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_connect_gets_405_with_allow() -> Result<()> {
    use relay_tests::http::{connect_h2, fetch_h2};
    run_test(secs(60), async {
        let (app, seen) = catch_all_app().await?;
        let s = Stack::builder()
            .name("tunnelconnect")
            .target(app.to_string())
            .start()
            .await?;
        let server = &s.server;
        let port = server.port();
        for authority in [
            format!("tunnelconnect.localhost:{port}"),
            format!("localhost:{port}"),
        ] {
            let what = format!("CONNECT {authority} (HTTP/1.1)");
            let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
            let r = raw_exchange(server.addr(), request.as_bytes(), REQ)
                .await
                .with_context(|| what.clone())?;
            check_405(&r, &what)?;

            let what = format!("CONNECT {authority} (HTTP/2)");
            let mut h2 = connect_h2(server.addr()).await?;
            let req = Request::builder()
                .method("CONNECT")
                .uri(authority.as_str())
                .version(http::Version::HTTP_2)
                .body(empty())?;
            let f = fetch_h2(&mut h2, req, REQ)
                .await
                .with_context(|| what.clone())?;
            check_error(&f, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
                .with_context(|| what.clone())?;
            ensure!(f.headers.contains_key("allow"), "{what}: no Allow header");
        }
        // The tunnel still works, and CONNECT never reached the app.
        let req = public_request(port, "tunnelconnect", Routing::Host, "GET", "/").body(empty())?;
        let f = fetch(server.addr(), req, REQ).await?;
        ensure!(
            f.status == StatusCode::OK,
            "GET after CONNECT: {}",
            f.status
        );
        let n = seen.load(Ordering::SeqCst);
        ensure!(
            n == 1,
            "the local app saw {n} requests, expected only the GET"
        );
        Ok(())
    })
    .await
}
