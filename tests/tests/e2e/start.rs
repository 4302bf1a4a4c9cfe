//! `relay start` (SPEC "relay connect", config file): the tunnels of
//! `relay.toml` in one process, each with its own local app, found by
//! `relay requests --name`; a subset by name; clear errors for an unknown
//! name and a bad file.

use relay_tests::cli::{self, run_command, Tunnel};
use relay_tests::client::start_command;
use relay_tests::process::Proc;

use super::*;

/// Two origins, a server, and a client config dir (no client yet).
struct Two {
    a: Origin,
    b: Origin,
    server: RelayServer,
    cfg: ClientConfig,
    _sandbox: Sandbox,
}

async fn two() -> Result<Two> {
    let sandbox = Sandbox::new()?;
    let a = Origin::start().await?;
    let b = Origin::start().await?;
    let server = RelayServer::start(ServerConfig::new(sandbox.subdir("server-data")?)).await?;
    let cfg = ClientConfig::new("unused", server.url(), sandbox.subdir("client-home")?);
    Ok(Two {
        a,
        b,
        server,
        cfg,
        _sandbox: sandbox,
    })
}

impl Two {
    fn relay_toml(&self) -> String {
        format!(
            "# two apps\n[tunnels.alpha]\ntarget = {}\n\n[tunnels.beta]\ntarget = \"127.0.0.1:{}\"\n",
            self.a.port(),
            self.b.port()
        )
    }

    /// GET `path` on tunnel `name`'s host-routed URL.
    async fn get(&self, name: &str, path: &str) -> Result<Fetched> {
        let req = public_request(self.server.port(), name, Routing::Host, "GET", path)
            .body(relay_tests::http::empty())?;
        fetch(self.server.addr(), req, REQ).await
    }
}

