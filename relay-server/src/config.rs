//! Command line (`Cli`) and the validated [`Config`] the server runs with.
//! Tests build a `Config` directly; only `main.rs` parses arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use ipnet::IpNet;

use crate::capture::CaptureConfig;
use crate::conn::Timeouts;
use crate::forwarded::TrustedProxies;

/// `--domain` when neither it nor `--public-url` is given: `NAME.localhost`
/// resolves to loopback in browsers and curl, so a local server works
/// with no DNS.
pub const DEFAULT_DOMAIN: &str = "localhost";

/// `--trusted-proxy`: a CIDR, or a bare address meaning just that host.
fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not a CIDR (10.0.0.0/8) or an IP address"))
}

/// relay-server: gives each developer a stable public URL that reaches
/// their laptop through `relay connect`.
#[derive(Debug, Parser)]
#[command(
    name = "relay-server",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Folder for the server's database (tokens, names, captures). The
    /// default is the user's data directory, never the current folder:
    /// captured bodies carry bearer tokens and must not land in a git
    /// checkout.
    #[arg(
        long,
        global = true,
        env = "RELAY_DATA_DIR",
        default_value_os_t = default_data_dir()
    )]
    pub data_dir: PathBuf,
    /// Where tokens, names and captures are kept: left out, SQLite in
    /// --data-dir (one server); a PostgreSQL URL
    /// (postgres://USER:PASSWORD@HOST:PORT/DB) shared by several servers
    /// behind one load balancer. The password is never logged; give the URL
    /// in RELAY_STORE to keep it out of the process list too.
    #[arg(long, global = true, env = "RELAY_STORE", value_name = "URL")]
    pub store: Option<String>,
}

