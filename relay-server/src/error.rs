//! Every public error as one enum: SPEC's table for visitors, and the
//! capture API's own. Each records who caused it ([`Blame`]), which decides
//! its status class, the capture's outcome and the log level here, in one
//! place. Visitors and API callers get a JSON body with a code they can
//! search for and the request id; details go to the log.

use std::borrow::Cow;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use relay_shared::api::Outcome;

use crate::response::{bytes_response, json_bytes, ProxyBody};

/// `Retry-After` of an offline tunnel's 503, in seconds: long enough that a
/// caller's retries do not hammer a server whose client is away, short
/// enough for a laptop that is only changing networks.
pub const OFFLINE_RETRY_AFTER: u64 = 30;
/// `Retry-After` of a busy tunnel's 503, in seconds: streams free up fast.
pub const BUSY_RETRY_AFTER: u64 = 1;

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The visitor or API caller sent something we cannot serve: 4xx.
    Visitor,
    /// The tunnel's client is away, busy or gone: 502/503.
    Client,
    /// The local app refused, failed or was too slow: 502/504.
    LocalApp,
    /// This server failed: 500, and someone must look at the log.
    Server,
}

/// A failure a visitor or API caller sees.
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
    /// The request (or API call) could not be served as sent.
    BadRequest(Cow<'static, str>),
    /// No such endpoint on the server itself.
    NotFound,
    /// `CONNECT`: relay is a reverse proxy, not a forward proxy, so no
    /// route takes it.
    MethodNotAllowed,
    /// API: no token, or one that is unknown or revoked.
    Unauthorized(&'static str),
    /// API: the caller owns no tunnel of that name (a name owned by
    /// someone else looks the same, so the API does not tell who has it).
    NotYourTunnel(String),
    /// API: no capture with that id (any more).
    RequestNotFound(String),
    /// API: the server runs with `--capture off`.
    CaptureOff,
    /// API: another caller holds a live claim on the tunnel's missed
    /// requests.
    DeliveryInProgress,
    /// API: a replay was recorded under a claim another caller has taken
    /// over since (its lease ran out); the message names the new entry.
    ClaimLost(String),
    /// The tunnel's edge rules refused the request (401 or 403).
    EdgeRejected(crate::edge::Rejection),
    /// The server could not do its part (its store failed); logged where
    /// it happened.
    Internal(&'static str),
}

/// What [`PublicError::MethodNotAllowed`] lists in `Allow`: a tunnel
/// forwards any method but `CONNECT`, these are the common ones.
const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

impl PublicError {
    /// A bad request with a message built at run time.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::BadRequest(message.into())
    }

    pub fn blame(&self) -> Blame {
        match self {
            Self::TunnelNotFound
            | Self::BodyTooLarge
            | Self::BadRequest(_)
            | Self::NotFound
            | Self::MethodNotAllowed
            | Self::Unauthorized(_)
            | Self::NotYourTunnel(_)
            | Self::RequestNotFound(_)
            | Self::CaptureOff
            | Self::DeliveryInProgress
            | Self::ClaimLost(_)
            | Self::EdgeRejected(_) => Blame::Visitor,
            Self::TunnelOffline | Self::ClientDisconnected | Self::TunnelBusy => Blame::Client,
            Self::LocalUnreachable | Self::LocalError | Self::LocalTimeout => Blame::LocalApp,
            Self::Internal(_) => Blame::Server,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::TunnelNotFound
            | Self::NotFound
            | Self::NotYourTunnel(_)
            | Self::RequestNotFound(_) => StatusCode::NOT_FOUND,
            Self::TunnelOffline | Self::TunnelBusy => StatusCode::SERVICE_UNAVAILABLE,
            Self::LocalUnreachable | Self::LocalError | Self::ClientDisconnected => {
                StatusCode::BAD_GATEWAY
            }
            Self::LocalTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::CaptureOff | Self::DeliveryInProgress | Self::ClaimLost(_) => {
                StatusCode::CONFLICT
            }
            Self::EdgeRejected(r) => r.status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::TunnelNotFound | Self::NotYourTunnel(_) => "tunnel_not_found",
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
            Self::Unauthorized(_) => "unauthorized",
            Self::RequestNotFound(_) => "request_not_found",
            Self::CaptureOff => "capture_off",
            Self::DeliveryInProgress => "delivery_in_progress",
            Self::ClaimLost(_) => "claim_lost",
            Self::EdgeRejected(_) => "edge_rejected",
            Self::Internal(_) => "internal",
        }
    }

    pub fn message(&self) -> Cow<'_, str> {
        Cow::Borrowed(match self {
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
            Self::Unauthorized(m) | Self::Internal(m) => m,
            Self::NotYourTunnel(name) => {
                return Cow::Owned(format!("you have no tunnel named {name:?} on this server"))
            }
            Self::RequestNotFound(m) | Self::ClaimLost(m) => m,
            Self::EdgeRejected(r) => &r.reason,
            Self::DeliveryInProgress => {
                "another client is delivering this tunnel's missed requests; try again when it is done"
            }
            Self::CaptureOff => "this server runs with --capture off",
        })
    }

    /// How a capture of an exchange that ended with this error is recorded.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::TunnelOffline => Outcome::Offline,
            Self::LocalUnreachable => Outcome::LocalUnreachable,
            Self::LocalError => Outcome::LocalError,
            Self::LocalTimeout => Outcome::Timeout,
            Self::ClientDisconnected => Outcome::ClientDisconnected,
            Self::TunnelBusy => Outcome::TunnelBusy,
            Self::BodyTooLarge => Outcome::BodyTooLarge,
            Self::BadRequest(_) => Outcome::VisitorGone,
            Self::EdgeRejected(_) => Outcome::Rejected,
            // Answered before a tunnel is involved, never captured.
            _ => Outcome::NotFound,
        }
    }

    /// Logs the failure once, at the level its [`Blame`] calls for: per
    /// request (debug) when a visitor, a client or a local app caused it,
    /// error when this server did.
    pub fn log(&self, request_id: &str) {
        match self.blame() {
            Blame::Server => {
                tracing::error!(id = %request_id, code = self.code(), message = %self.message(), "request failed")
            }
            _ => {
                tracing::debug!(id = %request_id, code = self.code(), blame = ?self.blame(), "request failed")
            }
        }
    }

    /// The JSON response, carrying the request id in body and header (and
    /// `Allow` for a 405, `Retry-After` where waiting helps).
    pub fn response(&self, request_id: &str) -> Response<ProxyBody> {
        let mut res = bytes_response(self.status(), self.body(request_id), Some(request_id));
        if *self == Self::MethodNotAllowed {
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
        }
        if let Some(secs) = self.retry_after() {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Self::EdgeRejected(r) = self {
            crate::edge::add_challenge(res.headers_mut(), r);
        }
        res
    }

    /// Seconds a caller should wait before trying again, where waiting
    /// helps.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::TunnelOffline => Some(OFFLINE_RETRY_AFTER),
            Self::TunnelBusy => Some(BUSY_RETRY_AFTER),
            _ => None,
        }
    }

    /// Answered by the server without the local app: the request is
    /// committed to the store before this answer goes out (SPEC "Nothing
    /// answered is lost").
    pub fn kept_before_answer(&self) -> bool {
        matches!(
            self,
            Self::TunnelOffline | Self::TunnelBusy | Self::BodyTooLarge | Self::EdgeRejected(_)
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blame_decides_the_status_class() {
        let all = [
            PublicError::TunnelNotFound,
            PublicError::TunnelOffline,
            PublicError::LocalUnreachable,
            PublicError::LocalError,
            PublicError::LocalTimeout,
            PublicError::ClientDisconnected,
            PublicError::TunnelBusy,
            PublicError::BodyTooLarge,
            PublicError::bad_request("x"),
            PublicError::NotFound,
            PublicError::MethodNotAllowed,
            PublicError::Unauthorized("x"),
            PublicError::NotYourTunnel("n".into()),
            PublicError::RequestNotFound("x".into()),
            PublicError::CaptureOff,
            PublicError::Internal("x"),
        ];
        for e in all {
            let s = e.status().as_u16();
            match e.blame() {
                Blame::Visitor => assert!((400..500).contains(&s), "{e:?}"),
                Blame::Client => assert!(s == 502 || s == 503, "{e:?}"),
                Blame::LocalApp => assert!(s == 502 || s == 504, "{e:?}"),
                Blame::Server => assert_eq!(s, 500, "{e:?}"),
            }
        }
    }
}
