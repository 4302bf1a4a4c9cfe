//! Starts `relay-server` and reads the address it really bound from its first
//! stdout line (`relay-server listening on http://127.0.0.1:PORT`, or
//! `https://` with `--tls-cert` / `--tls-key`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::Command;

use crate::bins;
use crate::process::{self, Proc};

/// How long a server may take to print its listening line.
pub const STARTUP: Duration = Duration::from_secs(20);

/// Flags for one `relay-server` run.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `--listen`; `127.0.0.1:0` unless a test restarts on a known port.
    pub listen: String,
    pub data_dir: PathBuf,
    /// `--open`: no token needed.
    pub open: bool,
    /// `--request-timeout`, e.g. `"1s"`.
    pub request_timeout: Option<String>,
    /// `--max-body`, e.g. `"1GiB"`.
    pub max_body: Option<String>,
    /// `--tls-cert` / `--tls-key`: serve HTTPS.
    pub tls: Option<TlsFiles>,
    /// `--acme`: certificates from an ACME CA (the tests' Pebble).
    pub acme: Option<AcmeFlags>,
    /// Start under `prlimit --nofile=N:N` (soft and hard limit N).
    pub nofile: Option<u64>,
    pub extra_args: Vec<String>,
}

/// `--acme EMAIL --acme-directory URL --acme-ca PEM`.
#[derive(Clone, Debug)]
pub struct AcmeFlags {
    pub email: String,
    pub directory: String,
    pub ca: PathBuf,
}

/// PEM files of a server certificate chain and its private key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServerConfig {
    /// An `--open` server on `127.0.0.1:0` with domain `localhost`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            data_dir,
            open: true,
            request_timeout: None,
            max_body: None,
            tls: None,
            acme: None,
            nofile: None,
            extra_args: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// Whether the server speaks HTTPS (its own certificate or ACME).
    pub fn https(&self) -> bool {
        self.tls.is_some() || self.acme.is_some()
    }
}

/// A running `relay-server`.
pub struct RelayServer {
    pub proc: Proc,
    addr: SocketAddr,
    cfg: ServerConfig,
}

fn base_command(program: &Path, nofile: Option<u64>) -> Command {
    let mut cmd = process::command(program, nofile);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    cmd.env_remove("RELAY_SERVER").env_remove("RELAY_TOKEN");
    cmd
}

