//! `deploy/nginx/cluster.conf` for real: nginx (Debian's) hashing on Host
//! in front of three nodes sharing one store. The node holding a session
//! is killed (`kill -9`); while its client is held stopped, requests for
//! the tunnel are answered by the surviving nodes as offline (202 queued,
//! `--when-offline accept`) and captured; the client then reconnects
//! through nginx to another node, takes the lease over (next epoch), the
//! URL works again, and `--deliver-missed` delivers what arrived meanwhile.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use relay_tests::capture_api::TunnelApi;
use relay_tests::certs::self_signed_cert;
use relay_tests::cluster::Cluster;
use relay_tests::delivery::{check_queued, wait_inbox};
use relay_tests::http::{fetch_tls, tls_client_config};
use relay_tests::process::Proc;

use super::*;

fn replace(text: &str, from: &str, to: &str) -> Result<String> {
    ensure!(
        text.contains(from),
        "deploy/nginx/cluster.conf no longer contains {from:?}: update cluster_failover.rs"
    );
    Ok(text.replace(from, to))
}

/// The shipped cluster site, pointed at the nodes and listening on loopback.
fn site(nodes: &[u16], https: u16, tls: &relay_tests::TlsFiles) -> Result<String> {
    let mut conf = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/cluster.conf"),
    )
    .context("reading deploy/nginx/cluster.conf")?;
    for (i, port) in nodes.iter().enumerate() {
        conf = replace(
            &conf,
            &format!("server 10.0.0.{}:8080", i + 1),
            &format!("server 127.0.0.1:{port}"),
        )?;
    }
    let conf = replace(&conf, "listen [::]:443 ssl;", "")?;
    let conf = replace(
        &conf,
        "listen 443 ssl;",
        &format!("listen 127.0.0.1:{https} ssl;"),
    )?;
    let conf = replace(
        &conf,
        "server_name relay.example.com *.relay.example.com;",
        "server_name localhost *.localhost;",
    )?;
    let conf = replace(
        &conf,
        "/etc/letsencrypt/live/relay.example.com/fullchain.pem",
        &tls.cert.display().to_string(),
    )?;
    replace(
        &conf,
        "/etc/letsencrypt/live/relay.example.com/privkey.pem",
        &tls.key.display().to_string(),
    )
}

fn nginx_binary() -> Result<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("nginx is not installed (scripts/test installs Debian's nginx)")
}

