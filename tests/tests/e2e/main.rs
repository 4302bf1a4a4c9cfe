//! End-to-end tests, one binary (`e2e`) with the cases in its modules: the
//! real `relay-server` and `relay` binaries, a hyper origin, and a visitor, all
//! on 127.0.0.1 with port 0. Build the binaries first:
//! `cargo build --workspace && cargo nextest run --workspace`.
//!
//! Every test owns its processes and temp dirs and runs under an overall deadline.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;

use relay_tests::client::public_request;
use relay_tests::http::{empty, fetch, full, raw_exchange, send, Fetched, PatternBody, REQUEST_ID};
use relay_tests::origin::{escape, FIRST_CHUNK, RESP_OBS, SECOND_CHUNK};
use relay_tests::pattern::{hex, sha256_hex, Pattern, SHA256_SEED1_256MIB};
use relay_tests::{
    create_token, poll_until, run_test, within, ClientConfig, Origin, RelayClient, RelayServer,
    ReservedPort, Routing, Sandbox, ServerConfig, Stack,
};

/// Deadline for one ordinary request.
const REQ: Duration = Duration::from_secs(15);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Response headers that may legitimately differ between a direct and a
/// tunnelled response: per-hop framing, the date, the relay's id, and the
/// length (the `/echo` JSON lists the request headers, which the relay extends
/// with X-Forwarded-*; `check_length` covers it instead).
const RESP_VOLATILE: &[&str] = &[
    "content-length",
    "date",
    "x-relay-request-id",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "proxy-connection",
];

/// End-to-end response headers, sorted by name (stable: same-name order kept).
fn e2e_response_headers(h: &HeaderMap) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = h
        .iter()
        .filter(|(n, _)| !RESP_VOLATILE.contains(&n.as_str()))
        .map(|(n, v)| (n.as_str().to_string(), escape(v.as_bytes())))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The `headers` array of an `/echo` answer as (lower-case name, escaped value).
fn echoed_headers(json: &serde_json::Value) -> Result<Vec<(String, String)>> {
    let arr = json["headers"]
        .as_array()
        .with_context(|| format!("no headers array in {json}"))?;
    arr.iter()
        .map(|pair| {
            let n = pair[0].as_str().context("header name")?;
            let v = pair[1].as_str().context("header value")?;
            Ok((n.to_ascii_lowercase(), v.to_string()))
        })
        .collect()
}

/// Request headers the relay may add or re-frame: Host (may be rewritten),
/// X-Forwarded-*, X-Relay-*, and body framing.
fn is_relay_added(name: &str) -> bool {
    name == "host"
        || name.starts_with("x-forwarded-")
        || name.starts_with("x-relay-")
        || name == "content-length"
        || name == "transfer-encoding"
}

