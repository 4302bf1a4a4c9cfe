//! Starts `relay connect` and reads its banner:
//!
//! ```text
//! relay connected as NAME
//! Forwarding  http://NAME.localhost:PORT/ -> http://127.0.0.1:LOCALPORT
//! Forwarding  http://localhost:PORT/t/NAME/ -> http://127.0.0.1:LOCALPORT
//! ```
//!
//! then one line per finished request. Every client runs with its own config
//! file and home (`RELAY_CONFIG`, `XDG_CONFIG_HOME`, `HOME`) so a test never
//! touches the user's real config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::Command;

use crate::bins;
use crate::process::{self, Proc};

/// How long a client may take to print its banner.
pub const CONNECT: Duration = Duration::from_secs(20);

/// Flags and environment for one `relay connect` run.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `PORT`, `HOST:PORT` or URL of the local app.
    pub target: String,
    /// `--server`, e.g. `http://127.0.0.1:PORT`.
    pub server: String,
    pub name: Option<String>,
    pub token: Option<String>,
    /// `--ca-cert`: an extra trusted CA (PEM) for an `https://` server.
    pub ca_cert: Option<PathBuf>,
    /// Private config/home directory; `config.toml` lives in it.
    pub home: PathBuf,
    /// `--inspect ADDR` (e.g. `127.0.0.1:0`); `None` runs with `--no-inspect`
    /// unless `inspect_first_port` is set.
    pub inspect: Option<String>,
    /// Neither `--inspect` nor `--no-inspect`: the default inspector address,
    /// the first free port from this one (`RELAY_INSPECT_FIRST_PORT`, so that
    /// parallel tests never meet a real 4040).
    pub inspect_first_port: Option<u16>,
    /// Start under `prlimit --nofile=N:N` (soft and hard limit N).
    pub nofile: Option<u64>,
    /// `--when-offline reject|accept`: what the server answers for the
    /// tunnel while no client is connected.
    pub when_offline: Option<String>,
    /// `--deliver-missed`: deliver the missed requests after every
    /// (re)connect.
    pub deliver_missed: bool,
    /// More flags, after all of the above.
    pub extra_args: Vec<String>,
}

impl ClientConfig {
    pub fn new(target: impl Into<String>, server: impl Into<String>, home: PathBuf) -> Self {
        Self {
            target: target.into(),
            server: server.into(),
            name: None,
            token: None,
            ca_cert: None,
            home,
            inspect: None,
            inspect_first_port: None,
            nofile: None,
            when_offline: None,
            deliver_missed: false,
            extra_args: Vec::new(),
        }
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// Serves the inspector page on `addr` instead of `--no-inspect`.
    pub fn inspect(mut self, addr: &str) -> Self {
        self.inspect = Some(addr.to_string());
        self
    }

    /// Serves the inspector at its default address, trying ports from
    /// `first_port` up (instead of 4040).
    pub fn inspect_default(mut self, first_port: u16) -> Self {
        self.inspect_first_port = Some(first_port);
        self
    }

    /// Runs the client with soft and hard `RLIMIT_NOFILE` of `n`.
    pub fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }

    pub fn ca_cert(mut self, pem: PathBuf) -> Self {
        self.ca_cert = Some(pem);
        self
    }

    /// `--when-offline MODE` (`reject` or `accept`).
    pub fn when_offline(mut self, mode: &str) -> Self {
        self.when_offline = Some(mode.to_string());
        self
    }

    /// `--deliver-missed`.
    pub fn deliver_missed(mut self) -> Self {
        self.deliver_missed = true;
        self
    }

    /// Adds `args` after every other flag.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The command line, without starting it.
    pub fn command(&self) -> Command {
        let mut cmd = process::command(&bins::relay_client(), self.nofile);
        cmd.arg("connect")
            .arg(&self.target)
            .arg("--server")
            .arg(&self.server);
        match (&self.inspect, self.inspect_first_port) {
            (Some(addr), _) => cmd.arg("--inspect").arg(addr),
            (None, Some(port)) => cmd.env("RELAY_INSPECT_FIRST_PORT", port.to_string()),
            (None, None) => cmd.arg("--no-inspect"),
        };
        if let Some(n) = &self.name {
            cmd.arg("--name").arg(n);
        }
        if let Some(t) = &self.token {
            cmd.arg("--token").arg(t);
        }
        if let Some(ca) = &self.ca_cert {
            cmd.arg("--ca-cert").arg(ca);
        }
        if let Some(mode) = &self.when_offline {
            cmd.arg("--when-offline").arg(mode);
        }
        if self.deliver_missed {
            cmd.arg("--deliver-missed");
        }
        cmd.args(&self.extra_args);
        self.env(&mut cmd);
        cmd
    }