/// `relay-server` in the user's data directory: `$XDG_DATA_HOME`, else
/// `~/.local/share` on Linux, `~/Library/Application Support` on macOS.
/// Empty when there is no home to find it in; [`ensure_data_dir`] then
/// asks for `--data-dir`.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("relay-server"))
        .unwrap_or_default()
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the tokens clients authenticate with.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token and print it once; only its hash is stored.
    Create {
        /// A note to recognise the token by in `token list`.
        #[arg(long)]
        label: Option<String>,
        /// How many tunnel names the token may claim (default: no cap).
        /// A connect that would claim one more is refused.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_names: Option<u32>,
    },
    /// List tokens: ids, labels, dates, last use, names; never the secrets.
    List,
    /// Revoke a token by id: a running server ends its live sessions
    /// within seconds, and it can no longer connect or call the API.
    Revoke { id: i64 },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the bound address is
    /// printed on start).
    #[arg(long, env = "RELAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Domain tunnels live under: NAME.DOMAIN and DOMAIN/t/NAME
    /// [default: --public-url's host, else localhost].
    #[arg(long, env = "RELAY_DOMAIN")]
    pub domain: Option<String>,
    /// The URL visitors reach this server by, e.g. https://relay.example.com
    /// behind a reverse proxy: the URLs handed to clients and printed use
    /// its scheme, host and port instead of the listener's.
    #[arg(long, env = "RELAY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// A reverse proxy (CIDR, or one address) whose X-Forwarded-For/-Proto/
    /// -Host are kept (For appended to); from anyone else they are
    /// replaced. Repeat for several; with an env var, separate by commas.
    #[arg(long = "trusted-proxy", env = "RELAY_TRUSTED_PROXY", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<IpNet>,
    /// Serve Prometheus metrics at http://ADDR/metrics on this separate
    /// listener (e.g. 127.0.0.1:9090; port 0 picks one, printed on start).
    /// A non-loopback address also needs --metrics-public.
    #[arg(long, env = "RELAY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Allow --metrics-listen on an address other hosts can reach: metrics
    /// name no tunnels but show traffic; firewall the port.
    #[arg(long, env = "RELAY_METRICS_PUBLIC", value_parser = clap::builder::BoolishValueParser::new())]
    pub metrics_public: bool,
    /// PEM certificate chain; with --tls-key the listener speaks HTTPS/WSS.
    #[arg(long, env = "RELAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "RELAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Get certificates from an ACME CA (Let's Encrypt by default) for
    /// DOMAIN and each NAME.DOMAIN by TLS-ALPN-01 on this listener, which
    /// must be reachable on port 443 under those names. EMAIL is the
    /// contact the CA writes to about expiry.
    #[arg(long, env = "RELAY_ACME", value_name = "EMAIL", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub acme: Option<String>,
    /// The ACME CA's directory URL.
    #[arg(long, env = "RELAY_ACME_DIRECTORY", value_name = "URL", requires = "acme", default_value = crate::acme::LETS_ENCRYPT)]
    pub acme_directory: String,
    /// PEM root certificate to trust for the ACME directory's HTTPS
    /// instead of the web roots (a test CA such as Pebble).
    #[arg(long, env = "RELAY_ACME_CA", value_name = "PEM", requires = "acme")]
    pub acme_ca: Option<PathBuf>,
    /// Let any client connect without a token (local development).
    // Boolish, so `RELAY_OPEN=1`, `yes` or `on` work as in most tools.
    #[arg(long, env = "RELAY_OPEN", value_parser = clap::builder::BoolishValueParser::new())]
    pub open: bool,
    /// How long the local app may take to send its response head before
    /// the visitor gets 504 local_timeout. Counted from the end of the
    /// request body, so a long upload is not cut short, as long as it
    /// moves at least 1 KiB/s.
    #[arg(long, env = "RELAY_REQUEST_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// How long a connection may go with no request in progress before it
    /// is closed: from accept to its first request (a socket that sends
    /// nothing), between requests (HTTP/1.1 keep-alive and HTTP/2 alike),
    /// and while a request head arrives. WebSockets are not affected.
    #[arg(long, env = "RELAY_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// How long a write to a connection (a visitor's, or a client's
    /// WebSocket) may make no progress before the connection is closed: a
    /// visitor that stops reading a download frees its stream.
    #[arg(long, env = "RELAY_WRITE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,
    /// Largest request body a visitor may send; larger gets 413 body_too_large.
    #[arg(long, env = "RELAY_MAX_BODY", default_value = "64MiB")]
    pub max_body: bytesize::ByteSize,
    /// How long shutdown waits for in-flight requests before closing them.
    #[arg(long, env = "RELAY_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Record every request to a tunnel for `relay requests` and `replay`.
    #[arg(long, env = "RELAY_CAPTURE", default_value = "on", value_parser = ["on", "off"])]
    pub capture: String,
    /// Bytes kept of each captured body; longer bodies are marked truncated.
    #[arg(long, env = "RELAY_CAPTURE_LIMIT", default_value = "1MiB")]
    pub capture_limit: bytesize::ByteSize,
    /// Captures kept per tunnel; older ones are deleted.
    #[arg(long, env = "RELAY_RETAIN", default_value_t = 1000)]
    pub retain: u32,
    /// Several nodes sharing one store (docs/scale-out.md).
    #[command(flatten)]
    pub cluster: crate::cluster::ClusterArgs,
}

/// Paths of the listener's certificate and key.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `--public-url`, validated: the scheme, host and port visitors use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    pub scheme: &'static str,
    /// Lower case, no trailing dot.
    pub host: String,
    /// `None` when it is the scheme's default (left out of URLs).
    pub port: Option<u16>,
}

