//! Certificate reload: a server with `--tls-cert` / `--tls-key` serves a
//! renewed certificate from the next handshake on, after SIGHUP or when the
//! files change, without dropping a live tunnel or an open connection; a
//! bad new certificate keeps the old one and says why.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use relay_tests::certs::{leaf_der, self_signed_cert, served_chain};
use relay_tests::http::{fetch_tls, tls_client_config, ReqBody};
use relay_tests::TlsFiles;
use rustls_pki_types::ServerName;

use super::*;

/// How long a file change may take to show in a handshake: the server's
/// debounce (300 ms) plus the time to notice and read.
const PICKED_UP: Duration = Duration::from_secs(10);

/// `--tls-cert` / `--tls-key` are symlinks in `dir` to files in
/// `dir/store`: rewriting those files changes what the server would read
/// without any event in the folder it watches, so only SIGHUP reloads.
fn symlinked_cert(dir: &Path) -> Result<TlsFiles> {
    let store = dir.join("store");
    std::fs::create_dir_all(&store)?;
    let real = self_signed_cert(&store)?;
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::os::unix::fs::symlink(&real.cert, &files.cert)?;
    std::os::unix::fs::symlink(&real.key, &files.key)?;
    Ok(files)
}

/// A new self-signed certificate in a fresh folder `name` of `dir`.
fn next_cert(dir: &Path, name: &str) -> Result<TlsFiles> {
    let d = dir.join(name);
    std::fs::create_dir_all(&d)?;
    self_signed_cert(&d)
}

/// Moves `from` over `to` as a renewal tool does: key first, then the
/// certificate, each replaced whole by a rename.
fn install(from: &TlsFiles, to: &TlsFiles) -> Result<()> {
    std::fs::rename(&from.key, &to.key).context("installing the key")?;
    std::fs::rename(&from.cert, &to.cert).context("installing the certificate")?;
    Ok(())
}

/// Polls new handshakes until the server presents `want`.
async fn until_served(
    addr: std::net::SocketAddr,
    roots: &[&Path],
    want: &rustls_pki_types::CertificateDer<'static>,
) -> Result<()> {
    poll_until(
        "the new certificate in a new handshake",
        PICKED_UP,
        || async {
            let chain = served_chain(addr, "localhost", roots).await.ok()?;
            (chain.first() == Some(want)).then_some(())
        },
    )
    .await
}

/// An HTTP/1.1 keep-alive connection over TLS to `addr`, as `localhost`.
async fn keep_alive(
    addr: std::net::SocketAddr,
    ca: &Path,
) -> Result<hyper::client::conn::http1::SendRequest<ReqBody>> {
    let tls = tls_client_config(ca)?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost")?, tcp)
        .await
        .context("TLS handshake")?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<ReqBody>,
    client: &RelayClient,
    ctx: &str,
) -> Result<()> {
    let req = client
        .request(Routing::Host, "GET", "/echo?keep=1")
        .body(relay_tests::http::empty())?;
    let res = within(ctx, REQ, sender.send_request(req))
        .await?
        .with_context(|| format!("{ctx}: request on the open connection"))?;
    ensure!(res.status() == StatusCode::OK, "{ctx}: {}", res.status());
    within(ctx, REQ, res.into_body().collect()).await??;
    Ok(())
}

