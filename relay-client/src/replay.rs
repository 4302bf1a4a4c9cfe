//! Replay: fetch a captured request from the server, send its method, path,
//! headers and body (or edited ones) to the local app, and record what
//! happened on the server as a new entry linked to the original. Runs
//! without `relay connect`: the local app is called directly.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use relay_shared::api::{
    header_map, header_pairs, Message, NewReplay, Outcome, Record, ReplayEdits, ReplayResult,
};
use tokio::net::TcpStream;

use crate::api::{Api, ApiError};
use crate::target::LocalTarget;

/// How long the local app may take to answer a replay, head and body.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(60);
/// Response bytes kept for display and for the recorded entry; the rest is
/// read and counted.
const KEEP: usize = 1 << 20;

/// Replays refused before anything was sent.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "request {id} was captured with a truncated body ({kept} of {size} bytes kept; see the server's --capture-limit), \
         so a replay would send a partial body; to send the captured part anyway, use `relay replay --force` \
         (in the inspector: 'Replay anyway')"
    )]
    Truncated { id: String, kept: usize, size: u64 },
    #[error("cannot replay: {0}")]
    Invalid(String),
}

/// Refuses to send the kept part of a truncated body as if it were the
/// whole, unless the body is replaced or `force` is set. Also called
/// before `--edit` opens an editor, so nobody edits what cannot be sent.
pub fn check_truncated(record: &Record, edits: &ReplayEdits) -> Result<(), Refusal> {
    let request = &record.request;
    if request.body_truncated && edits.body.is_none() && !edits.force {
        return Err(Refusal::Truncated {
            id: record.summary.id.clone(),
            kept: request.body.len(),
            size: request.body_size,
        });
    }
    Ok(())
}

/// Replays capture `id` to `target` with `edits`, and records it.
pub async fn replay(
    api: &Api,
    target: &LocalTarget,
    id: &str,
    edits: ReplayEdits,
) -> anyhow::Result<ReplayResult> {
    let record = api.get(id).await?;
    replay_record(api, target, record, edits, None).await
}

