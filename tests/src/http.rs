//! A small visitor-side HTTP/1.1 client: one fresh TCP connection per request
//! to a given address, any `Host` header, streaming bodies both ways. Also a
//! raw-bytes exchange for tests that must control the exact bytes on the wire
//! (mixed-case names, obs-text values, hop-by-hop headers), the same client
//! over TLS ([`fetch_tls`]), and HTTP/2 with prior knowledge ([`connect_h2`]).

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskCx, Poll};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::pattern::Pattern;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Request body type used by [`send`].
pub type ReqBody = BoxBody<Bytes, BoxError>;

/// Name of the response header carrying the relay's request id.
pub const REQUEST_ID: &str = "x-relay-request-id";

pub fn empty() -> ReqBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A streamed body of the pattern `(seed, len)` with an exact size hint (so
/// it is sent with `Content-Length`), generated chunk by chunk.
pub struct PatternBody {
    pattern: Pattern,
    len: u64,
    sent: u64,
}

impl PatternBody {
    pub fn new(seed: u64, len: u64) -> Self {
        Self {
            pattern: Pattern::new(seed, len),
            len,
            sent: 0,
        }
    }

    pub fn boxed(self) -> ReqBody {
        BodyExt::boxed(self)
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut TaskCx<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.pattern.next_chunk() {
            Some(c) => {
                self.sent += c.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(c))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.sent)
    }
}

/// Sends `req` on a new HTTP/1.1 connection to `addr`; returns the response
/// with its body still streaming.
pub async fn send(addr: SocketAddr, req: Request<ReqBody>) -> Result<Response<Incoming>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        // Errors surface through the response / body below.
        let _ = conn.with_upgrades().await;
    });
    let what = format!("{} {} to {addr}", req.method(), req.uri());
    sender
        .send_request(req)
        .await
        .with_context(|| format!("sending {what}"))
}

/// A response read to the end.
#[derive(Debug)]
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Fetched {
    /// The `x-relay-request-id` header, if present and UTF-8.
    pub fn request_id(&self) -> Option<String> {
        self.headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "response body is not JSON (status {}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The relay's JSON error body.
    pub fn error_body(&self) -> Result<ErrorBody> {
        let v = self.json()?;
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        Ok(ErrorBody {
            code: s("error").with_context(|| format!("no string `error` in {v}"))?,
            message: s("message").with_context(|| format!("no string `message` in {v}"))?,
            request_id: s("request_id"),
        })
    }
}

/// `{"error": CODE, "message": ..., "request_id": ...}`.
#[derive(Debug)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
}

