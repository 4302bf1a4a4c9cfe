//! Which certificate a TLS handshake gets, and how it changes while the
//! server runs: the rustls [`Resolver`] (SNI, the `acme-tls/1` challenge
//! certificates), and the [`Reloader`] that re-reads `--tls-cert` /
//! `--tls-key` on SIGHUP and when the files change. Ordering certificates
//! is `acme.rs`'s; accepting connections is `listen.rs`'s.
//!
//! A certificate is swapped in whole (one `Arc`), so a handshake sees the
//! old one or the new one, never a mix; connections already open keep the
//! certificate they were made with, nothing is dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::TlsPaths;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737): a handshake offering it
/// is the CA validating a name, not a visitor.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// How long the certificate files must stay unchanged after a change
/// before they are read: a renewal writes the key and the certificate one
/// after the other (certbot swaps two symlinks), and reading between the
/// two would find a key that does not match.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(300);

/// File events waiting to be looked at; more while the reload task is busy
/// add nothing (one reload reads the files as they are by then).
const WATCH_QUEUE: usize = 16;

/// The certificates the listener serves, picked per handshake.
#[derive(Debug, Default)]
pub struct Resolver {
    /// Served when no certificate matches the SNI name (or there is none):
    /// the `--tls-cert` one, or DOMAIN's from ACME.
    fallback: RwLock<Option<Arc<CertifiedKey>>>,
    /// ACME certificates by exact host name.
    by_name: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 challenge certificates by host name, while an order
    /// waits for its validation.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Resolver {
    pub fn set_fallback(&self, key: Arc<CertifiedKey>) {
        *self.fallback.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }

    pub fn set_name(&self, name: &str, key: Arc<CertifiedKey>) {
        self.by_name
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_ascii_lowercase(), key);
    }

    pub fn has_name(&self, name: &str) -> bool {
        self.by_name
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&name.to_ascii_lowercase())
    }

    pub fn set_challenge(&self, name: &str, key: Arc<CertifiedKey>) {
        self.challenges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_ascii_lowercase(), key);
    }

    pub fn clear_challenge(&self, name: &str) {
        self.challenges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name.to_ascii_lowercase());
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // Only the challenge certificate will do (RFC 8737 §3); no
            // challenge for that name: fail the handshake.
            let challenges = self.challenges.read().unwrap_or_else(|e| e.into_inner());
            return sni.and_then(|name| challenges.get(&name).cloned());
        }
        if let Some(name) = &sni {
            let by_name = self.by_name.read().unwrap_or_else(|e| e.into_inner());
            if let Some(key) = by_name.get(name) {
                return Some(key.clone());
            }
        }
        self.fallback
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The rustls provider every certificate here is loaded with.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server config around `resolver`, offering HTTP/2 and HTTP/1.1
/// by ALPN, and `acme-tls/1` when `acme` is set.
pub fn server_config(
    resolver: Arc<Resolver>,
    acme: bool,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if acme {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    Ok(Arc::new(config))
}

/// The acceptor for `--tls-cert` / `--tls-key`, and the [`Reloader`]
/// that keeps it current.
pub fn file_acceptor(paths: &TlsPaths) -> anyhow::Result<(tokio_rustls::TlsAcceptor, Reloader)> {
    let resolver = Arc::new(Resolver::default());
    let reloader = Reloader::load(paths, resolver.clone())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(resolver, false)?);
    Ok((acceptor, reloader))
}

/// Parses a PEM certificate chain and its PEM private key, checking that
/// they belong together.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<CertifiedKey> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the certificates")?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in it");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("parsing the private key")?;
    CertifiedKey::from_der(certs, key, &provider())
        .context("the private key does not match the certificate")
}

/// The contents of `--tls-cert` and `--tls-key`, read together.
fn read_pair(paths: &TlsPaths) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let cert =
        std::fs::read(&paths.cert).with_context(|| format!("reading {}", paths.cert.display()))?;
    let key =
        std::fs::read(&paths.key).with_context(|| format!("reading {}", paths.key.display()))?;
    Ok((cert, key))
}

/// Re-reads `--tls-cert` / `--tls-key` into the [`Resolver`]'s fallback
/// certificate. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Reloader {
    paths: TlsPaths,
    resolver: Arc<Resolver>,
    /// The file contents behind the certificate being served, so a change
    /// event that changed nothing (a `touch`, the other file's event) is
    /// no reload; also serialises reloads.
    loaded: Arc<Mutex<(Vec<u8>, Vec<u8>)>>,
}

impl Reloader {
    /// Loads the files once; at start a bad certificate is fatal.
    pub fn load(paths: &TlsPaths, resolver: Arc<Resolver>) -> anyhow::Result<Self> {
        let (cert, key) = read_pair(paths)?;
        let certified = certified_key(&cert, &key)
            .with_context(|| format!("{} and {}", paths.cert.display(), paths.key.display()))?;
        resolver.set_fallback(Arc::new(certified));
        Ok(Self {
            paths: paths.clone(),
            resolver,
            loaded: Arc::new(Mutex::new((cert, key))),
        })
    }

