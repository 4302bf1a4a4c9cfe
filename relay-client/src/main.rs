//! `relay`: the client. `connect` runs a tunnel (and the inspector page);
//! `requests` and `replay` work on the server's captures; `login` saves
//! credentials.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use http::Uri;
use relay_shared::protocol::Token;
use relay_shared::TunnelName;
use tracing_subscriber::EnvFilter;

use relay_client::{api, cli, forward, inspector, net, output, replay, session, settings, target};

use std::io::Write;
use std::sync::Arc;

use cli::{Cli, Command, ConnectArgs, ReplayArgs, RequestsArgs, TunnelArgs};
use settings::Settings;

const DEFAULT_SERVER: &str = "http://localhost:8080";

/// jemalloc: the data path allocates and frees many short-lived buffers
/// (frames, heads, small bodies) per request; glibc's consolidation of
/// them showed as several percent of the client's CPU.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Connect(args) => connect(args).map(|()| ExitCode::SUCCESS),
        Command::Requests(args) => requests(args).map(|()| ExitCode::SUCCESS),
        Command::Replay(args) => replay_cmd(args),
        Command::Login { server, token } => login(server, token).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: each request in
/// flight holds a connection to the local app, and macOS starts programs
/// with a soft limit of 256 (Linux 1024) under a far higher hard one.
/// Whatever the limit, requests beyond it wait for a descriptor
/// (`fds.rs`) rather than fail.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
}

fn parse_server(s: &str) -> anyhow::Result<Uri> {
    let uri: Uri = s.parse().with_context(|| format!("{s:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => anyhow::bail!("server must be an http:// or https:// URL (got {s:?})"),
    }
}

fn login(server: String, token: String) -> anyhow::Result<()> {
    parse_server(&server)?;
    let path = settings::config_path()?;
    let mut s = Settings::load(&path)?;
    s.server = Some(server);
    s.token = Some(token);
    // Otherwise `relay requests` would keep asking the server of the last
    // `relay connect`, with the new server's token. (The last name stays:
    // it is most likely the one the user keeps using there.)
    s.last_server = None;
    s.save(&path)?;
    println!("saved server and token to {}", path.display());
    Ok(())
}

/// Server, tunnel name and identity, from flags, then the environment
/// (clap reads `RELAY_SERVER`/`RELAY_TOKEN`), then what the last `relay
/// connect` used, then the config file.
struct Resolved {
    server: Uri,
    name: Option<TunnelName>,
    token: Option<String>,
    client_id: Option<String>,
}

fn resolve(args: &TunnelArgs, s: &Settings) -> anyhow::Result<Resolved> {
    let server = args
        .server
        .clone()
        .or_else(|| s.last_server.clone())
        .or_else(|| s.server.clone())
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let name = match args
        .name
        .as_deref()
        .or(s.last_name.as_deref())
        .or(s.name.as_deref())
    {
        Some(n) => Some(TunnelName::parse(n).with_context(|| format!("tunnel name {n:?}"))?),
        None => None,
    };
    Ok(Resolved {
        server: parse_server(&server)?,
        name,
        token: args.token.clone().or_else(|| s.token.clone()),
        client_id: s.client_id.clone(),
    })
}

impl Resolved {
    /// The capture API of the resolved tunnel.
    fn api(&self, ca_cert: Option<&std::path::Path>) -> anyhow::Result<api::Api> {
        let name = self.name.as_ref().context(
            "no tunnel name: pass --name, or run `relay connect` once so the config file has one",
        )?;
        let identity = match (&self.token, &self.client_id) {
            (Some(t), _) => api::Identity::Token(t.clone()),
            (None, Some(id)) => api::Identity::ClientId(id.clone()),
            (None, None) => anyhow::bail!(
                "no identity: pass --token, or run `relay connect` once so the config file has a client id"
            ),
        };
        Ok(api::Api::new(
            net::ServerAddr::new(&self.server, ca_cert)?,
            name.to_string(),
            identity,
        ))
    }
}

fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    raise_fd_limit();
    let target = target::LocalTarget::parse(&args.target).map_err(anyhow::Error::msg)?;
    let path = settings::config_path()?;
    let mut s = Settings::load(&path)?;
    let before = s.clone();
    if s.client_id.is_none() {
        use rand::RngExt;
        let bytes: [u8; 16] = rand::rng().random();
        s.client_id = Some(bytes.iter().map(|b| format!("{b:02x}")).collect());
    }
    let name = match args.tunnel.name.as_deref() {
        Some(n) => TunnelName::parse(n).with_context(|| format!("--name {n:?}"))?,
        None => match s.name.as_deref().map(TunnelName::parse) {
            Some(Ok(n)) => n,
            _ => {
                let n = TunnelName::generate();
                s.name = Some(n.to_string());
                n
            }
        },
    };
    s.last_target = Some(target.base.clone());
    s.last_name = Some(name.to_string());
    s.last_server = Some(
        args.tunnel
            .server
            .clone()
            .or_else(|| s.server.clone())
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned()),
    );
    if s != before {
        s.save(&path).with_context(|| {
            "saving the generated name (the URL would change every run otherwise)"
        })?;
    }
    let mut resolved = resolve(&args.tunnel, &s)?;
    resolved.name = Some(name.clone());
    resolved.server = parse_server(s.last_server.as_deref().unwrap_or(DEFAULT_SERVER))?;
    let status = Arc::new(session::TunnelStatus::default());
    let cfg = session::SessionConfig {
        server: resolved.server.clone(),
        token: resolved.token.clone().map(Token::new),
        name: name.to_string(),
        client_id: resolved.client_id.clone().unwrap_or_default(),
        ca_cert: args.tunnel.ca_cert.clone(),
        when_offline: args.when_offline.into(),
        status: status.clone(),
    };
    let api = resolved.api(args.tunnel.ca_cert.as_deref())?;
    let runtime = relay_shared::rt::runtime().context("starting the runtime")?;
    runtime.block_on(async move {
        let output = output::Output::start();
        if !args.no_inspect {
            // A busy port (another `relay connect`) costs the page, not the
            // tunnel.
            match inspector::bind(args.inspect).await {
                Ok(listener) => {
                    let addr = listener.local_addr()?;
                    let inspector = Arc::new(inspector::Inspector {
                        api,
                        target: target.clone(),
                        status,
                    });
                    tokio::spawn(inspector::serve(listener, inspector));
                    output.line(format!("Inspector   http://{addr}"));
                }
                Err(e) if args.inspect.ip().is_loopback() => {
                    eprintln!("relay: inspector not started: {e:#}");
                }
                Err(e) => return Err(e),
            }
        }
        let forwarder = forward::Forwarder::new(target, output.clone());
        session::run(cfg, forwarder, output, stop_signal()).await
    })
}

