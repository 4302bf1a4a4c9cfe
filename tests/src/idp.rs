//! A local OAuth2 authorization server: the token endpoint of an identity
//! provider (Auth0's `/oauth/token`), on 127.0.0.1 port 0. It grants the
//! client-credentials flow to one client id and secret, with numbered
//! access tokens (`fresh-1`, `fresh-2`, ...), and refuses anything else
//! the way Auth0 does (`401 {"error": "access_denied", ...}`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Where the token endpoint is served.
pub const TOKEN_PATH: &str = "/oauth/token";

struct Grants {
    client_id: String,
    client_secret: String,
    audience: Option<String>,
    issued: AtomicU64,
}

pub struct TokenEndpoint {
    addr: SocketAddr,
    grants: Arc<Grants>,
    accept: JoinHandle<()>,
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl TokenEndpoint {
    /// Grants tokens to `client_id` with `client_secret` (and, if given,
    /// only for `audience`).
    pub async fn start(
        client_id: &str,
        client_secret: &str,
        audience: Option<&str>,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the token endpoint")?;
        let addr = listener.local_addr()?;
        let grants = Arc::new(Grants {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            audience: audience.map(str::to_owned),
            issued: AtomicU64::new(0),
        });
        let g = grants.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let g = g.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(req, g.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            grants,
            accept,
        })
    }

    /// `http://127.0.0.1:PORT/oauth/token`.
    pub fn token_url(&self) -> String {
        format!("http://{}{TOKEN_PATH}", self.addr)
    }

    /// How many tokens it has granted.
    pub fn issued(&self) -> u64 {
        self.grants.issued.load(Ordering::SeqCst)
    }
}

async fn answer(
    req: Request<Incoming>,
    g: Arc<Grants>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let json = |status: StatusCode, body: String| {
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = status;
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(res)
    };
    if req.method() != http::Method::POST || req.uri().path() != TOKEN_PATH {
        return json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.into());
    }
    let form_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes()
                .starts_with(b"application/x-www-form-urlencoded")
        });
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_request"}"#.into(),
        );
    };
    let field = |name: &str| {
        form_urlencoded::parse(&body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if !form_type || field("grant_type").as_deref() != Some("client_credentials") {
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"unsupported_grant_type"}"#.into(),
        );
    }
    let audience_ok = g.audience.is_none() || field("audience") == g.audience;
    if field("client_id").as_deref() != Some(g.client_id.as_str())
        || field("client_secret").as_deref() != Some(g.client_secret.as_str())
        || !audience_ok
    {
        return json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"access_denied","error_description":"Unauthorized"}"#.into(),
        );
    }
    let n = g.issued.fetch_add(1, Ordering::SeqCst) + 1;
    json(
        StatusCode::OK,
        format!(r#"{{"access_token":"fresh-{n}","token_type":"Bearer","expires_in":86400}}"#),
    )
}
