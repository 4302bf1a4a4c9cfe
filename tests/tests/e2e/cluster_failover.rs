//! `deploy/nginx/cluster.conf` for real: nginx (Debian's) hashing on Host
//! in front of three nodes sharing one store. The node holding a session
//! is killed (`kill -9`); while its client is held stopped, requests for
//! the tunnel are answered by the surviving nodes as offline (202 queued,
//! `--when-offline accept`) and captured; the client then reconnects
//! through nginx to another node, takes the lease over (next epoch), the
//! URL works again, and `--deliver-missed` delivers what arrived meanwhile.

use std::net::SocketAddr;

use relay_tests::capture_api::TunnelApi;
use relay_tests::certs::self_signed_cert;
use relay_tests::cluster::Cluster;
use relay_tests::delivery::{check_queued, wait_inbox};
use relay_tests::http::{fetch_tls, tls_client_config};
use relay_tests::nginx;
use relay_tests::process::Proc;

use super::*;

/// The shipped cluster site, pointed at the nodes and listening on loopback.
fn site(nodes: &[u16], https: u16, tls: &relay_tests::TlsFiles) -> Result<nginx::Site> {
    let mut site = nginx::Site::shipped("cluster.conf")?;
    for (i, port) in nodes.iter().enumerate() {
        site = site.replace(
            &format!("server 10.0.0.{}:8080", i + 1),
            &format!("server 127.0.0.1:{port}"),
        )?;
    }
    site.tls_on_loopback(https, tls)
}

/// Starts nginx (one process) with the cluster site; returns it and its
/// front address.
async fn start_nginx(
    sandbox: &Sandbox,
    nodes: &[u16],
    tls: &relay_tests::TlsFiles,
) -> Result<(Proc, SocketAddr)> {
    let https = ReservedPort::new()?;
    let site = site(nodes, https.port(), tls)?;
    nginx::start(sandbox, site, https, Vec::new()).await
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
