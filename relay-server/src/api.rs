//! The server's own endpoints on the bare domain: `GET /_relay/health` for
//! load balancers and scripts, and the capture API under `/_relay/v1/`
//! (`docs/api.md`): list, read, record replays, a live event stream, and
//! the missed requests with the claims that deliver them.
//!
//! Reads flush the capture queue first (read your writes: a request whose
//! visitor has its answer is listed).
//!
//! Every capture call names a tunnel and must come from the tunnel name's
//! owner: the token it was claimed with, or on an `--open` server the
//! client identity it was claimed under.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::Incoming;
use relay_shared::api::{header_map, ClaimRequest, Identity, NewReplay, Outcome};

use crate::error::PublicError;
use crate::response::{json_response, new_request_id, ProxyBody};
use crate::store::{self, ClaimOutcome, Filter, NewCapture, NewMessage, Settled};
use crate::State;

/// Header a token-less client of an `--open` server names itself with.
pub const CLIENT_ID: &str = "x-relay-client-id";
/// Default page size of a listing.
const DEFAULT_LIMIT: u32 = 50;
/// Comment sent on an idle event stream so proxies keep it open.
const EVENTS_PING: Duration = Duration::from_secs(15);
/// Largest replay record accepted: its bodies (base64) are cut to
/// `--capture-limit` after parsing, and the client sends at most 1 MiB of
/// response and 16 MiB of edited request body.
const RECORD_MAX: usize = 32 << 20;

pub fn health(state: &State) -> Response<ProxyBody> {
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "tunnels": state.registry.live_count(),
            "capture": state.capture.config().enabled,
            "captures_dropped": state.capture.dropped(),
            "missed_dropped": state.capture.missed_dropped(),
        }),
        None,
    )
}

/// The capture store failed: the caller gets a 500, and the log says why
/// (at error level: someone must look).
fn store_failed(e: anyhow::Error) -> PublicError {
    tracing::error!(error = %format!("{e:#}"), "capture API call failed");
    PublicError::Internal("the server could not read its capture store")
}

/// Routes one `/_relay/v1/...` call.
pub async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Response<ProxyBody> {
    match route(state, req).await {
        Ok(res) => res,
        Err(e) => {
            let id = new_request_id();
            e.log(&id);
            e.response(&id)
        }
    }
}

async fn route(
    state: &Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, PublicError> {
    let path = req.uri().path().to_owned();
    let rest = path
        .strip_prefix(crate::router::API_PREFIX)
        .unwrap_or_default();
    let segments: Vec<&str> = rest.split('/').collect();
    if let (&Method::GET, ["token"]) = (req.method(), segments.as_slice()) {
        return identity(state, req.headers()).await;
    }
    let ["tunnels", name, tail @ ..] = segments.as_slice() else {
        return Err(not_found());
    };
    let name = name.to_ascii_lowercase();
    authorize(state, req.headers(), &name).await?;
    match (req.method(), tail) {
        (&Method::GET, ["requests"]) => list(state, &name, req.uri().query()).await,
        (&Method::POST, ["requests"]) => record_replay(state, &name, req).await,
        (&Method::GET, ["requests", id]) => get(state, &name, id).await,
        (&Method::GET, ["events"]) => Ok(events(state, name)),
        (&Method::GET, ["missed"]) => missed(state, &name, req.uri().query()).await,
        (&Method::POST, ["missed", "claim"]) => claim(state, &name, req).await,
        _ => Err(not_found()),
    }
}

fn not_found() -> PublicError {
    PublicError::NotFound
}

/// Who is calling: a live token (`Authorization: Bearer`), or on an
/// `--open` server a client id (`X-Relay-Client-Id`).
async fn caller(state: &Arc<State>, headers: &http::HeaderMap) -> Result<Caller, PublicError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let client_id = headers
        .get(CLIENT_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned);
    match (bearer, client_id) {
        (Some(token), _) => {
            let check = state
                .store
                .call(move |s| s.verify_token(&token))
                .await
                .map_err(store_failed)?;
            match check {
                Some(check) => Ok(Caller::Token(check)),
                None => Err(PublicError::Unauthorized("the token is unknown or revoked")),
            }
        }
        (None, Some(client)) if state.config.open => Ok(Caller::Client(client)),
        _ => Err(PublicError::Unauthorized(
            "send the tunnel's token as `Authorization: Bearer TOKEN`",
        )),
    }
}

