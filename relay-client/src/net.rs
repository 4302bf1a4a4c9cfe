//! Reaching the relay server: TCP with TCP_NODELAY, TLS for `https://`
//! servers (webpki roots plus an optional `--ca-cert`), shared by the
//! tunnel session and the capture API calls.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http::Uri;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// Time allowed for the TCP and the TLS connect, each.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream to the server, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The server's address and, for `https://`, the TLS settings to reach it.
#[derive(Clone)]
pub struct ServerAddr {
    uri: Uri,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl ServerAddr {
    pub fn new(uri: &Uri, ca_cert: Option<&Path>) -> anyhow::Result<Self> {
        let host = uri.host().context("server URL has no host")?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let https = uri.scheme_str() == Some("https");
        let tls = https.then(|| tls_config(ca_cert)).transpose()?;
        Ok(Self {
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
            uri: uri.clone(),
            host,
            tls,
        })
    }

    /// `host[:port]` as given in the server URL.
    pub fn authority(&self) -> String {
        self.uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// Opens a connection, TLS included.
    pub async fn dial(&self) -> anyhow::Result<Box<dyn Io>> {
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .context("connect timed out")??;
        tcp.set_nodelay(true)?;
        let Some(config) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let name = ServerName::try_from(self.host.clone())
            .context("server host is not a valid TLS name")?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp),
        )
        .await
        .context("TLS handshake timed out")?
        .map_err(|e| match untrusted_certificate(&e) {
            Some(why) => anyhow::Error::new(UntrustedServer(why)),
            None => e.into(),
        })?;
        Ok(Box::new(tls))
    }
}

/// The server's certificate failed verification. On a first connection
/// that is a setup problem, so the client stops and says what to change;
/// after a session it may be a renewal in progress, and is retried.
#[derive(Debug, thiserror::Error)]
#[error("the server's TLS certificate is not trusted: {0}")]
pub struct UntrustedServer(String);

/// What is wrong with the server's certificate and what would fix it, if
/// the TLS handshake failed on the certificate.
fn untrusted_certificate(e: &std::io::Error) -> Option<String> {
    use rustls::CertificateError as E;
    let rustls::Error::InvalidCertificate(why) = e.get_ref()?.downcast_ref::<rustls::Error>()?
    else {
        return None;
    };
    Some(match why {
        E::Expired | E::ExpiredContext { .. } => {
            "it has expired; the server's operator must renew it".to_owned()
        }
        E::NotValidYet | E::NotValidYetContext { .. } => {
            "it is not valid yet (check this machine's clock)".to_owned()
        }
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            "it does not name this server's host; connect with a name it lists".to_owned()
        }
        // webpki's error reaches us only as text: matched on its name, and
        // the e2e test `a_ca_certificate_used_as_the_servers_own_is_explained`
        // fails if that name ever changes.
        E::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
            "it is a CA certificate used as the server's own; issue a server certificate \
             signed by that CA and pass the CA with --ca-cert"
                .to_owned()
        }
        _ => format!("{why:?}; for a private CA, pass its certificate with --ca-cert"),
    })
}

fn tls_config(ca_cert: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_cert {
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("reading {}", path.display()))?
        {
            let cert = cert.with_context(|| format!("parsing {}", path.display()))?;
            roots.add(cert).context("adding CA certificate")?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
