//! Issue 10, item 1: a local app that answers before it has read the whole
//! request. The answer must reach the visitor whole, every time, as it does
//! when the visitor talks to the app directly.

use super::*;

/// Tries per case: the old failure (the client's "stop sending" overtaking
/// the answer) showed on nearly every try, so a handful catches it.
const TRIES: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_upgrade_request_answered_without_switching_reaches_the_visitor() -> Result<()> {
    run_test(secs(90), async {
        let s = Stack::builder().name("early-upgrade").start().await?;
        let host = format!("{}.localhost:{}", s.client.name, s.server.port());
        let request = format!(
            "GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        for i in 0..TRIES {
            let r = raw_exchange(s.client.public_addr(), request.as_bytes(), REQ).await?;
            let body = String::from_utf8_lossy(&r.body);
            ensure!(
                r.status == 200,
                "try {i}: an app that answers an Upgrade request with a plain 200 must \
                 reach the visitor as 200, got {} {body}",
                r.status
            );
            let echoed: serde_json::Value = serde_json::from_slice(&r.body)
                .with_context(|| format!("try {i}: body is not the app's JSON: {body}"))?;
            ensure!(echoed["path"] == "/echo", "try {i}: {echoed}");
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_early_answer_to_an_upload_reaches_the_visitor_whole() -> Result<()> {
    run_test(secs(120), async {
        let s = Stack::builder().name("early-upload").start().await?;
        const ANSWER: u64 = 2 * 1024 * 1024;
        // Larger than every buffer on the way (socket buffers, windows),
        // so the upload cannot end before the answer is out.
        const UPLOAD: u64 = 48_000_000;
        let path = format!("/early?status=401&bytes={ANSWER}");
        let want = sha256_hex(&Pattern::new(7, ANSWER).collect());

        // The same exchange straight to the app, as the reference.
        let direct = Request::builder()
            .method("POST")
            .uri(&path)
            .header(HOST, format!("127.0.0.1:{}", s.origin.port()))
            .body(PatternBody::new(3, UPLOAD).boxed())?;
        let d = fetch(s.origin.addr(), direct, REQ).await?;
        ensure!(
            d.status == 401 && sha256_hex(&d.body) == want,
            "direct: {}",
            d.status
        );

        for i in 0..TRIES {
            let req = s
                .client
                .request(Routing::Host, "POST", &path)
                .body(PatternBody::new(3, UPLOAD).boxed())?;
            let t = fetch(s.client.public_addr(), req, REQ)
                .await
                .with_context(|| format!("try {i}: the early answer did not arrive whole"))?;
            ensure!(
                t.status == 401,
                "try {i}: expected the app's 401, got {} {:?}",
                t.status,
                String::from_utf8_lossy(&t.body[..t.body.len().min(300)])
            );
            ensure!(
                t.body.len() as u64 == ANSWER && sha256_hex(&t.body) == want,
                "try {i}: the 2 MiB answer arrived as {} bytes or corrupted",
                t.body.len()
            );
            ensure!(
                t.headers
                    .get(http::header::CONNECTION)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close")),
                "try {i}: a connection whose upload was cut short must not be reused: {:?}",
                t.headers
            );
        }
        Ok(())
    })
    .await
}

/// Issue 10, item 7: a small body with a declared length used to hold its
/// head back until every byte had come (the whole body rode in the head
/// frame). A head goes out as soon as it is complete, in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_heads_are_not_held_back_by_slow_small_bodies() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    run_test(secs(60), async {
        let s = Stack::builder().name("early-heads").start().await?;
        // Response: the app sends its head and 1 of 6 bytes, then waits
        // for the test; the visitor must have the head meanwhile.
        let req = s
            .client
            .request(Routing::Host, "GET", "/gated?key=resp&bytes=6")
            .body(empty())?;
        let res = within(
            "the response head while its body is still coming",
            REQ,
            send(s.client.public_addr(), req),
        )
        .await??;
        ensure!(res.status() == 200, "status {}", res.status());
        s.origin.release("resp");
        let body = within("the rest of the body", REQ, res.into_body().collect())
            .await??
            .to_bytes();
        ensure!(&body[..] == b"xxxxxx", "body {body:?}");

        // Request: the visitor sends its head and 1 of 6 bytes; the app
        // must see the request before the rest is sent.
        let mut visitor = tokio::net::TcpStream::connect(s.client.public_addr()).await?;
        let head = format!(
            "POST /echo?slow-upload HTTP/1.1\r\nHost: {}.localhost:{}\r\n\
             Content-Length: 6\r\n\r\nx",
            s.client.name,
            s.server.port()
        );
        visitor.write_all(head.as_bytes()).await?;
        s.origin
            .wait_request(
                "the request head while its body is still coming",
                REQ,
                |r| r.ends_with("slow-upload"),
            )
            .await?;
        visitor.write_all(b"xxxxx").await?;
        let mut got = vec![0u8; 4096];
        let n = within("the echo of the slow upload", REQ, visitor.read(&mut got)).await??;
        let text = String::from_utf8_lossy(&got[..n]);
        ensure!(text.starts_with("HTTP/1.1 200"), "got {text:?}");
        Ok(())
    })
    .await
}
