//! The "local app" the tunnel forwards to: a real hyper HTTP/1.1 server on
//! 127.0.0.1:0.
//!
//! Routes:
//! - `/echo` (any method): 200 JSON `{method, path, headers, body_len,
//!   body_sha256}`; `headers` is `[[name, escaped-value], ...]` in received
//!   order (see [`escape`]), so tests can compare values byte for byte.
//!   The response also carries `x-resp-multi: one`, `x-resp-multi: two` and an
//!   obs-text `x-resp-obs` to check response headers pass unchanged.
//! - `/stream?key=K`: chunked; sends `FIRST_CHUNK`, then waits until the test
//!   calls [`Origin::release`]`(K)`, then sends `SECOND_CHUNK`.
//! - `/hold?key=K`: sends nothing (not even the head) until the test calls
//!   [`Origin::release`]`(K)`, then 200 with body `released K`.
//! - `/download?bytes=N[&seed=S]`: N bytes of [`Pattern`]`(S, N)` (S defaults to 1), streamed.
//! - `/upload`: reads the body as a stream; 200 JSON `{len, sha256}`.
//! - `/ws`: WebSocket echo (text and binary).
//! - `/slow`: answers only after 10 minutes.
//! - `/delay?ms=N`: 200 `waited N ms` after N milliseconds (at most a
//!   minute): a local app slower than a caller's deadline.
//! - `/gated?key=K&bytes=N`: 200 with `Content-Length: N`; sends the first
//!   byte of N `x`s, waits for [`Origin::release`]`(K)`, then sends the rest.
//! - `/early?status=S&bytes=N`: answers S with N bytes of [`Pattern`]`(7, N)`
//!   at once; reads and drops the request body only once the whole answer
//!   was handed over (as a well-behaved server does after an early answer).
//!
//! - `/inbox...` (any method, any query): reads the whole body, keeps the
//!   request ([`Origin::inbox`]: method, path and query, headers, body) and
//!   answers 200 JSON `{"received": LEN}`.
//!
//! Every request's path and query is recorded when its head arrives
//! ([`Origin::requests`], [`Origin::wait_request`], [`Origin::wait_until`]),
//! so a test can tell that a request reached the local app, or that it never
//! did. A broken app is [`Origin::fail`]: requests with that path and query
//! are recorded, then answered 500 without running their route, until
//! [`Origin::heal`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::http::{full, BoxError, PatternBody, ReqBody};
use crate::pattern::hex;

pub const FIRST_CHUNK: &[u8] = b"first chunk\n";
pub const SECOND_CHUNK: &[u8] = b"second chunk\n";
/// Bytes of the obs-text response header `x-resp-obs`.
pub const RESP_OBS: &[u8] = b"ok \x80\xfe\xff end";

/// Largest body `/inbox` keeps; a longer one is refused with 413.
pub const INBOX_MAX: usize = 1 << 20;

/// One request as `/inbox` received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Name (lower-case) and value bytes, in received order.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
}

