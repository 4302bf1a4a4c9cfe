//! Visitors speaking HTTP/2 (prior knowledge, plain TCP) to a local app that
//! speaks HTTP/1.1.

use relay_tests::http::{connect_h2, fetch_h2};

use super::*;

/// The absolute URI an HTTP/2 visitor uses: its authority is `:authority`.
fn h2_uri(s: &Stack, routing: Routing, path_and_query: &str) -> String {
    let (port, name) = (s.server.port(), &s.client.name);
    match routing {
        Routing::Host => format!("http://{name}.localhost:{port}{path_and_query}"),
        Routing::Path => format!("http://localhost:{port}/t/{name}{path_and_query}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_visitor_reaches_http1_local_app() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("h2tun").start().await?;
        let mut h2 = connect_h2(s.client.public_addr()).await?;
        let body = Pattern::new(21, 70_000).collect();
        for routing in Routing::BOTH {
            let ctx = format!("HTTP/2 via {routing:?} routing");
            let req = Request::builder()
                .method("POST")
                .uri(h2_uri(&s, routing, "/echo?h2=1"))
                .version(http::Version::HTTP_2)
                .header("x-multi", "a")
                .header("x-multi", "b")
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(full(body.clone()))?;
            let f = fetch_h2(&mut h2, req, REQ)
                .await
                .with_context(|| ctx.clone())?;
            ensure!(
                f.status == StatusCode::OK,
                "{ctx}: {} {:?}",
                f.status,
                String::from_utf8_lossy(&f.body)
            );
            ensure!(f.request_id().is_some(), "{ctx}: no {REQUEST_ID}");
            let resp_multi: Vec<&[u8]> = f
                .headers
                .get_all("x-resp-multi")
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            assert_eq!(
                resp_multi,
                vec![&b"one"[..], &b"two"[..]],
                "{ctx}: repeated response header"
            );
            let j = f.json()?;
            assert_eq!(j["method"], "POST", "{ctx}");
            assert_eq!(j["path"], "/echo?h2=1", "{ctx}: path at the local app");
            assert_eq!(j["body_len"], body.len(), "{ctx}: body length");
            assert_eq!(j["body_sha256"], sha256_hex(&body), "{ctx}: body bytes");
            let h = echoed_headers(&j)?;
            assert_eq!(
                header_values(&h, "x-multi"),
                vec!["a", "b"],
                "{ctx}: repeated request header at the local app"
            );
            assert_eq!(
                header_values(&h, "content-type"),
                vec!["application/octet-stream"],
                "{ctx}"
            );
            if routing == Routing::Path {
                let prefix = format!("/t/{}", s.client.name);
                assert_eq!(
                    header_values(&h, "x-forwarded-prefix"),
                    vec![prefix.as_str()],
                    "{ctx}: X-Forwarded-Prefix"
                );
            }
        }
        Ok(())
    })
    .await
}

/// Ten streams on one HTTP/2 connection, all in flight at once: each waits at
/// the origin until all ten have arrived there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_http2_streams_on_one_connection() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("h2many").start().await?;
        let h2 = connect_h2(s.client.public_addr()).await?;
        let mut tasks = Vec::new();
        for i in 0..10 {
            let routing = if i % 2 == 0 {
                Routing::Host
            } else {
                Routing::Path
            };
            let req = Request::builder()
                .uri(h2_uri(&s, routing, &format!("/hold?key=h2-{i}")))
                .version(http::Version::HTTP_2)
                .body(empty())?;
            let mut sender = h2.clone();
            tasks.push(tokio::spawn(async move {
                let f = fetch_h2(&mut sender, req, secs(30)).await?;
                ensure!(
                    f.status == StatusCode::OK,
                    "stream {i}: {} {:?}",
                    f.status,
                    String::from_utf8_lossy(&f.body)
                );
                let want = format!("released h2-{i}");
                ensure!(
                    f.body == want.as_bytes(),
                    "stream {i}: body {:?}, expected {want:?}",
                    String::from_utf8_lossy(&f.body)
                );
                Ok(())
            }));
        }
        for i in 0..10 {
            let want = format!("/hold?key=h2-{i}");
            s.origin
                .wait_request(&format!("stream {i}"), REQ, |r| r == want)
                .await?;
        }
        for i in 0..10 {
            s.origin.release(&format!("h2-{i}"));
        }
        all_ok(tasks, "HTTP/2 streams").await?;
        Ok(())
    })
    .await
}
