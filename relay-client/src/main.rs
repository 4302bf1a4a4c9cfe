//! `relay`: the client. `connect` runs a tunnel (and the inspector page);
//! `requests` and `replay` work on the server's captures; `login` saves
//! credentials.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use relay_shared::TunnelName;
use tracing_subscriber::EnvFilter;

use relay_client::{
    account, cli, edit, export, missed, output, replay, requests, resolve, running, settings, show,
    target, tunnels,
};

use std::io::Write;

use cli::{
    Cli, Command, ConnectArgs, ExportArgs, PickArgs, ReplayArgs, RequestsArgs, RequestsCommand,
    ShowArgs,
};
use resolve::{parse_server, Resolved};
use settings::Settings;

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
        Command::Start(args) => start(args).map(|()| ExitCode::SUCCESS),
        Command::Requests(args) => requests_cmd(args).map(|()| ExitCode::SUCCESS),
        Command::Replay(args) => replay_cmd(args),
        Command::Login {
            server,
            token,
            ca_cert,
        } => login(&server, &token, ca_cert.as_deref()).map(|()| ExitCode::SUCCESS),
        Command::Status { server } => status(server),
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

fn login(server: &str, token: &str, ca_cert: Option<&std::path::Path>) -> anyhow::Result<()> {
    parse_server(server)?;
    println!("{}", account::login(server, token, ca_cert)?);
    Ok(())
}

