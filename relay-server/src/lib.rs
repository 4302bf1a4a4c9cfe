//! relay-server as a library: [`Server::run`] serves a bound listener until a
//! cancellation token fires. `main.rs` parses flags and binds; tests call
//! `run` directly.
//!
//! Module map (the life of a request, in order):
//! - [`listen`]: accept, TLS, HTTP/1.1 + HTTP/2 per connection, graceful
//!   shutdown; [`tls`]: which certificate a handshake gets, reloaded on
//!   SIGHUP and file changes; [`acme`]: certificates ordered by the server
//!   (`--acme`); [`conn`]: the deadlines every public connection lives under
//!   (first bytes, idle, write); [`listen::Visitor`]: who a request came from
//! - [`router`]: Host / `/t/NAME` → tunnel, client endpoint, health
//! - [`proxy`]: one public exchange through a tunnel (lookup, header rules,
//!   deadlines), its tapped bodies and upgrades
//! - [`control`]: `/_relay/v1/connect` upgrade and handshake
//! - [`edge`]: the tunnel's edge rules, checked before anything else;
//!   [`edge::jwt`]: `--verify-jwt` tokens and the issuers' cached keys
//! - [`registry`]: name → live session; known names; [`revocation`]:
//!   ends the sessions of revoked tokens
//! - [`tunnel`]: the session task owning one client WebSocket (the frame
//!   loop itself is `relay_shared::mux::session`)
//! - [`capture`]: the tap that records each exchange, and its writer thread
//!   (batched for delivered exchanges, committed before the answer for
//!   requests answered without the local app)
//! - [`store`]: SQLite: tokens, names, captured requests, the delivery of
//!   missed requests
//! - [`api`]: health and the capture API (`/_relay/v1/...`), missed
//!   requests and their claims; [`metrics`]: Prometheus series and the
//!   `--metrics-listen` listener
//! - [`cluster`]: several nodes sharing one store: leases on names, the
//!   node listener, forwarding to the node holding a session
//! - [`forwarded`]: `--trusted-proxy`: whose `X-Forwarded-*` to believe,
//!   and the visitor's address behind them
//! - [`response`]: the response body type, request ids and JSON bodies;
//!   [`error`]: the public JSON errors; [`config`]: flags

pub mod acme;
pub mod api;
pub mod capture;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod control;
pub mod edge;
pub mod error;
pub mod forwarded;
pub mod listen;
pub mod metrics;
pub mod proxy;
pub mod registry;
pub mod response;
pub mod revocation;
pub mod router;
pub mod store;
pub mod tls;
pub mod tunnel;

use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use config::Config;
use error::PublicError;
use listen::Visitor;
use registry::Registry;
use response::{new_request_id, ProxyBody};
use router::Route;
use store::Store;

/// Everything request handlers share.
pub struct State {
    pub config: Config,
    pub registry: Registry,
    pub store: Store,
    pub capture: Arc<capture::Capture>,
    /// What checking edge rules shares across tunnels: the password-check
    /// limit and the JWKS cache.
    pub edge_checks: edge::Checks,
    /// Prometheus counters (`--metrics-listen`); counted whether or not
    /// anyone scrapes them.
    pub metrics: metrics::Metrics,
    /// Tracks session tasks so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// Cancelled once public connections have drained: sessions close.
    pub sessions_closed: CancellationToken,
    /// With `--acme`: asks for a claimed name's certificate.
    pub acme: Option<acme::AcmeHandle>,
    /// With `--node-listen`: this server is one node of several.
    pub cluster: Option<cluster::Cluster>,
    stopping: CancellationToken,
    scheme: &'static str,
    port: u16,
}

impl State {
    pub fn shutting_down(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Fires when shutdown starts; long-lived responses (event streams) end
    /// on it so they do not hold the graceful shutdown up.
    pub fn shutting_down_token(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// Public URLs of a tunnel: host-routed, then path-routed. With
    /// `--public-url` they take its scheme, host and port (a reverse proxy's),
    /// else the listener's with `--domain`. The port is left out when it is
    /// the scheme's default.
    pub fn public_urls(&self, name: &str) -> Vec<String> {
        let base = self.public_base();
        vec![
            format!("{}/", base.with_host(&format!("{name}.{}", base.host))),
            format!("{}/t/{name}/", base.origin()),
        ]
    }

    /// Where visitors reach this server: `--public-url`, or the listener's
    /// scheme and port on `--domain`.
    fn public_base(&self) -> config::PublicUrl {
        if let Some(url) = &self.config.public_url {
            return url.clone();
        }
        let default_port = matches!((self.scheme, self.port), ("http", 80) | ("https", 443));
        config::PublicUrl {
            scheme: self.scheme,
            host: self.config.domain.clone(),
            port: (!default_port).then_some(self.port),
        }
    }
}

/// A server ready to serve: store opened and migrated, TLS loaded. Split
/// from [`Server::run`] so `main` prints its "listening" line only once
/// the server can answer (and `token create` can share the database).
pub struct Server {
    state: Arc<State>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// `--metrics-listen`, bound by the caller.
    metrics: Option<TcpListener>,
    /// `--node-listen`, bound by the caller.
    node: Option<TcpListener>,
    reloader: Option<tls::Reloader>,
}

impl Server {
    pub fn new(
        config: Config,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let store = Store::open_at(&config.store)?;
        let known = store.known_names()?;
        let capture = capture::Capture::start(config.capture, &store)?;
        let (tls, reloader) = match &config.tls {
            Some(paths) => {
                let (acceptor, reloader) = tls::file_acceptor(paths)?;
                (Some(acceptor), Some(reloader))
            }
            None => (None, None),
        };
        let (tls, acme) = match &config.acme {
            Some(acme_config) => {
                let resolver = Arc::new(tls::Resolver::default());
                let acme = acme::start(
                    acme_config.clone(),
                    &config.domain,
                    &config.data_dir,
                    resolver.clone(),
                    stop.clone(),
                )?;
                let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver, true)?);
                (Some(acceptor), Some(acme))
            }
            None => (tls, None),
        };
        let port = listener.local_addr()?.port();
        let state = Arc::new(State {
            registry: Registry::with_known(known),
            store,
            capture,
            edge_checks: edge::Checks::default(),
            metrics: metrics::Metrics::new(),
            sessions: TaskTracker::new(),
            sessions_closed: CancellationToken::new(),
            acme,
            cluster: config.cluster.clone().map(cluster::Cluster::new),
            stopping: stop,
            scheme: if tls.is_some() { "https" } else { "http" },
            port,
            config,
        });
        Ok(Self {
            state,
            listener,
            tls,
            metrics: None,
            node: None,
            reloader,
        })
    }