async fn through_tunnel(client: &RelayClient, ca: &Path, ctx: &str) -> Result<()> {
    let req = client
        .request(Routing::Host, "GET", "/echo?after=reload")
        .body(relay_tests::http::empty())?;
    let f = fetch_tls(
        client.public_addr(),
        "localhost",
        tls_client_config(ca)?,
        req,
        REQ,
    )
    .await
    .with_context(|| format!("{ctx}: a new visitor"))?;
    ensure!(f.status == StatusCode::OK, "{ctx}: {}", f.status);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_the_new_certificate_and_keeps_the_tunnel() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder()
            .name("hup")
            .tls_with(symlinked_cert)
            .start()
            .await?;
        let files = s.server.config().tls.clone().context("a TLS stack")?;
        let old = leaf_der(&files.cert)?;
        let old_copy = s.sandbox.subdir("old")?.join("cert.pem");
        std::fs::copy(&files.cert, &old_copy)?;
        let addr = s.server.addr();
        let first = served_chain(addr, "localhost", &[&old_copy]).await?;
        ensure!(
            first.first() == Some(&old),
            "not serving --tls-cert at start"
        );
        let mut open = keep_alive(addr, &old_copy).await?;
        get_on(&mut open, &s.client, "before the reload").await?;

        // Rewrite the symlinks' targets: no event in the watched folder.
        let next = next_cert(&s.sandbox.subdir("tls")?, "next")?;
        let new = leaf_der(&next.cert)?;
        let target = |p: &PathBuf| std::fs::read_link(p).context("a symlink");
        std::fs::copy(&next.key, target(&files.key)?)?;
        std::fs::copy(&next.cert, target(&files.cert)?)?;
        let (mut server, mut client) = (s.server, s.client);
        server.proc.signal("HUP")?;
        server
            .proc
            .wait_stderr_line("`certificate reloaded` after SIGHUP", secs(10), |l| {
                l.contains("certificate reloaded") && l.contains("SIGHUP")
            })
            .await?;
        let chain = served_chain(addr, "localhost", &[&next.cert]).await?;
        ensure!(
            chain.first() == Some(&new),
            "a new handshake after SIGHUP did not get the new certificate"
        );
        ensure!(server.proc.try_exit()?.is_none(), "SIGHUP ended the server");

        // The open connection and the live session go on.
        get_on(
            &mut open,
            &client,
            "the connection opened before the reload",
        )
        .await?;
        through_tunnel(&client, &next.cert, "after the reload").await?;
        let line = client
            .proc
            .wait_line("the request line", REQ, |l| l.contains("after=reload"))
            .await?;
        let banners = client
            .proc
            .stdout_seen()
            .iter()
            .filter(|l| l.starts_with("relay connected as"))
            .count();
        ensure!(
            banners == 1,
            "the client reconnected across the reload ({banners} banners before {line:?})"
        );
        drop(server);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_files_are_served_without_a_signal() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("watched").tls().start().await?;
        let files = s.server.config().tls.clone().context("a TLS stack")?;
        let old_copy = s.sandbox.subdir("old")?.join("cert.pem");
        std::fs::copy(&files.cert, &old_copy)?;
        let addr = s.server.addr();

        let next = next_cert(&s.sandbox.subdir("renewal")?, "next")?;
        let new = leaf_der(&next.cert)?;
        let new_copy = s.sandbox.subdir("new")?.join("cert.pem");
        std::fs::copy(&next.cert, &new_copy)?;
        let mut open = keep_alive(addr, &old_copy).await?;
        install(&next, &files)?;
        until_served(addr, &[&old_copy, &new_copy], &new).await?;
        s.server
            .proc
            .wait_stderr_line("`certificate reloaded`", secs(5), |l| {
                l.contains("certificate reloaded") && l.contains("file change")
            })
            .await?;
        get_on(
            &mut open,
            &s.client,
            "the connection opened before the change",
        )
        .await?;
        through_tunnel(&s.client, &new_copy, "after the change").await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_certificate_keeps_the_old_one() -> Result<()> {
    run_test(secs(60), async {
        let mut s = Stack::builder().name("garbage").tls().start().await?;
        let files = s.server.config().tls.clone().context("a TLS stack")?;
        let old = leaf_der(&files.cert)?;
        let old_copy = s.sandbox.subdir("old")?.join("cert.pem");
        std::fs::copy(&files.cert, &old_copy)?;
        let addr = s.server.addr();

        let junk = s.sandbox.subdir("junk")?.join("cert.pem");
        std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nnot base64\n")?;
        std::fs::rename(&junk, &files.cert)?;
        let why = s
            .server
            .proc
            .wait_stderr_line("`certificate not reloaded`", PICKED_UP, |l| {
                l.contains("certificate not reloaded")
            })
            .await?;
        ensure!(why.contains("WARN"), "not a warning: {why}");
        // SIGHUP with the same garbage: still the old one, still running.
        s.server.proc.signal("HUP")?;
        s.server
            .proc
            .wait_stderr_line("a second refusal", secs(10), |l| {
                l.contains("certificate not reloaded") && l.contains("SIGHUP")
            })
            .await?;
        let chain = served_chain(addr, "localhost", &[&old_copy]).await?;
        ensure!(
            chain.first() == Some(&old),
            "garbage replaced the certificate"
        );
        through_tunnel(&s.client, &old_copy, "with garbage on disk").await?;

        // A good one later is picked up.
        let next = next_cert(&s.sandbox.subdir("renewal")?, "next")?;
        let new = leaf_der(&next.cert)?;
        let new_copy = s.sandbox.subdir("new")?.join("cert.pem");
        std::fs::copy(&next.cert, &new_copy)?;
        install(&next, &files)?;
        until_served(addr, &[&new_copy], &new).await?;
        Ok(())
    })
    .await
}
