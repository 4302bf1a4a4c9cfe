//! `--acme` against Pebble (Let's Encrypt's test CA) on loopback: the
//! server gets a certificate for DOMAIN at start and one for NAME.DOMAIN
//! when NAME is first claimed, by TLS-ALPN-01 on its own listener; keeps
//! them across restarts without new orders; and serves them while the CA
//! is down. Pebble must be installed (`scripts/test` does): without it
//! these tests fail, saying so.

use std::path::PathBuf;

use relay_tests::certs::served_chain;
use relay_tests::http::{empty, fetch_tls, tls_client_config};
use relay_tests::pebble::Pebble;
use relay_tests::server::AcmeFlags;
use relay_tests::Stop;
use rustls_pki_types::CertificateDer;

use super::*;

/// How long an order may take (Pebble validates and issues at once with
/// `PEBBLE_VA_NOSLEEP`; about a second here).
const ISSUED: Duration = Duration::from_secs(20);

/// Pebble, and a relay-server on the port Pebble validates on.
struct AcmeStack {
    server: RelayServer,
    pebble: Pebble,
    origin: Origin,
    /// The root of Pebble's certificates, for visitors and clients.
    root: PathBuf,
    sandbox: Sandbox,
    /// The server's port, which Pebble's config names: held for restarts.
    _port: ReservedPort,
}

impl AcmeStack {
    async fn start() -> Result<Self> {
        let sandbox = Sandbox::new()?;
        let port = ReservedPort::new()?;
        let pebble = Pebble::start(&sandbox.subdir("pebble")?, port.port()).await?;
        let root = sandbox.subdir("trust")?.join("pebble-root.pem");
        pebble.write_issuing_root(&root).await?;
        let mut cfg = ServerConfig::new(sandbox.subdir("server-data")?);
        cfg.listen = format!("127.0.0.1:{}", port.port());
        cfg.acme = Some(AcmeFlags {
            email: "ops@example.com".into(),
            directory: pebble.directory(),
            ca: pebble.listener_cert().to_path_buf(),
        });
        let server = RelayServer::start(cfg).await?;
        let origin = Origin::start().await?;
        let stack = Self {
            server,
            pebble,
            origin,
            root,
            sandbox,
            _port: port,
        };
        stack.wait_issued("localhost").await?;
        Ok(stack)
    }

    /// Waits for the server's log line saying `host`'s certificate came.
    async fn wait_issued(&self, host: &str) -> Result<String> {
        let field = format!("host={host} ");
        self.server
            .proc
            .wait_stderr_line(
                &format!("`ACME certificate issued` for {host}"),
                ISSUED,
                |l| l.contains("ACME certificate issued") && l.contains(&field),
            )
            .await
    }

    async fn connect(&self, name: &str) -> Result<RelayClient> {
        let mut cfg = ClientConfig::new(
            self.origin.port().to_string(),
            self.server.url(),
            self.sandbox.subdir(&format!("client-{name}"))?,
        );
        cfg.name = Some(name.to_string());
        cfg.ca_cert = Some(self.root.clone());
        RelayClient::connect(cfg).await
    }

    /// The chain a visitor gets for `host` (SNI), verified against
    /// Pebble's root and for `host`.
    async fn chain(&self, host: &str) -> Result<Vec<CertificateDer<'static>>> {
        served_chain(self.server.addr(), host, &[&self.root]).await
    }

    /// A visitor's HTTPS request to NAME.localhost through the tunnel.
    async fn visit(&self, client: &RelayClient, name: &str) -> Result<()> {
        let host = format!("{name}.localhost");
        let req = client
            .request(Routing::Host, "GET", "/echo?acme=1")
            .body(empty())?;
        let f = fetch_tls(
            self.server.addr(),
            &host,
            tls_client_config(&self.root)?,
            req,
            REQ,
        )
        .await?;
        ensure!(
            f.status == StatusCode::OK,
            "{host}: {} {:?}",
            f.status,
            String::from_utf8_lossy(&f.body)
        );
        Ok(())
    }

    fn orders_logged(&self) -> usize {
        self.server
            .proc
            .stderr_text()
            .lines()
            .filter(|l| l.contains("ordering an ACME certificate"))
            .count()
    }
}

