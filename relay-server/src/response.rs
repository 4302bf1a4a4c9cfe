//! What every module answers with: the response body type, the request id
//! (header and generator) and JSON bodies. Errors themselves are in
//! `error.rs`; this file only knows how a response is built.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// Errors inside response bodies: hyper only needs them to abort the
/// connection.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body type of every response the server writes.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Header naming the request on every forwarded response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-relay-request-id");

/// A new request id: time-ordered (ULID), lower-case to match the rest of
/// the URL-ish things a user copies.
pub fn new_request_id() -> String {
    ulid::Ulid::generate().to_string().to_ascii_lowercase()
}

pub fn json_bytes(body: &serde_json::Value) -> Bytes {
    let mut bytes = body.to_string().into_bytes();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// A JSON response with an optional request id header.
pub fn json_response(
    status: StatusCode,
    body: &serde_json::Value,
    request_id: Option<&str>,
) -> Response<ProxyBody> {
    bytes_response(status, json_bytes(body), request_id)
}

/// A response with a JSON body already serialised.
pub fn bytes_response(
    status: StatusCode,
    bytes: Bytes,
    request_id: Option<&str>,
) -> Response<ProxyBody> {
    let mut res = Response::new(full(bytes));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(v) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    res
}

/// A complete in-memory body.
pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Marks a response that must not be sent: the visitor's connection is
/// dropped instead (HTTP/1.1: closed without an answer; HTTP/2: the stream
/// is reset), as a crashed app would leave it. Only `relay connect --fault
/// reset` asks for this.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("connection dropped: relay connect --fault reset")]
pub struct DropConnection;

/// A response carrying [`DropConnection`]; `listen.rs` turns it into a
/// service error, which is how hyper drops a connection.
pub fn drop_connection() -> Response<ProxyBody> {
    let mut res = Response::new(full(Bytes::new()));
    res.extensions_mut().insert(DropConnection);
    res
}
