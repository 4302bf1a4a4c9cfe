//! The inspector: a local web page (`--inspect`, default 127.0.0.1:4040)
//! listing the tunnel's captured requests live, with replay,
//! edit-and-replay, and the delivery of missed requests. The page
//! (embedded in the binary) talks to `/api/...` here; those calls go to
//! the server's capture API, and replays go straight to the local app
//! (`docs/api.md`).
//!
//! Loopback only. Since any web page the user visits can make the browser
//! call 127.0.0.1, requests must name a loopback Host (no DNS rebinding)
//! and whatever sends requests to the local app (replay, deliver) must be
//! `application/json` (a cross-site form cannot send that without a CORS
//! preflight, which this server never grants).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use relay_shared::api::ReplayEdits;
use tokio::net::TcpListener;
use tracing::debug;

use crate::api::{Api, ApiError};
use crate::missed;
use crate::replay::{self, Refusal};
use crate::session::TunnelStatus;
use crate::target::LocalTarget;

type Body = BoxBody<Bytes, hyper::Error>;

const INDEX_HTML: &str = include_str!("../assets/inspector/index.html");
const APP_JS: &str = include_str!("../assets/inspector/app.js");
const APP_CSS: &str = include_str!("../assets/inspector/app.css");
/// Largest edited request the page may send for a replay.
const MAX_EDIT: usize = 16 << 20;

pub struct Inspector {
    pub api: Api,
    pub target: LocalTarget,
    pub status: Arc<TunnelStatus>,
}

/// Binds `addr`, which must be a loopback address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        bail!("--inspect must be a loopback address such as 127.0.0.1:4040 (got {addr}): the page can replay requests to your app");
    }
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot serve the inspector on {addr} (use --inspect ADDR or --no-inspect)")
    })
}

/// Serves the page until the process ends.
pub async fn serve(listener: TcpListener, inspector: Arc<Inspector>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of file descriptors, say: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let inspector = inspector.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let inspector = inspector.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&inspector, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await
            {
                debug!(error = %e, "inspector connection ended");
            }
        });
    }
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => full(status, "application/json", bytes),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "cannot encode JSON",
        ),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": code, "message": message });
    full(status, "application/json", body.to_string())
}

/// An error from the server's API, passed on with its status.
fn upstream(e: anyhow::Error) -> Response<Body> {
    match e.downcast_ref::<ApiError>() {
        Some(api) => error(api.status, &api.code, &api.message),
        None => error(
            StatusCode::BAD_GATEWAY,
            "server_unreachable",
            &format!("{e:#}"),
        ),
    }
}

/// Host names the page may be reached by.
fn loopback_host(req: &Request<Incoming>) -> bool {
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

async fn handle(inspector: &Inspector, req: Request<Incoming>) -> Response<Body> {
    if !loopback_host(&req) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "bad_host",
            "the inspector answers only on 127.0.0.1, localhost or [::1]",
        );
    }
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, [""]) => full(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML),
        (&Method::GET, ["app.js"]) => {
            full(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS)
        }
        (&Method::GET, ["app.css"]) => full(StatusCode::OK, "text/css; charset=utf-8", APP_CSS),
        (&Method::GET, ["api", "status"]) => json(
            StatusCode::OK,
            &serde_json::json!({
                "name": inspector.api.name(),
                "urls": inspector.status.urls(),
                "target": inspector.target.base,
                "connected": inspector.status.is_connected(),
            }),
        ),
        (&Method::GET, ["api", "requests"]) => match inspector.api.list(&query).await {
            Ok(page) => json(StatusCode::OK, &page),
            Err(e) => upstream(e),
        },
        (&Method::GET, ["api", "requests", id]) => match inspector.api.get(id).await {
            Ok(record) => json(StatusCode::OK, &record),
            Err(e) => upstream(e),
        },
        (&Method::GET, ["api", "events"]) => match inspector.api.events().await {
            Ok(res) => {
                let mut out = Response::new(res.into_body().boxed());
                out.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                out.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                out
            }
            Err(e) => upstream(e),
        },
        (&Method::POST, ["api", "requests", id, "replay"]) => {
            let id = (*id).to_owned();
            replay_request(inspector, &id, req).await
        }
        (&Method::GET, ["api", "missed"]) => match inspector.api.missed(&query).await {
            Ok(overview) => json(StatusCode::OK, &overview),
            Err(e) => upstream(e),
        },
        (&Method::POST, ["api", "missed", "deliver"]) => deliver_missed(inspector, req).await,
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such page"),
    }
}

/// The JSON body of a request that makes the inspector send requests to
/// the local app; an error answer if it is not `application/json` (see
/// the module doc) or too large.
async fn json_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_request",
            "send the request body as application/json (`{}` if empty)",
        ));
    }
    match Limited::new(req.into_body(), MAX_EDIT).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "bad_request",
            "request body too large",
        )),
    }
}

/// What `POST /api/missed/deliver` may ask for; `{}` delivers all.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliverAsk {
    /// Only requests that arrived within this many milliseconds.
    #[serde(default)]
    within_ms: Option<u64>,
    /// Send the captured part of truncated bodies.
    #[serde(default)]
    force: bool,
}

/// Delivers the waiting missed requests (as `relay replay --missed`) and
/// answers `{"results": [replay results], "left": N, "stopped": null |
/// {"error", "message", "id"}}`.
async fn deliver_missed(inspector: &Inspector, req: Request<Incoming>) -> Response<Body> {
    let body = match json_body(req).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let ask: DeliverAsk = if body.iter().all(u8::is_ascii_whitespace) {
        DeliverAsk::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
        }
    };
    let opts = missed::Options {
        within: ask.within_ms.map(std::time::Duration::from_millis),
        force: ask.force,
        set_headers: Vec::new(),
    };
    match missed::deliver(&inspector.api, &inspector.target, opts, None, |_, _| {}).await {
        Ok(report) => json(StatusCode::OK, &report),
        Err(e) => upstream(e),
    }
}

async fn replay_request(inspector: &Inspector, id: &str, req: Request<Incoming>) -> Response<Body> {
    let body = match json_body(req).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let edits: ReplayEdits = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayEdits::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(e) => e,
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
        }
    };
    match replay::replay(&inspector.api, &inspector.target, id, edits).await {
        Ok(result) => json(StatusCode::OK, &result),
        Err(e) => match e.downcast_ref::<Refusal>() {
            Some(r @ Refusal::Truncated { .. }) => {
                error(StatusCode::CONFLICT, "body_truncated", &r.to_string())
            }
            Some(r @ Refusal::Invalid(_)) => {
                error(StatusCode::BAD_REQUEST, "bad_request", &r.to_string())
            }
            None => upstream(e),
        },
    }
}