/// Reads a response's body to the end.
async fn read_all(resp: Response<Incoming>) -> Result<Fetched> {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .context("reading the response body")?
        .to_bytes();
    Ok(Fetched {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Sends `req` and reads the whole response, all within `limit`.
pub async fn fetch(addr: SocketAddr, req: Request<ReqBody>, limit: Duration) -> Result<Fetched> {
    let what = format!("{} {}", req.method(), req.uri());
    tokio::time::timeout(limit, async { read_all(send(addr, req).await?).await })
        .await
        .map_err(|_| anyhow!("no complete response to {what} within {limit:?}"))?
}

/// A rustls client config that trusts only the certificates in the PEM file
/// `ca_pem` and offers HTTP/1.1 by ALPN.
pub fn tls_client_config(ca_pem: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)
        .with_context(|| format!("reading {}", ca_pem.display()))?
    {
        let cert = cert.with_context(|| format!("parsing {}", ca_pem.display()))?;
        roots.add(cert).context("adding the CA certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Like [`send`], over TLS: verifies the server's certificate for
/// `server_name` (also sent as SNI), then speaks HTTP/1.1.
pub async fn send_tls(
    addr: SocketAddr,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
    req: Request<ReqBody>,
) -> Result<Response<Incoming>> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true).context("TCP_NODELAY")?;
    let name = ServerName::try_from(server_name.to_string())
        .with_context(|| format!("{server_name:?} is not a TLS server name"))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {addr} as {server_name}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake over TLS")?;
    tokio::spawn(async move {
        // Errors surface through the response / body below.
        let _ = conn.with_upgrades().await;
    });
    let what = format!("{} {} to {addr} over TLS", req.method(), req.uri());
    sender
        .send_request(req)
        .await
        .with_context(|| format!("sending {what}"))
}

/// [`send_tls`] and read the whole response, all within `limit`.
pub async fn fetch_tls(
    addr: SocketAddr,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
    req: Request<ReqBody>,
    limit: Duration,
) -> Result<Fetched> {
    let what = format!("{} {} over TLS", req.method(), req.uri());
    tokio::time::timeout(limit, async {
        read_all(send_tls(addr, server_name, tls, req).await?).await
    })
    .await
    .map_err(|_| anyhow!("no complete response to {what} within {limit:?}"))?
}

/// One HTTP/2 connection (prior knowledge, plain TCP); clone it to open
/// concurrent streams.
pub type H2Sender = hyper::client::conn::http2::SendRequest<ReqBody>;

/// Opens an HTTP/2 connection with prior knowledge (no upgrade, no TLS) to `addr`.
/// Requests on it need an absolute URI: its authority becomes `:authority`.
pub async fn connect_h2(addr: SocketAddr) -> Result<H2Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        // Errors surface through the responses below.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends `req` as a new stream on the HTTP/2 connection `sender` and reads
/// the whole response, all within `limit`.
pub async fn fetch_h2(
    sender: &mut H2Sender,
    req: Request<ReqBody>,
    limit: Duration,
) -> Result<Fetched> {
    let what = format!("{} {} (HTTP/2)", req.method(), req.uri());
    tokio::time::timeout(limit, async {
        sender
            .ready()
            .await
            .context("HTTP/2 connection not ready")?;
        let resp = sender
            .send_request(req)
            .await
            .with_context(|| format!("sending {what}"))?;
        read_all(resp).await
    })
    .await
    .map_err(|_| anyhow!("no complete response to {what} within {limit:?}"))?
}

/// Status, headers and the offset where the body starts.
type ParsedHead = (u16, Vec<(String, Vec<u8>)>, usize);

/// A response parsed from raw bytes, header names as sent (case kept), in order.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Values of header `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<Vec<u8>> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a complete chunked body, or `None` if more bytes are needed.
fn decode_chunked(mut buf: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(buf, b"\r\n") else {
            return Ok(None);
        };
        let size_line = std::str::from_utf8(&buf[..eol]).context("chunk size line")?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {size_line:?}"))?;
        buf = &buf[eol + 2..];
        if size == 0 {
            // Trailers end with an empty line.
            return Ok(find(buf, b"\r\n").map(|_| out));
        }
        if buf.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

/// Writes `request` (complete raw HTTP/1.1 bytes) to `addr` and parses one
/// response, within `limit`. The response to HEAD is not supported.
pub async fn raw_exchange(
    addr: SocketAddr,
    request: &[u8],
    limit: Duration,
) -> Result<RawResponse> {
    tokio::time::timeout(limit, async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream
            .write_all(request)
            .await
            .context("writing the raw request")?;
        let mut buf = Vec::new();
        let mut tmp = vec![0u8; 64 * 1024];
        let mut head: Option<ParsedHead> = None;
        loop {
            if head.is_none() {
                if let Some(end) = find(&buf, b"\r\n\r\n") {
                    let text = &buf[..end];
                    let mut lines = text
                        .split(|&b| b == b'\n')
                        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
                    let status_line =
                        String::from_utf8_lossy(lines.next().unwrap_or_default()).to_string();
                    let status = status_line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .with_context(|| format!("bad status line {status_line:?}"))?;
                    let mut headers = Vec::new();
                    for l in lines {
                        let colon = l
                            .iter()
                            .position(|&b| b == b':')
                            .context("header without colon")?;
                        let name = String::from_utf8_lossy(&l[..colon]).to_string();
                        let v = &l[colon + 1..];
                        let start = v
                            .iter()
                            .position(|&b| b != b' ' && b != b'\t')
                            .unwrap_or(v.len());
                        let stop = v
                            .iter()
                            .rposition(|&b| b != b' ' && b != b'\t')
                            .map_or(start, |p| p + 1);
                        headers.push((name, v[start..stop].to_vec()));
                    }
                    head = Some((status, headers, end + 4));
                }
            }
            if let Some((status, headers, body_start)) = &head {
                let body = &buf[*body_start..];
                let get = |n: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(n))
                        .map(|(_, v)| String::from_utf8_lossy(v).to_string())
                };
                let done = if get("transfer-encoding")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
                {
                    decode_chunked(body)?
                } else if let Some(cl) = get("content-length") {
                    let n: usize = cl.trim().parse().context("content-length")?;
                    (body.len() >= n).then(|| body[..n].to_vec())
                } else if *status == 204 || *status == 304 || (100..200).contains(status) {
                    Some(Vec::new())
                } else {
                    None // delimited by close
                };
                if let Some(body) = done {
                    return Ok(RawResponse {
                        status: *status,
                        headers: headers.clone(),
                        body,
                    });
                }
            }
            let n = stream
                .read(&mut tmp)
                .await
                .context("reading the raw response")?;
            if n == 0 {
                match head {
                    Some((status, headers, body_start)) => {
                        return Ok(RawResponse {
                            status,
                            headers,
                            body: buf[body_start..].to_vec(),
                        })
                    }
                    None => bail!(
                        "connection closed before a complete response head; got {:?}",
                        String::from_utf8_lossy(&buf)
                    ),
                }
            }
            buf.extend_from_slice(&tmp[..n]);
        }
    })
    .await
    .map_err(|_| anyhow!("no complete raw response within {limit:?}"))?
}