/// End-to-end request headers, sorted by name. The sort is stable, so values
/// of a repeated header keep their order (which is what HTTP gives meaning to;
/// the order between different names carries none).
fn without_relay_added(h: &[(String, String)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = h
        .iter()
        .filter(|(n, _)| !is_relay_added(n))
        .cloned()
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn header_values<'a>(h: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    h.iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Awaits every task and fails with all their errors at once (not just the
/// first), so a concurrency test shows how many requests went wrong.
async fn all_ok<T>(tasks: Vec<tokio::task::JoinHandle<Result<T>>>, what: &str) -> Result<()> {
    let total = tasks.len();
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await? {
            failures.push(format!("{e:#}"));
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {total} {what} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

/// Checks a relay error response: status, JSON code, and that the body's
/// request id equals the `x-relay-request-id` header when both exist.
fn check_error(f: &Fetched, status: StatusCode, code: &str) -> Result<()> {
    ensure!(
        f.status == status,
        "expected {status} `{code}`, got {} with body {:?}",
        f.status,
        String::from_utf8_lossy(&f.body)
    );
    let e = f.error_body()?;
    ensure!(e.code == code, "expected error code {code}, got {e:?}");
    ensure!(!e.message.is_empty(), "empty error message: {e:?}");
    if let (Some(body_id), Some(hdr_id)) = (&e.request_id, f.request_id()) {
        ensure!(
            body_id == &hdr_id,
            "request_id in body {body_id} != {REQUEST_ID} header {hdr_id}"
        );
    }
    Ok(())
}

/// A tunnelled `/echo` request must come back 200 with the relay's request id.
async fn echo_ok(client: &RelayClient, routing: Routing) -> Result<serde_json::Value> {
    let req = client
        .request(routing, "POST", "/echo?ping=1")
        .body(full("ping"))?;
    let f = fetch(client.public_addr(), req, REQ).await?;
    ensure!(
        f.status == StatusCode::OK,
        "tunnel {} ({routing:?}) answered {} {:?}",
        client.name,
        f.status,
        String::from_utf8_lossy(&f.body)
    );
    ensure!(
        f.request_id().is_some(),
        "no {REQUEST_ID} on a tunnelled response"
    );
    let j = f.json()?;
    ensure!(
        j["body_len"] == 4 && j["path"] == "/echo?ping=1",
        "bad echo {j}"
    );
    Ok(j)
}

/// Deadline for one `relay requests` / `relay replay` run.
const CLI: Duration = Duration::from_secs(20);

/// Sends `req` through the tunnel; returns the response and its relay request id.
async fn visit(
    client: &RelayClient,
    req: Request<relay_tests::http::ReqBody>,
) -> Result<(Fetched, String)> {
    let f = fetch(client.public_addr(), req, REQ).await?;
    let id = f
        .request_id()
        .with_context(|| format!("no {REQUEST_ID} on a {} response", f.status))?;
    Ok((f, id))
}

/// A 200 through the tunnel; returns its request id.
async fn visit_ok(
    client: &RelayClient,
    req: Request<relay_tests::http::ReqBody>,
) -> Result<String> {
    let (f, id) = visit(client, req).await?;
    ensure!(
        f.status == StatusCode::OK,
        "expected 200, got {} {:?}",
        f.status,
        String::from_utf8_lossy(&f.body)
    );
    Ok(id)
}

/// Checks the common fields of a `relay replay --json` result.
fn check_replay_result(
    r: &serde_json::Value,
    original: &str,
    status: Option<u16>,
    outcome: &str,
) -> Result<String> {
    ensure!(
        r["replay_of"] == original,
        "replay_of should be {original}: {r}"
    );
    ensure!(r["outcome"] == outcome, "outcome should be {outcome}: {r}");
    match status {
        Some(st) => ensure!(r["status"] == st, "status should be {st}: {r}"),
        None => ensure!(r["status"].is_null(), "status should be null: {r}"),
    }
    ensure!(r["duration_ms"].is_u64(), "no duration_ms: {r}");
    if outcome == "delivered" {
        ensure!(r["error"].is_null(), "a delivered replay has an error: {r}");
    } else {
        ensure!(
            r["error"].as_str().is_some_and(|e| !e.is_empty()),
            "a failed replay should say why in `error`: {r}"
        );
    }
    let id = r["id"]
        .as_str()
        .with_context(|| format!("the replay was not recorded (id null): {r}"))?;
    ensure!(id != original, "the replay reuses the original's id: {r}");
    Ok(id.to_string())
}

/// How many requests for `pq` (path and query) the origin received.
fn count(origin: &Origin, pq: &str) -> usize {
    origin.requests().iter().filter(|r| *r == pq).count()
}

mod acme;
mod behind_nginx;
mod body_limit;
mod capture;
mod client_log;
mod cluster;
mod cluster_events;
mod cluster_failover;
mod demo;
mod durability;
mod early_answer;
mod edge;
mod edge_jwt;
mod errors;
mod events;
mod export;
mod faults;
mod forwarding;
mod fresh_token;
mod harness;
mod hostile;
mod hostile_conn;
mod http2;
mod inspector;
mod large;
mod lifecycle;
mod local_targets;
mod metrics;
mod missed;
mod postgres_store;
mod protocol_limits;
mod provider_views;
mod public_url;
mod replay;
mod replay_diff;
mod replay_edit;
mod requests_cli;
mod revoke;
mod shutdown;
mod start;
mod tls;
mod tls_reload;
mod tokens;
mod websocket;
