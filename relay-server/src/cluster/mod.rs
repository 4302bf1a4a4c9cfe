//! Several `relay-server` nodes sharing one store (docs/scale-out.md).
//!
//! The node holding a tunnel's session holds a lease on its name
//! (`leases.rs`: taken when a session starts, renewed in one call every
//! [`RENEW_EVERY`], released when it ends; a lost lease closes the local
//! session). A visitor request reaching a node without the session is
//! forwarded to the holder's `--node-url` (`client.rs`, used by
//! `proxy/remote.rs`, with the holders it read kept briefly in
//! `routes.rs`); the holder serves it on its `--node-listen`
//! listener (`node.rs`), which takes only requests carrying the node
//! secret and never forwards again.
//!
//! Parts: this file (flags, settings, the node's identity and header
//! names); `leases.rs`; `node.rs`; `client.rs`.

mod client;
mod leases;
mod node;
mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use http::HeaderName;

pub use client::NodeClient;
pub use leases::{hold, release, renew_loop, HeldLease, Leases};
pub use node::serve;
pub use routes::{Routes, ROUTE_CACHE_TTL};

/// How long a lease lives without renewal: how long, after a node dies,
/// visitors of its tunnels are answered as offline before their clients
/// can take the names over through another node (plus the client's
/// reconnect backoff).
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// How often a node renews all its leases, in one store call: three
/// renewals fit in one TTL, so one slow or failed renewal costs nothing.
pub const RENEW_EVERY: Duration = Duration::from_secs(3);

/// The node secret, on every request between nodes.
pub const NODE_SECRET: HeaderName = HeaderName::from_static("x-relay-node-secret");
/// The id of the node that forwarded a request: the loop stop. A request
/// carrying it is served from a local session or answered, never
/// forwarded again (and the node listener only serves requests that carry
/// it).
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-relay-forwarded-by");
/// The tunnel a forwarded request is for (the holder does not route by
/// Host: the visitor node already did).
pub const NODE_TUNNEL: HeaderName = HeaderName::from_static("x-relay-node-tunnel");
/// On the holder's answer: the outcome of an exchange the holder answered
/// itself (no session, local app unreachable, ...), so the visitor node
/// records it as a single node would have.
pub const NODE_OUTCOME: HeaderName = HeaderName::from_static("x-relay-node-outcome");

/// The cluster flags of `relay-server`.
#[derive(Debug, Args, Default)]
pub struct ClusterArgs {
    /// Listen for requests forwarded by other nodes on ADDR (plain HTTP;
    /// keep it on a private network). Turns cluster mode on.
    #[arg(
        long,
        env = "RELAY_NODE_LISTEN",
        value_name = "ADDR",
        requires = "node_url"
    )]
    pub node_listen: Option<SocketAddr>,
    /// How other nodes reach this node's --node-listen listener, e.g.
    /// http://10.0.0.2:7000.
    #[arg(
        long,
        env = "RELAY_NODE_URL",
        value_name = "URL",
        requires = "node_listen"
    )]
    pub node_url: Option<String>,
    /// The secret every node shares; requests between nodes carry it.
    #[arg(long, env = "RELAY_NODE_SECRET", conflicts_with = "node_secret_file")]
    pub node_secret: Option<String>,
    /// A file holding the node secret (trailing whitespace ignored).
    #[arg(long, env = "RELAY_NODE_SECRET_FILE", value_name = "PATH")]
    pub node_secret_file: Option<PathBuf>,
    /// This node's id in leases [default: random at start, printed].
    #[arg(long, env = "RELAY_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,
    /// How long a lease lives without renewal; renewals run every third
    /// of it. Shorter fails over sooner and costs more store writes.
    #[arg(long, env = "RELAY_LEASE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
}

/// Shortest secret accepted: the node listener is a way into every tunnel.
pub const MIN_SECRET_LEN: usize = 16;

/// Validated cluster settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub listen: SocketAddr,
    /// `--node-url`, without a trailing slash.
    pub url: String,
    pub secret: String,
    pub node_id: String,
    pub lease_ttl: Duration,
    pub renew_every: Duration,
}

