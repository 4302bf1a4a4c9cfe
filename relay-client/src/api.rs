//! Calls to the server's capture API (`docs/api.md`): one HTTP/1.1
//! connection per call, which is all a CLI command or an inspector click
//! needs. The event stream hands back the live response body.

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use relay_shared::api::{ClaimRequest, Claimed, MissedOverview, NewReplay, Page, Record, Summary};
use serde::de::DeserializeOwned;

use crate::net::ServerAddr;

/// Longest a capture API call may take, answer included (the event stream
/// excepted).
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Largest API answer read into memory: a record holds two bodies of up to
/// the server's `--capture-limit` each, base64-encoded.
const MAX_ANSWER: usize = 64 << 20;

/// Where a tunnel's part of the API starts (the name follows).
const TUNNELS: &str = "/_relay/v1/tunnels/";
/// `GET`: the caller as the server sees it.
const IDENTITY: &str = "/_relay/v1/token";

/// Who the client is to the server.
#[derive(Clone)]
pub enum Identity {
    Token(String),
    /// A token-less client of an `--open` server.
    ClientId(String),
}

/// The capture API of one tunnel.
#[derive(Clone)]
pub struct Api {
    server: ServerAddr,
    name: String,
    identity: Identity,
}

/// An API error the server explained (`{"error", "message"}`).
#[derive(Debug, thiserror::Error)]
#[error("{message} ({code}, HTTP {status})")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    /// The server's error code, if `e` is an answer it explained.
    pub fn code_of(e: &anyhow::Error) -> Option<&str> {
        e.downcast_ref::<Self>().map(|a| a.code.as_str())
    }
}

impl Api {
    pub fn new(server: ServerAddr, name: String, identity: Identity) -> Self {
        Self {
            server,
            name,
            identity,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `path` under this tunnel's part of the API.
    fn at(&self, path: &str) -> String {
        format!("{TUNNELS}{}{path}", self.name)
    }

    /// Sends one request to `uri` (a path on the server); any status is
    /// returned, the body unread.
    async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<http::Response<Incoming>> {
        let io = self.server.dial().await.with_context(|| {
            format!("cannot reach the relay server {}", self.server.authority())
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, self.server.authority());
        req = match &self.identity {
            Identity::Token(t) => req.header(header::AUTHORIZATION, format!("Bearer {t}")),
            Identity::ClientId(id) => req.header("x-relay-client-id", id),
        };
        if body.is_some() {
            req = req.header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        Ok(sender.send_request(req).await?)
    }

    /// Sends a request and reads the whole answer, turning error answers
    /// into [`ApiError`].
    async fn exchange(
        &self,
        method: Method,
        uri: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let answer = async {
            let res = self.send(method, uri, body).await?;
            let status = res.status();
            let bytes = http_body_util::Limited::new(res.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading the server's answer: {e}"))?
                .to_bytes();
            anyhow::Ok((status, bytes))
        };
        let (status, bytes) =
            tokio::time::timeout(CALL_TIMEOUT, answer)
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "the relay server did not answer within {}s",
                        CALL_TIMEOUT.as_secs()
                    )
                })??;
        if !status.is_success() {
            #[derive(serde::Deserialize)]
            struct Error {
                error: String,
                message: String,
            }
            return Err(match serde_json::from_slice::<Error>(&bytes) {
                Ok(e) => ApiError {
                    status,
                    code: e.error,
                    message: e.message,
                }
                .into(),
                Err(_) => anyhow::anyhow!("the server answered HTTP {status}"),
            });
        }
        Ok((status, bytes))
    }

    /// Sends a request and parses a JSON answer.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        uri: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<T> {
        let (_, bytes) = self.exchange(method, uri, body).await?;
        serde_json::from_slice(&bytes).context("the server's answer is not the expected JSON")
    }

    /// A page of captures; `query` is the listing's query string.
    pub async fn list(&self, query: &str) -> anyhow::Result<Page> {
        let path = if query.is_empty() {
            "/requests".to_owned()
        } else {
            format!("/requests?{query}")
        };
        self.call(Method::GET, &self.at(&path), None).await
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Record> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            bail!("{id:?} is not a request id");
        }
        self.call(Method::GET, &self.at(&format!("/requests/{id}")), None)
            .await
    }

    /// Records a replay as a new entry; answers its summary.
    pub async fn record_replay(&self, replay: &NewReplay) -> anyhow::Result<Summary> {
        let body = serde_json::to_vec(replay)?;
        self.call(Method::POST, &self.at("/requests"), Some(body))
            .await
    }

    /// The missed requests still waiting; `query` is the query string
    /// (`limit`).
    pub async fn missed(&self, query: &str) -> anyhow::Result<MissedOverview> {
        let path = if query.is_empty() {
            "/missed".to_owned()
        } else {
            format!("/missed?{query}")
        };
        self.call(Method::GET, &self.at(&path), None).await
    }

    /// Reserves the oldest waiting missed request for delivery; `None`
    /// when none waits. Another deliverer's live claim is an [`ApiError`]
    /// with code `delivery_in_progress`.
    pub async fn claim(&self, ask: &ClaimRequest) -> anyhow::Result<Option<Claimed>> {
        let body = serde_json::to_vec(ask)?;
        let (status, bytes) = self
            .exchange(Method::POST, &self.at("/missed/claim"), Some(body))
            .await?;
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .context("the server's claim is not the expected JSON")
    }

    /// What the server knows of this identity: checks a token (`relay
    /// login`) and lists its names (`relay status`). The tunnel name plays
    /// no part.
    pub async fn identity(&self) -> anyhow::Result<relay_shared::api::Identity> {
        self.call(Method::GET, IDENTITY, None).await
    }

    /// The live event stream (`text/event-stream`), unread.
    pub async fn events(&self) -> anyhow::Result<http::Response<Incoming>> {
        let res = self.send(Method::GET, &self.at("/events"), None).await?;
        if !res.status().is_success() {
            bail!("the server refused the event stream: HTTP {}", res.status());
        }
        Ok(res)
    }
}
