//! One task per stream: send the request to the local app through a pooled
//! hyper client, stream the response back, print the request line.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use relay_shared::frame::{Frame, Payload, ResetCode};
use relay_shared::http::{is_upgrade, strip_hop_by_hop};
use relay_shared::mux::{
    recv_io, InboundBody, ReadyBody, ResetWait, StreamError, StreamParts, StreamSender,
};
use relay_shared::{RequestHead, ResponseHead};
use tracing::debug;

use crate::fds::{self, Counted, FdBudget};
use crate::forward_opts::{fault_answer, mark_fault, CallerDeadline, FaultPlan, ForwardOptions};
use crate::output::{Output, RequestLine};
use crate::target::LocalTarget;
use relay_shared::fault::Fault;

/// Body of requests to the local app.
type LocalBody = Either<InboundBody, Empty<Bytes>>;

/// Idle keep-alive connections kept per client process; more than the
/// server's stream limit would never be used.
const MAX_IDLE: usize = 256;

/// Time allowed to connect to the local app.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the local app could not be asked. The messages are what the
/// request line prints after a 502, so they are short and name the cause.
#[derive(Debug, thiserror::Error)]
enum LocalError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    #[error("{}", connect_reason(.0, .1))]
    Connect(String, std::io::Error),
    #[error("{}", tls_reason(.0, .1))]
    Tls(String, std::io::Error),
    #[error("local app error: {0}")]
    Http(#[from] hyper::Error),
}

/// `connection refused on localhost:4000`, `timed out connecting to ...`.
fn connect_reason(addr: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("connection refused on {addr}"),
        std::io::ErrorKind::TimedOut => format!("timed out connecting to {addr}"),
        _ => format!("cannot connect to {addr}: {e}"),
    }
}

/// `certificate not trusted on localhost:8443 (--insecure-local?)`.
fn tls_reason(addr: &str, e: &std::io::Error) -> String {
    if crate::target::is_untrusted_certificate(e) {
        format!("certificate not trusted on {addr} (--insecure-local?)")
    } else if e.kind() == std::io::ErrorKind::TimedOut {
        format!("TLS handshake timed out on {addr}")
    } else {
        format!("TLS handshake failed on {addr}: {e}")
    }
}

/// Shared by all stream tasks of the client process: the keep-alive pool
/// to the local app survives reconnects of the session.
///
/// The pool is a stack of idle HTTP/1.1 connections. A stream task takes
/// one, sends its request, and puts it back once it has streamed the whole
/// response, when the connection is free again; so no task or timer is
/// spent per request on pool bookkeeping.
pub struct Forwarder {
    idle: std::sync::Mutex<Vec<SendRequest<LocalBody>>>,
    /// Descriptors for connections to the local app: a request waits for
    /// one rather than fail with EMFILE.
    fds: FdBudget,
    target: LocalTarget,
    output: Output,
    options: ForwardOptions,
}

impl Forwarder {
    pub fn new(target: LocalTarget, output: Output) -> Arc<Self> {
        Self::with_options(target, output, ForwardOptions::default())
    }

    /// A forwarder that also applies `relay connect`'s deadline, fault and
    /// Host header settings.
    pub fn with_options(target: LocalTarget, output: Output, options: ForwardOptions) -> Arc<Self> {
        Arc::new(Self {
            idle: std::sync::Mutex::new(Vec::new()),
            fds: FdBudget::from_limit(),
            target,
            output,
            options,
        })
    }

