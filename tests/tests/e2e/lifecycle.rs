//! Processes coming and going: client restart, server restart, client first, readiness.

use super::*;

/// A server and an origin, plus one client config with no `--name` (the
/// client generates and saves one) and the URL form of the target; the
/// stack keeps the processes and temp dirs alive.
async fn generated_name() -> Result<(Stack<ClientConfig>, ClientConfig)> {
    let stack = Stack::builder().offline().start().await?;
    let mut cfg = stack.client.clone();
    cfg.target = format!("http://127.0.0.1:{}", stack.origin.port());
    Ok((stack, cfg))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_restart_keeps_generated_name() -> Result<()> {
    run_test(secs(60), async {
        let (_stack, cfg) = generated_name().await?;
        let mut first = RelayClient::connect(cfg.clone()).await?;
        echo_ok(&first, Routing::Host).await?;
        let name = first.name.clone();
        first.proc.kill().await?;
        drop(first);

        let second = RelayClient::connect(cfg)
            .await
            .context("second run with the same config")?;
        assert_eq!(
            second.name, name,
            "generated name changed across client runs"
        );
        echo_ok(&second, Routing::Host).await?;
        echo_ok(&second, Routing::Path).await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_after_server_restart() -> Result<()> {
    run_test(secs(90), async {
        let mut s = Stack::builder().name("comeback").start().await?;
        echo_ok(&s.client, Routing::Host).await?;
        let status = s.server.terminate(secs(15)).await?;
        ensure!(
            status.success(),
            "relay-server exited with {status} on SIGTERM"
        );

        let mut cfg = s.server.config().clone();
        cfg.listen = s.server.addr().to_string();
        s.server = RelayServer::start(cfg)
            .await
            .context("restarting on the same port and data dir")?;

        let name = s
            .client
            .wait_connected(secs(45))
            .await
            .context("client reconnect banner")?;
        assert_eq!(name, "comeback");
        echo_ok(&s.client, Routing::Host).await?;
        echo_ok(&s.client, Routing::Path).await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_started_before_server_connects_when_it_appears() -> Result<()> {
    run_test(secs(60), async {
        let sandbox = Sandbox::new()?;
        let origin = Origin::start().await?;
        // Refuses the client's connections until the server takes it.
        let reserved = ReservedPort::new()?;
        let port = reserved.port();
        let cfg = ClientConfig::new(
            origin.port().to_string(),
            format!("http://127.0.0.1:{port}"),
            sandbox.subdir("home")?,
        )
        .name("early");
        let proc = RelayClient::spawn(&cfg)?;
        let mut server_cfg = ServerConfig::new(sandbox.subdir("data")?);
        server_cfg.listen = format!("127.0.0.1:{port}");
        let _server = RelayServer::start(server_cfg).await?;
        let mut client = RelayClient::from_proc(cfg, proc)?;
        client.wait_connected(secs(45)).await?;
        echo_ok(&client, Routing::Host).await?;
        Ok(())
    })
    .await
}

/// The banner is the client's readiness signal: a request sent right after
/// `relay connected as NAME` must reach the tunnel (not 404). Repeated to
/// catch a registration race between the welcome and the routing table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_is_routable_as_soon_as_banner_is_printed() -> Result<()> {
    run_test(secs(90), async {
        let s = Stack::builder().offline().start().await?;
        // Clients connect concurrently: load widens any gap between the
        // banner and the tunnel being registered.
        let mut tasks = Vec::new();
        for i in 0..10 {
            let name = format!("ready{i}");
            let cfg = s.client_config(&name)?.name(&name);
            tasks.push(tokio::spawn(async move {
                let client = RelayClient::connect(cfg).await?;
                echo_ok(&client, Routing::Host)
                    .await
                    .with_context(|| format!("{name}: request right after the banner"))
            }));
        }
        all_ok(tasks, "fresh tunnels (routable right after their banner)").await?;
        Ok(())
    })
    .await
}

/// Two `relay connect` sharing one config (same client id, same generated
/// name): the newer one gets the tunnel and the older one stops with a
/// clear message, instead of the two evicting each other in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_client_with_the_same_config_takes_over_and_the_first_stops() -> Result<()> {
    run_test(secs(60), async {
        let (_stack, cfg) = generated_name().await?;
        let mut first = RelayClient::connect(cfg.clone()).await?;
        let second = RelayClient::connect(cfg).await?;
        assert_eq!(second.name, first.name, "same config, same name");

        let status = first.proc.wait_exit(secs(10)).await?;
        assert!(!status.success(), "the replaced client must exit non-zero");
        let stderr = first.proc.stderr_text();
        assert!(
            stderr.contains("took over"),
            "the replaced client must say why it stopped; stderr: {stderr}"
        );
        echo_ok(&second, Routing::Host).await?;
        echo_ok(&second, Routing::Path).await?;
        Ok(())
    })
    .await
}
