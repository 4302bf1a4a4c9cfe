//! Issue 10, item 8: the protocol's limits hold on input as on output, and
//! requests whose target is ambiguous get a clear answer. Each case runs
//! the real binaries; a hostile tunnel client is a bare WebSocket.

use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

use super::*;

type Ws = WebSocketStream<TcpStream>;

/// A bare WebSocket that has claimed tunnel `name` on `server`, for cases
/// where the tunnel client itself misbehaves.
async fn hostile_client(server: &RelayServer, name: &str) -> Result<Ws> {
    let tcp = TcpStream::connect(server.addr()).await?;
    let url = format!("ws://localhost:{}/_relay/v1/connect", server.port());
    let (mut ws, _) = within(
        "the WebSocket handshake",
        REQ,
        tokio_tungstenite::client_async(url.as_str(), tcp),
    )
    .await??;
    let hello = serde_json::json!({
        "protocol": 1, "software": "t", "client_id": format!("hostile-{name}"), "name": name,
    });
    within(
        "sending the hello",
        REQ,
        ws.send(Message::text(hello.to_string())),
    )
    .await??;
    let reply = within("the welcome", REQ, ws.next())
        .await?
        .context("socket closed before the welcome")??;
    ensure!(
        matches!(&reply, Message::Text(t) if t.as_str().contains("\"welcome\"")),
        "expected a welcome for {name}, got {reply:?}"
    );
    Ok(ws)
}

/// Waits for the REQUEST_HEAD frame (kind 1) of a new stream; its id.
async fn next_request_stream(ws: &mut Ws) -> Result<u32> {
    loop {
        let msg = within("a request head frame", REQ, ws.next())
            .await?
            .context("the session closed before the request came")??;
        if let Message::Binary(b) = msg {
            if b.len() >= 5 && b[0] == 1 {
                return Ok(u32::from_be_bytes([b[1], b[2], b[3], b[4]]));
            }
        }
    }
}

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
        let s = Stack::start("bighead", |_| {}).await?;
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
        let sandbox = Sandbox::new()?;
        let server = RelayServer::start(ServerConfig::new(sandbox.subdir("data")?)).await?;
        let mut ws = hostile_client(&server, "hugeresp").await?;
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