    /// The caller deadline for the hello, in milliseconds.
    pub fn deadline_ms(&self) -> Option<u64> {
        self.options.deadline.as_ref().map(CallerDeadline::millis)
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<SendRequest<LocalBody>>> {
        // Only push/pop under the lock: poisoning carries no information.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection, or a new one. `bool`: whether it was reused
    /// (a reused one may have been closed by the app meanwhile).
    async fn checkout(&self) -> Result<(SendRequest<LocalBody>, bool), LocalError> {
        loop {
            let Some(mut conn) = self.idle().pop() else {
                break;
            };
            // A connection is checked in right after its response ended;
            // hyper may need a moment to mark it ready. `ready` fails if
            // the app closed it.
            if conn.ready().await.is_ok() {
                return Ok((conn, true));
            }
        }
        // Boxed: connecting is rare (pooled connections are reused) and its
        // future is large; inline it would make every stream task bigger.
        Ok((Box::pin(self.connect()).await?, false))
    }

    fn checkin(&self, conn: SendRequest<LocalBody>) {
        let mut idle = self.idle();
        // With every descriptor in use, requests may be waiting for one:
        // closing the connection hands its descriptor on.
        if !conn.is_closed() && idle.len() < MAX_IDLE && !self.fds.exhausted() {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<SendRequest<LocalBody>, LocalError> {
        let t = &self.target;
        let addr_text = t.authority().to_owned();
        let fail = |e| LocalError::Connect(addr_text.clone(), e);
        // Waits while all the descriptors the budget allows are in use by
        // other requests' connections (the lookup may read /etc/hosts).
        let permit = self.fds.acquire().await;
        // Resolved per new connection, so `localhost` reaches an app bound
        // to ::1 or 127.0.0.1 alike; pooled connections skip this.
        let addrs = tokio::net::lookup_host((t.host(), t.port()))
            .await
            .map_err(|e| LocalError::Resolve(t.host().to_owned(), e))?;
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, fds::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    let io = Counted::new(tcp, permit);
                    if !t.is_tls() {
                        return handshake(io).await;
                    }
                    let tls = match tokio::time::timeout(CONNECT_TIMEOUT, t.tls(io)).await {
                        Ok(r) => r,
                        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
                    };
                    return handshake(tls.map_err(|e| LocalError::Tls(addr_text.clone(), e))?)
                        .await;
                }
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                }
            }
        }
        Err(fail(last))
    }

