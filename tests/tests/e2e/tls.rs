//! HTTPS: a server with `--tls-cert` / `--tls-key` (a self-signed certificate
//! made at test time), a client trusting it with `--ca-cert`, and a visitor
//! over TLS.

use relay_tests::certs::{self_signed_ca_cert, self_signed_cert};
use relay_tests::http::{fetch_tls, tls_client_config};
use relay_tests::TlsFiles;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_tunnel_forwards_and_sets_forwarded_proto() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder()
            .name("tls1")
            .tls()
            .offline()
            .start()
            .await?;
        let server = &s.server;
        ensure!(
            server.url() == format!("https://localhost:{}", server.port()),
            "unexpected server URL {}",
            server.url()
        );
        // `connect` also checks that the banner prints https:// URLs.
        let s = s.connect().await?;
        let client = &s.client;
        let files = s.server.config().tls.clone().context("a tls() stack")?;
        let tls = tls_client_config(&files.cert)?;
        let body = Pattern::new(11, 5_000).collect();

        // The visitor verifies the certificate as `localhost` (its SNI) for both
        // routings; the Host header still picks the tunnel. `*.localhost` is
        // in the certificate for browsers, but rustls (like NSS) ignores a
        // wildcard with fewer than two labels after it.
        for routing in Routing::BOTH {
            let ctx = format!("HTTPS via {routing:?} routing");
            let req = client
                .request(routing, "POST", "/echo?tls=1")
                .header("x-multi", "a")
                .header("x-multi", "b")
                .body(full(body.clone()))?;
            let f = fetch_tls(client.public_addr(), "localhost", tls.clone(), req, REQ).await?;
            ensure!(
                f.status == StatusCode::OK,
                "{ctx}: {} {:?}",
                f.status,
                String::from_utf8_lossy(&f.body)
            );
            ensure!(f.request_id().is_some(), "{ctx}: no {REQUEST_ID}");
            let j = f.json()?;
            assert_eq!(j["path"], "/echo?tls=1", "{ctx}: path at the local app");
            assert_eq!(j["body_len"], body.len(), "{ctx}: body length");
            assert_eq!(j["body_sha256"], sha256_hex(&body), "{ctx}: body bytes");
            let h = echoed_headers(&j)?;
            assert_eq!(header_values(&h, "x-multi"), vec!["a", "b"], "{ctx}");
            assert_eq!(
                header_values(&h, "x-forwarded-proto"),
                vec!["https"],
                "{ctx}: X-Forwarded-Proto at the local app"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_ca_cert_cannot_reach_tls_server() -> Result<()> {
    run_test(secs(60), async {
        // The certificate is self-signed: without --ca-cert the client must
        // not trust it, and, having never connected, stop and say why.
        let s = Stack::builder()
            .name("untrusting")
            .tls()
            .client(|c| c.ca_cert = None)
            .offline()
            .start()
            .await?;
        let mut proc = RelayClient::spawn(&s.client)?;
        let line = proc
            .wait_stderr_line("`not trusted`", secs(20), |l| l.contains("not trusted"))
            .await?;
        eprintln!("client without --ca-cert: {line}");
        ensure!(
            line.contains("--ca-cert"),
            "the error does not say how to fix it: {line}"
        );
        let status = proc.wait_exit(secs(10)).await?;
        ensure!(
            !status.success(),
            "the client exited with {status} after an untrusted certificate"
        );
        let stdout = proc.rest_of_stdout(secs(5)).await?;
        ensure!(
            !stdout.iter().any(|l| l.starts_with("relay connected as")),
            "a client that does not trust the certificate printed a banner: {stdout:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_certificate_used_as_the_servers_own_is_explained() -> Result<()> {
    run_test(secs(60), async {
        // The client trusts the server's certificate (--ca-cert), but
        // trusting the certificate itself is not enough: rustls refuses a
        // CA certificate as a server's. The client must say so and stop.
        let s = Stack::builder()
            .name("ca-as-leaf")
            .tls_with(self_signed_ca_cert)
            .offline()
            .start()
            .await?;
        let mut proc = RelayClient::spawn(&s.client)?;
        let line = proc
            .wait_stderr_line("`not trusted`", secs(20), |l| l.contains("not trusted"))
            .await?;
        ensure!(
            line.contains("CA certificate used as the server's own"),
            "the error does not explain the CA-as-server certificate: {line}"
        );
        let status = proc.wait_exit(secs(10)).await?;
        ensure!(!status.success(), "the client exited with {status}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_after_a_session_is_retried() -> Result<()> {
    run_test(secs(120), async {
        let s = Stack::builder().name("renewal").tls().start().await?;
        let trusted = s.server.config().tls.clone().context("a tls() stack")?;
        let (mut server, mut client) = (s.server, s.client);

        // The server comes back with a certificate the client does not
        // trust (a botched renewal): the client says so and keeps trying.
        let restart = |server: &RelayServer, tls: TlsFiles| {
            let mut cfg = server.config().clone();
            cfg.listen = server.addr().to_string();
            cfg.tls = Some(tls);
            RelayServer::start(cfg)
        };
        server.terminate(secs(15)).await?;
        let wrong = self_signed_cert(&s.sandbox.subdir("tls-wrong")?)?;
        server = restart(&server, wrong).await?;
        client
            .proc
            .wait_stderr_line("`not trusted`", secs(30), |l| l.contains("not trusted"))
            .await?;

        // Once the trusted certificate is back, the same process reconnects.
        server.terminate(secs(15)).await?;
        server = restart(&server, trusted).await?;
        client
            .wait_connected(secs(45))
            .await
            .context("the client gave up instead of retrying")?;
        drop(server);
        Ok(())
    })
    .await
}
