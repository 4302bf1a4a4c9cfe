//! Missed requests as the e2e tests make and check them: visitor requests
//! sent to a tunnel whose client is away, the two offline answers a tunnel
//! can give (`--when-offline reject`: 503 `tunnel_offline` with
//! `Retry-After`; `accept`: 202 `{"queued": true, "request_id": ...}`), and
//! what the local app's `/inbox` got once they were delivered.
//!
//! The delivery states themselves are read through
//! [`TunnelApi`](crate::capture_api::TunnelApi).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::StatusCode;

use crate::client::{RelayClient, Routing};
use crate::http::{fetch, full, Fetched};
use crate::origin::Origin;

/// Deadline for one visitor request.
const VISIT: Duration = Duration::from_secs(15);

/// The offline answer a test expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `--when-offline reject` (the default): 503 `tunnel_offline` with
    /// `Retry-After`.
    Reject,
    /// 503 `tunnel_offline`, `Retry-After` not looked at: for tests about
    /// something else, so they fail for their own reason.
    Unavailable,
    /// `--when-offline accept`: 202 queued.
    Accept,
}

impl Answer {
    /// Checks `f` is this answer and returns its request id.
    pub fn check(self, f: &Fetched) -> Result<String> {
        match self {
            Self::Reject => {
                check_retry_after(f)?;
                check_offline(f)
            }
            Self::Unavailable => check_offline(f),
            Self::Accept => check_queued(f),
        }
    }
}

/// One request sent while the client was away.
#[derive(Clone, Debug)]
pub struct Missed {
    /// Its request id, from the answer.
    pub id: String,
    /// Path and query, as the local app gets it.
    pub path: String,
    pub body: Vec<u8>,
}

/// A body that is not UTF-8 and has bytes a text path could mangle (NUL,
/// CR LF, 0x80-0xff), so "byte for byte" means something.
pub fn body_for(tag: &str, i: usize) -> Vec<u8> {
    let mut b = format!("{{\"tag\":\"{tag}\",\"n\":{i}}}").into_bytes();
    b.extend_from_slice(b"\r\n\x00\x80\xfe\xff");
    b.extend((0..=255u8).map(|x| x.wrapping_mul(i as u8 | 1)));
    b
}

/// POSTs `body` to `path` on `client`'s tunnel (host routing), whether or
/// not the client is still running.
pub async fn post(client: &RelayClient, path: &str, body: Vec<u8>) -> Result<Fetched> {
    let req = client
        .request(Routing::Host, "POST", path)
        .header(CONTENT_TYPE, "application/octet-stream")
        .header("x-hook-signature", "sha256=c0ffee")
        .body(full(body))?;
    fetch(client.public_addr(), req, VISIT).await
}

/// Sends `n` POSTs to `/inbox?tag=TAG&n=I` (bodies from [`body_for`]) one
/// after the other; each must get `answer`.
pub async fn send_missed(
    client: &RelayClient,
    tag: &str,
    n: usize,
    answer: Answer,
) -> Result<Vec<Missed>> {
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let path = format!("/inbox?tag={tag}&n={i}");
        let body = body_for(tag, i);
        let f = post(client, &path, body.clone()).await?;
        let id = answer
            .check(&f)
            .with_context(|| format!("the offline answer to POST {path}"))?;
        sent.push(Missed { id, path, body });
    }
    Ok(sent)
}

/// Checks a `--when-offline accept` answer: 202 with JSON `queued: true`
/// and a `request_id` equal to the `X-Relay-Request-Id` header; the id.
pub fn check_queued(f: &Fetched) -> Result<String> {
    ensure!(
        f.status == StatusCode::ACCEPTED,
        "expected 202 queued, got {} {:?}",
        f.status,
        String::from_utf8_lossy(&f.body)
    );
    let header = f.request_id().context("no X-Relay-Request-Id on the 202")?;
    let j = f.json()?;
    ensure!(
        j["queued"] == true && j["request_id"] == header.as_str(),
        "a 202 body should be {{\"queued\": true, \"request_id\": {header:?}}}: {j}"
    );
    Ok(header)
}

/// Checks a `--when-offline reject` answer: 503 `tunnel_offline` with the
/// same request id in body and header; the id. See also
/// [`check_retry_after`].
pub fn check_offline(f: &Fetched) -> Result<String> {
    ensure!(
        f.status == StatusCode::SERVICE_UNAVAILABLE,
        "expected 503 tunnel_offline, got {} {:?}",
        f.status,
        String::from_utf8_lossy(&f.body)
    );
    let e = f.error_body()?;
    ensure!(e.code == "tunnel_offline", "expected tunnel_offline: {e:?}");
    let header = f.request_id().context("no X-Relay-Request-Id on the 503")?;
    ensure!(
        e.request_id.as_deref() == Some(header.as_str()),
        "request_id in the body {:?} != header {header}",
        e.request_id
    );
    Ok(header)
}

/// Checks the `Retry-After` of a 503: seconds or an HTTP date.
pub fn check_retry_after(f: &Fetched) -> Result<()> {
    let retry = f
        .headers
        .get(RETRY_AFTER)
        .context("a 503 tunnel_offline should carry Retry-After")?
        .to_str()
        .context("Retry-After is not ASCII")?;
    ensure!(
        retry.parse::<u64>().is_ok() || retry.ends_with(" GMT"),
        "Retry-After should be seconds or an HTTP date: {retry:?}"
    );
    Ok(())
}

/// The ids of `missed`, in order.
pub fn ids(missed: &[Missed]) -> Vec<&str> {
    missed.iter().map(|m| m.id.as_str()).collect()
}

/// Waits until the local app's inbox holds at least `n` requests.
pub async fn wait_inbox(origin: &Origin, n: usize, limit: Duration) -> Result<()> {
    origin
        .wait_until(&format!("{n} requests in /inbox"), limit, |_| {
            (origin.inbox().len() >= n).then_some(())
        })
        .await
}

/// Checks the local app's inbox holds exactly `want`, in order: path,
/// method and body byte for byte, and the captured headers.
pub fn check_inbox(origin: &Origin, want: &[Missed]) -> Result<()> {
    let got = origin.inbox();
    let got_paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    let want_paths: Vec<&str> = want.iter().map(|m| m.path.as_str()).collect();
    ensure!(
        got_paths == want_paths,
        "the local app should get each missed request once, in arrival order:\n\
         expected {want_paths:?}\n     got {got_paths:?}"
    );
    for (r, m) in got.iter().zip(want) {
        ensure!(
            r.method == "POST" && r.body == m.body,
            "{} ({}) reached the local app as {} with body {:?}, sent {:?}",
            m.path,
            m.id,
            r.method,
            String::from_utf8_lossy(&r.body),
            String::from_utf8_lossy(&m.body)
        );
        ensure!(
            r.header("x-hook-signature") == [b"sha256=c0ffee".as_slice()]
                && r.header("content-type") == [b"application/octet-stream".as_slice()],
            "{}: headers as delivered: {:?}",
            m.path,
            r.headers
        );
    }
    Ok(())
}
