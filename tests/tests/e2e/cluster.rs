//! Several `relay-server` nodes sharing one store (issue 17): leases on
//! names, requests forwarded to the node holding the session (captured
//! once, by the node the visitor reached), the node listener's secret,
//! two clients racing for one name through two nodes, the zero-hop
//! connect, and failover behind nginx when the holding node is killed.

use relay_tests::cluster::{Cluster, SECRET, SECRET_HEADER};
use relay_tests::pattern::pattern_sha256;

use super::hostile::{hello, hello_json, next_request_stream};
use super::*;

/// Lease TTL of the test clusters: renewals every third of it, failover
/// bounded by it.
const TTL: &str = "3s";

/// Waits until node `node_id` holds the lease on `name`; returns its epoch.
async fn wait_lease(cluster: &Cluster, name: &str, node_id: &str) -> Result<i64> {
    poll_until(
        &format!("{node_id} holds the lease on {name}"),
        secs(15),
        || async {
            match cluster.lease(name).ok()? {
                Some((node, epoch)) if node == node_id => Some(epoch),
                _ => None,
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_forwards_get_post_websocket_and_stream_to_the_holder_and_captures_each_once(
) -> Result<()> {
    run_test(secs(120), async {
        let sandbox = Sandbox::new()?;
        let origin = Origin::start().await?;
        let cluster = Cluster::start(&sandbox, 3, TTL, |_| {}).await?;
        let cfg = ClientConfig::new(
            origin.port().to_string(),
            cluster.node(2).url(),
            sandbox.subdir("home")?,
        )
        .name("clfwd");
        let _client = RelayClient::connect(cfg.clone()).await?;
        wait_lease(&cluster, "clfwd", "node2").await?;

        let mut ids = Vec::new();
        for via in [1, 3] {
            let node = cluster.node(via);
            let ctx = format!("through node{via}");
            for routing in Routing::BOTH {
                let pq = format!("/echo?via={via}&r={routing:?}");
                let req = public_request(node.port(), "clfwd", routing, "GET", &pq).body(empty())?;
                let f = fetch(node.addr(), req, REQ).await?;
                ensure!(
                    f.status == StatusCode::OK,
                    "{ctx} GET: {} {:?}",
                    f.status,
                    f.body
                );
                let j = f.json()?;
                ensure!(j["path"] == pq.as_str(), "{ctx}: path at the app");
                // The app sees the visitor as on one node, and none of the
                // nodes' own headers (the secret least of all).
                let echoed = echoed_headers(&j)?;
                ensure!(
                    header_values(&echoed, "x-forwarded-for") == ["127.0.0.1"],
                    "{ctx}: X-Forwarded-For at the app: {echoed:?}"
                );
                for internal in [SECRET_HEADER, "x-relay-forwarded-by", "x-relay-node-tunnel"] {
                    ensure!(
                        header_values(&echoed, internal).is_empty(),
                        "{ctx}: {internal} reached the app"
                    );
                }
                ids.push(f.request_id().context("no request id")?);
                ensure!(count(&origin, &pq) == 1, "{ctx}: {pq} reached the app once");
            }

            // 10 MiB, streamed: the origin hashes what it got.
            let len = 10 << 20;
            let req = public_request(node.port(), "clfwd", Routing::Host, "POST", "/echo?big=1")
                .body(PatternBody::new(via as u64, len).boxed())?;
            let f = fetch(node.addr(), req, secs(60)).await?;
            ensure!(f.status == StatusCode::OK, "{ctx} POST: {}", f.status);
            let j = f.json()?;
            ensure!(j["body_len"] == len, "{ctx}: body length at the app: {j}");
            ensure!(
                j["body_sha256"] == pattern_sha256(via as u64, len),
                "{ctx}: body bytes at the app"
            );
            ids.push(f.request_id().context("no request id")?);

            // WebSocket through two nodes.
            let tcp = tokio::net::TcpStream::connect(node.addr()).await?;
            let uri = format!("ws://clfwd.localhost:{}/ws", node.port());
            let (mut ws, resp) = within(
                "the WebSocket handshake",
                REQ,
                tokio_tungstenite::client_async(uri.as_str(), tcp),
            )
            .await??;
            ids.push(
                resp.headers()
                    .get(REQUEST_ID)
                    .context("no request id on the 101")?
                    .to_str()?
                    .to_owned(),
            );
            let msg = Message::Binary(Bytes::from(Pattern::new(7, 300_000).collect()));
            within("sending", REQ, ws.send(msg.clone())).await??;
            let echoed = within("the echo", REQ, ws.next())
                .await?
                .context("closed instead of echoing")??;
            ensure!(echoed == msg, "{ctx}: WebSocket echo differs");
            within("closing", REQ, ws.close(None)).await??;

            // A streamed response: the first chunk arrives while the app
            // holds the rest (no buffering on either node).
            let key = format!("cl{via}");
            let req = public_request(
                node.port(),
                "clfwd",
                Routing::Host,
                "GET",
                &format!("/stream?key={key}"),
            )
            .body(empty())?;
            let resp = within("the /stream head", REQ, send(node.addr(), req)).await??;
            ensure!(resp.status() == StatusCode::OK, "{ctx}: /stream");
            ids.push(
                resp.headers()
                    .get(REQUEST_ID)
                    .context("no request id on /stream")?
                    .to_str()?
                    .to_owned(),
            );
            let mut body = resp.into_body();
            let mut got = Vec::new();
            while got.len() < FIRST_CHUNK.len() {
                let frame = within("the first chunk before the rest", REQ, body.frame())
                    .await?
                    .context("body ended early")??;
                if let Ok(d) = frame.into_data() {
                    got.extend_from_slice(&d);
                }
            }
            origin.release(&key);
            got.extend_from_slice(&within("the rest", REQ, body.collect()).await??.to_bytes());
            ensure!(
                got == [FIRST_CHUNK, SECOND_CHUNK].concat(),
                "{ctx}: stream bytes"
            );
        }

        // One capture per exchange, with the id its visitor got, whichever
        // node's API is asked.
        let want: Vec<&str> = ids.iter().map(String::as_str).collect();
        let api = relay_tests::capture_api::TunnelApi::new(cluster.node(3), &cfg, "clfwd")?;
        let summaries = api
            .wait_summaries("every exchange captured", secs(15), &want, |s| {
                s.iter().all(|c| c["outcome"] == "delivered")
            })
            .await?;
        ensure!(summaries.len() == ids.len(), "captures: {summaries:?}");
        let all = api.list("limit=1000").await?;
        ensure!(
            all.len() == ids.len(),
            "each exchange is captured exactly once: {} captures for {} exchanges: {:?}",
            all.len(),
            ids.len(),
            relay_tests::capture_api::ids(&all)
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_listener_refuses_requests_without_the_secret() -> Result<()> {
    run_test(secs(60), async {
        let sandbox = Sandbox::new()?;
        let origin = Origin::start().await?;
        let cluster = Cluster::start(&sandbox, 2, TTL, |_| {}).await?;
        let cfg = ClientConfig::new(
            origin.port().to_string(),
            cluster.node(1).url(),
            sandbox.subdir("home")?,
        )
        .name("clsec");
        let _client = RelayClient::connect(cfg.clone()).await?;
        wait_lease(&cluster, "clsec", "node1").await?;
        let listener = cluster.nodes[0].node_addr;
        let direct = |secret: Option<&str>, pq: &str| {
            let mut req = Request::get(pq)
                .header(HOST, "clsec.localhost")
                .header("x-relay-node-tunnel", "clsec")
                .header("x-relay-forwarded-by", "intruder")
                .header(REQUEST_ID, "01clustertestid0000000000");
            if let Some(s) = secret {
                req = req.header(SECRET_HEADER, s);
            }
            req.body(empty())
        };
        for (secret, pq) in [
            (None, "/echo?no=1"),
            (Some("wrong-secret-0123456789"), "/echo?wrong=1"),
        ] {
            let f = fetch(listener, direct(secret, pq)?, REQ).await?;
            ensure!(
                f.status == StatusCode::UNAUTHORIZED,
                "secret {secret:?}: expected 401, got {} {:?}",
                f.status,
                f.body
            );
            ensure!(count(&origin, pq) == 0, "{pq} must not reach the app");
        }
        // With the secret the same request is served, and not captured
        // again by the holder (the visitor's node would have).
        let f = fetch(listener, direct(Some(SECRET), "/echo?right=1")?, REQ).await?;
        ensure!(f.status == StatusCode::OK, "with the secret: {}", f.status);
        ensure!(count(&origin, "/echo?right=1") == 1, "served once");
        let api = relay_tests::capture_api::TunnelApi::new(cluster.node(2), &cfg, "clsec")?;
        // A visitor request afterwards is captured; once it is listed,
        // the holder's earlier exchange would be too if it had been.
        let req = public_request(
            cluster.node(2).port(),
            "clsec",
            Routing::Host,
            "GET",
            "/echo?v=1",
        )
        .body(empty())?;
        let (f, id) = {
            let f = fetch(cluster.node(2).addr(), req, REQ).await?;
            let id = f.request_id().context("request id")?;
            (f, id)
        };
        ensure!(
            f.status == StatusCode::OK,
            "visitor through node2: {}",
            f.status
        );
        api.wait_summaries("the visitor's capture", secs(15), &[id.as_str()], |_| true)
            .await?;
        let all = api.list("limit=1000").await?;
        ensure!(
            relay_tests::capture_api::ids(&all) == vec![id.clone()],
            "only the visitor's exchange is captured: {all:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_two_clients_racing_for_a_name_leave_one_lease_holder_and_a_revoke_ends_it(
) -> Result<()> {
    run_test(secs(90), async {
        let sandbox = Sandbox::new()?;
        let origin = Origin::start().await?;
        let cluster = Cluster::start(&sandbox, 3, TTL, |c| c.open = false).await?;
        let (token, token_id) = cluster.create_token("racer").await?;
        let client_for = |node: usize, home: &str| -> Result<ClientConfig> {
            Ok(ClientConfig::new(
                origin.port().to_string(),
                cluster.node(node).url(),
                sandbox.subdir(home)?,
            )
            .name("clrace")
            .token(&token))
        };
        let (a, b) = tokio::join!(
            RelayClient::connect(client_for(1, "a")?),
            RelayClient::connect(client_for(3, "b")?)
        );
        let (mut a, mut b) = (a?, b?);
        // The one whose node lost the lease is closed as replaced and stops.
        let loser = within("one of the two clients to stop", secs(20), async {
            tokio::select! {
                s = a.proc.wait_exit(secs(20)) => s.map(|_| "a"),
                s = b.proc.wait_exit(secs(20)) => s.map(|_| "b"),
            }
        })
        .await??;
        let (winner, winner_node, loser_proc) = match loser {
            "a" => (&mut b, "node3", &a.proc),
            _ => (&mut a, "node1", &b.proc),
        };
        ensure!(
            loser_proc.stderr_text().contains("took over"),
            "the loser is told why: {}",
            loser_proc.stderr_text()
        );
        ensure!(
            winner.proc.try_exit()?.is_none(),
            "the winner keeps its session"
        );
        wait_lease(&cluster, "clrace", winner_node).await?;
        poll_until(
            "only the winner's node counts a live tunnel",
            secs(15),
            || async {
                let mut live = Vec::new();
                for n in &cluster.nodes {
                    live.push(n.server.live_tunnels().await.ok()?);
                }
                (live.iter().sum::<u64>() == 1).then_some(())
            },
        )
        .await?;
        // Every node reaches the one session left.
        for via in 1..=3 {
            let pq = format!("/echo?race={via}");
            let req = public_request(
                cluster.node(via).port(),
                "clrace",
                Routing::Host,
                "GET",
                &pq,
            )
            .body(empty())?;
            let f = fetch(cluster.node(via).addr(), req, REQ).await?;
            ensure!(
                f.status == StatusCode::OK,
                "through node{via}: {}",
                f.status
            );
        }
        ensure!(winner.proc.try_exit()?.is_none(), "the winner still runs");

        // A revoke is a store write: the node holding the session ends it.
        cluster.server_cli(&["token", "revoke", &token_id]).await?;
        winner.proc.wait_exit(secs(15)).await?;
        ensure!(
            winner.proc.stderr_text().contains("revoked"),
            "the winner is told its token was revoked: {}",
            winner.proc.stderr_text()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_zero_hop_connect_through_the_names_own_host_takes_the_lease() -> Result<()> {
    run_test(secs(60), async {
        let sandbox = Sandbox::new()?;
        let cluster = Cluster::start(&sandbox, 2, TTL, |_| {}).await?;
        let node = cluster.node(1);
        let tcp = tokio::net::TcpStream::connect(node.addr()).await?;
        let url = format!("ws://clzero.localhost:{}/_relay/v1/connect", node.port());
        let (mut ws, resp) = within(
            "the connect handshake on the name's host",
            REQ,
            tokio_tungstenite::client_async(url.as_str(), tcp),
        )
        .await??;
        ensure!(
            resp.status() == StatusCode::SWITCHING_PROTOCOLS,
            "{}",
            resp.status()
        );
        let reply = hello(&mut ws, &hello_json("zero-hop", "clzero", 1)).await?;
        ensure!(reply["type"] == "welcome", "expected a welcome: {reply}");
        wait_lease(&cluster, "clzero", "node1").await?;
        // A visitor on the other node is forwarded to this session.
        let peer = cluster.node(2);
        let req =
            public_request(peer.port(), "clzero", Routing::Host, "GET", "/zh").body(empty())?;
        let visit = tokio::spawn(fetch(peer.addr(), req, REQ));
        next_request_stream(&mut ws).await?;
        visit.abort();
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_edge_rules_of_a_name_claimed_on_another_node_are_checked_by_the_visitors_node(
) -> Result<()> {
    run_test(secs(60), async {
        let sandbox = Sandbox::new()?;
        let origin = Origin::start().await?;
        // Node 1 starts before the name exists: it learns it from the store.
        let cluster = Cluster::start(&sandbox, 2, TTL, |_| {}).await?;
        let cfg = ClientConfig::new(
            origin.port().to_string(),
            cluster.node(2).url(),
            sandbox.subdir("home")?,
        )
        .name("cledge")
        .args(["--require-header", "X-Hook-Secret: whsec_123"]);
        let _client = RelayClient::connect(cfg.clone()).await?;
        wait_lease(&cluster, "cledge", "node2").await?;
        let node = cluster.node(1);
        let get = |pq: &str, secret: Option<&str>| {
            let mut req = public_request(node.port(), "cledge", Routing::Host, "GET", pq);
            if let Some(s) = secret {
                req = req.header("x-hook-secret", s);
            }
            req.body(empty())
        };
        let f = fetch(node.addr(), get("/echo?bad=1", Some("nope"))?, REQ).await?;
        check_error(&f, StatusCode::FORBIDDEN, "edge_rejected")?;
        let rejected = f.request_id().context("request id")?;
        ensure!(
            count(&origin, "/echo?bad=1") == 0,
            "a rejected request never reaches the app"
        );
        let f = fetch(node.addr(), get("/echo?good=1", Some("whsec_123"))?, REQ).await?;
        ensure!(
            f.status == StatusCode::OK,
            "rules met: {} {:?}",
            f.status,
            f.body
        );
        let api = relay_tests::capture_api::TunnelApi::new(node, &cfg, "cledge")?;
        let s = api
            .wait_summaries(
                "the rejection captured",
                secs(15),
                &[rejected.as_str()],
                |_| true,
            )
            .await?;
        ensure!(
            s[0]["outcome"] == "rejected",
            "captured as rejected: {}",
            s[0]
        );
        Ok(())
    })
    .await
}
