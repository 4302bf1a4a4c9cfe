//! Pebble, Let's Encrypt's test CA (Debian package `pebble`), on loopback
//! for the `--acme` tests, with `pebble-challtestsrv` (same package) as its
//! DNS server answering 127.0.0.1 for every name, so a TLS-ALPN-01
//! validation of `NAME.localhost` dials the relay-server under test.
//!
//! Pebble dials one fixed port for TLS-ALPN-01 (`tlsPort` in its config):
//! the relay-server's, so the server listens on a [`ReservedPort`] chosen
//! before Pebble starts. Pebble's own HTTPS uses a certificate made here;
//! the relay-server trusts it with `--acme-ca`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::Command;

use crate::certs::self_signed_cert;
use crate::http::{empty, fetch_tls, tls_client_config};
use crate::process::Proc;
use crate::ReservedPort;

/// How long Pebble and its DNS server may take to start.
const STARTUP: Duration = Duration::from_secs(20);

/// Where Debian installs the binaries; `PEBBLE` overrides Pebble's path
/// (the DNS server is looked for beside it).
const DEFAULT_PEBBLE: &str = "/usr/bin/pebble";

/// A running Pebble and its DNS server.
pub struct Pebble {
    pub proc: Proc,
    _dns: Proc,
    listen: SocketAddr,
    management: SocketAddr,
    /// Pebble's own HTTPS certificate: what `--acme-ca` trusts.
    listener_cert: PathBuf,
    /// Held until Pebble stops, so no parallel test takes them.
    _ports: Vec<ReservedPort>,
}

/// The Pebble binaries, or an error saying how to get them: a missing
/// Pebble fails the ACME tests, it never skips them.
fn binaries() -> Result<(PathBuf, PathBuf)> {
    let pebble = std::env::var_os("PEBBLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PEBBLE));
    let dns = pebble.with_file_name("pebble-challtestsrv");
    if !pebble.is_file() || !dns.is_file() {
        bail!(
            "Pebble is not installed ({} and {} missing): the ACME tests need it; \
             `apt-get install pebble` (scripts/test does)",
            pebble.display(),
            dns.display()
        );
    }
    Ok((pebble, dns))
}

/// A command for `program` with its stdout sent to its stderr, so all its
/// log lines (Pebble writes some to each) are in one place; `exec` keeps
/// the PID the program's own.
fn on_stderr(program: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(r#"exec "$0" "$@" 1>&2"#).arg(program);
    cmd
}

impl Pebble {
    /// Starts the DNS server and Pebble with its files in `dir`;
    /// TLS-ALPN-01 validations dial 127.0.0.1:`tls_port`.
    pub async fn start(dir: &Path, tls_port: u16) -> Result<Self> {
        let (pebble_bin, dns_bin) = binaries()?;
        let ports = (0..4)
            .map(|_| ReservedPort::new())
            .collect::<Result<Vec<_>>>()?;
        let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i].port()));
        let (listen, management, dns, dns_management) = (addr(0), addr(1), addr(2), addr(3));

        let mut cmd = on_stderr(&dns_bin);
        cmd.arg("-dns01")
            .arg(dns.to_string())
            .arg("-management")
            .arg(dns_management.to_string())
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]);
        let dns_proc = Proc::spawn("pebble-challtestsrv", cmd)?;
        dns_proc
            .wait_stderr_line("its management server line", STARTUP, |l| {
                l.contains("Starting management server")
            })
            .await?;

        let certs = dir.join("pebble-tls");
        std::fs::create_dir_all(&certs)?;
        let tls = self_signed_cert(&certs)?;
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": tls.cert,
                "privateKey": tls.key,
                // HTTP-01 is not offered by the relay; a port nobody
                // listens on makes sure it never passes.
                "httpPort": ReservedPort::new()?.port(),
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = dir.join("pebble-config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let mut cmd = on_stderr(&pebble_bin);
        cmd.arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(dns.to_string())
            // Validate at once, really (no shortcut), and never reject a
            // good nonce: the tests measure the relay, not retries.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_VA_ALWAYS_VALID", "0")
            .env("PEBBLE_WFE_NONCEREJECT", "0");
        let proc = Proc::spawn("pebble", cmd)?;
        proc.wait_stderr_line("`Listening on:`", STARTUP, |l| l.contains("Listening on:"))
            .await?;
        // Pebble prints its lines just before its two listeners bind, so
        // wait until both take connections.
        for addr in [listen, management] {
            crate::poll_until(&format!("Pebble listening on {addr}"), STARTUP, || async {
                tokio::net::TcpStream::connect(addr).await.ok().map(drop)
            })
            .await?;
        }
        Ok(Self {
            proc,
            _dns: dns_proc,
            listen,
            management,
            listener_cert: tls.cert,
            _ports: ports,
        })
    }

    /// The ACME directory URL, for `--acme-directory`.
    pub fn directory(&self) -> String {
        format!("https://{}/dir", self.listen)
    }

    /// The certificate Pebble's HTTPS presents, for `--acme-ca`.
    pub fn listener_cert(&self) -> &Path {
        &self.listener_cert
    }

    /// Writes the root of the certificates Pebble issues (from its
    /// management API; new on every start) to `path`, for visitors and
    /// clients to trust.
    pub async fn write_issuing_root(&self, path: &Path) -> Result<()> {
        let req = http::Request::get("/roots/0")
            .header(http::header::HOST, self.management.to_string())
            .body(empty())?;
        let tls = tls_client_config(&self.listener_cert)?;
        let f = fetch_tls(
            self.management,
            "127.0.0.1",
            tls,
            req,
            Duration::from_secs(10),
        )
        .await
        .context("GET /roots/0 from Pebble's management API")?;
        if !f.status.is_success() {
            bail!("Pebble's /roots/0 answered {}", f.status);
        }
        std::fs::write(path, &f.body).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// How many orders Pebble has been asked for, from its log.
    pub fn orders(&self) -> usize {
        self.proc
            .stderr_text()
            .lines()
            .filter(|l| l.contains("Added order"))
            .count()
    }

    /// Stops Pebble (the CA goes down; the DNS server stays).
    pub async fn stop(&mut self) -> Result<()> {
        self.proc.kill().await
    }
}