fn requests(args: RequestsArgs) -> anyhow::Result<()> {
    let s = Settings::load(&settings::config_path()?)?;
    let api = resolve(&args.tunnel, &s)?.api(args.tunnel.ca_cert.as_deref())?;
    let query = form_query(&[
        ("limit", Some(args.limit.to_string())),
        ("method", args.method.clone()),
        ("status", args.status.map(|s| s.to_string())),
        ("outcome", args.outcome.clone()),
        ("path", args.path.clone()),
    ]);
    let page = relay_shared::rt::runtime()?.block_on(api.list(&query))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for r in &page.requests {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
    } else if page.requests.is_empty() {
        writeln!(out, "no captured requests for {} yet", api.name())?;
    } else {
        out.write_all(output::requests_table(&page.requests).as_bytes())?;
    }
    Ok(())
}

/// `k=v&...`, form-encoded, for the values present.
fn form_query(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

fn replay_cmd(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let s = Settings::load(&settings::config_path()?)?;
    let api = resolve(&args.tunnel, &s)?.api(args.tunnel.ca_cert.as_deref())?;
    let to =
        args.to.clone().or_else(|| s.last_target.clone()).context(
            "no local app to send it to: pass --to PORT (or run `relay connect PORT` once)",
        )?;
    let target = target::LocalTarget::parse(&to).map_err(anyhow::Error::msg)?;
    let result = relay_shared::rt::runtime()?.block_on(async {
        let id = match &args.id {
            Some(id) => id.clone(),
            None => replay::last_id(&api).await?,
        };
        let edits = relay_shared::api::ReplayEdits {
            force: args.force,
            ..Default::default()
        };
        replay::replay(&api, &target, &id, edits).await
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print!("{}", replay::describe(&result));
    }
    Ok(if result.outcome == relay_shared::api::Outcome::Delivered {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
