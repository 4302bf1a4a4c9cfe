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
//!
//! Parts: this file (routing, health, JSON answers); `auth.rs` (who calls,
//! `GET /_relay/v1/token`); `captures.rs` (list, read, record replays, live
//! events); `missed.rs` (missed requests and their claims).

mod auth;
mod captures;
mod missed;

use auth::{authorize, identity};
use captures::{events, get, list, record_replay};
use missed::{claim, missed};

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

fn ok_json<T: serde::Serialize>(
    status: StatusCode,
    v: &T,
) -> Result<Response<ProxyBody>, PublicError> {
    let value = serde_json::to_value(v).map_err(|e| store_failed(e.into()))?;
    Ok(json_response(status, &value, None))
}
