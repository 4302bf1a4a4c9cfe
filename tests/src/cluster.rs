//! [`Cluster`]: several `relay-server` nodes sharing one store, each with
//! its node listener (`--node-listen` on a reserved loopback port, the
//! same address as `--node-url`) and a fixed `--node-id` (`node1`,
//! `node2`, ...), so a test can tell which node holds a lease.
//!
//! The store they share is chosen in one place, [`store_flags`]: today one
//! SQLite `--data-dir` (WAL works across processes); a PostgreSQL URL
//! (`--store postgres://...`) once that engine exists.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::server::{RelayServer, ServerConfig};
use crate::{ReservedPort, Sandbox};

/// The secret the nodes of a test cluster share.
pub const SECRET: &str = "cluster-test-secret-0123456789";

/// The header carrying it (see relay-server's `cluster` module).
pub const SECRET_HEADER: &str = "x-relay-node-secret";

/// The store flags of every node of a cluster whose shared state lives at
/// `shared`: the one line to change to run the cluster tests on another
/// store engine.
pub fn store_flags(shared: &Path) -> Vec<String> {
    vec!["--data-dir".into(), shared.display().to_string()]
}

/// Running nodes; `nodes[i]` has node id `node{i+1}`.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// Where the shared store lives (the SQLite folder today).
    pub shared: PathBuf,
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
        let shared = sandbox.subdir("shared-store")?;
        let mut nodes = Vec::new();
        for i in 1..=n {
            // Held until the node listens: nothing else takes the port.
            let port = ReservedPort::new()?;
            let node_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port.port()));
            let url = format!("http://{node_addr}");
            let id = format!("node{i}");
            let mut cfg = ServerConfig::new(PathBuf::new());
            cfg.extra_args = store_flags(&shared);
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
        Ok(Self { nodes, shared })
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
            .args(store_flags(&self.shared))
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

    /// The live lease on `name` in the shared store: (node id, epoch).
    pub fn lease(&self, name: &str) -> Result<Option<(String, i64)>> {
        use rusqlite::OptionalExtension;
        let conn = rusqlite::Connection::open(self.shared.join("relay.db"))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        Ok(conn
            .query_row(
                "SELECT node_id, epoch FROM leases WHERE name = ?1 AND expires_at_ms > ?2",
                rusqlite::params![name, now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }
}