    /// Reads the files again and serves them from the next handshake on.
    /// A certificate that cannot be used leaves the old one in place and
    /// says why at warn; the next change or SIGHUP tries again.
    pub fn reload(&self, why: &str) {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let pair = read_pair(&self.paths).and_then(|(cert, key)| {
            let certified = certified_key(&cert, &key)?;
            Ok((cert, key, certified))
        });
        match pair {
            Ok((cert, key, _)) if (&cert, &key) == (&loaded.0, &loaded.1) => {
                debug!(why, "certificate files unchanged");
            }
            Ok((cert, key, certified)) => {
                self.resolver.set_fallback(Arc::new(certified));
                *loaded = (cert, key);
                info!(why, cert = %self.paths.cert.display(), "certificate reloaded");
            }
            Err(e) => warn!(
                why,
                cert = %self.paths.cert.display(),
                key = %self.paths.key.display(),
                error = format!("{e:#}"),
                "certificate not reloaded; still serving the previous one"
            ),
        }
    }

    /// Watches the folders of the two files until `stop` and reloads after
    /// each change has settled ([`RELOAD_DEBOUNCE`]). The folders, not the
    /// files: certbot and Kubernetes replace a file by renaming a symlink,
    /// which a watch on the old file would never see.
    pub async fn watch(self, stop: CancellationToken) {
        let (tx, mut rx) = mpsc::channel::<()>(WATCH_QUEUE);
        let watched = self.watched_names();
        let handler = move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Ok(ev) => ev.paths.iter().any(|p| {
                    p.file_name()
                        .is_some_and(|n| watched.iter().any(|w| w.as_os_str() == n))
                }),
                // An overflow or the like: look at the files to be sure.
                Err(_) => true,
            };
            if relevant {
                // Full: a reload is pending anyway.
                let _ = tx.try_send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "cannot watch the certificate files; reload with SIGHUP");
                return;
            }
        };
        for dir in self.watched_dirs() {
            use notify::Watcher;
            if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                warn!(dir = %dir.display(), error = %e, "cannot watch the certificate folder; reload with SIGHUP");
            }
        }
        loop {
            // Both arms are cancel-safe: a dropped `recv` loses no event.
            tokio::select! {
                _ = stop.cancelled() => return,
                got = rx.recv() => if got.is_none() { return },
            }
            // Wait until the files have been quiet for a while.
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    got = rx.recv() => if got.is_none() { return },
                    _ = tokio::time::sleep(RELOAD_DEBOUNCE) => break,
                }
            }
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.reload("file change")).await;
        }
    }

    fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = [&self.paths.cert, &self.paths.key]
            .iter()
            .map(|p| parent_dir(p))
            .collect();
        dirs.dedup();
        dirs
    }

    /// The names whose events matter: the two files (a symlink renamed
    /// over one of them is an event under its name).
    fn watched_names(&self) -> Vec<std::ffi::OsString> {
        [&self.paths.cert, &self.paths.key]
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
            .collect()
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, key) = pair("a.example");
        let (_, other_key) = pair("b.example");
        assert!(certified_key(cert.as_bytes(), key.as_bytes()).is_ok());
        let e = certified_key(cert.as_bytes(), other_key.as_bytes()).expect_err("mismatched key");
        assert!(format!("{e:#}").contains("does not match"), "{e:#}");
        assert!(certified_key(b"", key.as_bytes()).is_err());
        assert!(certified_key(b"garbage", key.as_bytes()).is_err());
        assert!(certified_key(cert.as_bytes(), b"").is_err());
    }

    #[test]
    fn a_bad_new_certificate_keeps_the_old_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = TlsPaths {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        let (cert, key) = pair("old.example");
        std::fs::write(&paths.cert, &cert).expect("write");
        std::fs::write(&paths.key, &key).expect("write");
        let resolver = Arc::new(Resolver::default());
        let reloader = Reloader::load(&paths, resolver.clone()).expect("loads");
        let served = || {
            resolver
                .fallback
                .read()
                .expect("lock")
                .as_ref()
                .expect("a certificate")
                .cert[0]
                .clone()
        };
        let old = served();
        std::fs::write(&paths.cert, "not a certificate").expect("write");
        reloader.reload("test");
        assert_eq!(served(), old, "garbage replaced the certificate");
        let (cert2, key2) = pair("new.example");
        std::fs::write(&paths.cert, &cert2).expect("write");
        reloader.reload("test");
        assert_eq!(served(), old, "a mismatched key replaced the certificate");
        std::fs::write(&paths.key, &key2).expect("write");
        reloader.reload("test");
        assert_ne!(served(), old, "a good certificate was not picked up");
    }
}
