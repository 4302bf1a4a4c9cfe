//! The inspector: a local web page (`--inspect`, default 127.0.0.1:4040,
//! else the next free port up to 4049) listing captured requests live,
//! with replay, edit-and-replay and its diff, search, curl and HAR export,
//! and the delivery of missed requests. One page serves every tunnel of
//! the process (`relay start` runs several). The page (embedded in the
//! binary) talks to `/api/...` here; those calls go to the server's
//! capture API, and replays go straight to the local app (`docs/api.md`).
//! What the page displays of a capture is computed in [`views`] with the
//! terminal's own code; [`search`] looks through bodies.
//!
//! Loopback only. Since any web page the user visits can make the browser
//! call 127.0.0.1, requests must name a loopback Host (no DNS rebinding)
//! and whatever sends requests to the local app or writes files (replay,
//! deliver, curl) must be `application/json` (a cross-site form cannot
//! send that without a CORS preflight, which this server never grants).

mod handlers;
pub mod search;
pub mod views;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::debug;

use crate::api::{Api, ApiError};
use crate::session::TunnelStatus;
use crate::target::LocalTarget;

type Body = BoxBody<Bytes, hyper::Error>;

const INDEX_HTML: &str = include_str!("../../assets/inspector/index.html");
const APP_JS: &str = include_str!("../../assets/inspector/app.js");
const APP_CSS: &str = include_str!("../../assets/inspector/app.css");
/// Largest edited request the page may send for a replay.
const MAX_EDIT: usize = 16 << 20;

/// The inspector's port when none is given; see [`PORTS_TRIED`].
pub const DEFAULT_PORT: u16 = 4040;
/// Ports tried from the first one when no `--inspect` address is given, so
/// that a second `relay connect` gets 4041, a third 4042, and so on; ten
/// runs at once is more than anyone watches.
pub const PORTS_TRIED: u16 = 10;

/// One tunnel the page shows.
pub struct Inspected {
    pub api: Api,
    pub target: LocalTarget,
    pub status: Arc<TunnelStatus>,
}

/// A tunnel and what the page's search keeps for it.
struct Tunnel {
    inspected: Inspected,
    search: search::Cache,
}

/// Binds `addr`, which must be a loopback address (an explicit
/// `--inspect`: a taken port is an error).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        bail!("--inspect must be a loopback address such as 127.0.0.1:4040 (got {addr}): the page can replay requests to your app");
    }
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot serve the inspector on {addr} (use --inspect ADDR or --no-inspect)")
    })
}

/// Binds the first free port of 127.0.0.1:`first`..=`first + PORTS_TRIED
/// - 1` (`first` is [`DEFAULT_PORT`] but in tests).
pub async fn bind_default(first: u16) -> anyhow::Result<TcpListener> {
    let last = first.saturating_add(PORTS_TRIED - 1);
    for port in first..=last {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot serve the inspector on 127.0.0.1:{port}"))
            }
        }
    }
    bail!(
        "cannot serve the inspector: ports {first} to {last} of 127.0.0.1 are all taken \
         (use --inspect ADDR or --no-inspect)"
    )
}

/// Serves the page for `tunnels` (at least one; the first answers the
/// paths that name none) until the process ends.
pub async fn serve(listener: TcpListener, tunnels: Vec<Inspected>) {
    let tunnels: Arc<[Tunnel]> = tunnels
        .into_iter()
        .map(|inspected| Tunnel {
            inspected,
            search: search::Cache::default(),
        })
        .collect();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of file descriptors, say: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let tunnels = tunnels.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let tunnels = tunnels.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&tunnels, req).await) }
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

/// `{"name", "urls", "target", "connected"}` of one tunnel.
fn status_json(t: &Inspected) -> serde_json::Value {
    serde_json::json!({
        "name": t.api.name(),
        "urls": t.status.urls(),
        "target": t.target.base,
        "connected": t.status.is_connected(),
    })
}

