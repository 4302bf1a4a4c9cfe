//! The server's own endpoints on the bare domain: `GET /_relay/health` for
//! load balancers and scripts. The `/_relay/v1/...` JSON API grows here.

use http::Response;
use http::StatusCode;

use crate::error::json_response;
use crate::proxy::ProxyBody;
use crate::State;

pub fn health(state: &State) -> Response<ProxyBody> {
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "tunnels": state.registry.live_count(),
        }),
        None,
    )
}