/// The leaf's DNS names and its issuer's common name.
fn names_and_issuer(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, String)> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| anyhow::anyhow!("parsing the leaf: {e}"))?;
    let names = cert
        .subject_alternative_name()
        .map_err(|e| anyhow::anyhow!("SAN: {e}"))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let issuer = cert
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((names, issuer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_claim_gets_a_certificate_from_the_ca() -> Result<()> {
    run_test(secs(60), async {
        let started = Instant::now();
        let s = AcmeStack::start().await?;
        let domain = s.chain("localhost").await?;
        let (names, issuer) = names_and_issuer(&domain[0])?;
        ensure!(
            names == ["localhost"],
            "DOMAIN's certificate names {names:?}"
        );
        ensure!(
            issuer.starts_with("Pebble Intermediate CA"),
            "DOMAIN's certificate issued by {issuer:?}"
        );

        let client = s.connect("acmeapp").await?;
        s.wait_issued("acmeapp.localhost").await?;
        let chain = s.chain("acmeapp.localhost").await?;
        let (names, issuer) = names_and_issuer(&chain[0])?;
        ensure!(
            names == ["acmeapp.localhost"],
            "NAME's certificate names {names:?}"
        );
        ensure!(
            issuer.starts_with("Pebble Intermediate CA"),
            "issuer {issuer:?}"
        );
        s.visit(&client, "acmeapp").await?;

        ensure!(
            s.chain("localhost").await?[0] == domain[0],
            "DOMAIN's certificate changed"
        );
        let data = s.server.config().data_dir.join("acme");
        for file in [
            "account.json",
            "acmeapp.localhost.key.pem",
            "localhost.crt.pem",
        ] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data.join(file))?.permissions().mode();
            ensure!(mode & 0o777 == 0o600, "{file} has mode {:o}", mode & 0o777);
        }
        eprintln!("ACME first claim: {:?}", started.elapsed());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_serves_the_stored_certificates_without_new_orders() -> Result<()> {
    run_test(secs(60), async {
        let started = Instant::now();
        let mut s = AcmeStack::start().await?;
        let mut client = s.connect("keep").await?;
        s.wait_issued("keep.localhost").await?;
        let before = s.chain("keep.localhost").await?;
        let domain_before = s.chain("localhost").await?;
        let orders = s.pebble.orders();
        ensure!(
            orders == 2,
            "Pebble saw {orders} orders, expected DOMAIN's and NAME's"
        );

        s.server.restart(Stop::Term).await?;
        client.wait_connected(secs(30)).await?;
        let after = s.chain("keep.localhost").await?;
        ensure!(after[0] == before[0], "a new certificate after the restart");
        ensure!(
            s.chain("localhost").await?[0] == domain_before[0],
            "DOMAIN's certificate changed across the restart"
        );
        s.visit(&client, "keep").await?;
        ensure!(
            s.pebble.orders() == orders,
            "the restarted server ordered again ({} orders)",
            s.pebble.orders()
        );
        ensure!(
            s.orders_logged() == 0,
            "the restarted server logged an order:\n{}",
            s.server.proc.stderr_text()
        );
        eprintln!("ACME restart: {:?}", started.elapsed());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_certificates_keep_working_while_the_ca_is_down() -> Result<()> {
    run_test(secs(60), async {
        let started = Instant::now();
        let mut s = AcmeStack::start().await?;
        let mut client = s.connect("steady").await?;
        s.wait_issued("steady.localhost").await?;
        let before = s.chain("steady.localhost").await?;

        s.pebble.stop().await?;
        s.server.restart(Stop::Term).await?;
        client.wait_connected(secs(30)).await?;
        ensure!(
            s.chain("steady.localhost").await?[0] == before[0],
            "another certificate while the CA is down"
        );
        s.visit(&client, "steady").await?;

        // A new name cannot get one now: the failure is logged and the
        // server goes on.
        let _newcomer = s.connect("newcomer").await?;
        let failed = s
            .server
            .proc
            .wait_stderr_line("`ACME order failed` for the new name", ISSUED, |l| {
                l.contains("ACME order failed") && l.contains("host=newcomer.localhost")
            })
            .await?;
        ensure!(failed.contains("retry_in"), "no retry planned: {failed}");
        // Its handshakes get DOMAIN's certificate meanwhile: a chain
        // Pebble's root vouches for, only not for that name.
        let e = s
            .chain("newcomer.localhost")
            .await
            .expect_err("DOMAIN's certificate does not cover newcomer.localhost");
        ensure!(
            format!("{e:#}").contains("not valid for name"),
            "not DOMAIN's certificate (or none at all): {e:#}"
        );
        s.visit(&client, "steady").await?;
        ensure!(
            s.chain("steady.localhost").await?[0] == before[0],
            "the failed order disturbed the existing certificate"
        );
        eprintln!("ACME with the CA down: {:?}", started.elapsed());
        Ok(())
    })
    .await
}