enum Caller {
    Token(crate::store::TokenCheck),
    Client(String),
}

impl Caller {
    /// The owner string names are stored under.
    fn owner(&self) -> String {
        match self {
            Self::Token(check) => check.owner(),
            Self::Client(id) => format!("client:{id}"),
        }
    }
}

/// The caller must own `name`. A name owned by someone else looks like an
/// unknown one, so the API does not tell who has which names.
async fn authorize(
    state: &Arc<State>,
    headers: &http::HeaderMap,
    name: &str,
) -> Result<(), PublicError> {
    let caller = caller(state, headers).await?.owner();
    let n = name.to_owned();
    let owner = state
        .store
        .call(move |s| s.name_owner(&n))
        .await
        .map_err(store_failed)?;
    if owner.as_deref() != Some(caller.as_str()) {
        return Err(PublicError::NotYourTunnel(name.to_owned()));
    }
    Ok(())
}

/// `GET /_relay/v1/token`: what the server knows of the caller, so
/// `relay login` can check a token before saving it and `relay status`
/// can show its names. 401 for an unknown or revoked token.
async fn identity(
    state: &Arc<State>,
    headers: &http::HeaderMap,
) -> Result<Response<ProxyBody>, PublicError> {
    let caller = caller(state, headers).await?;
    let owner = caller.owner();
    let names = state
        .store
        .call(move |s| s.names_of(&owner))
        .await
        .map_err(store_failed)?;
    let identity = match caller {
        Caller::Token(check) => {
            let label = state
                .store
                .call(move |s| s.token_label(check.id))
                .await
                .map_err(store_failed)?;
            Identity {
                token_id: Some(check.id),
                label,
                max_names: check.max_names,
                names,
                open: state.config.open,
            }
        }
        Caller::Client(_) => Identity {
            token_id: None,
            label: None,
            max_names: None,
            names,
            open: state.config.open,
        },
    };
    ok_json(StatusCode::OK, &identity)
}

fn ok_json<T: serde::Serialize>(
    status: StatusCode,
    v: &T,
) -> Result<Response<ProxyBody>, PublicError> {
    let value = serde_json::to_value(v).map_err(|e| store_failed(e.into()))?;
    Ok(json_response(status, &value, None))
}

/// Parses the listing's query parameters.
fn filter(query: Option<&str>) -> Result<Filter, PublicError> {
    let mut f = Filter {
        limit: DEFAULT_LIMIT,
        ..Filter::default()
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let v = v.into_owned();
        if v.is_empty() {
            continue;
        }
        match &*k {
            "limit" => {
                f.limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| PublicError::bad_request("limit must be 1 to 1000"))?
            }
            "before" => f.before = Some(v),
            "method" => f.method = Some(v),
            "status" => {
                f.status = Some(
                    v.parse()
                        .map_err(|_| PublicError::bad_request("status must be a number"))?,
                )
            }
            "outcome" => {
                f.outcome = Some(
                    v.parse::<Outcome>()
                        .map_err(|e| PublicError::bad_request(e.to_string()))?,
                )
            }
            "path" => f.path = Some(v),
            "missed" => f.missed = matches!(v.as_str(), "1" | "true"),
            "kind" => {
                f.replays = match v.as_str() {
                    "visitor" => Some(false),
                    "replay" => Some(true),
                    _ => return Err(PublicError::bad_request("kind must be visitor or replay")),
                }
            }
            _ => {}
        }
    }
    Ok(f)
}

async fn list(
    state: &Arc<State>,
    name: &str,
    query: Option<&str>,
) -> Result<Response<ProxyBody>, PublicError> {
    let f = filter(query)?;
    state.capture.flush().await;
    let n = name.to_owned();
    let page = state
        .store
        .call(move |s| s.list_captures(&n, &f))
        .await
        .map_err(store_failed)?;
    ok_json(StatusCode::OK, &page)
}

