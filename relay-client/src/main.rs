//! `relay`: the client. `connect` runs a tunnel; `login` saves credentials.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use http::Uri;
use relay_shared::protocol::Token;
use relay_shared::TunnelName;
use tracing_subscriber::EnvFilter;

mod cli;
mod forward;
mod output;
mod session;
mod settings;

use cli::{Cli, Command, ConnectArgs};
use settings::Settings;

const DEFAULT_SERVER: &str = "http://localhost:8080";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Connect(args) => connect(args),
        Command::Login { server, token } => login(server, token),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {e:#}");
            ExitCode::FAILURE
        }
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
    s.save(&path)?;
    println!("saved server and token to {}", path.display());
    Ok(())
}

fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    let target = forward::LocalTarget::parse(&args.target).map_err(anyhow::Error::msg)?;
    let path = settings::config_path()?;
    let mut s = Settings::load(&path)?;
    let mut dirty = false;
    let client_id = match &s.client_id {
        Some(id) => id.clone(),
        None => {
            use rand::RngExt;
            let bytes: [u8; 16] = rand::rng().random();
            let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            s.client_id = Some(id.clone());
            dirty = true;
            id
        }
    };
    let name = match args.name {
        Some(n) => TunnelName::parse(&n).with_context(|| format!("--name {n:?}"))?,
        None => match s.name.as_deref().map(TunnelName::parse) {
            Some(Ok(n)) => n,
            _ => {
                let n = TunnelName::generate();
                s.name = Some(n.to_string());
                dirty = true;
                n
            }
        },
    };
    if dirty {
        s.save(&path).with_context(|| {
            "saving the generated name (the URL would change every run otherwise)"
        })?;
    }
    let server = args
        .server
        .or_else(|| s.server.clone())
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let token = args.token.or_else(|| s.token.clone()).map(Token::new);
    let cfg = session::SessionConfig {
        server: parse_server(&server)?,
        token,
        name: name.to_string(),
        client_id,
        ca_cert: args.ca_cert,
    };
    let _ = (args.inspect, args.no_inspect);
    let runtime = runtime().context("starting the runtime")?;
    runtime.block_on(async move {
        let output = output::Output::start();
        let forwarder = forward::Forwarder::new(target, output.clone());
        session::run(cfg, forwarder, output, stop_signal()).await
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

/// One worker per CPU; on a single CPU (a small VM, or pinned with taskset)
/// the current-thread scheduler, which skips cross-thread wake-ups that a
/// lone worker gains nothing from.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}