impl PublicUrl {
    /// Parses `http(s)://HOST[:PORT][/]`: no user, path, query or fragment,
    /// since the URLs handed out add their own paths.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let wrong = |why: &str| {
            anyhow::anyhow!(
                "--public-url must be http(s)://HOST[:PORT] such as https://relay.example.com ({why}; got {text:?})"
            )
        };
        let uri: http::Uri = text.trim().parse().map_err(|_| wrong("not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => "https",
            Some(s) if s.eq_ignore_ascii_case("http") => "http",
            _ => return Err(wrong("the scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| wrong("no host"))?;
        if authority.as_str().contains('@') {
            return Err(wrong("no user name or password"));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") || text.contains('#') {
            return Err(wrong("no path, query or fragment"));
        }
        let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return Err(wrong("no host"));
        }
        let default = if scheme == "https" { 443 } else { 80 };
        let port = authority.port_u16().filter(|&p| p != default);
        Ok(Self { scheme, host, port })
    }

    /// `https://relay.example.com` or `http://relay.example.com:8090`.
    pub fn origin(&self) -> String {
        self.with_host(&self.host)
    }

    /// This URL's scheme and port around another host (`NAME.DOMAIN`).
    pub fn with_host(&self, host: &str) -> String {
        match self.port {
            Some(port) => format!("{}://{host}:{port}", self.scheme),
            None => format!("{}://{host}", self.scheme),
        }
    }
}

/// Everything `run` needs, already validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub domain: String,
    /// `--public-url`: the URLs handed out are built from it.
    pub public_url: Option<PublicUrl>,
    /// `--trusted-proxy`: whose `X-Forwarded-*` headers are kept.
    pub trusted_proxies: TrustedProxies,
    /// `--metrics-listen` (validated: loopback unless `--metrics-public`).
    pub metrics_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// `--store`: SQLite in `data_dir` unless a PostgreSQL URL says otherwise.
    pub store: crate::store::StoreLocation,
    pub tls: Option<TlsPaths>,
    /// `--acme`: certificates ordered by the server itself.
    pub acme: Option<crate::acme::AcmeConfig>,
    pub open: bool,
    pub request_timeout: Duration,
    pub max_body: u64,
    pub shutdown_grace: Duration,
    /// Deadlines of every public connection (`conn.rs`).
    pub timeouts: Timeouts,
    pub capture: CaptureConfig,
    /// `--node-listen` and friends: this server is one node of several.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Config {
    /// `--store`, which the `token` subcommands read too (so it is not one
    /// of the serve flags `from_args` reads).
    pub fn with_store(mut self, store: Option<&str>) -> anyhow::Result<Self> {
        self.store = crate::store::StoreLocation::parse(store, &self.data_dir)?;
        Ok(self)
    }

    pub fn from_args(args: &ServeArgs, data_dir: PathBuf) -> anyhow::Result<Self> {
        let public_url = args
            .public_url
            .as_deref()
            .map(PublicUrl::parse)
            .transpose()?;
        // Behind a proxy the public host is nearly always the domain, so it
        // need not be said twice; an explicit --domain still wins (a proxy
        // that rewrites Host to an internal name).
        let domain = match (&args.domain, &public_url) {
            (Some(d), _) => d.trim().trim_end_matches('.').to_ascii_lowercase(),
            (None, Some(p)) => p.host.clone(),
            (None, None) => DEFAULT_DOMAIN.to_owned(),
        };
        if domain.is_empty() || domain.contains('/') || domain.contains(':') {
            bail!(
                "--domain must be a host name such as example.com (got {:?})",
                args.domain.as_deref().unwrap_or_default()
            );
        }
        if let Some(addr) = args.metrics_listen {
            if !addr.ip().is_loopback() && !args.metrics_public {
                bail!(
                    "--metrics-listen {addr} can be reached from other hosts; \
                     add --metrics-public to mean it (and firewall the port), \
                     or listen on 127.0.0.1"
                );
            }
        }
        if args.request_timeout.is_zero() {
            bail!("--request-timeout must be more than 0");
        }
        if args.idle_timeout.is_zero() {
            bail!("--idle-timeout must be more than 0");
        }
        if args.write_timeout.is_zero() {
            bail!("--write-timeout must be more than 0");
        }
        if args.retain == 0 {
            bail!("--retain must be at least 1 (use --capture off to keep nothing)");
        }
        let capture_limit = usize::try_from(args.capture_limit.as_u64())
            .ok()
            .filter(|&n| n <= 1 << 30)
            .context("--capture-limit must be at most 1GiB")?;
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsPaths {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let acme = match &args.acme {
            Some(email) => {
                let email = email.trim();
                if email.is_empty() || !email.contains('@') || email.contains(char::is_whitespace) {
                    bail!("--acme needs an email address (got {email:?})");
                }
                if !args.acme_directory.starts_with("https://") {
                    bail!(
                        "--acme-directory must be an https:// URL (got {:?})",
                        args.acme_directory
                    );
                }
                Some(crate::acme::AcmeConfig {
                    email: email.to_owned(),
                    directory: args.acme_directory.clone(),
                    ca: args.acme_ca.clone(),
                })
            }
            None => None,
        };
        Ok(Self {
            domain,
            public_url,
            trusted_proxies: TrustedProxies::new(args.trusted_proxies.clone()),
            metrics_listen: args.metrics_listen,
            store: crate::store::StoreLocation::Sqlite(data_dir.clone()),
            data_dir,
            tls,
            acme,
            open: args.open,
            request_timeout: args.request_timeout,
            max_body: args.max_body.as_u64(),
            shutdown_grace: args.shutdown_grace,
            timeouts: Timeouts {
                idle: args.idle_timeout,
                write: args.write_timeout,
            },
            capture: CaptureConfig {
                enabled: args.capture == "on",
                limit: capture_limit,
                retain: args.retain,
            },
            cluster: crate::cluster::ClusterConfig::from_args(&args.cluster)?,
        })
    }
}

/// Makes sure the data directory exists. A new one is private to the
/// user (0700): it holds token hashes and captured bodies, which may carry
/// the secrets of whoever called the tunnels. An existing one is left as is.
pub fn ensure_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.as_os_str().is_empty() {
        bail!("no data directory: pass --data-dir DIR (or set HOME or XDG_DATA_HOME)");
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("creating data dir {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("relay-server").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_give_a_local_server() {
        let cli = parse(&[]).expect("no flags is valid");
        assert!(cli.command.is_none());
        let cfg = Config::from_args(&cli.serve, cli.data_dir).expect("valid");
        assert_eq!(cli.serve.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.domain, "localhost");
        assert_eq!(cfg.max_body, 64 * 1024 * 1024);
        assert_eq!(cfg.request_timeout, Duration::from_secs(60));
        assert!(!cfg.open);
        assert_eq!(cfg.timeouts, Timeouts::default());
        assert_eq!(cfg.capture, CaptureConfig::default());
    }

    #[test]
    fn parses_sizes_durations_and_subcommands() {
        let cli =
            parse(&["--max-body", "1GiB", "--request-timeout", "2s", "--open"]).expect("valid");
        let cfg = Config::from_args(&cli.serve, cli.data_dir).expect("valid");
        assert_eq!(cfg.max_body, 1 << 30);
        assert_eq!(cfg.request_timeout, Duration::from_secs(2));
        let cli = parse(&[
            "--capture",
            "off",
            "--capture-limit",
            "4KiB",
            "--retain",
            "5",
        ])
        .expect("valid");
        let cfg = Config::from_args(&cli.serve, cli.data_dir).expect("valid");
        assert_eq!(
            cfg.capture,
            CaptureConfig {
                enabled: false,
                limit: 4096,
                retain: 5
            }
        );
        assert!(parse(&["--capture", "maybe"]).is_err());
        let cli =
            parse(&["token", "create", "--label", "ci", "--data-dir", "/tmp/x"]).expect("valid");
        assert!(matches!(
            cli.command,
            Some(Command::Token {
                action: TokenAction::Create { .. }
            })
        ));
        assert_eq!(cli.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn the_default_data_dir_is_not_the_current_folder() {
        let cli = parse(&[]).expect("no flags is valid");
        if let Some(data) = dirs::data_dir() {
            assert_eq!(cli.data_dir, data.join("relay-server"));
        }
        assert!(cli.data_dir.is_absolute() || cli.data_dir.as_os_str().is_empty());
        let err = ensure_data_dir(std::path::Path::new("")).expect_err("no dir to use");
        assert!(err.to_string().contains("--data-dir"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_new_data_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("data");
        ensure_data_dir(&dir).expect("created");
        let mode = std::fs::metadata(&dir).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        ensure_data_dir(&dir).expect("existing is fine");
    }

    #[test]
    fn rejects_bad_values() {
        assert!(parse(&["--tls-cert", "c.pem"]).is_err(), "cert needs key");
        assert!(
            parse(&["--acme", "a@b.c", "--tls-cert", "c", "--tls-key", "k"]).is_err(),
            "--acme and --tls-cert exclude each other"
        );
        assert!(
            parse(&["--acme-ca", "ca.pem"]).is_err(),
            "--acme-ca needs --acme"
        );
        let cli = parse(&["--acme", "not-an-email"]).expect("clap accepts any string");
        assert!(Config::from_args(&cli.serve, cli.data_dir).is_err());
        let cli = parse(&["--acme", "a@b.c", "--acme-directory", "http://x/dir"]).expect("clap");
        assert!(Config::from_args(&cli.serve, cli.data_dir).is_err());
        let cli = parse(&["--acme", "a@b.c"]).expect("valid");
        let cfg = Config::from_args(&cli.serve, cli.data_dir).expect("valid");
        let acme = cfg.acme.expect("acme set");
        assert_eq!(acme.directory, crate::acme::LETS_ENCRYPT);
        let cli = parse(&["--domain", "http://x"]).expect("clap accepts any string");
        assert!(Config::from_args(&cli.serve, cli.data_dir).is_err());
        let cli = parse(&["--request-timeout", "0s"]).expect("clap accepts 0s");
        assert!(Config::from_args(&cli.serve, cli.data_dir).is_err());
        let cli = parse(&["--idle-timeout", "0s"]).expect("clap accepts 0s");
        assert!(Config::from_args(&cli.serve, cli.data_dir).is_err());
        let cli = parse(&["--write-timeout", "0s"]).expect("clap accepts 0s");
        assert!(Config::from_args(&cli.serve, cli.data_dir).is_err());
        let cli = parse(&["--retain", "0"]).expect("clap accepts 0");
        assert!(Config::from_args(&cli.serve, cli.data_dir).is_err());
    }

    #[test]
    fn public_url_gives_scheme_host_port_and_the_default_domain() {
        let cli = parse(&["--public-url", "HTTPS://Relay.Example.com:443/"]).expect("valid");
        let cfg = Config::from_args(&cli.serve, cli.data_dir).expect("valid");
        let url = cfg.public_url.expect("set");
        assert_eq!(url.origin(), "https://relay.example.com");
        assert_eq!(cfg.domain, "relay.example.com");
        assert_eq!(
            PublicUrl::parse("http://relay.example.com:8090")
                .expect("valid")
                .with_host("app.relay.example.com"),
            "http://app.relay.example.com:8090"
        );
        // An explicit --domain wins.
        let cli =
            parse(&["--public-url", "https://a.example", "--domain", "b.example"]).expect("valid");
        let cfg = Config::from_args(&cli.serve, cli.data_dir).expect("valid");
        assert_eq!(cfg.domain, "b.example");
        for bad in [
            "relay.example.com",
            "ftp://relay.example.com",
            "https://relay.example.com/path",
            "https://relay.example.com/?q=1",
            "https://user:pw@relay.example.com",
            "https://relay.example.com/#top",
            "https://",
        ] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn trusted_proxies_and_metrics_listen_are_checked() {
        let cli = parse(&[
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxy",
            "192.0.2.1",
        ])
        .expect("valid");
        let cfg = Config::from_args(&cli.serve, cli.data_dir).expect("valid");
        assert!(cfg
            .trusted_proxies
            .contains("10.1.2.3".parse().expect("ip")));
        assert!(cfg
            .trusted_proxies
            .contains("192.0.2.1".parse().expect("ip")));
        assert!(!cfg
            .trusted_proxies
            .contains("192.0.2.2".parse().expect("ip")));
        assert!(parse(&["--trusted-proxy", "example.com"]).is_err());
        let cli = parse(&["--metrics-listen", "127.0.0.1:0"]).expect("valid");
        assert!(Config::from_args(&cli.serve, cli.data_dir).is_ok());
        let cli = parse(&["--metrics-listen", "0.0.0.0:9090"]).expect("valid");
        assert!(Config::from_args(&cli.serve, cli.data_dir).is_err());
        let cli = parse(&["--metrics-listen", "0.0.0.0:9090", "--metrics-public"]).expect("valid");
        assert!(Config::from_args(&cli.serve, cli.data_dir).is_ok());
    }
}
