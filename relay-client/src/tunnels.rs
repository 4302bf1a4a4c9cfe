//! One tunnel from its settings to its end, shared by `relay connect`
//! (one tunnel, from flags) and `relay start` (several, from
//! `relay.toml`): [`prepare`] settles names, server and identity and
//! writes the running files; [`run`] keeps one tunnel up (its session,
//! forwarder and missed-request delivery) until told to stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use relay_shared::protocol::{Token, WhenOffline};
use relay_shared::TunnelName;
use tokio::sync::watch;

use crate::api::Api;
use crate::forward_opts::ForwardOptions;
use crate::output::{Mode, Output};
use crate::resolve::{parse_server, Resolved, DEFAULT_SERVER};
use crate::settings::Settings;
use crate::target::LocalTarget;
use crate::{forward, inspector, missed, running, session};

/// How long a tunnel waits on exit for a missed request being delivered
/// to be answered and recorded (else it may be delivered again).
pub const AUTO_DELIVERY_FINISH: Duration = Duration::from_secs(10);

/// What one tunnel is asked to be, before the config file fills gaps.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `None`: the name generated once and saved in the config file.
    pub name: Option<TunnelName>,
    pub target: LocalTarget,
    /// `None`: the config file's, else [`DEFAULT_SERVER`].
    pub server: Option<String>,
    /// `None`: the config file's.
    pub token: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub when_offline: WhenOffline,
    pub deliver_missed: bool,
    /// Edge rules sent at every connect (empty: none, which clears any).
    pub edge: relay_shared::edge::EdgeRules,
    /// The caller deadline and the fault to play (`--deadline`,
    /// `--caller`, `--fault`); `--insecure-local` and `--host-header` sit
    /// on the target, since replays follow them too.
    pub forward: ForwardOptions,
}

/// A tunnel ready to run.
pub struct Tunnel {
    pub name: TunnelName,
    pub target: LocalTarget,
    pub server: http::Uri,
    pub token: Option<String>,
    pub client_id: String,
    pub ca_cert: Option<PathBuf>,
    pub when_offline: WhenOffline,
    pub deliver_missed: bool,
    pub edge: relay_shared::edge::EdgeRules,
    pub forward: ForwardOptions,
    pub api: Api,
    pub status: Arc<session::TunnelStatus>,
    /// While it exists, `relay requests` / `relay replay` act for this
    /// tunnel; removed when the tunnel is dropped.
    _running: Option<running::RunningFile>,
}

/// Fills each spec's gaps from the config file at `path` (generating and
/// saving a client id and a name on first use), records the first as
/// the last tunnel served (the default of `relay requests`), and writes a
/// running file per tunnel.
pub fn prepare(specs: Vec<Spec>, path: &Path) -> anyhow::Result<Vec<Tunnel>> {
    let mut s = Settings::load(path)?;
    let before = s.clone();
    if s.client_id.is_none() {
        use rand::RngExt;
        let bytes: [u8; 16] = rand::rng().random();
        s.client_id = Some(bytes.iter().map(|b| format!("{b:02x}")).collect());
    }
    let client_id = s.client_id.clone().unwrap_or_default();
    let several = specs.len() > 1;
    let mut planned = Vec::with_capacity(specs.len());
    for spec in specs {
        let name = match spec.name.clone() {
            Some(n) => n,
            None => match s.name.as_deref().map(TunnelName::parse) {
                Some(Ok(n)) => n,
                _ => {
                    let n = TunnelName::generate();
                    s.name = Some(n.to_string());
                    n
                }
            },
        };
        let server_text = spec
            .server
            .clone()
            .or_else(|| s.server.clone())
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let server = parse_server(&server_text)?;
        if planned.is_empty() {
            s.last_target = Some(spec.target.base.clone());
            s.last_name = Some(name.to_string());
            s.last_server = Some(server_text.clone());
        }
        planned.push((spec, name, server_text, server));
    }
    if s != before {
        s.save(path).with_context(|| {
            "saving the generated name (the URL would change every run otherwise)"
        })?;
    }
    let dir = running::dir_for(path);
    let mut tunnels = Vec::with_capacity(planned.len());
    for (spec, name, server_text, server) in planned {
        let token = spec.token.clone().or_else(|| s.token.clone());
        let resolved = Resolved {
            server: server.clone(),
            name: Some(name.clone()),
            token: token.clone(),
            client_id: Some(client_id.clone()),
            target: Some(spec.target.base.clone()),
            note: None,
        };
        let api = resolved.api(spec.ca_cert.as_deref())?;
        let entry = running::Running::now(name.to_string(), server_text, spec.target.base.clone());
        // One process serving several tunnels writes a file per tunnel.
        let stem = match several {
            true => format!("{}-{name}", entry.pid),
            false => entry.pid.to_string(),
        };
        let file = running::RunningFile::create_as(&dir, &stem, &entry)
            .map_err(|e| {
                eprintln!("relay: {e:#} (`relay requests` will not know {name} runs)");
            })
            .ok();
        tunnels.push(Tunnel {
            name,
            target: spec.target,
            server,
            token,
            client_id: client_id.clone(),
            ca_cert: spec.ca_cert,
            when_offline: spec.when_offline,
            deliver_missed: spec.deliver_missed,
            edge: spec.edge,
            forward: spec.forward,
            api,
            status: Arc::new(session::TunnelStatus::default()),
            _running: file,
        });
    }
    Ok(tunnels)
}

