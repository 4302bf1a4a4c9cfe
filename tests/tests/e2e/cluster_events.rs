//! Live events across nodes sharing PostgreSQL (issue 17 part 4): each
//! node's captures are announced with NOTIFY, and a `relay requests
//! --follow` on one node shows what another node captured.

use relay_tests::cli::{self, Tunnel};
use relay_tests::cluster::Cluster;
use relay_tests::process::Proc;

use super::*;

/// How long a followed capture may take to show up on another node.
const FOLLOWED: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_follow_on_one_node_sees_captures_made_on_another() -> Result<()> {
    run_test(secs(90), async {
        let sandbox = Sandbox::new()?;
        let origin = Origin::start().await?;
        let cluster = Cluster::start(&sandbox, 3, "3s", |_| {}).await?;
        let home = sandbox.subdir("home")?;
        let on_node3 = ClientConfig::new(origin.port().to_string(), cluster.node(3).url(), home)
            .name("clfollow");
        let _client = RelayClient::connect(on_node3.clone()).await?;

        // The listener asks node 1, which neither holds the session nor
        // sees the requests.
        let mut on_node1 = on_node3.clone();
        on_node1.server = cluster.node(1).url();
        let cmd = cli::command(
            &on_node1,
            Tunnel::Flags,
            "requests",
            &["--follow", "--json"],
        );
        let mut follow = Proc::spawn("relay requests --follow on node1", cmd)?;
        follow
            .wait_stderr_line("the `following` line", FOLLOWED, |l| {
                l.starts_with("following clfollow")
            })
            .await?;

        // Captured by node 3 (the holder, reached directly) and by node 2
        // (which forwards to node 3 and captures it itself).
        let mut sent = Vec::new();
        for via in [3, 2] {
            let node = cluster.node(via);
            let req = public_request(
                node.port(),
                "clfollow",
                Routing::Host,
                "POST",
                &format!("/echo?via={via}"),
            )
            .body(full("followed"))?;
            let f = fetch(node.addr(), req, REQ).await?;
            ensure!(f.status == StatusCode::OK, "via node{via}: {}", f.status);
            sent.push(f.request_id().context("no request id")?);
        }
        // A third, captured by node 1 itself, closes the window: every
        // line up to it is read, and each capture must be there once,
        // though every node hears of every capture.
        let node = cluster.node(1);
        let req = public_request(
            node.port(),
            "clfollow",
            Routing::Path,
            "POST",
            "/echo?via=1",
        )
        .body(full("followed"))?;
        let f = fetch(node.addr(), req, REQ).await?;
        ensure!(f.status == StatusCode::OK, "via node1: {}", f.status);
        sent.push(f.request_id().context("no request id")?);
        let mut seen: Vec<String> = Vec::new();
        while seen.last() != sent.last() {
            let line = follow.next_line(FOLLOWED).await?;
            let v: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("--follow --json printed {line:?}"))?;
            ensure!(
                v["outcome"] == "delivered" && v["method"] == "POST" && v["tunnel"] == "clfollow",
                "followed on node1: {v}"
            );
            seen.push(v["id"].as_str().unwrap_or_default().to_owned());
        }
        ensure!(
            seen == sent,
            "followed {seen:?}, sent {sent:?} (in this order, once each)"
        );
        Ok(())
    })
    .await
}
