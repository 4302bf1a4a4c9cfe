//! SPEC's public error table as one enum. Visitors get a JSON body with a
//! code they can search for and the request id; details go to the log.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::response::{bytes_response, json_bytes, ProxyBody};

/// A failure a visitor sees. Who caused it decides the status class:
/// the visitor (4xx), the tunnel client or local app (502/503/504).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicError {
    /// No tunnel has ever had this name.
    TunnelNotFound,
    /// The name is known but no client is connected.
    TunnelOffline,
    /// The client could not reach the local app.
    LocalUnreachable,
    /// The local app broke the exchange.
    LocalError,
    /// The local app sent no response head in time.
    LocalTimeout,
    /// The client's session ended while the request was in flight.
    ClientDisconnected,
    /// Too many requests in flight on this tunnel.
    TunnelBusy,
    /// The request body is over `--max-body`.
    BodyTooLarge,
    /// The request could not be forwarded as sent.
    BadRequest(&'static str),
    /// No such endpoint on the server itself.
    NotFound,
    /// `CONNECT`: relay is a reverse proxy, not a forward proxy, so no
    /// route takes it.
    MethodNotAllowed,
}

/// What [`PublicError::MethodNotAllowed`] lists in `Allow`: a tunnel
/// forwards any method but `CONNECT`, these are the common ones.
const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

impl PublicError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TunnelNotFound | Self::NotFound => StatusCode::NOT_FOUND,
            Self::TunnelOffline | Self::TunnelBusy => StatusCode::SERVICE_UNAVAILABLE,
            Self::LocalUnreachable | Self::LocalError | Self::ClientDisconnected => {
                StatusCode::BAD_GATEWAY
            }
            Self::LocalTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::TunnelNotFound => "tunnel_not_found",
            Self::TunnelOffline => "tunnel_offline",
            Self::LocalUnreachable => "local_unreachable",
            // SPEC gives one code to both an app that refuses and one that
            // fails; the message and the capture's outcome tell them apart.
            Self::LocalError => "local_unreachable",
            Self::LocalTimeout => "local_timeout",
            Self::ClientDisconnected => "client_disconnected",
            Self::TunnelBusy => "tunnel_busy",
            Self::BodyTooLarge => "body_too_large",
            Self::BadRequest(_) => "bad_request",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Self::TunnelNotFound => "no tunnel has this name",
            Self::TunnelOffline => {
                "the tunnel's client is not connected; the request was not delivered"
            }
            Self::LocalUnreachable => "the tunnel's client could not reach its local app",
            Self::LocalError => "the local app failed while answering",
            Self::LocalTimeout => "the local app did not answer in time",
            Self::ClientDisconnected => {
                "the tunnel's client disconnected while handling the request"
            }
            Self::TunnelBusy => "too many requests in flight on this tunnel; retry shortly",
            Self::BodyTooLarge => "the request body is larger than this server accepts",
            Self::BadRequest(m) => m,
            Self::NotFound => "no such endpoint",
            Self::MethodNotAllowed => {
                "CONNECT is not supported: relay forwards requests to tunnels, it is not a forward proxy"
            }
        }
    }

    /// The JSON response, carrying the request id in body and header (and
    /// `Allow` for a 405).
    pub fn response(&self, request_id: &str) -> Response<ProxyBody> {
        let mut res = bytes_response(self.status(), self.body(request_id), Some(request_id));
        if *self == Self::MethodNotAllowed {
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
        }
        res
    }

    /// The JSON body of [`PublicError::response`], for callers that also
    /// record it.
    pub fn body(&self, request_id: &str) -> Bytes {
        json_bytes(&serde_json::json!({
            "error": self.code(),
            "message": self.message(),
            "request_id": request_id,
        }))
    }
}
