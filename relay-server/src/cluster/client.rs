//! The pooled HTTP/1.1 client a node forwards visitors' requests with.
//! Every request carries the node secret and this node's id (the loop
//! stop); the body streams as the visitor sends it.

use std::time::Duration;

use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, Error};
use hyper_util::rt::TokioExecutor;

use super::{ClusterConfig, FORWARDED_BY, NODE_SECRET, NODE_TUNNEL};
use crate::response::{ProxyBody, REQUEST_ID};

/// How long connecting to another node may take before it counts as
/// unreachable (and the visitor is answered as offline). Nodes share a
/// network: a healthy one accepts in milliseconds.
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an idle pooled connection to another node is kept.
pub const NODE_POOL_IDLE: Duration = Duration::from_secs(60);

/// Idle connections kept per node.
pub const NODE_POOL_MAX_IDLE: usize = 64;

/// Client to the other nodes' `--node-listen` listeners.
pub struct NodeClient {
    client: Client<HttpConnector, ProxyBody>,
    secret: HeaderValue,
    node_id: HeaderValue,
}

impl NodeClient {
    pub fn new(config: &ClusterConfig) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(NODE_CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(NODE_POOL_IDLE)
            .pool_max_idle_per_host(NODE_POOL_MAX_IDLE)
            .build(http);
        Self {
            client,
            // Both validated by `ClusterConfig::from_args`.
            secret: HeaderValue::from_str(&config.secret)
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            node_id: HeaderValue::from_str(&config.node_id)
                .unwrap_or_else(|_| HeaderValue::from_static("node")),
        }
    }

    /// Sends `req` (its URI: the path and query the local app sees) for
    /// tunnel `name` to the node at `node_url`.
    pub async fn send(
        &self,
        node_url: &str,
        name: &str,
        id: &str,
        target: &str,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let uri: Uri = format!("{node_url}{target}")
            .parse()
            .map_err(|_| SendError::BadUrl)?;
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_11;
        let h = req.headers_mut();
        h.insert(NODE_SECRET, self.secret.clone());
        h.insert(FORWARDED_BY, self.node_id.clone());
        h.insert(
            NODE_TUNNEL,
            HeaderValue::from_str(name).map_err(|_| SendError::BadUrl)?,
        );
        h.insert(
            REQUEST_ID,
            HeaderValue::from_str(id).map_err(|_| SendError::BadUrl)?,
        );
        self.client.request(req).await.map_err(SendError::Http)
    }
}

/// Why a forward failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the node URL and target do not make a URL")]
    BadUrl,
    #[error("{0}")]
    Http(#[from] Error),
}

impl SendError {
    /// Whether the holder was never reached (nothing of the request sent).
    pub fn unreachable(&self) -> bool {
        match self {
            Self::BadUrl => true,
            Self::Http(e) => e.is_connect(),
        }
    }
}
