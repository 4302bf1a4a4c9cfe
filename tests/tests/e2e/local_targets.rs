//! Local targets beyond plain HTTP: an `https://` app (a self-signed one
//! needs `--insecure-local`, and the 502 says so), `--host-header`, and a
//! request line that names why the app could not be reached.

use super::*;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use relay_tests::certs::self_signed_cert;
use relay_tests::cli::relay;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// An HTTPS local app with a fresh self-signed certificate for
/// `localhost`: answers 200 `secure HOST` to every request, counting them.
async fn https_app(dir: &std::path::Path) -> Result<(u16, Arc<AtomicUsize>)> {
    let files = self_signed_cert(dir)?;
    let certs = CertificateDer::pem_file_iter(&files.cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate ends here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let host = req
                            .headers()
                            .get(HOST)
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(Bytes::from(format!("secure {host}"))),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok((port, hits))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_https_app_needs_insecure_local() -> Result<()> {
    run_test(secs(90), async {
        let sandbox = Sandbox::new()?;
        let (port, hits) = https_app(&sandbox.subdir("app-tls")?).await?;
        let target = format!("https://localhost:{port}");
        let mut s = Stack::builder()
            .name("tls-strict")
            .target(target.clone())
            .start()
            .await?;
        let req = s.client.request(Routing::Host, "GET", "/").body(empty())?;
        let f = fetch(s.client.public_addr(), req, REQ).await?;
        check_error(&f, StatusCode::BAD_GATEWAY, "local_unreachable")?;
        let id = f.request_id().context("no request id")?;
        let line = s.client.wait_request_line(&id, REQ).await?;
        ensure!(
            line.note == format!("certificate not trusted on localhost:{port} (--insecure-local?)"),
            "{line:?}"
        );
        ensure!(hits.load(Ordering::SeqCst) == 0, "a request got through");

        let mut cfg = s.client_config("insecure-home")?;
        cfg.target = target.clone();
        cfg.name = Some("tls-insecure".into());
        cfg.extra_args = vec!["--insecure-local".into()];
        let mut insecure = RelayClient::connect(cfg).await?;
        ensure!(
            insecure.proc.stderr_text().contains("--insecure-local"),
            "no warning: {}",
            insecure.proc.stderr_text()
        );
        let req = insecure
            .request(Routing::Host, "GET", "/hello")
            .body(empty())?;
        let f = fetch(insecure.public_addr(), req, REQ).await?;
        ensure!(
            f.status == 200 && f.body.starts_with(b"secure "),
            "{} {:?}",
            f.status,
            f.body
        );
        let id = f.request_id().context("no request id")?;
        insecure.wait_request_line(&id, REQ).await?;
        ensure!(hits.load(Ordering::SeqCst) == 1);

        // A replay reaches the https app too, with the same flag.
        let out = relay(
            &insecure.cfg,
            "replay",
            &[&id, "--to", &target, "--insecure-local"],
            REQ,
        )
        .await?;
        ensure!(
            out.ensure_success()?.stdout.contains("200 OK"),
            "{}",
            out.stdout
        );
        ensure!(hits.load(Ordering::SeqCst) == 2);
        let out = relay(&insecure.cfg, "replay", &[&id, "--to", &target], REQ).await?;
        ensure!(
            out.dump().contains("not trusted") && out.dump().contains("--insecure-local"),
            "{}",
            out.dump()
        );
        Ok(())
    })
    .await
}

/// The Host header the origin's `/echo` saw.
async fn echoed_host(client: &RelayClient) -> Result<String> {
    let req = client
        .request(Routing::Host, "GET", "/echo")
        .body(empty())?;
    let f = fetch(client.public_addr(), req, REQ).await?;
    ensure!(f.status == 200, "{}", f.status);
    let headers = echoed_headers(&f.json()?)?;
    let hosts = header_values(&headers, "host");
    ensure!(hosts.len() == 1, "{hosts:?}");
    Ok(hosts[0].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_is_kept_rewritten_or_set() -> Result<()> {
    run_test(secs(90), async {
        let s = Stack::builder().name("host-keep").start().await?;
        let port = s.server.port();
        let origin = s.origin.port();
        let kept = echoed_host(&s.client).await?;
        ensure!(kept == format!("host-keep.localhost:{port}"), "{kept}");

        let mut cfg = s.client_config("rewrite-home")?;
        cfg.name = Some("host-rewrite".into());
        cfg.inspect = Some("127.0.0.1:0".into());
        cfg.extra_args = vec!["--host-header".into(), "rewrite".into()];
        let mut rewrite = RelayClient::connect(cfg).await?;
        let rewritten = echoed_host(&rewrite).await?;
        ensure!(rewritten == format!("localhost:{origin}"), "{rewritten}");

        // A replay from the inspector follows the same rule: the capture
        // has the public Host, the app gets its own.
        let req = rewrite
            .request(Routing::Host, "POST", "/inbox?replayed=1")
            .body(full("r"))?;
        let f = fetch(rewrite.public_addr(), req, REQ).await?;
        let id = f.request_id().context("no request id")?;
        let inspector = super::inspector::inspector_url(&mut rewrite).await?;
        let addr: std::net::SocketAddr = inspector
            .trim_start_matches("http://")
            .parse()
            .context("inspector address")?;
        let req = Request::builder()
            .method("POST")
            .uri(format!("/api/requests/{id}/replay"))
            .header(HOST, addr.to_string())
            .header(CONTENT_TYPE, "application/json")
            .body(full("{}"))?;
        let replayed = fetch(addr, req, REQ).await?;
        ensure!(
            replayed.status == 200,
            "{} {:?}",
            replayed.status,
            replayed.body
        );
        let hosts: Vec<Vec<u8>> = s
            .origin
            .inbox()
            .iter()
            .filter(|r| r.path == "/inbox?replayed=1")
            .map(|r| r.header("host").concat())
            .collect();
        let want = format!("localhost:{origin}").into_bytes();
        ensure!(
            hosts == [want.clone(), want],
            "{:?}",
            hosts
                .iter()
                .map(|h| String::from_utf8_lossy(h).into_owned())
                .collect::<Vec<_>>()
        );

        let mut cfg = s.client_config("value-home")?;
        cfg.name = Some("host-value".into());
        cfg.extra_args = vec!["--host-header".into(), "app.test:3000".into()];
        let value = RelayClient::connect(cfg).await?;
        let set = echoed_host(&value).await?;
        ensure!(set == "app.test:3000", "{set}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_local_port_is_named_in_the_request_line() -> Result<()> {
    run_test(secs(60), async {
        let dead = ReservedPort::new()?;
        let mut s = Stack::builder()
            .name("refused")
            .target(format!("127.0.0.1:{}", dead.port()))
            .start()
            .await?;
        let req = s.client.request(Routing::Host, "GET", "/").body(empty())?;
        let f = fetch(s.client.public_addr(), req, REQ).await?;
        check_error(&f, StatusCode::BAD_GATEWAY, "local_unreachable")?;
        let id = f.request_id().context("no request id")?;
        let line = s.client.wait_request_line(&id, REQ).await?;
        ensure!(
            line.status == "502"
                && line.note == format!("connection refused on 127.0.0.1:{}", dead.port()),
            "{line:?}"
        );
        Ok(())
    })
    .await
}