impl Received {
    /// Values of header `name` (lower-case), in order.
    pub fn header(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

#[derive(Default)]
struct State {
    gates: Mutex<HashMap<String, Arc<Notify>>>,
    /// Path and query of every request received, in arrival order.
    seen: Mutex<Vec<String>>,
    /// Woken (all waiters) whenever `seen` grows.
    seen_changed: Notify,
    /// Paths and queries answered 500 (see [`Origin::fail`]).
    failing: Mutex<Vec<String>>,
    /// What `/inbox` received, in the order the bodies completed.
    inbox: Mutex<Vec<Received>>,
}

impl State {
    fn gate(&self, key: &str) -> Arc<Notify> {
        self.gates
            .lock()
            .expect("gate lock is never poisoned")
            .entry(key.to_string())
            .or_default()
            .clone()
    }
}

/// A running origin; its accept loop stops when it drops.
pub struct Origin {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Origin {
    pub async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the origin")?;
        let addr = listener.local_addr().context("origin address")?;
        let state = Arc::new(State::default());
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, st.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            state,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Lets `/stream?key=KEY` send its second chunk, or `/hold?key=KEY` answer
    /// (works before or after the request arrives).
    pub fn release(&self, key: &str) {
        self.state.gate(key).notify_one();
    }

    /// Path and query of every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.state
            .seen
            .lock()
            .expect("seen lock is never poisoned")
            .clone()
    }

    /// Waits until a request whose path and query satisfies `pred` has arrived.
    pub async fn wait_request(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        self.wait_until(what, limit, |seen| seen.iter().find(|r| pred(r)).cloned())
            .await
    }

    /// Waits until `check`, given the path and query of every request
    /// received so far (in arrival order), returns `Some`. It is called
    /// again each time a request arrives.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&[String]) -> Option<T>,
    ) -> Result<T> {
        let wait = async {
            loop {
                let changed = self.state.seen_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if let Some(hit) = check(&self.requests()) {
                    return hit;
                }
                changed.await;
            }
        };
        tokio::time::timeout(limit, wait).await.map_err(|_| {
            anyhow::anyhow!(
                "the origin did not receive {what} within {limit:?}; it saw {:?}",
                self.requests()
            )
        })
    }

    /// From now on, requests whose path and query is `path` are answered
    /// 500 `{"origin_error": "failing on demand"}` (they are still
    /// recorded in [`Origin::requests`], not in the inbox).
    pub fn fail(&self, path: &str) {
        self.state
            .failing
            .lock()
            .expect("failing lock is never poisoned")
            .push(path.to_string());
    }

    /// Undoes [`Origin::fail`] for `path`.
    pub fn heal(&self, path: &str) {
        self.state
            .failing
            .lock()
            .expect("failing lock is never poisoned")
            .retain(|p| p != path);
    }

    /// What `/inbox` received so far, in order.
    pub fn inbox(&self) -> Vec<Received> {
        self.state
            .inbox
            .lock()
            .expect("inbox lock is never poisoned")
            .clone()
    }

    /// Path and query of each request `/inbox` took in, in order.
    pub fn inbox_paths(&self) -> Vec<String> {
        self.inbox().into_iter().map(|r| r.path).collect()
    }
}

/// Lossless, readable rendering of header bytes: printable ASCII as is, `\`
/// as `\\`, anything else as `\xHH`.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

fn query_param<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Response<ReqBody> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Reads a body as a stream, returning (len, sha256 hex).
async fn hash_body(mut body: Incoming) -> Result<(u64, String), hyper::Error> {
    let mut h = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            len += data.len() as u64;
            h.update(&data);
        }
    }
    Ok((len, hex(&h.finalize())))
}

