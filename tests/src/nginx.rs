//! Debian's nginx running a site shipped in `deploy/nginx/`, rewritten only
//! where a test must (addresses, names, certificate paths). A rewrite that
//! no longer matches the file fails the test, so the shipped file and its
//! tests move together. One nginx process (`master_process off`), so
//! dropping its [`Proc`] stops all of it by that one PID.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::process::Proc;
use crate::{poll_until, ReservedPort, Sandbox, TlsFiles};

/// How long nginx may take to listen.
const STARTUP: Duration = Duration::from_secs(10);

/// A shipped site's text, being pointed at the test's loopback ports.
pub struct Site {
    file: &'static str,
    text: String,
}

impl Site {
    /// `deploy/nginx/FILE` as shipped.
    pub fn shipped(file: &'static str) -> Result<Self> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/nginx")
            .join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Self { file, text })
    }

    /// `from` replaced by `to`; `from` must occur.
    pub fn replace(mut self, from: &str, to: &str) -> Result<Self> {
        ensure!(
            self.text.contains(from),
            "deploy/nginx/{} no longer contains {from:?}: update its test",
            self.file
        );
        self.text = self.text.replace(from, to);
        Ok(self)
    }

    /// The TLS server block on `127.0.0.1:https` for `*.localhost`, with
    /// `tls`'s certificate instead of Let's Encrypt's.
    pub fn tls_on_loopback(self, https: u16, tls: &TlsFiles) -> Result<Self> {
        self.replace("listen [::]:443 ssl;", "")?
            .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{https} ssl;"))?
            .replace(
                "server_name relay.example.com *.relay.example.com;",
                "server_name localhost *.localhost;",
            )?
            .replace(
                "/etc/letsencrypt/live/relay.example.com/fullchain.pem",
                &tls.cert.display().to_string(),
            )?
            .replace(
                "/etc/letsencrypt/live/relay.example.com/privkey.pem",
                &tls.key.display().to_string(),
            )
    }
}

fn binary() -> Result<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("nginx is not installed (scripts/test installs Debian's nginx)")
}

/// Starts nginx with `site`; returns it once `https` (the site's TLS
/// port) accepts connections. The reserved ports are held until then, so
/// nothing else takes them (nginx, with SO_REUSEADDR like the reservation,
/// can).
pub async fn start(
    sandbox: &Sandbox,
    site: Site,
    https: ReservedPort,
    also_held: Vec<ReservedPort>,
) -> Result<(Proc, SocketAddr)> {
    let prefix = sandbox.subdir("nginx")?;
    std::fs::write(prefix.join(site.file), &site.text)?;
    let p = prefix.display();
    std::fs::write(
        prefix.join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process off;\npid {p}/nginx.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; include {p}/{}; }}\n",
            site.file
        ),
    )?;
    let mut cmd = tokio::process::Command::new(binary()?);
    cmd.arg("-p")
        .arg(format!("{p}/"))
        .arg("-e")
        .arg(prefix.join("error.log"))
        .arg("-c")
        .arg(prefix.join("nginx.conf"));
    let proc = Proc::spawn("nginx", cmd)?;
    let front = SocketAddr::from(([127, 0, 0, 1], https.port()));
    poll_until("nginx listening", STARTUP, || async move {
        tokio::net::TcpStream::connect(front).await.ok().map(|_| ())
    })
    .await
    .with_context(|| format!("nginx stderr:\n{}", proc.stderr_text()))?;
    drop((https, also_held));
    Ok((proc, front))
}
