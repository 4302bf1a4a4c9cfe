//! [`Stack`]: the processes of one test in one [`Sandbox`]: an origin (the
//! local app), a `relay-server` and a `relay connect`, started in that order
//! by [`Stack::builder`], each waited for by its readiness event.
//!
//! The builder covers the topologies the e2e tests need: server flags
//! ([`StackBuilder::server`]), client flags ([`StackBuilder::client`]), a
//! local target other than the origin ([`StackBuilder::target`]), HTTPS
//! ([`StackBuilder::tls`]), token mode ([`StackBuilder::tokens`]), and a
//! client that is not started ([`StackBuilder::offline`]), so a test can
//! spawn it (or others) itself, and the client's missed-request flags
//! ([`StackBuilder::when_offline`], [`StackBuilder::deliver_missed`]). A
//! stack whose client went away while the server still knows its tunnel is
//! [`Stack::go_offline`] (which probes the tunnel) or
//! [`Stack::go_offline_quietly`] (which sends it nothing, so no probe
//! becomes a missed request). The server restarts on its own address and
//! data dir with [`RelayServer::restart`](crate::RelayServer::restart).

use std::marker::PhantomData;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use http::StatusCode;

use crate::certs;
use crate::client::{public_request, ClientConfig, RelayClient, Routing};
use crate::http::{empty, fetch};
use crate::origin::Origin;
use crate::server::{create_token, RelayServer, ServerConfig, TlsFiles};
use crate::{poll_until, Sandbox};

type ServerEdit = Box<dyn FnOnce(&mut ServerConfig) + Send>;
type ClientEdit = Box<dyn FnOnce(&mut ClientConfig) + Send>;
/// Writes a certificate and its key into the given directory.
type MakeCert = fn(&Path) -> Result<TlsFiles>;

/// One test's processes. `C` is the client: a connected [`RelayClient`], or,
/// for an [`offline`](StackBuilder::offline) stack, the [`ClientConfig`] it
/// would have been started with.
///
/// Fields drop in order: the processes (killed by their own PIDs), then the
/// sandbox with their directories.
pub struct Stack<C = RelayClient> {
    pub client: C,
    pub server: RelayServer,
    pub origin: Origin,
    /// `(label, token)` for each label given to [`StackBuilder::tokens`].
    pub tokens: Vec<(String, String)>,
    pub sandbox: Sandbox,
}

/// Builds a [`Stack`]; see [`Stack::builder`].
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct StackBuilder<C = RelayClient> {
    name: Option<String>,
    target: Option<String>,
    tls: Option<MakeCert>,
    tokens: Vec<String>,
    server: Vec<ServerEdit>,
    client: Vec<ClientEdit>,
    _client: PhantomData<C>,
}

impl Stack {
    /// A builder for the usual stack: an origin, an `--open` server on
    /// `127.0.0.1:0` and one `relay connect` to the origin's port, with no
    /// `--name` (the client generates one) unless [`StackBuilder::name`].
    pub fn builder() -> StackBuilder {
        StackBuilder {
            name: None,
            target: None,
            tls: None,
            tokens: Vec::new(),
            server: Vec::new(),
            client: Vec::new(),
            _client: PhantomData,
        }
    }
}

impl<C> StackBuilder<C> {
    /// The client's `--name`.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// Adjusts the server's flags (after the builder's own settings).
    pub fn server(mut self, edit: impl FnOnce(&mut ServerConfig) + Send + 'static) -> Self {
        self.server.push(Box::new(edit));
        self
    }

    /// Adjusts the client's flags and environment (after the builder's own
    /// settings, before the client starts).
    pub fn client(mut self, edit: impl FnOnce(&mut ClientConfig) + Send + 'static) -> Self {
        self.client.push(Box::new(edit));
        self
    }

    /// The client's `--when-offline MODE` (`reject` or `accept`).
    pub fn when_offline(self, mode: &str) -> Self {
        let mode = mode.to_string();
        self.client(move |c| c.when_offline = Some(mode))
    }

    /// The client runs with `--deliver-missed`.
    pub fn deliver_missed(self) -> Self {
        self.client(|c| c.deliver_missed = true)
    }

    /// More client flags, after all others.
    pub fn client_args<S: Into<String>>(self, args: impl IntoIterator<Item = S>) -> Self {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        self.client(move |c| c.extra_args.extend(args))
    }

    /// The client's local target (`PORT`, `HOST:PORT` or a URL) instead of
    /// the origin's port: a test's own local app, or a [`ReservedPort`]
    /// where nothing listens. The origin still runs.
    ///
    /// [`ReservedPort`]: crate::ReservedPort
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// An HTTPS server with a fresh self-signed certificate for
    /// `localhost`, which the client trusts with `--ca-cert`; the files are
    /// in the server's config (`server.config().tls`).
    pub fn tls(self) -> Self {
        self.tls_with(certs::self_signed_cert)
    }

    /// Like [`StackBuilder::tls`], with the certificate `make` writes into
    /// the sandbox's `tls` directory.
    pub fn tls_with(mut self, make: MakeCert) -> Self {
        self.tls = Some(make);
        self
    }

    /// Token mode: the server runs without `--open`, and before it starts
    /// `relay-server token create` makes one token per label (see
    /// [`Stack::token`]). The client uses the first.
    pub fn tokens(mut self, labels: &[&str]) -> Self {
        self.tokens = labels.iter().map(|l| l.to_string()).collect();
        self
    }

