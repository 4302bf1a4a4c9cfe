//! Hostile clients on `/_relay/v1/connect`, driven with a bare WebSocket:
//! malformed hellos, a wrong protocol version, bad names, and garbage frames
//! after a welcome. None of them may disturb other tunnels.

use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

use super::*;

pub(super) type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket to the server's connect endpoint.
pub(super) async fn connect_ws(server: &RelayServer) -> Result<Ws> {
    let tcp = TcpStream::connect(server.addr()).await?;
    let url = format!("ws://localhost:{}/_relay/v1/connect", server.port());
    let (ws, resp) = within(
        "the WebSocket handshake",
        REQ,
        tokio_tungstenite::client_async(url.as_str(), tcp),
    )
    .await?
    .with_context(|| format!("WebSocket handshake to {url}"))?;
    ensure!(
        resp.status() == StatusCode::SWITCHING_PROTOCOLS,
        "connect endpoint answered {}",
        resp.status()
    );
    Ok(ws)
}

/// Sends `hello` as a text message and returns the server's JSON reply.
pub(super) async fn hello(ws: &mut Ws, hello: &str) -> Result<serde_json::Value> {
    within("sending the hello", REQ, ws.send(Message::text(hello))).await??;
    let reply = within("the server's handshake reply", REQ, ws.next())
        .await?
        .context("socket closed without a handshake reply")?
        .context("reading the handshake reply")?;
    let Message::Text(text) = reply else {
        anyhow::bail!("expected a JSON text reply to {hello:?}, got {reply:?}");
    };
    serde_json::from_str(text.as_str())
        .with_context(|| format!("handshake reply is not JSON: {:?}", text.as_str()))
}

/// Expects a `refused` reply with `reason`; returns its message.
pub(super) async fn expect_refused(ws: &mut Ws, hello_text: &str, reason: &str) -> Result<String> {
    let reply = hello(ws, hello_text).await?;
    ensure!(
        reply["type"] == "refused" && reply["reason"] == reason,
        "hello {hello_text:?}: expected a refusal with reason {reason}, got {reply}"
    );
    let message = reply["message"]
        .as_str()
        .with_context(|| format!("refusal without a string message: {reply}"))?;
    ensure!(!message.is_empty(), "empty refusal message: {reply}");
    Ok(message.to_string())
}

/// Reads until the server ends the socket (a Close, EOF or a reset). Data
/// messages are not expected and fail the test, except binary frames after a
/// welcome (`allow_binary`), where the server may still send a ping.
async fn expect_closed(ws: &mut Ws, what: &str, allow_binary: bool) -> Result<()> {
    within(&format!("the server to close {what}"), REQ, async {
        loop {
            match ws.next().await {
                None => return Ok(()),
                Some(Err(_)) => return Ok(()),
                Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Binary(_))) if allow_binary => {}
                Some(Ok(m)) => anyhow::bail!("{what}: unexpected message {m:?}"),
            }
        }
    })
    .await?
}

/// A bare WebSocket that has claimed tunnel `name` on `server`, for cases
/// where the tunnel client itself misbehaves.
pub(super) async fn welcomed_client(server: &RelayServer, name: &str) -> Result<Ws> {
    let mut ws = connect_ws(server).await?;
    let reply = hello(&mut ws, &hello_json(&format!("hostile-{name}"), name, 1)).await?;
    ensure!(
        reply["type"] == "welcome" && reply["name"] == name,
        "expected a welcome for {name}, got {reply}"
    );
    Ok(ws)
}