/// Starts nginx (one process) with the cluster site; returns it and its
/// front address.
async fn start_nginx(
    sandbox: &Sandbox,
    nodes: &[u16],
    tls: &relay_tests::TlsFiles,
) -> Result<(Proc, SocketAddr)> {
    let https = ReservedPort::new()?;
    let prefix = sandbox.subdir("nginx")?;
    std::fs::write(prefix.join("cluster.conf"), site(nodes, https.port(), tls)?)?;
    let p = prefix.display();
    std::fs::write(
        prefix.join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process off;\npid {p}/nginx.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; include {p}/cluster.conf; }}\n"
        ),
    )?;
    let mut cmd = tokio::process::Command::new(nginx_binary()?);
    cmd.arg("-p")
        .arg(format!("{p}/"))
        .arg("-e")
        .arg(prefix.join("error.log"))
        .arg("-c")
        .arg(prefix.join("nginx.conf"));
    let proc = Proc::spawn("nginx", cmd)?;
    let front = SocketAddr::from(([127, 0, 0, 1], https.port()));
    poll_until("nginx listening", secs(10), || async move {
        tokio::net::TcpStream::connect(front).await.ok().map(|_| ())
    })
    .await
    .with_context(|| format!("nginx stderr:\n{}", proc.stderr_text()))?;
    drop(https);
    Ok((proc, front))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_behind_nginx_fails_over_when_the_holding_node_is_killed() -> Result<()> {
    run_test(secs(120), async {
        let sandbox = Sandbox::new()?;
        let origin = Origin::start().await?;
        let mut cluster = Cluster::start(&sandbox, 3, "2s", |_| {}).await?;
        let tls = self_signed_cert(&sandbox.subdir("tls")?)?;
        let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.server.port()).collect();
        let (mut nginx, front) = start_nginx(&sandbox, &ports, &tls).await?;
        let roots = tls_client_config(&tls.cert)?;

        let cfg = ClientConfig::new(
            origin.port().to_string(),
            format!("https://localhost:{}", front.port()),
            sandbox.subdir("home")?,
        )
        .name("clfail")
        .ca_cert(tls.cert.clone())
        .when_offline("accept")
        .deliver_missed();
        let mut client = RelayClient::spawn(&cfg)?;
        client
            .wait_line("`relay connected as clfail` through nginx", secs(20), |l| {
                l == "relay connected as clfail"
            })
            .await?;
        let (holder, epoch) = poll_until("a node holds the lease", secs(15), || async {
            cluster.lease("clfail").ok()?
        })
        .await?;
        let get = |pq: &str| {
            public_request(front.port(), "clfail", Routing::Host, "GET", pq).body(empty())
        };
        let f = fetch_tls(
            front,
            "localhost",
            roots.clone(),
            get("/echo?before=1")?,
            REQ,
        )
        .await?;
        ensure!(f.status == StatusCode::OK, "before the kill: {}", f.status);

        // The client is held, so the gap lasts until the test ends it.
        client.signal("STOP")?;
        let dead = cluster
            .nodes
            .iter()
            .position(|n| n.id == holder)
            .context("the holder is one of the nodes")?;
        cluster.nodes[dead].server.proc.kill().await?;

        let mut queued = Vec::new();
        for i in 0..3 {
            let req = public_request(
                front.port(),
                "clfail",
                Routing::Host,
                "POST",
                &format!("/inbox/gap-{i}"),
            )
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(full(format!("gap body {i}")))?;
            let f = fetch_tls(front, "localhost", roots.clone(), req, REQ).await?;
            queued.push(check_queued(&f).with_context(|| format!("gap request {i}"))?);
        }

        // Let the client go: it finds its connection gone, reconnects
        // through nginx to a live node and takes the lease over.
        client.signal("CONT")?;
        let (now, new_epoch) = poll_until("another node holds the lease", secs(20), || async {
            cluster.lease("clfail").ok()?.filter(|(n, _)| *n != holder)
        })
        .await?;
        ensure!(
            new_epoch > epoch,
            "taken over with a later epoch: {epoch} -> {new_epoch} on {now}"
        );
        let f = fetch_tls(
            front,
            "localhost",
            roots.clone(),
            get("/echo?after=1")?,
            REQ,
        )
        .await?;
        ensure!(
            f.status == StatusCode::OK,
            "after the failover: {} {:?}",
            f.status,
            f.body
        );

        // What arrived in the gap was captured as offline and is delivered.
        wait_inbox(&origin, queued.len(), secs(30)).await?;
        let paths = origin.inbox_paths();
        ensure!(
            paths == ["/inbox/gap-0", "/inbox/gap-1", "/inbox/gap-2"],
            "each gap request delivered once, in order: {paths:?}"
        );
        let alive = cluster
            .nodes
            .iter()
            .find(|n| n.id == now)
            .context("the new holder")?;
        let api = TunnelApi::new(&alive.server, &cfg, "clfail")?;
        let want: Vec<&str> = queued.iter().map(String::as_str).collect();
        for s in api.wait_delivered(&want).await? {
            ensure!(s["outcome"] == "offline", "captured as offline: {s}");
        }
        ensure!(nginx.try_exit()?.is_none(), "nginx still runs");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_holder_that_stops_answering_costs_a_504_not_a_hang() -> Result<()> {
    run_test(secs(60), async {
        let sandbox = Sandbox::new()?;
        let origin = Origin::start().await?;
        let mut cluster = Cluster::start(&sandbox, 2, "3s", |c| {
            c.request_timeout = Some("1s".into());
        })
        .await?;
        let cfg = ClientConfig::new(
            origin.port().to_string(),
            cluster.node(2).url(),
            sandbox.subdir("home")?,
        )
        .name("clhang");
        let _client = RelayClient::connect(cfg.clone()).await?;
        poll_until("node2 holds the lease", secs(15), || async {
            cluster.lease("clhang").ok()?.filter(|(n, _)| n == "node2")
        })
        .await?;
        // Stopped, the holder's kernel still accepts connections: only
        // the forwarding node's backstop ends the wait.
        cluster.nodes[1].server.proc.signal("STOP")?;
        let node = cluster.node(1);
        let req = public_request(node.port(), "clhang", Routing::Host, "GET", "/echo?hang=1")
            .body(empty())?;
        let started = Instant::now();
        let f = fetch(node.addr(), req, secs(30)).await?;
        check_error(&f, StatusCode::GATEWAY_TIMEOUT, "local_timeout")?;
        ensure!(
            started.elapsed() < secs(20),
            "answered within the request timeout plus the hop's grace: {:?}",
            started.elapsed()
        );
        let id = f.request_id().context("request id")?;
        let api = TunnelApi::new(node, &cfg, "clhang")?;
        let s = api
            .wait_summaries("the timeout captured", secs(15), &[id.as_str()], |_| true)
            .await?;
        ensure!(
            s[0]["outcome"] == "timeout",
            "captured as a timeout: {}",
            s[0]
        );
        cluster.nodes[1].server.proc.signal("CONT")?;
        Ok(())
    })
    .await
}