/// Replays `record` (already fetched) to `target` with `edits`, and
/// records it; under `claim` when it delivers a claimed missed request.
///
/// Errors: a [`Refusal`] before anything was sent, or the server's error
/// for a refused record (`claim_lost`). A replay that went wrong at the
/// local app is an `Ok` result with `error` set.
pub async fn replay_record(
    api: &Api,
    target: &LocalTarget,
    record: Record,
    edits: ReplayEdits,
    claim: Option<String>,
) -> anyhow::Result<ReplayResult> {
    let request = &record.request;
    check_truncated(&record, &edits)?;
    let method_text = edits.method.as_deref().unwrap_or(&record.summary.method);
    let method = Method::from_bytes(method_text.trim().as_bytes())
        .map_err(|_| Refusal::Invalid(format!("{method_text:?} is not an HTTP method")))?;
    let path = edits.path.clone().unwrap_or(record.summary.path.clone());
    if !path.starts_with('/') {
        return Err(Refusal::Invalid(format!("the path {path:?} must start with /")).into());
    }
    let body = match &edits.body {
        Some(bytes) => Bytes::from(bytes.clone()),
        None => Bytes::from(request.body.clone()),
    };
    // The body is sent whole, so its length is known: framing headers from
    // the capture (or a stale length after an edit) would lie. They are
    // dropped from the list, not the map, which keeps the others in order.
    let pairs: Vec<(String, String)> = edits
        .headers
        .as_ref()
        .unwrap_or(&request.headers)
        .iter()
        .filter(|(n, _)| {
            !n.trim().eq_ignore_ascii_case("content-length")
                && !n.trim().eq_ignore_ascii_case("transfer-encoding")
        })
        .cloned()
        .collect();
    let mut headers = header_map(&pairs).map_err(Refusal::Invalid)?;
    if edits.headers.is_none() {
        // The Host rule of `relay connect --host-header`; headers the user
        // edited are sent as written.
        target.host_header.apply(&mut headers, target.authority());
    }
    if !body.is_empty() || record.request.body_size > 0 {
        headers.append(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }

    let url = format!("{}{path}", target.base);
    let started = Instant::now();
    let sent = tokio::time::timeout(
        REPLAY_TIMEOUT,
        send(target, method.clone(), &path, headers.clone(), body.clone()),
    )
    .await;
    let duration_ms = started.elapsed().as_millis() as u64;
    let (status, outcome, response, error) = match sent {
        Ok(Ok((status, message))) => (Some(status), Outcome::Delivered, Some(message), None),
        Ok(Err(Failure::Connect(e))) => (None, Outcome::LocalUnreachable, None, Some(e)),
        Ok(Err(Failure::Exchange(e))) => (None, Outcome::LocalError, None, Some(e)),
        Err(_) => (
            None,
            Outcome::Timeout,
            None,
            Some(format!(
                "the local app did not answer within {}s",
                REPLAY_TIMEOUT.as_secs()
            )),
        ),
    };
    let diff = edits.diff.then(|| {
        crate::diff::diff(
            crate::diff::Side {
                status: record.summary.status,
                response: record.response.as_ref(),
            },
            crate::diff::Side {
                status,
                response: response.as_ref(),
            },
        )
    });
    // The record keeps a prefix, like the server's own captures.
    let sent_message = Message {
        headers: header_pairs(&headers),
        body_size: body.len() as u64,
        body_truncated: body.len() > KEEP,
        body: body[..body.len().min(KEEP)].to_vec(),
    };
    let recorded = api
        .record_replay(&NewReplay {
            replay_of: record.summary.id.clone(),
            method: method.as_str().to_owned(),
            path: path.clone(),
            status,
            outcome,
            duration_ms,
            request: sent_message,
            response: response.clone(),
            error: error.clone(),
            claim: claim.clone(),
            diff: diff.clone(),
        })
        .await;
    let (new_id, error) = match recorded {
        Ok(summary) => (Some(summary.id), error),
        // Under a claim the server must know: a lost claim is for the
        // delivery loop to report, not a note on a result.
        Err(e) if claim.is_some() && ApiError::code_of(&e).is_some() => return Err(e),
        Err(e) => {
            let note = format!("the replay was not recorded on the server: {e:#}");
            (
                None,
                Some(error.map_or(note.clone(), |e| format!("{e}; {note}"))),
            )
        }
    };
    Ok(ReplayResult {
        id: new_id,
        replay_of: record.summary.id,
        target: url,
        status,
        outcome,
        duration_ms,
        response,
        error,
        diff,
    })
}

enum Failure {
    Connect(String),
    Exchange(String),
}

/// One request on a fresh connection to the local app.
async fn send(
    target: &LocalTarget,
    method: Method,
    path: &str,
    mut headers: http::HeaderMap,
    body: Bytes,
) -> Result<(u16, Message), Failure> {
    let tcp = TcpStream::connect((target.host(), target.port()))
        .await
        .map_err(|e| Failure::Connect(format!("cannot connect to {}: {e}", target.base)))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn crate::net::Io> = if target.is_tls() {
        let tls = target.tls(tcp).await.map_err(|e| {
            Failure::Connect(if crate::target::is_untrusted_certificate(&e) {
                format!(
                    "the certificate of {} is not trusted: {e} (for a self-signed one, use --insecure-local)",
                    target.base
                )
            } else {
                format!("TLS handshake with {} failed: {e}", target.base)
            })
        })?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::Connect(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    if !headers.contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(target.authority()) {
            headers.insert(header::HOST, v);
        }
    }
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .body(Full::new(body))
        .map_err(|e| Failure::Exchange(e.to_string()))?;
    *req.headers_mut() = headers;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| Failure::Exchange(format!("the local app broke the exchange: {e}")))?;
    let status = res.status().as_u16();
    // What the app said, without this connection's framing.
    let mut shown = res.headers().clone();
    relay_shared::http::strip_hop_by_hop(&mut shown, false);
    let response_headers = header_pairs(&shown);
    let mut body = res.into_body();
    let (mut kept, mut size) = (Vec::new(), 0u64);
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Failure::Exchange(format!("the local app broke off its response: {e}")))?;
        if let Some(data) = frame.data_ref() {
            size += data.len() as u64;
            let room = KEEP.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok((
        status,
        Message {
            headers: response_headers,
            body_truncated: (kept.len() as u64) < size,
            body: kept,
            body_size: size,
        },
    ))
}

/// What `relay replay` prints without `--json`.
pub fn describe(result: &ReplayResult) -> String {
    let mut out = format!(
        "replay of {} -> {}\n",
        result.replay_of,
        crate::output::printable(&result.target)
    );
    match result.status {
        Some(status) => {
            let reason = http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            out.push_str(&format!("{status} {reason}  {}ms", result.duration_ms));
        }
        None => out.push_str(&format!("not delivered ({})", result.outcome)),
    }
    if let Some(id) = &result.id {
        out.push_str(&format!("  recorded as {id}"));
    }
    out.push('\n');
    if let Some(r) = &result.response {
        if !r.body.is_empty() {
            out.push_str(&crate::output::printable(&relay_shared::api::body_preview(
                &r.body, 200,
            )));
            out.push('\n');
        }
    }
    if let Some(e) = &result.error {
        out.push_str(&format!("relay: {e}\n"));
    }
    out
}

/// The request id of `--last`: the newest request a visitor sent, never a
/// replay's own entry (replaying that would replay the replay). The
/// server filters (`kind=visitor`), so a burst of replays cannot push it
/// off the page; a server too old to know `kind` answers a replay, and
/// then the newest visitor's among its last 50 entries is taken.
pub async fn last_id(api: &Api) -> anyhow::Result<String> {
    let mut page = api.list("kind=visitor&limit=1").await?;
    if page.requests.iter().any(|s| s.replay_of.is_some()) {
        page = api.list("limit=50").await?;
    }
    page.requests
        .iter()
        .find(|s| s.replay_of.is_none())
        .map(|s| s.id.clone())
        .with_context(|| {
            format!(
                "tunnel {} has no captured requests from visitors yet",
                api.name()
            )
        })
}