    /// Also serves Prometheus metrics at `/metrics` on `listener`.
    pub fn with_metrics_listener(mut self, listener: TcpListener) -> Self {
        self.metrics = Some(listener);
        self
    }

    /// Also serves requests forwarded by other nodes on `listener`
    /// (`--node-listen`).
    pub fn with_node_listener(mut self, listener: TcpListener) -> Self {
        self.node = Some(listener);
        self
    }

    /// This node's id in leases, in cluster mode.
    pub fn node_id(&self) -> Option<&str> {
        self.state
            .cluster
            .as_ref()
            .map(|c| c.config.node_id.as_str())
    }

    /// `--public-url` as given (normalised), for the start line.
    pub fn public_url(&self) -> Option<String> {
        self.state.config.public_url.as_ref().map(|u| u.origin())
    }

    /// What SIGHUP calls: re-reads `--tls-cert` / `--tls-key`; `None`
    /// without them.
    pub fn reloader(&self) -> Option<tls::Reloader> {
        self.reloader.clone()
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        self.state.scheme
    }

    /// Serves until the stop token is cancelled: then stops accepting,
    /// lets in-flight exchanges finish (up to `shutdown_grace`), and closes
    /// sessions.
    pub async fn run(self) {
        let state = self.state;
        let stop = state.stopping.clone();
        tokio::spawn(revocation::watch(state.clone(), stop.clone()));
        if let Some(listener) = self.metrics {
            tokio::spawn(metrics::serve(state.clone(), listener, stop.clone()));
        }
        if let Some(listener) = self.node {
            tokio::spawn(cluster::serve(state.clone(), listener, stop.clone()));
        }
        if state.cluster.is_some() {
            tokio::spawn(cluster::renew_loop(state.clone(), stop.clone()));
        }
        if let Some(reloader) = self.reloader {
            tokio::spawn(reloader.watch(stop.clone()));
        }
        match state.store.listen_events().await {
            Ok(Some(announced)) => {
                tokio::spawn(capture::remote::follow(
                    state.clone(),
                    announced,
                    stop.clone(),
                ));
            }
            Ok(None) => {}
            // Serving goes on; live listeners see nothing until a restart.
            Err(e) => warn!(error = %format!("{e:#}"), "listening for the store's events failed"),
        }
        listen::serve(state.clone(), self.listener, self.tls, stop).await;
        info!("closing tunnel sessions");
        state.sessions_closed.cancel();
        for handle in state.registry.all() {
            handle.close();
        }
        state.sessions.close();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(2), state.sessions.wait()).await;
        // Every exchange has finished: store what it captured before exit.
        let capture = state.capture.clone();
        let _ = tokio::task::spawn_blocking(move || capture.close()).await;
    }
}

/// Routes one request. `CONNECT` gets 405, and a request whose host is
/// missing or ambiguous 400, before any route is picked.
pub async fn handle(
    state: &Arc<State>,
    req: Request<Incoming>,
    visitor: Visitor,
) -> Response<ProxyBody> {
    // Not a route: hyper treats a 2xx answer to CONNECT as the start of a
    // tunnel (no length, no body, the connection handed to an upgrade
    // nobody asked for, then dropped), so a local app answering 200 left
    // the visitor with a closed connection and no response at all.
    if req.method() == Method::CONNECT {
        return PublicError::MethodNotAllowed.response(&new_request_id());
    }
    let host = match router::request_host(req.version(), req.headers(), req.uri()) {
        Ok(host) => host.map(str::to_owned),
        Err(e) => {
            debug!(peer = %visitor.peer, error = ?e, "request refused: host missing or ambiguous");
            return PublicError::bad_request(e.message()).response(&new_request_id());
        }
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    match router::route(host.as_deref(), &path, &state.config.domain) {
        Route::Tunnel {
            name,
            prefix,
            target,
        } => proxy::forward(state, req, &visitor, name, prefix, target).await,
        Route::Connect => control::accept(state, req, visitor),
        Route::Health => api::health(state),
        // Boxed: the API's future is large and rare; inline it would grow
        // the future of every proxied request, which hyper moves per call.
        Route::Api => Box::pin(api::handle(state, req)).await,
        Route::NotFound => PublicError::NotFound.response(&new_request_id()),
    }
}