    /// The private config/home and a clean `RELAY_*` environment, for any
    /// `relay` command run as this client; `TZ=UTC`, so the times it prints
    /// do not depend on the machine's zone (a test may set `TZ` after).
    pub fn env(&self, cmd: &mut Command) {
        cmd.env("RELAY_CONFIG", self.home.join("config.toml"))
            .env("TZ", "UTC")
            .env("XDG_CONFIG_HOME", &self.home)
            .env("HOME", &self.home)
            .env_remove("RELAY_SERVER")
            .env_remove("RELAY_TOKEN")
            .env_remove("RELAY_CA_CERT");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
    }

    /// Port of `--server`.
    fn server_port(&self) -> Result<u16> {
        let authority = self
            .server
            .split_once("://")
            .map(|(_, a)| a)
            .unwrap_or(&self.server)
            .trim_end_matches('/');
        let port = authority
            .rsplit_once(':')
            .with_context(|| format!("no port in server URL {:?}", self.server))?
            .1;
        port.parse()
            .with_context(|| format!("bad port in server URL {:?}", self.server))
    }

    /// `https` for an `https://` server, else `http`: the scheme of the public URLs.
    fn public_scheme(&self) -> &'static str {
        if self.server.starts_with("https://") {
            "https"
        } else {
            "http"
        }
    }
}

/// How a visitor addresses a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// `Host: NAME.localhost:PORT`.
    Host,
    /// `http://localhost:PORT/t/NAME/...`.
    Path,
}

impl Routing {
    pub const BOTH: [Routing; 2] = [Routing::Host, Routing::Path];
}

/// The request-target and `Host` header a visitor uses to reach `path_and_query`
/// on tunnel `name` of the server on 127.0.0.1:`server_port`.
pub fn public_target(
    server_port: u16,
    name: &str,
    routing: Routing,
    path_and_query: &str,
) -> (String, String) {
    match routing {
        Routing::Host => (
            path_and_query.to_string(),
            format!("{name}.localhost:{server_port}"),
        ),
        Routing::Path => (
            format!("/t/{name}{path_and_query}"),
            format!("localhost:{server_port}"),
        ),
    }
}

/// A request builder for a tunnel URL (send it to 127.0.0.1:`server_port`).
pub fn public_request(
    server_port: u16,
    name: &str,
    routing: Routing,
    method: &str,
    path_and_query: &str,
) -> http::request::Builder {
    let (uri, host) = public_target(server_port, name, routing, path_and_query);
    http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::HOST, host)
}

/// One per-request line of the client's stdout.
#[derive(Clone, Debug)]
pub struct RequestLine {
    pub time: String,
    pub method: String,
    pub path: String,
    pub status: String,
    pub duration: String,
    pub id: String,
    /// What follows the id: why a 502, the fault played, a missed caller
    /// deadline (words joined by one space); empty for most lines.
    pub note: String,
}

impl RequestLine {
    /// Parses `HH:MM:SS.mmm  METHOD  /path  STATUS  12ms  REQUESTID  [NOTE]`.
    pub fn parse(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[0].len() != 12 || f[0].as_bytes()[2] != b':' || !f[4].ends_with("ms") {
            return None;
        }
        Some(Self {
            time: f[0].into(),
            method: f[1].into(),
            path: f[2].into(),
            status: f[3].into(),
            duration: f[4].into(),
            id: f[5].into(),
            note: f[6..].join(" "),
        })
    }
}

/// A running, connected `relay connect`.
pub struct RelayClient {
    pub proc: Proc,
    pub cfg: ClientConfig,
    /// The tunnel name from the last `relay connected as NAME` line.
    pub name: String,
    server_port: u16,
}

impl RelayClient {
    /// Spawns the client without waiting for anything (for refusal tests).
    pub fn spawn(cfg: &ClientConfig) -> Result<Proc> {
        Proc::spawn("relay", cfg.command())
    }

    /// Spawns the client and waits until its banner says the tunnel is up.
    pub async fn connect(cfg: ClientConfig) -> Result<Self> {
        let proc = Self::spawn(&cfg)?;
        let mut client = Self::from_proc(cfg, proc)?;
        client.wait_connected(CONNECT).await?;
        Ok(client)
    }

    /// Wraps an already spawned client (see [`RelayClient::spawn`]) without
    /// waiting; call [`RelayClient::wait_connected`] next.
    pub fn from_proc(cfg: ClientConfig, proc: Proc) -> Result<Self> {
        let server_port = cfg.server_port()?;
        Ok(Self {
            proc,
            cfg,
            name: String::new(),
            server_port,
        })
    }