async fn get(state: &Arc<State>, name: &str, id: &str) -> Result<Response<ProxyBody>, PublicError> {
    state.capture.flush().await;
    let (n, i) = (name.to_owned(), id.to_owned());
    let record = state
        .store
        .call(move |s| s.get_capture(&n, &i))
        .await
        .map_err(store_failed)?;
    match record {
        Some(r) => ok_json(StatusCode::OK, &r),
        None => Err(PublicError::RequestNotFound(format!(
            "tunnel {name:?} has no captured request {id:?} (it may have been retired by --retain)"
        ))),
    }
}

/// Records a replay the client performed, linked to its original.
async fn record_replay(
    state: &Arc<State>,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, PublicError> {
    let capture = state.capture.config();
    if !capture.enabled {
        return Err(PublicError::CaptureOff);
    }
    let max = RECORD_MAX;
    let body = Limited::new(req.into_body(), max)
        .collect()
        .await
        .map_err(|_| PublicError::bad_request(format!("the record is larger than {max} bytes")))?
        .to_bytes();
    let replay: NewReplay = serde_json::from_slice(&body)
        .map_err(|e| PublicError::bad_request(format!("not a replay record: {e}")))?;
    let outcome = replay.outcome;
    if !Outcome::STORED.contains(&outcome) {
        return Err(PublicError::bad_request("unknown outcome"));
    }
    let method = Method::from_bytes(replay.method.as_bytes())
        .map_err(|_| PublicError::bad_request("bad method"))?;
    if !replay.path.starts_with('/') {
        return Err(PublicError::bad_request("path must start with /"));
    }
    // The original must be this tunnel's.
    let (n, orig) = (name.to_owned(), replay.replay_of.clone());
    let exists = state
        .store
        .call(move |s| s.get_capture(&n, &orig).map(|r| r.is_some()))
        .await
        .map_err(store_failed)?;
    if !exists {
        return Err(PublicError::RequestNotFound(format!(
            "no captured request {:?} to link the replay to",
            replay.replay_of
        )));
    }
    let message = |m: relay_shared::api::Message| -> Result<NewMessage, PublicError> {
        let headers = header_map(&m.headers).map_err(PublicError::bad_request)?;
        let mut body = m.body;
        let truncated = m.body_truncated || body.len() > capture.limit;
        body.truncate(capture.limit);
        Ok(NewMessage {
            headers: relay_shared::api::encode_headers(&headers),
            body,
            size: m.body_size,
            truncated,
        })
    };
    let entry = NewCapture {
        id: new_request_id(),
        tunnel: name.to_owned(),
        time_ms: store::now_ms(),
        method: method.as_str().to_owned(),
        path: replay.path,
        status: replay.status,
        outcome,
        duration_ms: replay.duration_ms,
        replay_of: Some(replay.replay_of),
        request: message(replay.request)?,
        response: replay.response.map(message).transpose()?,
        diff: replay
            .diff
            .as_ref()
            .and_then(|d| serde_json::to_string(d).ok()),
        // A replay goes to the local app directly: no caller, no fault.
        deadline_exceeded_ms: None,
        fault: None,
    };
    let summary = entry.summary();
    state.capture.commit(entry).await.map_err(store_failed)?;
    // A replay of a missed request settles its delivery: delivered when the
    // app answered below 500, else failed with the reason.
    let error = match (outcome, replay.status) {
        (Outcome::Delivered, Some(s)) if s < 500 => None,
        (Outcome::Delivered, Some(s)) => Some(format!("the local app answered {s}")),
        _ => Some(replay.error.unwrap_or_else(|| outcome.as_str().to_owned())),
    };
    let (n, original, claim, new_id) = (
        name.to_owned(),
        summary.replay_of.clone().unwrap_or_default(),
        replay.claim,
        summary.id.clone(),
    );
    let has_claim = claim.is_some();
    let settled = state
        .store
        .call(move |s| {
            s.settle_delivery(
                &n,
                &original,
                claim.as_deref(),
                &new_id,
                error.as_deref(),
                store::now_ms(),
            )
        })
        .await
        .map_err(store_failed)?;
    if settled == Settled::ClaimLost && has_claim {
        return Err(PublicError::ClaimLost(format!(
            "the replay was recorded as {}, but the claim on its original had run out and another client took it over; it may be delivered again",
            summary.id
        )));
    }
    ok_json(StatusCode::CREATED, &summary)
}

/// Default number of missed requests listed by `GET .../missed`.
const MISSED_LIMIT: u32 = 50;

/// The missed requests that still wait, oldest first.
async fn missed(
    state: &Arc<State>,
    name: &str,
    query: Option<&str>,
) -> Result<Response<ProxyBody>, PublicError> {
    let mut limit = MISSED_LIMIT;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == "limit" {
            limit = v
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= 1000)
                .ok_or_else(|| PublicError::bad_request("limit must be 0 to 1000"))?;
        }
    }
    state.capture.flush().await;
    let n = name.to_owned();
    let overview = state
        .store
        .call(move |s| s.missed_overview(&n, limit))
        .await
        .map_err(store_failed)?;
    ok_json(StatusCode::OK, &overview)
}

