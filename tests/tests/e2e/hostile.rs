//! Hostile clients on `/_relay/v1/connect`, driven with a bare WebSocket:
//! malformed hellos, a wrong protocol version, bad names, and garbage frames
//! after a welcome. None of them may disturb other tunnels.

use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

use super::*;

type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket to the server's connect endpoint.
async fn connect_ws(server: &RelayServer) -> Result<Ws> {
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
async fn hello(ws: &mut Ws, hello: &str) -> Result<serde_json::Value> {
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
async fn expect_refused(ws: &mut Ws, hello_text: &str, reason: &str) -> Result<String> {
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

fn hello_json(client_id: &str, name: &str, protocol: u64) -> String {
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
        let sandbox = Sandbox::new()?;
        let server = RelayServer::start(ServerConfig::new(sandbox.subdir("data")?)).await?;
        let mut ws = connect_ws(&server).await?;
        expect_refused(&mut ws, "this is { not json", "malformed").await?;
        expect_closed(&mut ws, "a malformed hello", false).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_with_unknown_protocol_is_refused_naming_both_versions() -> Result<()> {
    run_test(secs(30), async {
        let sandbox = Sandbox::new()?;
        let server = RelayServer::start(ServerConfig::new(sandbox.subdir("data")?)).await?;
        let mut ws = connect_ws(&server).await?;
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
async fn uppercase_or_reserved_name_is_refused_as_bad_name() -> Result<()> {
    run_test(secs(30), async {
        let sandbox = Sandbox::new()?;
        let server = RelayServer::start(ServerConfig::new(sandbox.subdir("data")?)).await?;
        for (i, name) in ["Hostile", "HOSTILE4", "www"].into_iter().enumerate() {
            let mut ws = connect_ws(&server).await?;
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
        let mut s = Stack::start("steady", |_| {}).await?;
        echo_ok(&s.client, Routing::Host).await?;

        let mut ws = connect_ws(&s.server).await?;
        let reply = hello(&mut ws, &hello_json("x1", "hostile1", 1)).await?;
        ensure!(
            reply["type"] == "welcome" && reply["name"] == "hostile1",
            "expected a welcome for hostile1, got {reply}"
        );
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