    /// Waits for the next banner (`relay connected as NAME` + two Forwarding
    /// lines), checks the printed URLs, and returns NAME.
    pub async fn wait_connected(&mut self, limit: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + limit;
        let line = self
            .proc
            .wait_line("`relay connected as NAME`", limit, |l| {
                l.starts_with("relay connected as ")
            })
            .await?;
        let name = line["relay connected as ".len()..].trim().to_string();
        if name.is_empty() || name.contains(char::is_whitespace) {
            bail!("bad banner line {line:?}");
        }
        if let Some(want) = &self.cfg.name {
            if &name != want {
                bail!("asked for --name {want}, client says connected as {name}");
            }
        }
        let port = self.server_port;
        let scheme = self.cfg.public_scheme();
        let expected = [
            format!("{scheme}://{name}.localhost:{port}/"),
            format!("{scheme}://localhost:{port}/t/{name}/"),
        ];
        for want in &expected {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let fwd = self.proc.next_line(left).await.context("Forwarding line")?;
            let f: Vec<&str> = fwd.split_whitespace().collect();
            if f.len() != 4 || f[0] != "Forwarding" || f[2] != "->" {
                bail!("expected `Forwarding  URL -> LOCAL`, got {fwd:?}");
            }
            if f[1] != want {
                bail!("expected public URL {want}, client printed {fwd:?}");
            }
        }
        self.name = name.clone();
        Ok(name)
    }

    /// Waits for the per-request line whose id is `request_id`.
    pub async fn wait_request_line(
        &mut self,
        request_id: &str,
        limit: Duration,
    ) -> Result<RequestLine> {
        let line = self
            .proc
            .wait_line(&format!("request line for {request_id}"), limit, |l| {
                RequestLine::parse(l).is_some_and(|r| r.id == request_id)
            })
            .await?;
        RequestLine::parse(&line).context("re-parsing the request line")
    }

    pub fn server_port(&self) -> u16 {
        self.server_port
    }

    /// The public listener (the server's address).
    pub fn public_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.server_port))
    }

    /// A request builder for `path_and_query` on this tunnel.
    pub fn request(
        &self,
        routing: Routing,
        method: &str,
        path_and_query: &str,
    ) -> http::request::Builder {
        public_request(
            self.server_port,
            &self.name,
            routing,
            method,
            path_and_query,
        )
    }

    /// `(request-target, Host)` for `path_and_query` on this tunnel.
    pub fn target(&self, routing: Routing, path_and_query: &str) -> (String, String) {
        public_target(self.server_port, &self.name, routing, path_and_query)
    }
}

/// `relay start ARGS... --server S` for `cfg`'s config dir, after writing
/// `relay_toml` as its `relay.toml` (next to `config.toml`).
pub fn start_command(cfg: &ClientConfig, relay_toml: &str, args: &[&str]) -> Result<Command> {
    let path = cfg.home.join("relay.toml");
    std::fs::create_dir_all(&cfg.home)
        .with_context(|| format!("creating {}", cfg.home.display()))?;
    std::fs::write(&path, relay_toml).with_context(|| format!("writing {}", path.display()))?;
    let mut cmd = process::command(&bins::relay_client(), None);
    cmd.arg("start").args(args).arg("--server").arg(&cfg.server);
    cfg.env(&mut cmd);
    Ok(cmd)
}

/// The next stdout line of a `--json` client as an event object; a line
/// that is not a JSON object with a `type` is an error (stdout must carry
/// events only).
pub async fn next_event(proc: &mut Proc, limit: Duration) -> Result<serde_json::Value> {
    let line = proc.next_line(limit).await?;
    let event: serde_json::Value = serde_json::from_str(&line)
        .with_context(|| format!("a --json stdout line is not JSON: {line:?}"))?;
    if !event.get("type").is_some_and(serde_json::Value::is_string) {
        bail!("a --json stdout line has no type: {line:?}");
    }
    Ok(event)
}

/// Reads events until one of type `kind` satisfies `pred`; the others
/// read on the way are returned with it, in order.
pub async fn wait_event(
    proc: &mut Proc,
    kind: &str,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Result<(serde_json::Value, Vec<serde_json::Value>)> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = next_event(proc, left)
            .await
            .with_context(|| format!("waiting for a {kind} event; before it: {before:?}"))?;
        if event["type"] == kind && pred(&event) {
            return Ok((event, before));
        }
        before.push(event);
    }
}
