//! `deploy/nginx/relay.conf` for real: a real nginx (Debian's, one process,
//! on reserved loopback ports) ends TLS in front of a plain-HTTP
//! relay-server. The client connects through it (the WebSocket upgrade to
//! `/_relay/v1/connect`), a visitor's request reaches the app by host and by
//! path, and a response streams through with the rest still held back by
//! the app (`proxy_buffering off`). The config is the shipped file with only
//! its addresses, names and certificate paths replaced; a replacement that
//! no longer matches fails the test, so the file and the test move together.

use relay_tests::certs::self_signed_cert;
use relay_tests::http::{fetch_tls, send_tls, tls_client_config};
use relay_tests::nginx;

use super::*;

/// The shipped site, pointed at `upstream` and listening on loopback.
fn site(upstream: u16, https: u16, http: u16, tls: &relay_tests::TlsFiles) -> Result<nginx::Site> {
    nginx::Site::shipped("relay.conf")?
        .replace(
            "server 127.0.0.1:8080;",
            &format!("server 127.0.0.1:{upstream};"),
        )?
        .replace("listen [::]:80;", "")?
        .replace("listen 80;", &format!("listen 127.0.0.1:{http};"))?
        .tls_on_loopback(https, tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_with_the_shipped_config_passes_tunnel_websocket_requests_and_streams() -> Result<()>
{
    run_test(secs(60), async {
        let sandbox = Sandbox::new()?;
        let origin = Origin::start().await?;
        let server = RelayServer::start(ServerConfig::new(sandbox.subdir("data")?)).await?;
        let tls = self_signed_cert(&sandbox.subdir("tls")?)?;

        let https = ReservedPort::new()?;
        let http = ReservedPort::new()?;
        let site = site(server.port(), https.port(), http.port(), &tls)?;
        let (mut nginx_proc, front) = nginx::start(&sandbox, site, https, vec![http]).await?;

        // The client reaches the server only through nginx: wss:// upgrade.
        let cfg = ClientConfig::new(
            origin.port().to_string(),
            format!("https://localhost:{}", front.port()),
            sandbox.subdir("home")?,
        )
        .name("viangx")
        .ca_cert(tls.cert.clone());
        let mut client = RelayClient::spawn(&cfg)?;
        client
            .wait_line("`relay connected as viangx` through nginx", secs(20), |l| {
                l == "relay connected as viangx"
            })
            .await?;

        let roots = tls_client_config(&tls.cert)?;
        let body = Pattern::new(5, 300_000).collect();
        for routing in Routing::BOTH {
            let ctx = format!("through nginx by {routing:?}");
            let req = public_request(front.port(), "viangx", routing, "POST", "/echo?via=nginx")
                .body(full(body.clone()))?;
            let f = fetch_tls(front, "localhost", roots.clone(), req, REQ).await?;
            ensure!(
                f.status == StatusCode::OK,
                "{ctx}: {} {:?}",
                f.status,
                String::from_utf8_lossy(&f.body)
            );
            ensure!(f.request_id().is_some(), "{ctx}: no {REQUEST_ID}");
            let j = f.json()?;
            assert_eq!(j["path"], "/echo?via=nginx", "{ctx}: path at the app");
            assert_eq!(j["body_sha256"], sha256_hex(&body), "{ctx}: body bytes");

            // The head and first chunk arrive while the app still holds the rest.
            let key = format!("nginx-{routing:?}");
            let req = public_request(
                front.port(),
                "viangx",
                routing,
                "GET",
                &format!("/stream?key={key}"),
            )
            .body(empty())?;
            let resp = within(
                "the /stream head through nginx",
                REQ,
                send_tls(front, "localhost", roots.clone(), req),
            )
            .await??;
            assert_eq!(resp.status(), StatusCode::OK, "{ctx}: /stream");
            let mut stream = resp.into_body();
            let mut got = Vec::new();
            while got.len() < FIRST_CHUNK.len() {
                let frame = within(
                    "the first chunk through nginx before the app sends the rest",
                    REQ,
                    stream.frame(),
                )
                .await?
                .context("body ended before the first chunk")??;
                if let Ok(d) = frame.into_data() {
                    got.extend_from_slice(&d);
                }
            }
            assert_eq!(got, FIRST_CHUNK, "{ctx}: first chunk");
            origin.release(&key);
            let rest = within("the rest of /stream", REQ, stream.collect())
                .await??
                .to_bytes();
            got.extend_from_slice(&rest);
            assert_eq!(got, [FIRST_CHUNK, SECOND_CHUNK].concat(), "{ctx}");
        }
        ensure!(
            nginx_proc.try_exit()?.is_none(),
            "nginx exited: {}",
            nginx_proc.stderr_text()
        );
        Ok(())
    })
    .await
}