impl RelayServer {
    /// Starts the server and waits for its listening line.
    pub async fn start(cfg: ServerConfig) -> Result<Self> {
        let mut cmd = base_command(&bins::relay_server(), cfg.nofile);
        cmd.arg("--listen")
            .arg(&cfg.listen)
            .arg("--domain")
            .arg("localhost");
        // Empty: the store is chosen in `extra_args` (a cluster's nodes).
        if !cfg.data_dir.as_os_str().is_empty() {
            cmd.arg("--data-dir").arg(&cfg.data_dir);
        }
        if cfg.open {
            cmd.arg("--open");
        }
        if let Some(t) = &cfg.request_timeout {
            cmd.arg("--request-timeout").arg(t);
        }
        if let Some(m) = &cfg.max_body {
            cmd.arg("--max-body").arg(m);
        }
        if let Some(tls) = &cfg.tls {
            cmd.arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key);
        }
        if let Some(acme) = &cfg.acme {
            cmd.arg("--acme")
                .arg(&acme.email)
                .arg("--acme-directory")
                .arg(&acme.directory)
                .arg("--acme-ca")
                .arg(&acme.ca);
        }
        cmd.args(&cfg.extra_args);
        let mut proc = Proc::spawn("relay-server", cmd)?;
        let line = proc
            .next_line(STARTUP)
            .await
            .context("relay-server startup")?;
        let (scheme, addr) = parse_listening_url(&line)?;
        let want = if cfg.https() { "https" } else { "http" };
        if scheme != want {
            bail!("expected an {want} listener, relay-server printed {line:?}");
        }
        Ok(Self { proc, addr, cfg })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The value for `relay connect --server`: `http://127.0.0.1:PORT`, or
    /// `https://localhost:PORT` for a TLS server (a name the certificate covers).
    pub fn url(&self) -> String {
        if self.cfg.https() {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(&mut self, limit: Duration) -> Result<ExitStatus> {
        self.proc.signal("TERM")?;
        self.proc.wait_exit(limit).await
    }

    /// Stops the server as `stop` says and starts it again with the same
    /// flags on the same address and data dir (the listener sets
    /// `SO_REUSEADDR`, so the port is free again at once), waiting for
    /// its listening line. Clients reconnect to it by themselves.
    pub async fn restart(&mut self, stop: Stop) -> Result<()> {
        match stop {
            Stop::Kill => self.proc.kill().await?,
            Stop::Term => {
                let status = self.terminate(Duration::from_secs(15)).await?;
                if !status.success() {
                    bail!("relay-server exited with {status} on SIGTERM");
                }
            }
        }
        let mut cfg = self.cfg.clone();
        cfg.listen = self.addr.to_string();
        *self = Self::start(cfg)
            .await
            .with_context(|| format!("restarting on {} after {stop:?}", self.addr))?;
        Ok(())
    }

    /// How many tunnels have a client connected, from `GET /_relay/health`
    /// (plain HTTP servers only).
    pub async fn live_tunnels(&self) -> Result<u64> {
        if self.cfg.https() {
            bail!("live_tunnels speaks plain HTTP; this server serves HTTPS");
        }
        let req = http::Request::get("/_relay/health")
            .header(http::header::HOST, format!("localhost:{}", self.port()))
            .body(crate::http::empty())?;
        let f = crate::http::fetch(self.addr, req, Duration::from_secs(15)).await?;
        let health = f.json().context("the health answer")?;
        health["tunnels"]
            .as_u64()
            .with_context(|| format!("no `tunnels` count in the health answer {health}"))
    }
}

/// How [`RelayServer::restart`] stops the running server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL: a crash; nothing gets a chance to be flushed.
    Kill,
    /// SIGTERM: a clean stop, which must exit 0.
    Term,
}

/// Parses `relay-server listening on http://127.0.0.1:PORT`.
pub fn parse_listening(line: &str) -> Result<SocketAddr> {
    let (scheme, addr) = parse_listening_url(line)?;
    if scheme != "http" {
        bail!("expected an http listener, got {line:?}");
    }
    Ok(addr)
}

/// Parses `relay-server listening on SCHEME://127.0.0.1:PORT` into the scheme
/// (`http` or `https`) and the address.
pub fn parse_listening_url(line: &str) -> Result<(String, SocketAddr)> {
    let Some((_, rest)) = line.split_once("listening on ") else {
        bail!("first stdout line of relay-server is not `relay-server listening on URL`: {line:?}");
    };
    let url = rest.split_whitespace().next().unwrap_or_default();
    let Some((scheme, after)) = url.split_once("://") else {
        bail!("no scheme in listening URL {url:?}");
    };
    if scheme != "http" && scheme != "https" {
        bail!("expected an http or https listener, got {url:?}");
    }
    let authority = after.trim_end_matches('/');
    let addr = authority
        .parse()
        .with_context(|| format!("listening address {authority:?} is not IP:PORT"))?;
    Ok((scheme.to_string(), addr))
}

/// `relay-server token ARGS... --data-dir DIR` run to completion: `token
/// list`, `token revoke ID`, `token create --max-names N`.
pub async fn server_token(data_dir: &Path, args: &[&str]) -> Result<crate::cli::CliOutput> {
    let mut cmd = tokio::process::Command::new(bins::relay_server());
    cmd.arg("token")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("RELAY_SERVER")
        .env_remove("RELAY_TOKEN");
    crate::cli::run_command(cmd, Duration::from_secs(20)).await
}

/// `relay-server token create --data-dir DIR --label LABEL`: returns the token
/// (the first stdout line).
pub async fn create_token(data_dir: &Path, label: &str) -> Result<String> {
    let mut cmd = base_command(&bins::relay_server(), None);
    cmd.arg("token")
        .arg("create")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--label")
        .arg(label);
    let mut proc = Proc::spawn("relay-server token create", cmd)?;
    let token = proc
        .next_line(Duration::from_secs(20))
        .await
        .context("reading the new token")?;
    let status = proc.wait_exit(Duration::from_secs(20)).await?;
    if !status.success() {
        bail!(
            "token create exited with {status}; stderr:\n{}",
            proc.stderr_text()
        );
    }
    let token = token.trim().to_string();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!("token create printed {token:?} on stdout line 1, expected the token alone");
    }
    Ok(token)
}