async fn handle(tunnels: &[Tunnel], req: Request<Incoming>) -> Response<Body> {
    if !loopback_host(&req) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "bad_host",
            "the inspector answers only on 127.0.0.1, localhost or [::1]",
        );
    }
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, [""]) => full(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML),
        (&Method::GET, ["app.js"]) => {
            full(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS)
        }
        (&Method::GET, ["app.css"]) => full(StatusCode::OK, "text/css; charset=utf-8", APP_CSS),
        (&Method::GET, ["api", "tunnels"]) => json(
            StatusCode::OK,
            &serde_json::json!({
                "tunnels": tunnels.iter().map(|t| status_json(&t.inspected)).collect::<Vec<_>>(),
            }),
        ),
        // `/api/t/NAME/...` names the tunnel; `/api/...` is the first.
        (_, ["api", "t", name, rest @ ..]) => {
            match tunnels.iter().find(|t| t.inspected.api.name() == *name) {
                Some(t) => {
                    let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
                    handlers::tunnel(t, &rest, req).await
                }
                None => error(
                    StatusCode::NOT_FOUND,
                    "unknown_tunnel",
                    &format!("this inspector shows no tunnel named {name:?}"),
                ),
            }
        }
        (_, ["api", rest @ ..]) => match tunnels.first() {
            Some(t) => {
                let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
                handlers::tunnel(t, &rest, req).await
            }
            None => error(StatusCode::NOT_FOUND, "not_found", "no tunnel"),
        },
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such page"),
    }
}

/// The JSON body of a request that makes the inspector send requests to
/// the local app or write a file; an error answer if it is not
/// `application/json` (see the module doc) or too large. Whitespace only
/// is `{}`.
async fn json_body<T: serde::de::DeserializeOwned + Default>(
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
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
    let body = match Limited::new(req.into_body(), MAX_EDIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "bad_request",
                "request body too large",
            ))
        }
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn inspected(name: &str, port: u16, connected: bool) -> Inspected {
        let server: http::Uri = "http://127.0.0.1:9".parse().expect("a URI");
        let status = Arc::new(TunnelStatus::default());
        if connected {
            status.connected(vec![format!("http://{name}.localhost:8080/")]);
        }
        Inspected {
            api: Api::new(
                crate::net::ServerAddr::new(&server, None).expect("a server address"),
                name.to_owned(),
                crate::api::Identity::ClientId("test".into()),
            ),
            target: LocalTarget::parse(&port.to_string()).expect("a port"),
            status,
        }
    }

    /// `GET path` on a fresh connection: (status, body).
    async fn get(addr: SocketAddr, path: &str, host: &str) -> (u16, serde_json::Value) {
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.expect("writes");
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.expect("reads");
        let (head, body) = out.split_once("\r\n\r\n").expect("a head");
        let status = head[9..12].parse().expect("a status");
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn one_page_serves_every_tunnel_by_name_and_the_first_by_default() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("bound");
        let tunnels = vec![
            inspected("alpha", 4001, true),
            inspected("beta", 4002, false),
        ];
        tokio::spawn(serve(listener, tunnels));
        let host = addr.to_string();
        let (st, list) = get(addr, "/api/tunnels", &host).await;
        assert_eq!(st, 200);
        let names: Vec<&str> = list["tunnels"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|t| t["name"].as_str().expect("a name"))
            .collect();
        assert_eq!(names, ["alpha", "beta"]);
        assert_eq!(list["tunnels"][0]["connected"], true);
        let (_, beta) = get(addr, "/api/t/beta/status", &host).await;
        assert_eq!(
            (&beta["name"], &beta["target"], &beta["connected"]),
            (
                &"beta".into(),
                &"http://localhost:4002".into(),
                &false.into()
            )
        );
        let (_, first) = get(addr, "/api/status", &host).await;
        assert_eq!(first["name"], "alpha");
        let (st, unknown) = get(addr, "/api/t/gamma/status", &host).await;
        assert_eq!((st, &unknown["error"]), (404, &"unknown_tunnel".into()));
        let (st, _) = get(addr, "/api/tunnels", "evil.example").await;
        assert_eq!(st, 421, "a name that is not loopback is refused");
    }

    #[tokio::test]
    async fn a_taken_default_port_moves_on_to_the_next() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let first = taken.local_addr().expect("bound").port();
        let next = bind_default(first).await.expect("a later port is free");
        let port = next.local_addr().expect("bound").port();
        assert!(
            port > first && port < first.saturating_add(PORTS_TRIED),
            "{port}"
        );
        let again = bind_default(first).await.expect("and another");
        assert_ne!(again.local_addr().expect("bound").port(), port);
        // An explicit address that is taken stays an error.
        assert!(bind(taken.local_addr().expect("bound")).await.is_err());
    }
}