/// Largest claim request body; it holds one optional number.
const CLAIM_BODY_MAX: usize = 4096;

/// Reserves the oldest waiting missed request for the caller.
async fn claim(
    state: &Arc<State>,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, PublicError> {
    let body = Limited::new(req.into_body(), CLAIM_BODY_MAX)
        .collect()
        .await
        .map_err(|_| PublicError::bad_request("the claim request is too large"))?
        .to_bytes();
    let ask: ClaimRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ClaimRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| PublicError::bad_request(format!("not a claim request: {e}")))?
    };
    state.capture.flush().await;
    let n = name.to_owned();
    let found = state
        .store
        .call(move |s| s.claim_missed(&n, ask.within_ms, store::now_ms()))
        .await
        .map_err(store_failed)?;
    match found {
        ClaimOutcome::Claimed(c) => ok_json(StatusCode::OK, &c),
        ClaimOutcome::Busy => Err(PublicError::DeliveryInProgress),
        ClaimOutcome::Empty => {
            let mut res = Response::new(crate::response::full(Bytes::new()));
            *res.status_mut() = StatusCode::NO_CONTENT;
            Ok(res)
        }
    }
}

/// `text/event-stream` of the tunnel's new captures. A task forwards
/// matching events into the body; it ends when the visitor leaves or the
/// server stops.
fn events(state: &Arc<State>, name: String) -> Response<ProxyBody> {
    let mut rx = state.capture.subscribe();
    let stop = state.sessions_closed.clone();
    let stopping = state.shutting_down_token();
    let (tx, body_rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut ping = tokio::time::interval(EVENTS_PING);
        ping.tick().await;
        // Opens the stream at once, so the caller knows it is subscribed.
        if tx
            .send(Bytes::from_static(b": subscribed\n\n"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let chunk = tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(s) if s.tunnel == name => match serde_json::to_string(&*s) {
                        Ok(json) => Bytes::from(format!("event: request\ndata: {json}\n\n")),
                        Err(_) => continue,
                    },
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        Bytes::from(format!("event: lagged\ndata: {n}\n\n"))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = ping.tick() => Bytes::from_static(b": ping\n\n"),
                _ = stop.cancelled() => return,
                _ = stopping.cancelled() => return,
                _ = tx.closed() => return,
            };
            // A listener that stops reading must not pin this task (nor
            // hold up shutdown): the send waits inside the select too.
            tokio::select! {
                sent = tx.send(chunk) => if sent.is_err() { return },
                _ = stop.cancelled() => return,
                _ = stopping.cancelled() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(body_rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(hyper::body::Frame::data(chunk)), rx))
    });
    let body = StreamBody::new(stream)
        .map_err(|never| match never {})
        .boxed();
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}
