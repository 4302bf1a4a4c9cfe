//! Forwarding fidelity: methods, headers and bodies as sent, streaming, concurrency.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_match_direct_for_host_and_path_routing() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("methods").start().await?;
        let body = Bytes::from(Pattern::new(3, 10_000).collect());
        for method in ["GET", "POST", "PUT", "DELETE", "HEAD"] {
            for routing in Routing::BOTH {
                let pq = "/echo?a=1&b=two%20words";
                let b = if matches!(method, "POST" | "PUT") {
                    body.clone()
                } else {
                    Bytes::new()
                };
                let direct = Request::builder()
                    .method(method)
                    .uri(pq)
                    .header(HOST, format!("127.0.0.1:{}", s.origin.port()))
                    .header("x-test", "v1")
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(full(b.clone()))?;
                let tunnelled = s
                    .client
                    .request(routing, method, pq)
                    .header("x-test", "v1")
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(full(b.clone()))?;
                let d = fetch(s.origin.addr(), direct, REQ).await?;
                let t = fetch(s.client.public_addr(), tunnelled, REQ).await?;
                let ctx = format!("{method} via {routing:?} routing");

                assert_eq!(t.status, d.status, "{ctx}: status");
                assert!(t.request_id().is_some(), "{ctx}: no {REQUEST_ID}");
                assert_eq!(
                    e2e_response_headers(&t.headers),
                    e2e_response_headers(&d.headers),
                    "{ctx}: end-to-end response headers"
                );
                if let Some(cl) = t.headers.get(http::header::CONTENT_LENGTH) {
                    if method != "HEAD" {
                        assert_eq!(
                            cl.to_str()?,
                            t.body.len().to_string(),
                            "{ctx}: Content-Length vs body"
                        );
                    }
                }
                assert_eq!(
                    t.headers.contains_key(http::header::CONTENT_LENGTH),
                    d.headers.contains_key(http::header::CONTENT_LENGTH),
                    "{ctx}: Content-Length presence"
                );
                if method == "HEAD" {
                    assert!(t.body.is_empty(), "{ctx}: HEAD response has a body");
                    continue;
                }
                let (tj, dj) = (t.json()?, d.json()?);
                for key in ["method", "path", "body_len", "body_sha256"] {
                    assert_eq!(tj[key], dj[key], "{ctx}: echoed {key}");
                }
                assert_eq!(tj["method"], method, "{ctx}");
                assert_eq!(tj["path"], pq, "{ctx}: path seen by the local app");
                let th = echoed_headers(&tj)?;
                assert_eq!(
                    without_relay_added(&th),
                    without_relay_added(&echoed_headers(&dj)?),
                    "{ctx}: request headers seen by the local app"
                );
                if routing == Routing::Path {
                    let prefix = format!("/t/{}", s.client.name);
                    assert_eq!(
                        header_values(&th, "x-forwarded-prefix"),
                        vec![prefix.as_str()],
                        "{ctx}: X-Forwarded-Prefix"
                    );
                }
            }
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_and_binary_body_pass_byte_for_byte() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder().name("headers").start().await?;
        let body: Vec<u8> = (0..4).flat_map(|_| 0..=255u8).collect();
        let obs: &[u8] = b"caf\xe9 \x80\xff end";
        for routing in Routing::BOTH {
            let (target, host) = s.client.target(routing, "/echo?q=1");
            let mut req = Vec::new();
            req.extend_from_slice(format!("POST {target} HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
            req.extend_from_slice(b"X-MiXeD-CaSe: MixedValue\r\n");
            req.extend_from_slice(b"x-multi: a\r\n");
            req.extend_from_slice(b"x-multi: b\r\n");
            req.extend_from_slice(b"X-Obs: ");
            req.extend_from_slice(obs);
            req.extend_from_slice(b"\r\n");
            req.extend_from_slice(b"Connection: close, x-hop\r\n");
            req.extend_from_slice(b"x-hop: 1\r\n");
            req.extend_from_slice(b"Keep-Alive: timeout=5\r\n");
            req.extend_from_slice(b"Content-Type: application/octet-stream\r\n");
            req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            req.extend_from_slice(&body);

            let r = raw_exchange(s.client.public_addr(), &req, REQ).await?;
            let ctx = format!("{routing:?} routing");
            assert_eq!(
                r.status,
                200,
                "{ctx}: body {:?}",
                String::from_utf8_lossy(&r.body)
            );
            let ids = r.header_values(REQUEST_ID);
            assert_eq!(
                ids.len(),
                1,
                "{ctx}: exactly one {REQUEST_ID} on the response"
            );
            let id = String::from_utf8(ids[0].clone())?;
            assert!(!id.is_empty(), "{ctx}: empty request id");
            assert_eq!(
                r.header_values("x-resp-multi"),
                vec![b"one".to_vec(), b"two".to_vec()],
                "{ctx}: repeated response header order"
            );
            assert_eq!(
                r.header_values("x-resp-obs"),
                vec![RESP_OBS.to_vec()],
                "{ctx}: obs-text response header value"
            );

            let j: serde_json::Value = serde_json::from_slice(&r.body)?;
            assert_eq!(j["path"], "/echo?q=1", "{ctx}");
            assert_eq!(j["body_len"], body.len(), "{ctx}: body length");
            assert_eq!(j["body_sha256"], sha256_hex(&body), "{ctx}: body bytes");
            let seen = echoed_headers(&j)?;
            // Sorted by name, as `without_relay_added` returns them.
            let expected: Vec<(String, String)> = vec![
                ("content-type".into(), "application/octet-stream".into()),
                ("x-mixed-case".into(), "MixedValue".into()),
                ("x-multi".into(), "a".into()),
                ("x-multi".into(), "b".into()),
                ("x-obs".into(), escape(obs)),
            ];
            assert_eq!(
                without_relay_added(&seen),
                expected,
                "{ctx}: end-to-end request headers at the local app (hop-by-hop must be gone)"
            );
            for hop in ["connection", "x-hop", "keep-alive"] {
                assert!(
                    header_values(&seen, hop).is_empty(),
                    "{ctx}: hop-by-hop header {hop} reached the local app: {seen:?}"
                );
            }
            let xff = header_values(&seen, "x-forwarded-for");
            assert!(
                xff.len() == 1 && xff[0].contains("127.0.0.1"),
                "{ctx}: X-Forwarded-For {xff:?}"
            );
            assert_eq!(
                header_values(&seen, "x-forwarded-proto"),
                vec!["http"],
                "{ctx}"
            );
            assert_eq!(
                header_values(&seen, "x-forwarded-host"),
                vec![host.as_str()],
                "{ctx}: X-Forwarded-Host"
            );

            // The client logs one line for the request, with the same id.
            let line = s.client.wait_request_line(&id, REQ).await?;
            assert_eq!(line.method, "POST", "{ctx}: {line:?}");
            assert!(line.path.starts_with("/echo"), "{ctx}: {line:?}");
            assert_eq!(line.status, "200", "{ctx}: {line:?}");
            assert!(
                line.duration.ends_with("ms") || line.duration.ends_with('s'),
                "{ctx}: {line:?}"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_response_arrives_before_origin_finishes() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("stream").start().await?;
        for routing in Routing::BOTH {
            let key = format!("gate-{routing:?}");
            let req = s
                .client
                .request(routing, "GET", &format!("/stream?key={key}"))
                .body(empty())?;
            let resp = within(
                "the /stream response head",
                REQ,
                send(s.client.public_addr(), req),
            )
            .await??;
            assert_eq!(resp.status(), StatusCode::OK, "{routing:?}");
            let mut body = resp.into_body();
            let mut got = Vec::new();
            while got.len() < FIRST_CHUNK.len() {
                let frame = within(
                    "the first chunk through the tunnel while the origin is still holding the rest",
                    REQ,
                    body.frame(),
                )
                .await?
                .context("body ended before the first chunk")??;
                if let Ok(d) = frame.into_data() {
                    got.extend_from_slice(&d);
                }
            }
            assert_eq!(got, FIRST_CHUNK, "{routing:?}: first chunk");
            s.origin.release(&key);
            let rest = within("the rest of /stream", REQ, body.collect())
                .await??
                .to_bytes();
            got.extend_from_slice(&rest);
            assert_eq!(
                got,
                [FIRST_CHUNK, SECOND_CHUNK].concat(),
                "{routing:?}: whole body"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_requests() -> Result<()> {
    run_test(secs(90), async {
        let s = Stack::builder().name("concurrent").start().await?;
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            let routing = if i % 2 == 0 {
                Routing::Host
            } else {
                Routing::Path
            };
            let size = (i * 37_337) % 400_000 + i;
            let body = Pattern::new(100 + i, size).collect();
            let want_sha = sha256_hex(&body);
            let pq = format!("/echo?i={i}");
            let req = s
                .client
                .request(routing, "POST", &pq)
                .header("x-index", i.to_string())
                .body(full(body))?;
            let addr = s.client.public_addr();
            tasks.push(tokio::spawn(async move {
                let f = fetch(addr, req, secs(60)).await?;
                ensure!(
                    f.status == StatusCode::OK,
                    "request {i} ({size} bytes): status {} body {:?}",
                    f.status,
                    String::from_utf8_lossy(&f.body)
                );
                ensure!(f.request_id().is_some(), "request {i}: no {REQUEST_ID}");
                let j = f.json()?;
                ensure!(j["path"] == pq.as_str(), "request {i}: path {}", j["path"]);
                ensure!(
                    j["body_len"] == size,
                    "request {i}: body_len {} != {size}",
                    j["body_len"]
                );
                ensure!(
                    j["body_sha256"] == want_sha.as_str(),
                    "request {i}: body differs"
                );
                let h = echoed_headers(&j)?;
                let idx = i.to_string();
                ensure!(
                    header_values(&h, "x-index") == vec![idx.as_str()],
                    "request {i}: x-index {h:?}"
                );
                Ok(())
            }));
        }
        all_ok(tasks, "concurrent requests").await?;
        Ok(())
    })
    .await
}
