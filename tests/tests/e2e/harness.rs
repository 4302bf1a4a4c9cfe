//! Harness self-checks: the origin routes, direct (no relay binaries), so a
//! failure elsewhere can be blamed on the relay rather than on the harness.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_origin_routes_work_directly() -> Result<()> {
    run_test(secs(60), async {
        let origin = Origin::start().await?;
        let host = format!("127.0.0.1:{}", origin.port());

        // Raw request: repeated, mixed-case and obs-text headers arrive as sent.
        let mut req = Vec::new();
        req.extend_from_slice(format!("POST /echo?q=1 HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
        req.extend_from_slice(
            b"X-MiXeD-CaSe: MixedValue\r\nx-multi: a\r\nx-multi: b\r\nX-Obs: \x80\xff\r\n",
        );
        req.extend_from_slice(b"Connection: close\r\nContent-Length: 3\r\n\r\nabc");
        let r = raw_exchange(origin.addr(), &req, REQ).await?;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header_values("x-resp-multi"),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        assert_eq!(r.header_values("x-resp-obs"), vec![RESP_OBS.to_vec()]);
        let j: serde_json::Value = serde_json::from_slice(&r.body)?;
        let h = echoed_headers(&j)?;
        assert_eq!(header_values(&h, "x-multi"), vec!["a", "b"]);
        assert_eq!(header_values(&h, "x-mixed-case"), vec!["MixedValue"]);
        assert_eq!(header_values(&h, "x-obs"), vec![escape(b"\x80\xff")]);
        assert_eq!(j["body_sha256"], sha256_hex(b"abc"));

        // /stream holds its second chunk until released.
        let req = Request::builder()
            .uri("/stream?key=k")
            .header(HOST, &host)
            .body(empty())?;
        let mut body = send(origin.addr(), req).await?.into_body();
        let first = within("first chunk", REQ, body.frame())
            .await?
            .context("eof")??;
        assert_eq!(first.into_data().ok().as_deref(), Some(FIRST_CHUNK));
        origin.release("k");
        let rest = within("rest", REQ, body.collect()).await??.to_bytes();
        assert_eq!(&rest[..], SECOND_CHUNK);

        // /download and /upload agree with the pattern.
        let n = 3 << 20;
        let req = Request::builder()
            .uri(format!("/download?bytes={n}"))
            .header(HOST, &host)
            .body(empty())?;
        let f = fetch(origin.addr(), req, REQ).await?;
        assert_eq!(f.body.len() as u64, n);
        assert_eq!(
            sha256_hex(&f.body),
            relay_tests::pattern::pattern_sha256(1, n)
        );
        let req = Request::builder()
            .method("POST")
            .uri("/upload")
            .header(HOST, &host)
            .body(PatternBody::new(1, n).boxed())?;
        let j = fetch(origin.addr(), req, REQ).await?.json()?;
        assert_eq!(j["len"], n);
        assert_eq!(j["sha256"], relay_tests::pattern::pattern_sha256(1, n));

        // /ws echoes.
        let tcp = tokio::net::TcpStream::connect(origin.addr()).await?;
        let (mut ws, _) =
            tokio_tungstenite::client_async(format!("ws://{host}/ws").as_str(), tcp).await?;
        ws.send(Message::Binary(Bytes::from_static(b"\x00\x01")))
            .await?;
        let m = within("ws echo", REQ, ws.next())
            .await?
            .context("closed")??;
        assert_eq!(m, Message::Binary(Bytes::from_static(b"\x00\x01")));
        ws.close(None).await?;
        Ok(())
    })
    .await
}
