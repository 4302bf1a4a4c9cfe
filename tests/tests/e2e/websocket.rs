//! WebSocket upgrades through the tunnel.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_tunnel() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("wsecho").start().await?;
        let port = s.server.port();
        let name = &s.client.name;
        for (routing, uri) in [
            (Routing::Host, format!("ws://{name}.localhost:{port}/ws")),
            (Routing::Path, format!("ws://localhost:{port}/t/{name}/ws")),
        ] {
            let tcp = tokio::net::TcpStream::connect(s.client.public_addr()).await?;
            let (mut ws, resp) = within(
                "the WebSocket handshake",
                REQ,
                tokio_tungstenite::client_async(uri.as_str(), tcp),
            )
            .await?
            .with_context(|| format!("{routing:?}: WebSocket handshake to {uri}"))?;
            assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);

            let big = Bytes::from(Pattern::new(9, 1 << 20).collect());
            let all_bytes = Bytes::from((0..=255u8).collect::<Vec<_>>());
            let cases = [
                Message::Text("hello through the tunnel".into()),
                Message::Binary(all_bytes),
                Message::Binary(big),
                Message::Text("after the big one".into()),
            ];
            for msg in cases {
                within("sending a WebSocket message", REQ, ws.send(msg.clone())).await??;
                let echoed = within("the WebSocket echo", REQ, ws.next())
                    .await?
                    .context("WebSocket closed instead of echoing")??;
                assert!(
                    echoed == msg,
                    "{routing:?}: echo differs (len {} vs {})",
                    echoed.len(),
                    msg.len()
                );
            }

            within("sending Close", REQ, ws.close(None)).await??;
            // A clean close: the peer's Close comes back, then the stream ends.
            loop {
                match within("the close handshake", REQ, ws.next()).await? {
                    Some(Ok(Message::Close(_))) => {}
                    None => break,
                    Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => break,
                    Some(other) => panic!("{routing:?}: unexpected after Close: {other:?}"),
                }
            }
        }
        Ok(())
    })
    .await
}