    /// Sends `req`, retrying once on a fresh connection when a pooled one
    /// turned out closed before the request was written.
    async fn send(
        &self,
        mut req: Request<LocalBody>,
    ) -> Result<
        (
            http::Response<hyper::body::Incoming>,
            SendRequest<LocalBody>,
        ),
        LocalError,
    > {
        loop {
            let (mut conn, reused) = self.checkout().await?;
            match conn.try_send_request(req).await {
                Ok(res) => return Ok((res, conn)),
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => req = r,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    pub fn target(&self) -> &LocalTarget {
        &self.target
    }

    /// Runs one stream to its end. Never fails: problems become a RESET
    /// the server turns into a 502 for the visitor.
    pub async fn forward(self: Arc<Self>, parts: StreamParts, head: RequestHead, end_stream: bool) {
        let started = Instant::now();
        let StreamParts {
            body,
            sender,
            mut reset,
            guard,
            ..
        } = parts;
        let _guard = guard;
        let RequestHead {
            id,
            method,
            target: path,
            headers,
        } = head;
        let fault = self.options.fault.as_ref().and_then(FaultPlan::pick);
        let mut notes = Vec::new();
        let status = match fault {
            // Boxed: rare, and inline they would enlarge every stream task.
            Some(f @ (Fault::Status(_) | Fault::Reset)) => {
                Box::pin(play_fault(f, &sender, body)).await
            }
            Some(Fault::Delay(_)) | None => {
                if let Some(Fault::Delay(d)) = fault {
                    tokio::select! {
                        () = Box::pin(tokio::time::sleep(d)) => {}
                        // The visitor left or the server gave up meanwhile.
                        Ok(_) = &mut reset => return,
                    }
                }
                let exchange = Exchange {
                    method: method.clone(),
                    path: &path,
                    headers,
                    body,
                    end_stream,
                    sender: &sender,
                    fault,
                };
                match self.exchange(exchange, reset).await {
                    Ok(Some(status)) => Some(status),
                    // Reset by the server: nobody waits for an answer.
                    Ok(None) => return,
                    Err(Failed(code, message)) => {
                        debug!(stream = sender.id(), ?code, %message, "local request failed");
                        notes.push(message.clone());
                        sender.reset(code, message).await;
                        Some(StatusCode::BAD_GATEWAY)
                    }
                }
            }
        };
        let duration = started.elapsed();
        if let Some(f) = fault {
            notes.push(format!("fault: {f}"));
        }
        if let Some(slow) = self
            .options
            .deadline
            .as_ref()
            .and_then(|d| d.note(duration))
        {
            notes.push(slow);
        }
        let note = notes.join("  ");
        self.output.request(&RequestLine {
            method: method.as_str(),
            path: &path,
            status: status.map(|s| s.as_u16()),
            duration,
            id: &id,
            note: (!note.is_empty()).then_some(note.as_str()),
        });
    }

    /// Asks the local app and streams its answer back. `Ok(None)`: the
    /// server reset the stream before the app answered. A failure before
    /// the response head went out is returned for [`Self::forward`] to
    /// report, once; after it, the body's own reset tells the server.
    async fn exchange(
        &self,
        ex: Exchange<'_>,
        mut reset: ResetWait,
    ) -> Result<Option<StatusCode>, Failed> {
        let upgrade = is_upgrade(&ex.headers);
        let mut req_headers = ex.headers;
        let target = &self.target;
        target
            .host_header
            .apply(&mut req_headers, target.authority());
        let mut request_body = Some(ex.body);
        let body = match request_body.take() {
            Some(b) if !(ex.end_stream || upgrade) => Either::Left(b),
            other => {
                request_body = other;
                Either::Right(Empty::new())
            }
        };
        let req = local_request(ex.method, ex.path, req_headers, body)
            .map_err(|msg| Failed(ResetCode::LocalError, msg))?;
        let sent = tokio::select! {
            // Both cancel safe; a reset (visitor gone, server timeout)
            // abandons the local request instead of waiting on a slow app.
            r = self.send(req) => r,
            Ok(_) = &mut reset => return Ok(None),
        };
        let (mut res, conn) = sent.map_err(|e| {
            let code = match e {
                LocalError::Resolve(..) | LocalError::Connect(..) | LocalError::Tls(..) => {
                    ResetCode::LocalUnreachable
                }
                LocalError::Http(_) => ResetCode::LocalError,
            };
            Failed(code, e.to_string())
        })?;
        let status = res.status();
        let switching = upgrade && status == StatusCode::SWITCHING_PROTOCOLS;
        let on_upgrade = switching.then(|| hyper::upgrade::on(&mut res));
        let (res_parts, res_body) = res.into_parts();
        let mut headers = res_parts.headers;
        strip_hop_by_hop(&mut headers, switching);
        mark_fault(&mut headers, ex.fault);
        // What of the body is already here goes into the session queue
        // right behind the head: one socket write for a small response.
        let res_body = match on_upgrade {
            Some(_) => None,
            None => Some(
                ReadyBody::read(res_body)
                    .await
                    .map_err(|e| Failed(ResetCode::LocalError, e.to_string()))?,
            ),
        };
        let (payload, rest) = match res_body {
            None => (Payload::Streamed, None),
            Some(body) => body.split(),
        };
        let sender = ex.sender;
        let head = Frame::ResponseHead {
            stream: sender.id(),
            head: ResponseHead { status, headers },
            body: payload,
        };
        // A head too large for a frame: the visitor gets a 502 now rather
        // than a 504 later. (Session gone: nobody to tell.)
        sender
            .send(&head)
            .await
            .map_err(|e| Failed(ResetCode::LocalError, e.to_string()))?;
        let result = match (on_upgrade, rest) {
            // Boxed for the same reason as connecting: rare and large.
            (Some(on_upgrade), _) => {
                Box::pin(async {
                    match (on_upgrade.await, request_body.take()) {
                        (Ok(upgraded), Some(inbound)) => {
                            let (r, w) = tokio::io::split(TokioIo::new(upgraded));
                            // try_join: a failed direction drops the other
                            // with the connection.
                            tokio::try_join!(sender.io(r), recv_io(inbound, w)).map(|_| ())
                        }
                        _ => Err(StreamError::Reset(ResetCode::LocalError)),
                    }
                })
                .await
            }
            (None, Some(body)) => {
                // Boxed: only responses too large for the head frame stream
                // here, and inline this future would enlarge every task.
                let sent = Box::pin(sender.body(body, ResetCode::LocalError)).await;
                if sent.is_ok() {
                    self.checkin(conn);
                }
                sent
            }
            (None, None) => {
                self.checkin(conn);
                Ok(())
            }
        };
        if let Err(e) = result {
            debug!(stream = sender.id(), error = %e, "response stream ended early");
        }
        Ok(Some(status))
    }
}

/// One request as the session handed it over.
struct Exchange<'a> {
    method: http::Method,
    path: &'a str,
    headers: http::HeaderMap,
    body: InboundBody,
    end_stream: bool,
    sender: &'a StreamSender,
    /// A `delay` fault played before asking the app: its answer says so.
    fault: Option<Fault>,
}

/// Answers a stream as `--fault status=CODE` or `reset` asks, without the
/// local app; the status the visitor gets (`None`: no answer at all).
async fn play_fault(fault: Fault, sender: &StreamSender, body: InboundBody) -> Option<StatusCode> {
    match fault {
        Fault::Status(code) => {
            let (status, headers, answer) = fault_answer(fault, code);
            let head = Frame::ResponseHead {
                stream: sender.id(),
                head: ResponseHead { status, headers },
                body: Payload::Inline(answer),
            };
            // Session gone: nobody to answer.
            let _ = sender.send(&head).await;
            // What is left of the visitor's body is refused only now: a
            // reset queued before the head would reach the server first
            // and become a 502.
            drop(body);
            Some(status)
        }
        _ => {
            // Reset first, for the same reason: the server must see this
            // code, not the cancel a dropped body sends.
            sender
                .reset(ResetCode::Fault, "relay connect --fault reset".into())
                .await;
            drop(body);
            None
        }
    }
}

/// HTTP/1.1 to the local app over `io` (TCP, or TLS over it); the
/// connection's task runs until the app or the pool closes it.
async fn handshake<IO>(io: IO) -> Result<SendRequest<LocalBody>, LocalError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "local connection ended with an error");
        }
    });
    Ok(sender)
}

