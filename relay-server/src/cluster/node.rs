//! The `--node-listen` listener: requests other nodes forwarded to this
//! one because it holds their tunnel's lease. Only requests carrying the
//! node secret are served; each is served from a local session or
//! answered here (offline, 502, ...), never forwarded again. The visitor
//! node made the request id, ran the edge rules and captures the
//! exchange; this node does neither again.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use relay_shared::TunnelName;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{FORWARDED_BY, NODE_OUTCOME, NODE_SECRET, NODE_TUNNEL};
use crate::listen::Visitor;
use crate::response::{json_response, new_request_id, ProxyBody, REQUEST_ID};
use crate::State;

/// How long a node connection may sit before (and while) sending a
/// request head: nodes keep pooled connections idle up to
/// `NODE_POOL_IDLE`, so this is longer.
const NODE_HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Longest request id accepted from another node (ours are 26 characters).
const MAX_ID_LEN: usize = 64;

/// Serves the node listener until `stop` fires.
pub async fn serve(state: Arc<State>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "node listener: accept failed");
                    // Out of descriptors and the like: let some go first.
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => continue,
                    }
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let visitor = Visitor::new(peer, "http");
        let service = service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            let visitor = visitor.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(&state, req, &visitor).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(NODE_HEAD_TIMEOUT)
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "node connection ended with an error");
            }
        });
    }
}

/// One forwarded request.
async fn handle(
    state: &Arc<State>,
    mut req: Request<Incoming>,
    peer: &Visitor,
) -> Response<ProxyBody> {
    let Some(cluster) = state.cluster.as_ref() else {
        return refuse(StatusCode::NOT_FOUND, "not a cluster node");
    };
    let h = req.headers();
    let secret_ok = h
        .get(NODE_SECRET)
        .is_some_and(|v| cluster.secret_matches(v.as_bytes()));
    if !secret_ok || !h.contains_key(FORWARDED_BY) {
        warn!(peer = %peer.peer, "node listener: request without the node secret refused");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "this listener serves relay nodes only",
        );
    }
    let name = h
        .get(NODE_TUNNEL)
        .and_then(|v| v.to_str().ok())
        .and_then(|n| TunnelName::parse(n).ok());
    let Some(name) = name else {
        return refuse(StatusCode::BAD_REQUEST, "no valid tunnel name");
    };
    let id = h
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= MAX_ID_LEN)
        .map_or_else(new_request_id, str::to_owned);
    let h = req.headers_mut();
    for internal in [
        NODE_SECRET,
        FORWARDED_BY,
        NODE_TUNNEL,
        REQUEST_ID,
        NODE_OUTCOME,
    ] {
        h.remove(internal);
    }
    crate::proxy::serve_relayed(state, req, peer, name.as_str(), &id).await
}

fn refuse(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json_response(
        status,
        &serde_json::json!({"error": "node_refused", "message": message}),
        None,
    )
}