impl ClusterConfig {
    /// `None` without `--node-listen`.
    pub fn from_args(args: &ClusterArgs) -> anyhow::Result<Option<Self>> {
        let (Some(listen), Some(url)) = (args.node_listen, &args.node_url) else {
            return Ok(None);
        };
        let url = url.trim().trim_end_matches('/').to_owned();
        let parsed: http::Uri = url
            .parse()
            .with_context(|| format!("--node-url {url:?} is not a URL"))?;
        if parsed.scheme_str() != Some("http") || parsed.authority().is_none() {
            bail!("--node-url must be http://HOST:PORT (got {url:?})");
        }
        let secret = match (&args.node_secret, &args.node_secret_file) {
            (Some(s), _) => s.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("reading --node-secret-file {}", path.display()))?
                .trim_end()
                .to_owned(),
            (None, None) => bail!("--node-listen needs --node-secret or --node-secret-file"),
        };
        if secret.len() < MIN_SECRET_LEN {
            bail!("the node secret must be at least {MIN_SECRET_LEN} characters");
        }
        if http::HeaderValue::from_str(&secret).is_err() {
            bail!("the node secret must be printable ASCII");
        }
        if args.lease_ttl < Duration::from_millis(300) {
            bail!("--lease-ttl must be at least 300ms");
        }
        let node_id = match &args.node_id {
            Some(id)
                if !id.is_empty() && id.len() <= 64 && http::HeaderValue::from_str(id).is_ok() =>
            {
                id.clone()
            }
            Some(id) => bail!("--node-id must be 1 to 64 printable characters (got {id:?})"),
            None => format!("node-{}", &crate::response::new_request_id()[16..]),
        };
        Ok(Some(Self {
            listen,
            url,
            secret,
            node_id,
            lease_ttl: args.lease_ttl,
            renew_every: if args.lease_ttl == LEASE_TTL {
                RENEW_EVERY
            } else {
                args.lease_ttl / 3
            },
        }))
    }
}

/// What a node keeps at run time: its settings, the leases it holds and
/// its pooled client to the other nodes.
pub struct Cluster {
    pub config: ClusterConfig,
    pub leases: Leases,
    pub client: NodeClient,
    /// Holders of names this node forwards to, read recently.
    pub routes: Routes,
}

impl Cluster {
    pub fn new(config: ClusterConfig) -> Self {
        Self {
            client: NodeClient::new(&config),
            leases: Leases::default(),
            routes: Routes::default(),
            config,
        }
    }

    /// Whether `given` is the node secret; constant time in its content.
    pub fn secret_matches(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.config.secret.as_bytes().ct_eq(given).into()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::{Cli, Config};

    fn config(args: &[&str]) -> anyhow::Result<Config> {
        let cli = Cli::try_parse_from(std::iter::once("relay-server").chain(args.iter().copied()))?;
        Config::from_args(&cli.serve, cli.data_dir)
    }

    const NODE: [&str; 6] = [
        "--node-listen",
        "127.0.0.1:7000",
        "--node-url",
        "http://10.0.0.2:7000/",
        "--node-secret",
        "0123456789abcdef",
    ];

    #[test]
    fn cluster_mode_needs_listener_url_and_a_secret() {
        assert!(config(&[]).expect("valid").cluster.is_none());
        let c = config(&NODE).expect("valid").cluster.expect("on");
        assert_eq!(c.url, "http://10.0.0.2:7000");
        assert_eq!((c.lease_ttl, c.renew_every), (LEASE_TTL, RENEW_EVERY));
        assert!(c.node_id.starts_with("node-"), "{}", c.node_id);
        assert!(config(&NODE[..4]).is_err(), "no secret");
        assert!(config(&NODE[..2]).is_err(), "no --node-url");
        assert!(config(&NODE[2..4]).is_err(), "no --node-listen");
        let mut short = NODE;
        short[5] = "short";
        assert!(config(&short).is_err(), "a short secret");
        let mut https = NODE;
        https[3] = "https://10.0.0.2:7000";
        assert!(config(&https).is_err(), "the node listener is plain HTTP");
    }

    #[test]
    fn the_lease_ttl_sets_the_renewal_period_and_the_secret_can_come_from_a_file() {
        let args = [&NODE[..], &["--lease-ttl", "3s", "--node-id", "n2"]].concat();
        let c = config(&args).expect("valid").cluster.expect("on");
        assert_eq!(c.renew_every, Duration::from_secs(1));
        assert_eq!(c.node_id, "n2");
        let tmp = tempfile::tempdir().expect("temp dir");
        let file = tmp.path().join("secret");
        std::fs::write(&file, "from-a-file-0123456789\n").expect("written");
        let path = file.display().to_string();
        let c = config(&[&NODE[..4], &["--node-secret-file", &path]].concat())
            .expect("valid")
            .cluster
            .expect("on");
        assert_eq!(c.secret, "from-a-file-0123456789");
        let cluster = Cluster::new(c);
        assert!(cluster.secret_matches(b"from-a-file-0123456789"));
        assert!(!cluster.secret_matches(b"from-a-file-012345678"));
    }
}