/// A stream that failed before its response head went out: the reset code
/// (which decides the visitor's 502 and the capture's outcome) and why.
struct Failed(ResetCode, String);

/// The request as the local app gets it. The target stays in origin form
/// (`/path?query`): this is a plain HTTP/1.1 connection, not a proxy one,
/// so an absolute URI would override the forwarded Host.
fn local_request(
    method: http::Method,
    target: &str,
    headers: http::HeaderMap,
    body: LocalBody,
) -> Result<Request<LocalBody>, String> {
    let uri: Uri = if target.starts_with('/') || target == "*" {
        target.parse()
    } else {
        format!("/{target}").parse()
    }
    .map_err(|_| format!("cannot forward request target {target:?}"))?;
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_502_reason_names_the_cause_and_the_address() {
        use std::io::{Error, ErrorKind};
        let addr = "localhost:4000";
        assert_eq!(
            LocalError::Connect(addr.into(), ErrorKind::ConnectionRefused.into()).to_string(),
            "connection refused on localhost:4000"
        );
        assert_eq!(
            LocalError::Connect(addr.into(), ErrorKind::TimedOut.into()).to_string(),
            "timed out connecting to localhost:4000"
        );
        let untrusted = Error::new(
            ErrorKind::InvalidData,
            tokio_rustls::rustls::Error::InvalidCertificate(
                tokio_rustls::rustls::CertificateError::UnknownIssuer,
            ),
        );
        assert_eq!(
            LocalError::Tls("localhost:8443".into(), untrusted).to_string(),
            "certificate not trusted on localhost:8443 (--insecure-local?)"
        );
        let other = Error::new(ErrorKind::InvalidData, "peer sent no certificates");
        assert!(LocalError::Tls(addr.into(), other)
            .to_string()
            .starts_with("TLS handshake failed on localhost:4000"));
        let lookup = Error::other("failed to lookup address information");
        assert!(LocalError::Resolve("app.internal".into(), lookup)
            .to_string()
            .starts_with("cannot resolve app.internal"));
    }

    #[test]
    fn local_requests_use_origin_form() {
        let req = |t: &str| {
            local_request(
                http::Method::GET,
                t,
                http::HeaderMap::new(),
                Either::Right(Empty::new()),
            )
            .map(|r| r.uri().to_string())
        };
        assert_eq!(req("/a/b?c=d"), Ok("/a/b?c=d".into()));
        assert_eq!(req("x"), Ok("/x".into()));
        assert_eq!(req("*"), Ok("*".into()));
        assert!(req("/bad path").is_err());
    }
}
