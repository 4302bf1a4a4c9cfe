//! Certificates made at test time (rcgen), written as PEM files, for an
//! HTTPS `relay-server` (`--tls-cert` / `--tls-key`) and a client or
//! visitor that trusts them.

use std::path::Path;

use anyhow::{Context, Result};

use crate::server::TlsFiles;

/// Writes a fresh self-signed certificate for `localhost`, `*.localhost` and
/// `127.0.0.1` (and its key) as PEM files into `dir`.
pub fn self_signed_cert(dir: &Path) -> Result<TlsFiles> {
    let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(vec![
        "localhost".to_string(),
        "*.localhost".to_string(),
        "127.0.0.1".to_string(),
    ])
    .context("generating a self-signed certificate")?;
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert.pem()).context("writing cert.pem")?;
    std::fs::write(&files.key, signing_key.serialize_pem()).context("writing key.pem")?;
    Ok(files)
}

/// Like [`self_signed_cert`], but the certificate is marked as a CA, as
/// `openssl req -x509` makes them by default.
pub fn self_signed_ca_cert(dir: &Path) -> Result<TlsFiles> {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let files = TlsFiles {
        cert: dir.join("ca-cert.pem"),
        key: dir.join("ca-key.pem"),
    };
    std::fs::write(&files.cert, cert.pem()).context("writing ca-cert.pem")?;
    std::fs::write(&files.key, key.serialize_pem()).context("writing ca-key.pem")?;
    Ok(files)
}

/// The first certificate in the PEM file `pem`, as DER.
pub fn leaf_der(pem: &Path) -> Result<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_file_iter(pem)
        .with_context(|| format!("reading {}", pem.display()))?
        .next()
        .with_context(|| format!("no certificate in {}", pem.display()))?
        .with_context(|| format!("parsing {}", pem.display()))
}

/// Makes a TLS handshake with `addr`, sending `sni`, and returns the
/// certificate chain the server presented (leaf first). The chain must be
/// trusted by one of the PEM files in `roots` (a self-signed certificate
/// may be its own root); nothing is sent after the handshake.
pub async fn served_chain(
    addr: std::net::SocketAddr,
    sni: &str,
    roots: &[&Path],
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(pem)
            .with_context(|| format!("reading {}", pem.display()))?
        {
            store
                .add(cert.with_context(|| format!("parsing {}", pem.display()))?)
                .context("adding a root")?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(store)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(sni.to_string())
        .with_context(|| format!("{sni:?} is not a server name"))?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {addr} as {sni}"))?;
        tls.get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect::<Vec<_>>())
            .context("the server presented no certificate")
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), handshake)
        .await
        .map_err(|_| anyhow::anyhow!("no TLS handshake with {addr} within 10s"))?
}
