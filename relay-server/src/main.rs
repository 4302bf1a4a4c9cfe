//! `relay-server`: parse flags, install tracing, bind, print the bound
//! address, run until SIGINT/SIGTERM, reload the certificate on SIGHUP.
//! Also the `token` subcommands.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use relay_server::config::{Cli, Command, Config, TokenAction};
use relay_server::store::Store;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// jemalloc: captures are built on the runtime thread and freed on the
/// capture writer's; glibc's malloc pays for that hand-over with arena
/// locking and consolidation (about 2 µs per request at 20k req/s here),
/// jemalloc's thread caches do not.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Below this many file descriptors the server warns at start: each
/// tunnel and each visitor connection holds one, so 4096 is a few
/// thousand of them at once.
const FEW_FDS: u64 = 4096;

/// humantime formats RFC 3339 only up to the year 9999 (an error past it).
const MAX_PRINTABLE_SECS: u64 = 253_402_300_799;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Some(Command::Token { action }) => {
            relay_server::store::StoreLocation::parse(cli.store.as_deref(), &cli.data_dir)
                .and_then(|at| token(&at, action))
        }
        None => serve(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,relay_server=info,relay_shared=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn serve(cli: Cli) -> anyhow::Result<()> {
    let config = Config::from_args(&cli.serve, cli.data_dir)?.with_store(cli.store.as_deref())?;
    raise_fd_limit();
    let runtime = relay_shared::rt::runtime().context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cli.serve.listen)
            .await
            .with_context(|| format!("binding {}", cli.serve.listen))?;
        let addr = listener.local_addr()?;
        let (domain, open, store) = (config.domain.clone(), config.open, config.store.to_string());
        let metrics = match config.metrics_listen {
            Some(at) => Some(relay_server::metrics::bind(at).await?),
            None => None,
        };
        let node = match &config.cluster {
            Some(c) => Some(
                tokio::net::TcpListener::bind(c.listen)
                    .await
                    .with_context(|| format!("binding --node-listen {}", c.listen))?,
            ),
            None => None,
        };
        let stop = CancellationToken::new();
        let mut server = relay_server::Server::new(config, listener, stop.clone())?;
        // Before the listening line: from then on a SIGHUP (certbot's
        // renewal hook) must reload, not kill the server.
        #[cfg(unix)]
        reload_on_hangup(server.reloader())?;
        // The one line scripts and tests wait for: the address really bound,
        // printed once the server can answer; then where visitors reach it,
        // when that is another URL (a reverse proxy's).
        let mut stdout = std::io::stdout();
        write!(stdout, "relay-server listening on {}://{addr}", server.scheme())?;
        if let Some(public) = server.public_url() {
            write!(stdout, " (public URL {public})")?;
        }
        writeln!(stdout)?;
        if let Some((listener, at)) = metrics {
            if !at.ip().is_loopback() {
                tracing::warn!(%at, "metrics are served to other hosts (--metrics-public); firewall the port");
            }
            server = server.with_metrics_listener(listener);
            writeln!(
                stdout,
                "relay-server metrics on http://{at}{}",
                relay_server::metrics::METRICS_PATH
            )?;
        }
        if let Some(listener) = node {
            let at = listener.local_addr()?;
            writeln!(
                stdout,
                "relay-server node {} listening on http://{at} for other nodes",
                server.node_id().unwrap_or_default()
            )?;
            server = server.with_node_listener(listener);
        }
        stdout.flush()?;
        tracing::info!(%addr, %domain, open, %store, "listening");
        tokio::spawn(stop_on_signal(stop));
        server.run().await;
        Ok(())
    })
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Every tunnel and
/// visitor connection holds a descriptor; the usual soft limit of 1024
/// would turn the thousandth or so into EMFILE while the hard limit
/// (524288 by default under systemd; `LimitNOFILE` in the unit) allows
/// far more. Soft below hard exists for programs that still use
/// `select(2)`, which this one does not.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < FEW_FDS => tracing::warn!(
            limit,
            "few file descriptors: tunnels and visitors beyond about this many at once \
             must wait; raise the hard limit (ulimit -Hn, LimitNOFILE= in the systemd unit)"
        ),
        Ok(limit) => tracing::info!(limit, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
}

/// SIGHUP re-reads the certificate files; without them it is ignored
/// (and logged), never the end of the server.
#[cfg(unix)]
fn reload_on_hangup(reloader: Option<relay_server::tls::Reloader>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match &reloader {
                Some(r) => {
                    let r = r.clone();
                    let _ = tokio::task::spawn_blocking(move || r.reload("SIGHUP")).await;
                }
                None => tracing::info!("SIGHUP: no certificate files to reload"),
            }
        }
    });
    Ok(())
}

async fn stop_on_signal(stop: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    stop.cancel();
}

/// A stored Unix time as `2026-12-05T18:51:10Z`; a time no calendar can
/// show (a damaged row) prints raw.
fn utc_seconds(secs: i64) -> String {
    u64::try_from(secs)
        .ok()
        .filter(|s| *s <= MAX_PRINTABLE_SECS)
        .map_or_else(
            || secs.to_string(),
            |s| {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
                humantime::format_rfc3339_seconds(at).to_string()
            },
        )
}

/// `app, api (2 of 3)`: the names a token claimed, and its cap if any.
fn names_column(names: &[String], max: Option<u32>) -> String {
    let list = if names.is_empty() {
        "-".to_owned()
    } else {
        names.join(", ")
    };
    match max {
        Some(max) => format!("{list} ({} of {max})", names.len()),
        None => list,
    }
}

fn token(at: &relay_server::store::StoreLocation, action: TokenAction) -> anyhow::Result<()> {
    let store = Store::open_at(at)?;
    match action {
        TokenAction::Create { label, max_names } => {
            let (id, secret) = store.create_token(label.as_deref(), max_names)?;
            println!("{secret}");
            eprintln!("token {id} created; it is shown only once. Use it with: relay login --server URL --token {secret}");
        }
        TokenAction::List => {
            println!(
                "{:<6} {:<20} {:<21} {:<21} {:<8} NAMES",
                "ID", "LABEL", "CREATED (UTC)", "LAST USED (UTC)", "STATUS"
            );
            for t in store.list_tokens()? {
                let status = if t.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<6} {:<20} {:<21} {:<21} {:<8} {}",
                    t.id,
                    t.label.as_deref().unwrap_or_default(),
                    utc_seconds(t.created_at),
                    t.last_used_at
                        .map_or_else(|| "never".to_owned(), utc_seconds),
                    status,
                    names_column(&t.names, t.max_names),
                );
            }
        }
        TokenAction::Revoke { id } => {
            if !store.revoke_token(id)? {
                anyhow::bail!("no active token with id {id}");
            }
            println!("token {id} revoked; a running server ends its sessions within seconds");
        }
    }
    Ok(())
}
