//! Cluster mode, the holder's side: a request another node forwarded
//! (after its own edge rules, header rules and capture), served from this
//! node's session as it came, or answered here with [`NODE_OUTCOME`] so
//! the visitor's node records how it ended.

use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use relay_shared::api::Outcome;

use super::{fail, Exchange};
use crate::capture::Tap;
use crate::cluster::NODE_OUTCOME;
use crate::error::PublicError;
use crate::listen::Visitor;
use crate::registry::Lookup;
use crate::response::ProxyBody;
use crate::State;

/// Serves a forwarded request without a capture (the visitor's node
/// makes it).
pub async fn serve_relayed(
    state: &Arc<State>,
    req: Request<Incoming>,
    visitor: &Visitor,
    name: &str,
    id: &str,
) -> Response<ProxyBody> {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let tap = Tap::new(None, id, name, req.method(), &target);
    let Lookup::Live(handle, _) = state.registry.lookup(name) else {
        return with_outcome(
            fail(&tap, &PublicError::TunnelOffline, id).await,
            Outcome::Offline,
        );
    };
    let exchange = Exchange {
        state,
        id,
        tap: &tap,
        relayed: true,
    };
    match Box::pin(exchange.run(&handle, req, visitor, None, target)).await {
        Ok(res) => res,
        Err(err) => with_outcome(fail(&tap, &err, id).await, err.outcome()),
    }
}

fn with_outcome(mut res: Response<ProxyBody>, outcome: Outcome) -> Response<ProxyBody> {
    res.headers_mut()
        .insert(NODE_OUTCOME, HeaderValue::from_static(outcome.as_str()));
    res
}