    /// Origin and server, and the client's config; the client itself is
    /// not started.
    async fn start_parts(self) -> Result<Stack<ClientConfig>> {
        let sandbox = Sandbox::new()?;
        let origin = Origin::start().await?;
        let mut server_cfg = ServerConfig::new(sandbox.subdir("server-data")?);
        if let Some(make) = self.tls {
            server_cfg.tls = Some(make(&sandbox.subdir("tls")?)?);
        }
        let mut tokens = Vec::new();
        if !self.tokens.is_empty() {
            server_cfg.open = false;
            for label in self.tokens {
                let token = create_token(&server_cfg.data_dir, &label).await?;
                tokens.push((label, token));
            }
        }
        for edit in self.server {
            edit(&mut server_cfg);
        }
        let server = RelayServer::start(server_cfg).await?;
        let target = self.target.unwrap_or_else(|| origin.port().to_string());
        let mut client = ClientConfig::new(target, server.url(), sandbox.subdir("client-home")?);
        client.name = self.name;
        client.ca_cert = server.config().tls.as_ref().map(|t| t.cert.clone());
        client.token = tokens.first().map(|(_, t)| t.clone());
        for edit in self.client {
            edit(&mut client);
        }
        Ok(Stack {
            client,
            server,
            origin,
            tokens,
            sandbox,
        })
    }
}

impl StackBuilder<RelayClient> {
    /// Does not start the client: the stack's `client` is the config it
    /// would have run with, for the test to spawn or connect.
    pub fn offline(self) -> StackBuilder<ClientConfig> {
        StackBuilder {
            name: self.name,
            target: self.target,
            tls: self.tls,
            tokens: self.tokens,
            server: self.server,
            client: self.client,
            _client: PhantomData,
        }
    }

    /// Starts origin, server and client, and waits for the client's banner.
    pub async fn start(self) -> Result<Stack> {
        self.start_parts().await?.connect().await
    }
}

impl StackBuilder<ClientConfig> {
    /// Starts origin and server; the client is left to the test.
    pub async fn start(self) -> Result<Stack<ClientConfig>> {
        self.start_parts().await
    }
}

impl<C> Stack<C> {
    /// A config for another client of this stack: the origin's port as its
    /// target, this server (trusting its certificate if it has one), and its
    /// own home `home` in the sandbox. No name, no token.
    pub fn client_config(&self, home: &str) -> Result<ClientConfig> {
        let mut cfg = ClientConfig::new(
            self.origin.port().to_string(),
            self.server.url(),
            self.sandbox.subdir(home)?,
        );
        cfg.ca_cert = self.server.config().tls.as_ref().map(|t| t.cert.clone());
        Ok(cfg)
    }

    /// The token made for `label` by [`StackBuilder::tokens`].
    ///
    /// # Panics
    /// If the stack was built without that label: a mistake in the test.
    pub fn token(&self, label: &str) -> &str {
        self.tokens
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, t)| t.as_str())
            .unwrap_or_else(|| {
                panic!("no token labelled {label:?}: pass it to StackBuilder::tokens")
            })
    }
}

impl Stack<ClientConfig> {
    /// Starts the client this stack was built with and waits for its banner.
    pub async fn connect(self) -> Result<Stack> {
        let client = RelayClient::connect(self.client).await?;
        Ok(Stack {
            client,
            server: self.server,
            origin: self.origin,
            tokens: self.tokens,
            sandbox: self.sandbox,
        })
    }
}

impl<C> Stack<C> {
    /// Waits until the server has no tunnel with a client connected (its
    /// health count), without sending a request to any tunnel: while the
    /// client is away such a request would itself be captured, and be one
    /// more missed request to deliver.
    pub async fn wait_no_live_tunnel(&self) -> Result<()> {
        poll_until(
            "the server counts no live tunnel",
            Duration::from_secs(20),
            || async { (self.server.live_tunnels().await.ok()? == 0).then_some(()) },
        )
        .await
    }
}

impl Stack {
    /// Takes the tunnel offline without a probe: kills the client (by its
    /// PID) and waits until the server counts no live tunnel. For stacks
    /// whose only client is `client`; no request reaches the tunnel, so
    /// the missed requests are exactly those the test sends.
    pub async fn go_offline_quietly(&mut self) -> Result<()> {
        self.client.proc.kill().await?;
        self.wait_no_live_tunnel().await
    }

    /// Takes the tunnel offline: kills the client (by its PID) and waits
    /// until the server answers 503 for its name (probing `GET /probe`),
    /// as for any known tunnel without a client.
    pub async fn go_offline(&mut self) -> Result<()> {
        self.client.proc.kill().await?;
        let (port, name, addr) = (
            self.server.port(),
            self.client.name.clone(),
            self.server.addr(),
        );
        poll_until(
            "the server answers 503 for a tunnel whose client was killed",
            Duration::from_secs(20),
            || {
                let req = public_request(port, &name, Routing::Host, "GET", "/probe").body(empty());
                async move {
                    let f = fetch(addr, req.ok()?, Duration::from_secs(15)).await.ok()?;
                    (f.status == StatusCode::SERVICE_UNAVAILABLE).then_some(())
                }
            },
        )
        .await
    }
}
