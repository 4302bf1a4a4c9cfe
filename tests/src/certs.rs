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