fn status(args: cli::ServerArgs) -> anyhow::Result<ExitCode> {
    let status = account::status(args.server, args.token, args.ca_cert.as_deref())?;
    print!("{}", status.render());
    Ok(if status.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What `relay requests` / `relay replay` act for (see [`resolve`]), with
/// a note on stderr when several `relay connect` run.
fn pick(args: &PickArgs) -> anyhow::Result<(Settings, Resolved)> {
    let path = settings::config_path()?;
    let s = Settings::load(&path)?;
    let running = running::list(&running::dir_for(&path));
    let resolved = resolve::resolve(args.name.as_deref(), &args.server, &s, &running)?;
    if let Some(note) = &resolved.note {
        eprintln!("relay: {note}");
    }
    Ok((s, resolved))
}

fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    raise_fd_limit();
    let mut target = target::LocalTarget::parse(&args.target).map_err(anyhow::Error::msg)?;
    if args.insecure_local {
        if target.is_tls() {
            eprintln!(
                "relay: --insecure-local: any certificate {} shows is accepted (for the local app only)",
                target.base
            );
        }
        target.insecure = true;
    }
    target.host_header = args.host_header.clone().unwrap_or_default();
    let edge = args.edge.rules().map_err(anyhow::Error::msg)?;
    let name = args
        .tunnel
        .name
        .as_deref()
        .map(|n| TunnelName::parse(n).with_context(|| format!("--name {n:?}")))
        .transpose()?;
    let server = &args.tunnel.server;
    let spec = tunnels::Spec {
        name,
        target,
        server: server.server.clone(),
        token: server.token.clone(),
        ca_cert: server.ca_cert.clone(),
        when_offline: args.when_offline.into(),
        deliver_missed: args.deliver_missed,
        edge,
        forward: args.forward_options(),
    };
    let opts = tunnels::ServeOptions {
        inspect: cli::inspect_at(args.no_inspect, args.inspect, args.inspect_first_port),
        mode: output_mode(args.json),
    };
    tunnels::serve(vec![spec], &settings::config_path()?, opts)
}

fn start(args: cli::StartArgs) -> anyhow::Result<()> {
    raise_fd_limit();
    relay_client::start::start(&args, &settings::config_path()?)
}

fn output_mode(json: bool) -> output::Mode {
    if json {
        output::Mode::Json
    } else {
        output::Mode::Human
    }
}

fn requests_cmd(args: RequestsArgs) -> anyhow::Result<()> {
    match args.command {
        Some(RequestsCommand::Show(show)) => return show_cmd(show),
        Some(RequestsCommand::Export(export)) => return export_cmd(export),
        None => {}
    }
    let (_, resolved) = pick(&args.tunnel)?;
    let api = resolved.api(args.tunnel.server.ca_cert.as_deref())?;
    let filter = requests::Filter {
        limit: args.limit,
        method: args.method.clone(),
        status: args.status,
        outcome: args.outcome.clone(),
        path: args.path.clone(),
        missed: args.missed,
    };
    let runtime = relay_shared::rt::runtime()?;
    if args.follow {
        let format = if args.json {
            requests::Format::Json
        } else {
            requests::Format::Table
        };
        return runtime.block_on(async {
            tokio::select! {
                r = requests::follow(&api, &filter, format) => r,
                () = tunnels::stop_signal() => Ok(()),
            }
        });
    }
    let page = runtime.block_on(api.list(&filter.query()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for r in &page.requests {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
    } else if page.requests.is_empty() && args.missed {
        writeln!(out, "no missed requests waiting for {}", api.name())?;
    } else if page.requests.is_empty() {
        writeln!(out, "no captured requests for {} yet", api.name())?;
    } else {
        out.write_all(
            output::requests_table(&page.requests, relay_client::localtime::zone()).as_bytes(),
        )?;
    }
    Ok(())
}

fn show_cmd(args: ShowArgs) -> anyhow::Result<()> {
    let (_, resolved) = pick(&args.tunnel)?;
    let api = resolved.api(args.tunnel.server.ca_cert.as_deref())?;
    let record = relay_shared::rt::runtime()?.block_on(api.get(&args.id))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&record)?)?;
    } else if args.raw {
        out.write_all(&show::raw(&record))?;
        for (side, m) in [
            ("request", Some(&record.request)),
            ("response", record.response.as_ref()),
        ] {
            if let Some(m) = m.filter(|m| m.body_truncated) {
                eprintln!(
                    "relay: the {side} body is truncated: {} of {} bytes were captured",
                    m.body.len(),
                    m.body_size
                );
            }
        }
    } else {
        out.write_all(show::render(&record).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// `relay requests export`: every record is fetched before anything is
/// printed or written, so an unknown id leaves no half an export.
fn export_cmd(args: ExportArgs) -> anyhow::Result<()> {
    let (_, resolved) = pick(&args.tunnel)?;
    let api = resolved.api(args.tunnel.server.ca_cert.as_deref())?;
    let to = args.to.clone().or(resolved.target.clone());
    let local = to
        .as_deref()
        .map(|t| target::LocalTarget::parse(t).map_err(anyhow::Error::msg))
        .transpose()?;
    let records =
        relay_shared::rt::runtime()?.block_on(export::fetch(&api, &args.ids, args.limit))?;
    let mut out = std::io::stdout().lock();
    match args.format {
        export::Format::Ndjson => {
            for r in &records {
                writeln!(out, "{}", export::ndjson_line(r)?)?;
            }
        }
        export::Format::Har => {
            let doc = export::har(&records, local.as_ref().map(|t| t.base.as_str()));
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        export::Format::Curl => {
            let local = local.context(
                "no local app to send them to: pass --to PORT (or run `relay connect PORT` once)",
            )?;
            for r in &records {
                let c = export::curl(r, &local.base, &args.out_dir);
                if let Some(bytes) = &c.body_file {
                    std::fs::create_dir_all(&args.out_dir)
                        .with_context(|| format!("creating {}", args.out_dir.display()))?;
                    std::fs::write(&c.body_path, bytes)
                        .with_context(|| format!("writing {}", c.body_path.display()))?;
                }
                if let Some(why) = &c.refused {
                    eprintln!("relay: request {}: {why}", r.summary.id);
                }
                out.write_all(c.text.as_bytes())?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn replay_cmd(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let (settings, resolved) = pick(&args.tunnel)?;
    let api = resolved.api(args.tunnel.server.ca_cert.as_deref())?;
    let to =
        args.to.clone().or(resolved.target.clone()).context(
            "no local app to send it to: pass --to PORT (or run `relay connect PORT` once)",
        )?;
    let mut target = target::LocalTarget::parse(&to).map_err(anyhow::Error::msg)?;
    target.insecure = args.insecure_local;
    let runtime = relay_shared::rt::runtime()?;
    // Everything the edits need is read before the request is fetched, so
    // a bad --body file fails before any network call.
    let mut flags = edit_flags(&args.edit)?;
    let fresh = match &args.fresh_token {
        Some(name) => {
            let (name, profile) = relay_client::fresh_token::pick(&settings.profiles, Some(name))?;
            let token = runtime
                .block_on(profile.fetch(args.tunnel.server.ca_cert.as_deref()))
                .with_context(|| format!("--fresh-token (profile {name})"))?;
            eprintln!("relay: sending a fresh access token from profile {name}");
            Some(("Authorization".to_owned(), format!("Bearer {token}")))
        }
        None => None,
    };
    if args.missed {
        let set_headers = fresh.into_iter().collect();
        return runtime.block_on(replay_missed(&api, &target, &args, set_headers));
    }
    let fresh_token = fresh.is_some();
    flags.set.extend(fresh);
    let record = runtime.block_on(async {
        let id = match &args.id {
            Some(id) => id.clone(),
            None => replay::last_id(&api).await?,
        };
        api.get(&id).await
    })?;
    let mut edits = flags.edits(&record, args.force);
    if args.edit.edit {
        replay::check_truncated(&record, &edits)?;
        let visual = std::env::var("VISUAL").ok();
        let editor = std::env::var("EDITOR").ok();
        let command = edit::editor_command(visual.as_deref(), editor.as_deref())
            .ok_or(edit::EditFailed::NoEditor)?;
        let draft = edit::edit(&edit::Draft::new(&record, &edits), &command)?;
        edits = draft.into_edits(args.force);
    }
    edits.diff = args.diff;
    // Said before sending: a 401 from the app then explains itself.
    let headers = edits.headers.as_ref().unwrap_or(&record.request.headers);
    if let Some(w) = relay_client::provider::expired_bearer_warning(
        headers,
        std::time::SystemTime::now(),
        relay_client::localtime::zone(),
    )
    .filter(|_| !fresh_token)
    {
        eprintln!("{w}");
    }
    let result = runtime.block_on(replay::replay_record(&api, &target, record, edits, None))?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print!("{}", replay::describe(&result));
        if let Some(d) = &result.diff {
            print!("{}", relay_client::diff::describe(d, &result.replay_of));
        }
    }
    Ok(if result.outcome == relay_shared::api::Outcome::Delivered {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The edit flags with `--body` read.
fn edit_flags(args: &cli::EditArgs) -> anyhow::Result<edit::Flags> {
    Ok(edit::Flags {
        set: args.headers.clone(),
        remove: args.remove_headers.clone(),
        method: args.method.clone(),
        path: args.path.clone(),
        body: args
            .body
            .as_deref()
            .map(|b| edit::BodySource::parse(b).read())
            .transpose()?,
    })
}

/// `relay replay --missed`: a line (or with `--json` a replay result) per
/// request as it is delivered; non-zero exit when the run stopped early.
async fn replay_missed(
    api: &relay_client::api::Api,
    target: &target::LocalTarget,
    args: &ReplayArgs,
    set_headers: Vec<(String, String)>,
) -> anyhow::Result<ExitCode> {
    let opts = missed::Options {
        within: args.since.map(Into::into),
        force: args.force,
        set_headers,
    };
    let json = args.json;
    // Ctrl-C / SIGTERM stops after the request being delivered, which is
    // recorded: quitting mid-request would leave it claimed (the others
    // blocked) for the claim's lease. A second one quits at once.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tunnels::stop_signal().await;
        eprintln!(
            "relay: stopping after the request being delivered (press Ctrl-C again to quit now)"
        );
        let _ = stop_tx.send(true);
        tunnels::stop_signal().await;
        std::process::exit(130);
    });
    let report = missed::deliver(api, target, opts, Some(&stop), |s, r| {
        if json {
            match serde_json::to_string(r) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("relay: {e}"),
            }
        } else {
            println!(
                "{}",
                missed::format_delivery(s, r, std::time::SystemTime::now())
            );
        }
    })
    .await?;
    match &report.stopped {
        Some(stopped) => {
            eprintln!("relay: {}", stopped.message);
            Ok(ExitCode::FAILURE)
        }
        None => {
            if json {
                eprintln!("relay: {}", report.done_line());
            } else {
                println!("{}", report.done_line());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
