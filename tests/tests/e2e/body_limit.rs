//! `--max-body`: bodies over the limit get 413 `body_too_large`, whether the
//! visitor declares the length up front or streams it chunked.

use http_body_util::StreamBody;
use hyper::body::Frame;
use relay_tests::http::BoxError;

use super::*;

const LIMIT: &str = "1KiB";
const OVER: usize = 2 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_limit_with_content_length_gets_413_and_never_reaches_local_app() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder()
            .name("small")
            .server(|c| c.max_body = Some(LIMIT.into()))
            .start()
            .await?;
        for routing in Routing::BOTH {
            let ctx = format!("{routing:?} routing, Content-Length {OVER}");
            let pq = format!("/upload?cl={routing:?}");
            let req = s
                .client
                .request(routing, "POST", &pq)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(PatternBody::new(5, OVER as u64).boxed())?;
            let f = fetch(s.client.public_addr(), req, REQ)
                .await
                .with_context(|| ctx.clone())?;
            check_error(&f, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
                .with_context(|| ctx.clone())?;
            ensure!(
                f.request_id().is_some(),
                "{ctx}: no {REQUEST_ID} on the 413"
            );

            // A request after it goes through; by then the refused one would
            // have reached the local app had it been forwarded.
            echo_ok(&s.client, routing).await?;
            let seen = s.origin.requests();
            ensure!(
                !seen.iter().any(|r| r == &pq),
                "{ctx}: the local app received the over-limit request; it saw {seen:?}"
            );
        }
        // Exactly at the limit is allowed.
        let req = s
            .client
            .request(Routing::Host, "POST", "/upload?at-limit")
            .body(PatternBody::new(6, 1024).boxed())?;
        let f = fetch(s.client.public_addr(), req, REQ).await?;
        ensure!(
            f.status == StatusCode::OK,
            "a 1 KiB body with --max-body 1KiB: {} {:?}",
            f.status,
            String::from_utf8_lossy(&f.body)
        );
        assert_eq!(f.json()?["len"], 1024);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_limit_gets_413() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder()
            .name("smallchunks")
            .server(|c| c.max_body = Some(LIMIT.into()))
            .start()
            .await?;
        for routing in Routing::BOTH {
            let ctx = format!("{routing:?} routing, chunked {OVER} bytes");
            let data = Bytes::from(Pattern::new(8, OVER as u64).collect());
            // Two chunks and no size hint: hyper sends it chunked.
            let chunks = [data.slice(..OVER / 2), data.slice(OVER / 2..)]
                .map(|c| Ok::<_, BoxError>(Frame::data(c)));
            let body = BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks)));
            let req = s
                .client
                .request(routing, "POST", "/upload?chunked")
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(body)?;
            let resp = within(
                "the response to a chunked over-limit body",
                REQ,
                send(s.client.public_addr(), req),
            )
            .await?
            .with_context(|| ctx.clone())?;
            let (parts, body) = resp.into_parts();
            let body = within("the 413 body", REQ, body.collect())
                .await?
                .context("reading the 413 body")?
                .to_bytes();
            let f = Fetched {
                status: parts.status,
                headers: parts.headers,
                body,
            };
            check_error(&f, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
                .with_context(|| ctx.clone())?;
        }
        Ok(())
    })
    .await
}