async fn handle(req: Request<Incoming>, st: Arc<State>) -> Result<Response<ReqBody>, Infallible> {
    let path = req.uri().path().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    st.seen
        .lock()
        .expect("seen lock is never poisoned")
        .push(path_and_query.clone());
    let failing = st
        .failing
        .lock()
        .expect("failing lock is never poisoned")
        .contains(&path_and_query);
    if failing {
        st.seen_changed.notify_waiters();
        return Ok(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failing on demand",
        ));
    }
    if path.starts_with("/inbox") {
        // Kept before the answer, and before waiters hear of the request,
        // so a test woken by its arrival finds it in the inbox.
        let resp = inbox(req, &st).await;
        st.seen_changed.notify_waiters();
        return Ok(resp);
    }
    st.seen_changed.notify_waiters();
    let resp = match path.as_str() {
        "/echo" => echo(req).await,
        "/upload" => {
            let (len, sha) = match hash_body(req.into_body()).await {
                Ok(x) => x,
                Err(e) => return Ok(error(StatusCode::BAD_REQUEST, &format!("body: {e}"))),
            };
            json_response(
                StatusCode::OK,
                serde_json::json!({ "len": len, "sha256": sha }),
            )
        }
        "/download" => {
            let n = query_param(&req, "bytes").and_then(|v| v.parse::<u64>().ok());
            let seed = query_param(&req, "seed")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            match n {
                Some(n) => {
                    let mut r = Response::new(PatternBody::new(seed, n).boxed());
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                    r
                }
                None => error(StatusCode::BAD_REQUEST, "need ?bytes=N"),
            }
        }
        "/stream" => {
            let key = query_param(&req, "key").unwrap_or("default").to_string();
            let gate = st.gate(&key);
            let chunks = futures_util::stream::unfold(0u8, move |stage| {
                let gate = gate.clone();
                async move {
                    match stage {
                        0 => Some((Bytes::from_static(FIRST_CHUNK), 1)),
                        1 => {
                            gate.notified().await;
                            Some((Bytes::from_static(SECOND_CHUNK), 2))
                        }
                        _ => None,
                    }
                }
            })
            .map(|c| Ok::<_, BoxError>(Frame::data(c)));
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        "/hold" => {
            let key = query_param(&req, "key").unwrap_or("default").to_string();
            st.gate(&key).notified().await;
            Response::new(full(format!("released {key}")))
        }
        "/ws" => websocket(req),
        "/gated" => {
            let key = query_param(&req, "key").unwrap_or("default").to_string();
            let n = query_param(&req, "bytes")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(6)
                .max(1);
            let gate = st.gate(&key);
            let chunks = futures_util::stream::unfold(0u8, move |stage| {
                let gate = gate.clone();
                async move {
                    match stage {
                        0 => Some((Bytes::from_static(b"x"), 1)),
                        1 => {
                            gate.notified().await;
                            Some((Bytes::from(vec![b'x'; n - 1]), 2))
                        }
                        _ => None,
                    }
                }
            })
            .map(|c| Ok::<_, BoxError>(Frame::data(c)));
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            r
        }
        "/early" => {
            let status = query_param(&req, "status")
                .and_then(|v| v.parse::<u16>().ok())
                .and_then(|v| StatusCode::from_u16(v).ok())
                .unwrap_or(StatusCode::UNAUTHORIZED);
            let n = query_param(&req, "bytes")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            // The upload is read only once the whole answer has been
            // handed over, so the answer really comes first.
            let mut body = req.into_body();
            let (answered, answer_sent) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                let _ = answer_sent.await;
                while let Some(Ok(_)) = body.frame().await {}
            });
            let answer = PatternBody::new(7, n)
                .boxed()
                .into_data_stream()
                .chain(futures_util::stream::once(async move {
                    let _ = answered.send(());
                    Ok(Bytes::new())
                }))
                .map(|c| c.map(Frame::data));
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(answer)));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            r
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Response::new(full("too late"))
        }
        "/delay" => {
            let ms = query_param(&req, "ms")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                .min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full(format!("waited {ms} ms")))
        }
        _ => error(StatusCode::NOT_FOUND, "no such origin route"),
    };
    Ok(resp)
}

async fn inbox(req: Request<Incoming>, st: &State) -> Response<ReqBody> {
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, INBOX_MAX)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, &format!("body: {e}")),
    };
    let len = body.len();
    st.inbox
        .lock()
        .expect("inbox lock is never poisoned")
        .push(Received {
            method: parts.method.as_str().to_string(),
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect(),
            body,
        });
    json_response(StatusCode::OK, serde_json::json!({ "received": len }))
}

fn error(status: StatusCode, msg: &str) -> Response<ReqBody> {
    json_response(status, serde_json::json!({ "origin_error": msg }))
}

async fn echo(req: Request<Incoming>) -> Response<ReqBody> {
    let (parts, body) = req.into_parts();
    let headers: Vec<serde_json::Value> = parts
        .headers
        .iter()
        .map(|(n, v)| serde_json::json!([n.as_str(), escape(v.as_bytes())]))
        .collect();
    let (len, sha) = match hash_body(body).await {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body: {e}")),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let mut r = json_response(
        StatusCode::OK,
        serde_json::json!({
            "method": parts.method.as_str(),
            "path": path,
            "headers": headers,
            "body_len": len,
            "body_sha256": sha,
        }),
    );
    let h = r.headers_mut();
    h.append("x-resp-multi", HeaderValue::from_static("one"));
    h.append("x-resp-multi", HeaderValue::from_static("two"));
    h.insert(
        "x-resp-obs",
        HeaderValue::from_bytes(RESP_OBS).expect("obs-text is a valid header value"),
    );
    r
}

fn websocket(req: Request<Incoming>) -> Response<ReqBody> {
    let is_ws = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return error(StatusCode::BAD_REQUEST, "missing sec-websocket-key");
    };
    if !is_ws {
        return error(StatusCode::BAD_REQUEST, "not a websocket upgrade");
    }
    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                eprintln!("origin /ws: upgrade failed: {e}");
                return;
            }
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(m) if m.is_text() || m.is_binary() => {
                    if ws.send(m).await.is_err() {
                        break;
                    }
                }
                // Ping/pong and the close reply are handled by tungstenite.
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    r
}