/// Where the inspector page listens.
#[derive(Debug, Clone, Copy)]
pub enum InspectAt {
    /// `--inspect ADDR`: that address or an error.
    Exactly(SocketAddr),
    /// The first free port from this one on (4040, 4041, ...).
    FirstFree(u16),
}

/// Starts one inspector page for all `tunnels`, printing its address;
/// `None` when no loopback port can be had (that costs the page, not the
/// tunnels).
pub async fn start_inspector(
    at: InspectAt,
    tunnels: &[Tunnel],
    output: &Output,
) -> anyhow::Result<Option<String>> {
    let bound = match at {
        InspectAt::Exactly(addr) => inspector::bind(addr).await,
        InspectAt::FirstFree(port) => inspector::bind_default(port).await,
    };
    match bound {
        Ok(listener) => {
            let url = format!("http://{}", listener.local_addr()?);
            let inspected = tunnels
                .iter()
                .map(|t| inspector::Inspected {
                    api: t.api.clone(),
                    target: t.target.clone(),
                    status: t.status.clone(),
                })
                .collect();
            tokio::spawn(inspector::serve(listener, inspected));
            if output.mode() == Mode::Human {
                output.line(format!("Inspector   {url}"));
            }
            Ok(Some(url))
        }
        Err(e) if !matches!(at, InspectAt::Exactly(addr) if !addr.ip().is_loopback()) => {
            output.error(&format!("inspector not started: {e:#}"));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Keeps `tunnel` up until `stop` turns true (or its sender is gone).
/// `inspector` is the page's address, for the `ready` event. A fatal
/// error (refused, bad certificate) is also printed as an `error` event
/// with `--json`.
pub async fn run(
    tunnel: Tunnel,
    output: Output,
    inspector: Option<String>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let auto = tunnel.deliver_missed.then(|| {
        missed::AutoDeliver::spawn(tunnel.api.clone(), tunnel.target.clone(), output.clone())
    });
    let cfg = session::SessionConfig {
        server: tunnel.server.clone(),
        token: tunnel.token.clone().map(Token::new),
        name: tunnel.name.to_string(),
        client_id: tunnel.client_id.clone(),
        ca_cert: tunnel.ca_cert.clone(),
        when_offline: tunnel.when_offline,
        edge: tunnel.edge.clone(),
        deliver_missed: auto.as_ref().map(missed::AutoDeliver::waker),
        status: tunnel.status.clone(),
        inspector,
    };
    if let Some(rules) = tunnel.edge.describe() {
        output.line(format!("Edge rules  {rules}"));
    }
    let forwarder =
        forward::Forwarder::with_options(tunnel.target.clone(), output.clone(), tunnel.forward);
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let ended = session::run(cfg, forwarder, output.clone(), stopped).await;
    if let Some(auto) = auto {
        auto.finish(AUTO_DELIVERY_FINISH).await;
    }
    if let Err(e) = &ended {
        if output.mode() == Mode::Json {
            output.error(&format!("{e:#}"));
        }
    }
    output.flush().await;
    ended
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn stop_signal() {
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

/// A stop flag that turns true on Ctrl-C / SIGTERM, for [`run`].
pub fn stop_on_signal() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    let on_signal = tx.clone();
    tokio::spawn(async move {
        stop_signal().await;
        let _ = on_signal.send(true);
    });
    (tx, rx)
}

/// How [`serve`] shows the tunnels.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Where the inspector page listens; `None`: no page.
    pub inspect: Option<InspectAt>,
    pub mode: Mode,
}

/// Runs `specs` in this process until Ctrl-C / SIGTERM: one runtime,
/// one output writer, one session (WebSocket) and forwarder per tunnel.
/// A fatal error of one tunnel stops them all and is returned.
pub fn serve(specs: Vec<Spec>, config: &Path, opts: ServeOptions) -> anyhow::Result<()> {
    let tunnels = prepare(specs, config)?;
    let several = tunnels.len() > 1;
    let runtime = relay_shared::rt::runtime().context("starting the runtime")?;
    runtime.block_on(async move {
        let output = Output::start(opts.mode);
        let width = several.then(|| tunnels.iter().map(|t| t.name.as_str().len()).max());
        let outputs: Vec<Output> = tunnels
            .iter()
            .map(|t| output.for_tunnel(t.name.as_str(), width.flatten()))
            .collect();
        // One page for every tunnel of the process.
        let inspector = match opts.inspect {
            Some(at) => start_inspector(at, &tunnels, &output).await?,
            None => None,
        };
        let (stop_all, stop) = stop_on_signal();
        let mut running = tokio::task::JoinSet::new();
        for (tunnel, out) in tunnels.into_iter().zip(outputs) {
            let name = tunnel.name.clone();
            let ended = run(tunnel, out, inspector.clone(), stop.clone());
            running.spawn(async move {
                match ended.await {
                    Err(e) if several => Err(e.context(format!("tunnel {name}"))),
                    other => other,
                }
            });
        }
        let mut failed = None;
        while let Some(joined) = running.join_next().await {
            let ended =
                joined.unwrap_or_else(|e| Err(anyhow::anyhow!("a tunnel task failed: {e}")));
            if let Err(e) = ended {
                if failed.is_none() {
                    let _ = stop_all.send(true);
                    failed = Some(e);
                }
            }
        }
        output.flush().await;
        failed.map_or(Ok(()), Err)
    })
}
