//! [`Cluster`]: several `relay-server` nodes sharing one store, each with
//! its node listener (`--node-listen` on a reserved loopback port, the
//! same address as `--node-url`) and a fixed `--node-id` (`node1`,
//! `node2`, ...), so a test can tell which node holds a lease.
//!
//! The store they share is a PostgreSQL database of the test's own
//! ([`TestDatabase`], on the server `scripts/test` starts), chosen in one
//! place, [`store_flags`]; each node keeps its own `--data-dir` for what
//! is not shared (certificates).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::postgres::TestDatabase;
use crate::server::{RelayServer, ServerConfig};
use crate::{ReservedPort, Sandbox};

/// The secret the nodes of a test cluster share.
pub const SECRET: &str = "cluster-test-secret-0123456789";

/// The header carrying it (see relay-server's `cluster` module).
pub const SECRET_HEADER: &str = "x-relay-node-secret";

/// The store flags of a node (or a `token` command, `dir: None`) of a
/// cluster whose shared state lives at `store`: the one place that picks
/// the engine the cluster tests run on.
pub fn store_flags(store: &str, dir: Option<&Path>) -> Vec<String> {
    let mut flags = vec!["--store".to_owned(), store.to_owned()];
    if let Some(dir) = dir {
        flags.extend(["--data-dir".to_owned(), dir.display().to_string()]);
    }
    flags
}

/// Running nodes; `nodes[i]` has node id `node{i+1}`.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The shared store, dropped with the cluster.
    pub db: TestDatabase,
}

/// One node: its public server and its node listener.
pub struct Node {
    pub server: RelayServer,
    pub id: String,
    /// `--node-url`: `http://127.0.0.1:PORT`.
    pub url: String,
    pub node_addr: std::net::SocketAddr,
}

impl Cluster {
    /// Starts `n` nodes, each an `--open` server unless `edit` says
    /// otherwise, with a `lease_ttl` short enough for failover tests.
    pub async fn start(
        sandbox: &Sandbox,
        n: usize,
        lease_ttl: &str,
        edit: impl Fn(&mut ServerConfig),
    ) -> Result<Self> {
        let db = TestDatabase::create().await?;
        let mut nodes = Vec::new();
        for i in 1..=n {
            // Held until the node listens: nothing else takes the port.
            let port = ReservedPort::new()?;
            let node_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port.port()));
            let url = format!("http://{node_addr}");
            let id = format!("node{i}");
            let mut cfg = ServerConfig::new(PathBuf::new());
            cfg.extra_args = store_flags(&db.url, Some(&sandbox.subdir(&id)?));
            cfg.extra_args.extend(
                [
                    "--node-listen",
                    &node_addr.to_string(),
                    "--node-url",
                    &url,
                    "--node-secret",
                    SECRET,
                    "--node-id",
                    &id,
                    "--lease-ttl",
                    lease_ttl,
                ]
                .map(String::from),
            );
            edit(&mut cfg);
            let mut server = RelayServer::start(cfg)
                .await
                .with_context(|| format!("starting {id}"))?;
            server
                .proc
                .wait_line(
                    &format!("{id}'s node listener line"),
                    Duration::from_secs(10),
                    |l| {
                        l.starts_with(&format!(
                            "relay-server node {id} listening on http://{node_addr}"
                        ))
                    },
                )
                .await?;
            drop(port);
            nodes.push(Node {
                server,
                id,
                url,
                node_addr,
            });
        }
        Ok(Self { nodes, db })
    }

    /// Node `i` (1-based, as its id).
    pub fn node(&self, i: usize) -> &RelayServer {
        &self.nodes[i - 1].server
    }

    /// `relay-server ARGS...` on the shared store (the `token`
    /// subcommands), run to completion; it must succeed.
    pub async fn server_cli(&self, args: &[&str]) -> Result<crate::cli::CliOutput> {
        let mut cmd = tokio::process::Command::new(crate::bins::relay_server());
        cmd.args(args)
            .args(store_flags(&self.db.url, None))
            .env_remove("RELAY_SERVER")
            .env_remove("RELAY_TOKEN");
        let out = crate::cli::run_command(cmd, Duration::from_secs(20)).await?;
        anyhow::ensure!(
            out.status.success(),
            "relay-server {args:?} failed: {}",
            out.stderr
        );
        Ok(out)
    }

    /// `relay-server token create --label LABEL` on the shared store: the
    /// token and its id.
    pub async fn create_token(&self, label: &str) -> Result<(String, String)> {
        let out = self
            .server_cli(&["token", "create", "--label", label])
            .await?;
        let token = out
            .stdout
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let id = out
            .stderr
            .split_whitespace()
            .skip_while(|w| *w != "token")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        anyhow::ensure!(
            !token.is_empty() && !id.is_empty(),
            "token create printed {:?} / {:?}",
            out.stdout,
            out.stderr
        );
        Ok((token, id))
    }

    /// The live lease on `name` in the shared store: (node id, epoch),
    /// by the database's clock as the nodes' own reads.
    pub fn lease(&self, name: &str) -> Result<Option<(String, i64)>> {
        self.db.query_lease(name)
    }
}