/// Waits for the REQUEST_HEAD frame (kind 1, then the stream id) of a new
/// stream; returns its id.
pub(super) async fn next_request_stream(ws: &mut Ws) -> Result<u32> {
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

pub(super) fn hello_json(client_id: &str, name: &str, protocol: u64) -> String {
    serde_json::json!({
        "protocol": protocol,
        "software": "t",
        "client_id": client_id,
        "name": name,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_that_is_not_json_is_refused_as_malformed() -> Result<()> {
    run_test(secs(30), async {
        let s = Stack::builder().offline().start().await?;
        let server = &s.server;
        let mut ws = connect_ws(server).await?;
        expect_refused(&mut ws, "this is { not json", "malformed").await?;
        expect_closed(&mut ws, "a malformed hello", false).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_with_unknown_protocol_is_refused_naming_both_versions() -> Result<()> {
    run_test(secs(30), async {
        let s = Stack::builder().offline().start().await?;
        let server = &s.server;
        let mut ws = connect_ws(server).await?;
        let msg = expect_refused(
            &mut ws,
            &hello_json("x9", "future1", 999),
            "version_mismatch",
        )
        .await?;
        let numbers: Vec<&str> = msg
            .split(|c: char| !c.is_ascii_digit())
            .filter(|n| !n.is_empty())
            .collect();
        ensure!(
            numbers.contains(&"999") && numbers.contains(&"1"),
            "version_mismatch message should name the client's (999) and the server's (1) \
             protocol versions: {msg:?}"
        );
        expect_closed(&mut ws, "a version mismatch", false).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_deadline_out_of_range_is_refused_as_malformed() -> Result<()> {
    run_test(secs(30), async {
        let s = Stack::builder().offline().start().await?;
        let server = &s.server;
        for (i, ms) in [serde_json::json!(0), serde_json::json!(86_400_001u64)]
            .into_iter()
            .enumerate()
        {
            let mut text: serde_json::Value =
                serde_json::from_str(&hello_json(&format!("d{i}"), &format!("deadline{i}"), 1))?;
            text["deadline_ms"] = ms.clone();
            let mut ws = connect_ws(server).await?;
            let msg = expect_refused(&mut ws, &text.to_string(), "malformed")
                .await
                .with_context(|| format!("deadline_ms {ms}"))?;
            ensure!(msg.contains("deadline_ms"), "{msg}");
            expect_closed(&mut ws, "a refused deadline", false).await?;
        }
        // In range, the same hello is welcome.
        let mut text: serde_json::Value = serde_json::from_str(&hello_json("d9", "deadline9", 1))?;
        text["deadline_ms"] = serde_json::json!(10_000);
        let mut ws = connect_ws(server).await?;
        let reply = hello(&mut ws, &text.to_string()).await?;
        ensure!(reply["type"] == "welcome", "{reply}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uppercase_or_reserved_name_is_refused_as_bad_name() -> Result<()> {
    run_test(secs(30), async {
        let s = Stack::builder().offline().start().await?;
        let server = &s.server;
        for (i, name) in ["Hostile", "HOSTILE4", "www"].into_iter().enumerate() {
            let mut ws = connect_ws(server).await?;
            expect_refused(&mut ws, &hello_json(&format!("x{i}"), name, 1), "bad_name")
                .await
                .with_context(|| format!("name {name:?}"))?;
            expect_closed(&mut ws, &format!("a refused name {name:?}"), false).await?;
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frame_closes_only_that_session() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder().name("steady").start().await?;
        echo_ok(&s.client, Routing::Host).await?;

        let mut ws = welcomed_client(&s.server, "hostile1").await?;
        // Kind 99 does not exist; the frame is also too short for any kind.
        within(
            "sending a garbage frame",
            REQ,
            ws.send(Message::Binary(Bytes::from_static(&[99, 0, 0, 0, 1]))),
        )
        .await??;
        expect_closed(&mut ws, "a session that sent a garbage frame", true).await?;

        // The real tunnel is unaffected, and the server still answers.
        echo_ok(&s.client, Routing::Host).await?;
        echo_ok(&s.client, Routing::Path).await?;
        let health = Request::builder()
            .uri("/_relay/health")
            .header(HOST, format!("localhost:{}", s.server.port()))
            .body(empty())?;
        let f = fetch(s.server.addr(), health, REQ).await?;
        ensure!(
            f.status == StatusCode::OK,
            "health after a garbage frame: {} {:?}",
            f.status,
            String::from_utf8_lossy(&f.body)
        );
        f.json().context("health body")?;
        ensure!(
            s.server.proc.try_exit()?.is_none() && s.client.proc.try_exit()?.is_none(),
            "relay-server or the steady client exited after another session's garbage frame"
        );
        Ok(())
    })
    .await
}

/// A client whose response head declares more bytes than it sends must not
/// leave the visitor's connection out of step: the visitor gets what came
/// and then the end of the connection, not a connection that waits for
/// (or reads the next response as) the missing bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_lies_about_its_length_ends_the_visitors_connection() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    run_test(secs(60), async {
        let s = Stack::builder().name("steady").start().await?;
        let mut ws = welcomed_client(&s.server, "liar").await?;
        let mut visitor = TcpStream::connect(s.server.addr()).await?;
        let request = format!(
            "GET /x HTTP/1.1\r\nHost: liar.localhost:{}\r\n\r\n",
            s.server.port()
        );
        visitor.write_all(request.as_bytes()).await?;
        // The request reaches the hostile client as a REQUEST_HEAD frame
        // (kind 1, then the stream id).
        let stream = next_request_stream(&mut ws).await?;
        // RESPONSE_HEAD (kind 2), INLINE_BODY, 200, one header
        // `content-length: 100`, and only 5 body bytes.
        let mut frame = vec![2u8];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.push(0x02);
        frame.extend_from_slice(&200u16.to_be_bytes());
        frame.extend_from_slice(&1u16.to_be_bytes());
        frame.extend_from_slice(&14u16.to_be_bytes());
        frame.extend_from_slice(b"content-length");
        frame.extend_from_slice(&3u32.to_be_bytes());
        frame.extend_from_slice(b"100");
        frame.extend_from_slice(b"hello");
        within(
            "sending the response head",
            REQ,
            ws.send(Message::Binary(Bytes::from(frame))),
        )
        .await??;
        let mut got = Vec::new();
        match within(
            "the end of the visitor's connection",
            REQ,
            visitor.read_to_end(&mut got),
        )
        .await?
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => return Err(e).context("reading the visitor's response"),
        }
        let text = String::from_utf8_lossy(&got);
        ensure!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("hello"),
            "the visitor should get the head and the 5 bytes that came, got {text:?}"
        );
        Ok(())
    })
    .await
}

/// Resident set size (`VmRSS`) of a process in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// A PING frame (kind 7, stream 0, nonce).
fn ping_frame(nonce: u64) -> Message {
    let mut f = vec![7u8, 0, 0, 0, 0];
    f.extend_from_slice(&nonce.to_be_bytes());
    Message::Binary(Bytes::from(f))
}

/// Issue 10, item 2: a client that pings without reading used to grow the
/// server by gigabytes (one queued PONG per PING). PONGs are coalesced now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_ping_flood_from_a_client_that_never_reads_keeps_server_memory_bounded(
) -> Result<()> {
    run_test(secs(90), async {
        let s = Stack::builder().name("steady").start().await?;
        let ws = welcomed_client(&s.server, "pinger").await?;
        let before = rss_kib(s.server.proc.pid())?;
        // Bounded: a fixed number of PINGs, and a deadline on the whole flood.
        // The client never reads, so the server's PONGs back up.
        let (mut sink, _unread) = ws.split();
        let flood = async {
            for nonce in 0..1_500_000u64 {
                sink.feed(ping_frame(nonce)).await?;
                if nonce % 1024 == 0 {
                    sink.flush().await?;
                }
            }
            sink.flush().await
        };
        let _ = tokio::time::timeout(secs(20), flood).await;
        let after = rss_kib(s.server.proc.pid())?;
        eprintln!("server RSS before the flood {before} KiB, after {after} KiB");
        ensure!(
            after < before + 64 * 1024,
            "a PING flood grew the server from {before} KiB to {after} KiB"
        );
        // Other tunnels are unaffected.
        echo_ok(&s.client, Routing::Host).await?;
        Ok(())
    })
    .await
}

/// Issue 10, item 4: a session whose client is alive but does not read used
/// to leave every visitor of the tunnel waiting for ever. Every wait of an
/// exchange is under the request timeout now, and the stalled session is
/// dropped once its writer made no progress for the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_visitors_of_a_stalled_session_get_an_answer_in_time() -> Result<()> {
    run_test(secs(150), async {
        let s = Stack::builder()
            .server(|c| c.request_timeout = Some("2s".into()))
            .offline()
            .start()
            .await?;
        let server = &s.server;
        let ws = welcomed_client(server, "stalled").await?;
        // From here on the client never reads, but it pings every 5 s like
        // a live client, so only the stuck writer can tell it is stalled.
        let (mut sink, unread) = ws.split();
        let pinger = tokio::spawn(async move {
            let mut tick = tokio::time::interval(secs(5));
            for nonce in 0.. {
                tick.tick().await;
                if sink.send(ping_frame(nonce)).await.is_err() {
                    break;
                }
            }
        });
        let host = format!("stalled.localhost:{}", server.port());
        let addr = server.addr();
        let visitor = move |path: String, body: u64| {
            let req = Request::builder()
                .method("POST")
                .uri(path)
                .header(HOST, host.clone())
                .body(PatternBody::new(1, body).boxed());
            async move { fetch(addr, req?, secs(30)).await }
        };
        // Bodies fill the socket and the session's queue, then requests
        // queue behind them.
        let started = Instant::now();
        let mut visitors = Vec::new();
        for i in 0..96 {
            visitors.push(tokio::spawn(visitor(format!("/v{i}"), 1 << 20)));
        }
        for (i, v) in visitors.into_iter().enumerate() {
            let got = v.await.context("visitor task")??;
            ensure!(
                got.status == StatusCode::GATEWAY_TIMEOUT
                    || got.status == StatusCode::SERVICE_UNAVAILABLE,
                "visitor {i}: expected 504 or 503 from a stalled session, got {} {:?}",
                got.status,
                String::from_utf8_lossy(&got.body)
            );
        }
        let took = started.elapsed();
        eprintln!("96 visitors of a stalled session answered within {took:?}");
        // The stalled session itself is dropped within the idle timeout
        // (45 s, checked every 22.5 s): then the tunnel is offline.
        poll_until("the stalled session to be dropped", secs(90), || async {
            let got = visitor.clone()("/after".into(), 0).await.ok()?;
            (got.status == StatusCode::SERVICE_UNAVAILABLE
                && got.error_body().ok()?.code == "tunnel_offline")
                .then_some(())
        })
        .await?;
        let dropped_after = started.elapsed();
        eprintln!("stalled session dropped {dropped_after:?} after the visitors came");
        ensure!(
            dropped_after > secs(40),
            "the session was dropped after {dropped_after:?}, before its writer could have \
             been stuck for the idle timeout: it was not the stall that dropped it"
        );
        pinger.abort();
        drop(unread);
        Ok(())
    })
    .await
}

/// Issue 10, item 5: visitors that stop reading large downloads used to hold
/// about 2 MB of server memory each with capture on (a captured prefix, the
/// stream's window, hyper's write buffer), with no cap. The session's unread
/// bytes and its captures in progress are under budgets now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_visitors_that_stop_reading_downloads_hold_bounded_server_memory() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    run_test(secs(120), async {
        let s = Stack::builder().name("stuck-downloads").start().await?;
        echo_ok(&s.client, Routing::Host).await?;
        let pid = s.server.proc.pid();
        let before = rss_kib(pid)?;
        let request = format!(
            "GET /download?bytes=67108864 HTTP/1.1\r\nHost: {}.localhost:{}\r\n\r\n",
            s.client.name,
            s.server.port()
        );
        let mut visitors = Vec::new();
        for _ in 0..200 {
            let mut v = tokio::net::TcpStream::connect(s.client.public_addr()).await?;
            v.write_all(request.as_bytes()).await?;
            // Read the head and a little body, then never read again.
            let mut first = [0u8; 1024];
            within("the download's first bytes", REQ, v.read(&mut first)).await??;
            visitors.push(v);
        }
        // Watch the server while the downloads pile up against the visitors
        // (observation over a fixed window, not synchronisation).
        let mut peak = 0;
        for _ in 0..40 {
            peak = peak.max(rss_kib(pid)?);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!("200 stuck downloads: server RSS {before} KiB before, peak {peak} KiB");
        ensure!(
            peak < before + 300 * 1024,
            "200 visitors that stopped reading grew the server from {before} KiB to {peak} KiB"
        );
        // The tunnel still serves others.
        echo_ok(&s.client, Routing::Host).await?;
        drop(visitors);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_with_bad_or_oversized_edge_rules_is_refused_as_bad_rules() -> Result<()> {
    run_test(secs(30), async {
        let s = Stack::builder().offline().start().await?;
        let server = &s.server;
        let too_many: Vec<String> = (0..65).map(|i| format!("10.0.0.{i}")).collect();
        let long_value = "v".repeat(2000);
        for (i, edge) in [
            serde_json::json!({"allow_ip": ["10.0.0.0/33"]}),
            serde_json::json!({"allow_ip": too_many}),
            serde_json::json!({"require_headers": [["bad name", "x"]]}),
            serde_json::json!({"require_headers": [["x-a", long_value]]}),
            serde_json::json!({"basic_auth": {"user": "a:b", "password": "p"}}),
            serde_json::json!({"jwt": {"issuer": "http://evil.example/", "audience": "a"}}),
        ]
        .into_iter()
        .enumerate()
        {
            let mut hello: serde_json::Value =
                serde_json::from_str(&hello_json(&format!("e{i}"), &format!("edgy{i}"), 1))?;
            hello["edge"] = edge.clone();
            let mut ws = connect_ws(server).await?;
            expect_refused(&mut ws, &hello.to_string(), "bad_rules")
                .await
                .with_context(|| format!("edge rules {edge}"))?;
            expect_closed(&mut ws, "refused edge rules", false).await?;
        }
        // None of them claimed its name.
        let f = fetch(
            server.addr(),
            public_request(server.port(), "edgy0", Routing::Host, "GET", "/").body(empty())?,
            REQ,
        )
        .await?;
        ensure!(f.status == StatusCode::NOT_FOUND, "edgy0: {}", f.status);
        Ok(())
    })
    .await
}