/// Waits for `relay connected as NAME` (after an optional name prefix).
async fn wait_banner(p: &mut Proc, name: &str) -> Result<String> {
    let want = format!("relay connected as {name}");
    p.wait_line(&want.clone(), secs(20), |l| l.trim_start().ends_with(&want))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_runs_every_tunnel_and_requests_finds_each_by_name() -> Result<()> {
    run_test(secs(90), async {
        let t = two().await?;
        let cmd = start_command(&t.cfg, &t.relay_toml(), &["--no-inspect"])?;
        let mut p = Proc::spawn("relay start", cmd)?;
        // With several tunnels every line starts with the tunnel's name;
        // the two connect at once, so their banners come in either order.
        let mut banners = Vec::new();
        p.wait_line("both banners", secs(20), |l| {
            if l.contains("relay connected as") {
                banners.push(l.to_owned());
            }
            banners.len() == 2
        })
        .await?;
        banners.sort();
        ensure!(
            banners
                == [
                    "alpha  relay connected as alpha",
                    "beta   relay connected as beta"
                ],
            "{banners:?}"
        );

        let fa = t.get("alpha", "/echo?to=alpha").await?;
        let fb = t.get("beta", "/echo?to=beta").await?;
        ensure!(fa.status == StatusCode::OK && fb.status == StatusCode::OK);
        ensure!(
            t.a.requests() == ["/echo?to=alpha"] && t.b.requests() == ["/echo?to=beta"],
            "each tunnel forwards to its own app: a {:?}, b {:?}",
            t.a.requests(),
            t.b.requests()
        );
        let id_a = fa.request_id().context("request id")?;
        let line = p
            .wait_line("alpha's request line", REQ, |l| l.ends_with(&id_a))
            .await?;
        ensure!(line.starts_with("alpha  "), "{line:?}");

        // One running entry per tunnel: `relay requests --name` finds each
        // tunnel's server with no --server flag.
        for (name, path, other) in [
            ("alpha", "/echo?to=alpha", "/echo?to=beta"),
            ("beta", "/echo?to=beta", "/echo?to=alpha"),
        ] {
            let out = run_command(
                cli::command(&t.cfg, Tunnel::Saved, "requests", &["--name", name]),
                CLI,
            )
            .await?;
            out.ensure_success()?;
            ensure!(
                out.stdout.contains(path) && !out.stdout.contains(other),
                "`relay requests --name {name}`:\n{}",
                out.dump()
            );
        }
        let running = std::fs::read_dir(t.cfg.home.join("running"))?.count();
        ensure!(running == 2, "{running} running files, want 2");

        // Ctrl-C / SIGTERM stops both, cleanly, and removes their entries.
        p.signal("TERM")?;
        let status = p.wait_exit(secs(20)).await?;
        ensure!(status.success(), "relay start exited with {status}");
        let running = std::fs::read_dir(t.cfg.home.join("running"))?.count();
        ensure!(running == 0, "{running} running files left");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_with_a_name_runs_only_that_tunnel() -> Result<()> {
    run_test(secs(60), async {
        let t = two().await?;
        let cmd = start_command(&t.cfg, &t.relay_toml(), &["beta", "--no-inspect"])?;
        let mut p = Proc::spawn("relay start beta", cmd)?;
        // One tunnel: the lines are as `relay connect` prints them.
        let banner = wait_banner(&mut p, "beta").await?;
        ensure!(banner == "relay connected as beta", "{banner:?}");
        let fb = t.get("beta", "/echo?only=beta").await?;
        ensure!(fb.status == StatusCode::OK, "beta: {}", fb.status);
        let fa = t.get("alpha", "/echo?only=alpha").await?;
        ensure!(fa.status != StatusCode::OK, "alpha answered {}", fa.status);
        ensure!(
            t.a.requests().is_empty(),
            "alpha's app got {:?}",
            t.a.requests()
        );
        ensure!(
            !p.stdout_seen().iter().any(|l| l.contains("alpha")),
            "{:?}",
            p.stdout_seen()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_rejects_an_unknown_name_and_a_bad_relay_toml() -> Result<()> {
    run_test(secs(60), async {
        let t = two().await?;
        let toml_path = t.cfg.home.join("relay.toml").display().to_string();
        let run = |toml: String, args: &'static [&'static str]| {
            let cmd = start_command(&t.cfg, &toml, args);
            async move { run_command(cmd?, CLI).await }
        };

        let out = run(t.relay_toml(), &["gamma", "--no-inspect"]).await?;
        out.ensure_failure()?;
        ensure!(
            out.stderr.contains("\"gamma\"")
                && out.stderr.contains("alpha, beta")
                && out.stderr.contains(&toml_path),
            "{}",
            out.dump()
        );

        let bad_key = format!("[tunnels.alpha]\ntarget = {}\ntagret = 1\n", t.a.port());
        let out = run(bad_key, &["--no-inspect"]).await?;
        out.ensure_failure()?;
        ensure!(
            out.stderr.contains(&toml_path)
                && out.stderr.contains("[tunnels.alpha]")
                && out.stderr.contains("tagret"),
            "{}",
            out.dump()
        );

        let bad_target = "[tunnels.alpha]\ntarget = \"localhost\"\n".to_owned();
        let out = run(bad_target, &["--no-inspect"]).await?;
        out.ensure_failure()?;
        ensure!(
            out.stderr.contains(&toml_path) && out.stderr.contains("[tunnels.alpha] target:"),
            "{}",
            out.dump()
        );

        std::fs::remove_file(&toml_path)?;
        let mut cmd = cli::command(&t.cfg, Tunnel::Saved, "start", &["--no-inspect"]);
        cmd.arg("--server").arg(&t.cfg.server);
        let out = run_command(cmd, CLI).await?;
        out.ensure_failure()?;
        ensure!(
            out.stderr.contains(&toml_path) && out.stderr.contains("[tunnels.NAME]"),
            "{}",
            out.dump()
        );
        ensure!(t.a.requests().is_empty() && t.server.live_tunnels().await? == 0);
        Ok(())
    })
    .await
}
