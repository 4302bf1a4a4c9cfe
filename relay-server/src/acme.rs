//! `--acme EMAIL`: certificates from an ACME CA (Let's Encrypt by default)
//! for DOMAIN and for each NAME.DOMAIN when the name is first claimed, by
//! TLS-ALPN-01 on the listener itself (RFC 8737): no DNS provider, no
//! wildcard. One task owns the orders; the handshake and `control.rs`
//! only send it host names ([`AcmeHandle::want`]), so nothing waits on a
//! CA. The certificates live in `DATA_DIR/acme/` and are served by the
//! [`Resolver`] in `tls.rs`.
//!
//! Files (0600, in a 0700 folder): `account.json` (the ACME account and
//! its key), `HOST.crt.pem` and `HOST.key.pem` per host. A stored
//! certificate that is not due for renewal is used as is at start: no
//! order, no contact with the CA.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::mpsc;
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::tls::{self, Resolver};

/// Let's Encrypt's production directory, the default `--acme-directory`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// A certificate is renewed once it has less than this left (Let's
/// Encrypt's certificates last 90 days; it suggests renewing at 60).
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often the task looks for certificates due for renewal when nothing
/// else wakes it.
pub const RENEW_CHECK: Duration = Duration::from_secs(12 * 3600);

/// First wait before a failed order for a host is tried again; doubles per
/// failure up to [`RETRY_MAX`]. Failures are usually the CA being down or
/// DNS not pointing here yet; Let's Encrypt allows 5 failed validations
/// per host per hour, so retrying faster would lock the host out.
pub const RETRY_MIN: Duration = Duration::from_secs(60);

/// Longest wait between attempts for a host that keeps failing.
pub const RETRY_MAX: Duration = Duration::from_secs(6 * 3600);

/// Host names waiting for the task; more are dropped (and logged): the
/// next claim of the name asks again.
const WANT_QUEUE: usize = 256;

/// How long one order may wait for the CA (validation, then issuance).
const ORDER_POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .timeout(Duration::from_secs(90));

/// `--acme` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// Contact address for the CA (expiry notices).
    pub email: String,
    /// The CA's directory URL.
    pub directory: String,
    /// PEM root to trust for the directory's HTTPS instead of the web
    /// roots (a test CA such as Pebble).
    pub ca: Option<PathBuf>,
}

/// Asks the ACME task for certificates. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AcmeHandle {
    tx: mpsc::Sender<String>,
    resolver: Arc<Resolver>,
}

impl AcmeHandle {
    /// Makes sure `host` gets a certificate: nothing if it has one, else
    /// an order in the background. Never waits.
    pub fn want(&self, host: &str) {
        if self.resolver.has_name(host) {
            return;
        }
        if self.tx.try_send(host.to_ascii_lowercase()).is_err() {
            warn!(%host, "ACME queue full; the certificate is ordered on the name's next claim");
        }
    }
}

/// Loads the stored certificates into `resolver`, then starts the task
/// that orders and renews them until `stop`.
pub fn start(
    config: AcmeConfig,
    domain: &str,
    data_dir: &Path,
    resolver: Arc<Resolver>,
    stop: CancellationToken,
) -> anyhow::Result<AcmeHandle> {
    let dir = data_dir.join("acme");
    crate::config::ensure_data_dir(&dir)?;
    let (tx, rx) = mpsc::channel(WANT_QUEUE);
    let mut manager = Manager {
        config,
        domain: domain.to_owned(),
        dir,
        resolver: resolver.clone(),
        account: None,
        expiry: HashMap::new(),
        failures: HashMap::new(),
    };
    manager.load_stored()?;
    tokio::spawn(manager.run(rx, stop));
    Ok(AcmeHandle { tx, resolver })
}

/// The task's state.
struct Manager {
    config: AcmeConfig,
    domain: String,
    dir: PathBuf,
    resolver: Arc<Resolver>,
    /// Made (or loaded) on the first order, so a start with every
    /// certificate in place never contacts the CA.
    account: Option<Account>,
    /// When each served certificate expires.
    expiry: HashMap<String, SystemTime>,
    /// Hosts whose last order failed: how many times, and when to retry.
    failures: HashMap<String, (u32, tokio::time::Instant)>,
}

impl Manager {
    fn cert_paths(&self, host: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{host}.crt.pem")),
            self.dir.join(format!("{host}.key.pem")),
        )
    }

    /// Serves every stored certificate (expired ones too: better than no
    /// certificate while the renewal runs).
    fn load_stored(&mut self) -> anyhow::Result<()> {
        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?;
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(host) = file.to_str().and_then(|f| f.strip_suffix(".crt.pem")) else {
                continue;
            };
            let host = host.to_owned();
            match self.load_one(&host) {
                Ok(not_after) => {
                    info!(%host, expires = %humantime::format_rfc3339_seconds(not_after), "ACME certificate loaded");
                }
                Err(e) => {
                    warn!(%host, error = format!("{e:#}"), "stored ACME certificate unusable; ordering a new one")
                }
            }
        }
        Ok(())
    }

    fn load_one(&mut self, host: &str) -> anyhow::Result<SystemTime> {
        let (crt, key) = self.cert_paths(host);
        let cert_pem = std::fs::read(&crt).with_context(|| format!("reading {}", crt.display()))?;
        let key_pem = std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?;
        let certified = tls::certified_key(&cert_pem, &key_pem)?;
        let not_after = not_after(&certified)?;
        self.install(host, Arc::new(certified), not_after);
        Ok(not_after)
    }

    fn install(&mut self, host: &str, key: Arc<CertifiedKey>, not_after: SystemTime) {
        if host == self.domain {
            self.resolver.set_fallback(key.clone());
        }
        self.resolver.set_name(host, key);
        self.expiry.insert(host.to_owned(), not_after);
    }

    /// Whether `host` needs an order now: no certificate, or one due.
    fn due(&self, host: &str) -> bool {
        match self.expiry.get(host) {
            None => true,
            Some(t) => t
                .duration_since(SystemTime::now())
                .map_or(true, |left| left < RENEW_BEFORE),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<String>, stop: CancellationToken) {
        // A set: a client reconnecting in a loop asks again each time.
        let mut wanted: std::collections::BTreeSet<String> =
            std::iter::once(self.domain.clone()).collect();
        loop {
            let now = tokio::time::Instant::now();
            // Due renewals of known hosts, and the hosts asked for whose
            // retry time has come.
            let mut todo: Vec<String> = self
                .expiry
                .keys()
                .filter(|h| self.due(h))
                .cloned()
                .collect();
            todo.extend(wanted.iter().filter(|h| self.due(h)).cloned());
            todo.sort();
            todo.dedup();
            todo.retain(|h| self.failures.get(h).is_none_or(|(_, at)| *at <= now));
            for host in todo {
                if stop.is_cancelled() {
                    return;
                }
                self.order_and_record(&host).await;
            }
            wanted.retain(|h| self.due(h));
            let settled: Vec<String> = self
                .failures
                .keys()
                .filter(|h| !self.due(h))
                .cloned()
                .collect();
            for host in settled {
                self.failures.remove(&host);
            }
            let next_retry = self.failures.values().map(|(_, at)| *at).min();
            let wake = next_retry
                .unwrap_or(now + RENEW_CHECK)
                .min(now + RENEW_CHECK);
            // All arms are cancel-safe (`recv` loses nothing when dropped).
            tokio::select! {
                _ = stop.cancelled() => return,
                host = rx.recv() => match host {
                    Some(h) => {
                        wanted.insert(h);
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn order_and_record(&mut self, host: &str) {
        info!(%host, directory = %self.config.directory, "ordering an ACME certificate");
        match self.order(host).await {
            Ok(not_after) => {
                self.failures.remove(host);
                info!(%host, expires = %humantime::format_rfc3339_seconds(not_after), "ACME certificate issued");
            }
            Err(e) => {
                self.resolver.clear_challenge(host);
                let (count, _) = self
                    .failures
                    .get(host)
                    .copied()
                    .unwrap_or((0, tokio::time::Instant::now()));
                let wait = retry_wait(count);
                self.failures.insert(
                    host.to_owned(),
                    (count + 1, tokio::time::Instant::now() + wait),
                );
                warn!(%host, error = format!("{e:#}"), retry_in = ?wait, "ACME order failed");
            }
        }
    }

    async fn account(&mut self) -> anyhow::Result<Account> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        let builder = || -> anyhow::Result<_> {
            Ok(match &self.config.ca {
                Some(ca) => Account::builder_with_root(ca)
                    .with_context(|| format!("trusting --acme-ca {}", ca.display()))?,
                None => Account::builder().context("the ACME HTTP client")?,
            })
        };
        let path = self.dir.join("account.json");
        let stored = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .filter(|v| v["directory"].as_str() == Some(self.config.directory.as_str()))
            .and_then(|v| serde_json::from_value::<AccountCredentials>(v).ok());
        let account = match stored {
            Some(credentials) => builder()?
                .from_credentials(credentials)
                .await
                .context("loading the ACME account")?,
            None => {
                let contact = format!("mailto:{}", self.config.email);
                let (account, credentials) = builder()?
                    .create(
                        &NewAccount {
                            contact: &[&contact],
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.config.directory.clone(),
                        None,
                    )
                    .await
                    .context("creating the ACME account")?;
                let json = serde_json::to_vec_pretty(&credentials)?;
                write_private(&path, &json)?;
                info!(id = account.id(), "ACME account created");
                account
            }
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    /// One order for `host` by TLS-ALPN-01; stores and serves the result.
    async fn order(&mut self, host: &str) -> anyhow::Result<SystemTime> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(host.to_owned())];
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .context("new order")?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.context("fetching the authorization")?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => bail!("authorization is {other:?}"),
            }
            let mut challenge = authz
                .challenge(ChallengeType::TlsAlpn01)
                .context("the CA offers no tls-alpn-01 challenge")?;
            let digest = challenge.key_authorization().digest();
            self.resolver
                .set_challenge(host, Arc::new(challenge_cert(host, digest.as_ref())?));
            challenge
                .set_ready()
                .await
                .context("answering the challenge")?;
        }
        let status = order.poll_ready(&ORDER_POLL).await.context("validation")?;
        self.resolver.clear_challenge(host);
        if status != OrderStatus::Ready {
            bail!("order is {status:?} after validation");
        }
        let key_pem = order.finalize().await.context("finalizing the order")?;
        let chain_pem = order
            .poll_certificate(&ORDER_POLL)
            .await
            .context("fetching the certificate")?;
        let certified = tls::certified_key(chain_pem.as_bytes(), key_pem.as_bytes())
            .context("the issued certificate")?;
        let not_after = not_after(&certified)?;
        let (crt, key) = self.cert_paths(host);
        // The key first: a crash in between leaves a key without its
        // certificate (ignored at start), never the reverse.
        write_private(&key, key_pem.as_bytes())?;
        write_private(&crt, chain_pem.as_bytes())?;
        self.install(host, Arc::new(certified), not_after);
        Ok(not_after)
    }
}

/// How long to wait after the `failures`-th failure (0-based) in a row.
fn retry_wait(failures: u32) -> Duration {
    RETRY_MIN
        .saturating_mul(2u32.saturating_pow(failures.min(16)))
        .min(RETRY_MAX)
}

/// The self-signed certificate that answers a TLS-ALPN-01 challenge: the
/// host as its only name, and the key authorization's SHA-256 in the
/// critical acmeIdentifier extension (RFC 8737 §3).
fn challenge_cert(host: &str, digest: &[u8]) -> anyhow::Result<CertifiedKey> {
    if digest.len() != 32 {
        bail!("key authorization digest is {} bytes, not 32", digest.len());
    }
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate
    // with webpki, which refuses the critical extension the CA needs.
    let signing = tls::provider().key_provider.load_private_key(der)?;
    Ok(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signing,
    ))
}

/// When the leaf certificate stops being valid.
fn not_after(key: &CertifiedKey) -> anyhow::Result<SystemTime> {
    let leaf = key.end_entity_cert().context("no certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| anyhow::anyhow!("parsing the certificate: {e}"))?;
    let secs =
        u64::try_from(cert.validity().not_after.timestamp()).context("an expiry before 1970")?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Writes `bytes` to `path` readable by the owner only, replacing it whole
/// (a temporary file renamed over it).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    debug!(path = %path.display(), "written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(dir: &Path) -> Manager {
        Manager {
            config: AcmeConfig {
                email: "a@example.com".into(),
                directory: LETS_ENCRYPT.into(),
                ca: None,
            },
            domain: "example.com".into(),
            dir: dir.to_path_buf(),
            resolver: Arc::new(Resolver::default()),
            account: None,
            expiry: HashMap::new(),
            failures: HashMap::new(),
        }
    }

    #[test]
    fn a_certificate_is_due_30_days_before_it_expires() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut m = manager(dir.path());
        let day = Duration::from_secs(24 * 3600);
        assert!(m.due("new.example.com"), "no certificate yet");
        m.expiry
            .insert("fresh.example.com".into(), SystemTime::now() + 60 * day);
        m.expiry
            .insert("old.example.com".into(), SystemTime::now() + 29 * day);
        m.expiry
            .insert("gone.example.com".into(), SystemTime::now() - day);
        assert!(!m.due("fresh.example.com"));
        assert!(m.due("old.example.com"));
        assert!(m.due("gone.example.com"));
    }

    #[test]
    fn stored_certificates_are_served_at_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let c = rcgen::generate_simple_self_signed(vec!["example.com".to_string()]).expect("rcgen");
        write_private(
            &dir.path().join("example.com.crt.pem"),
            c.cert.pem().as_bytes(),
        )
        .expect("written");
        write_private(
            &dir.path().join("example.com.key.pem"),
            c.signing_key.serialize_pem().as_bytes(),
        )
        .expect("written");
        std::fs::write(dir.path().join("broken.example.com.crt.pem"), "junk").expect("written");
        let mut m = manager(dir.path());
        m.load_stored().expect("loads");
        assert!(m.resolver.has_name("example.com"));
        assert!(!m.resolver.has_name("broken.example.com"));
        assert!(!m.due("example.com"), "rcgen's certificates last years");
    }

    #[test]
    fn retries_back_off_to_a_cap() {
        assert_eq!(retry_wait(0), RETRY_MIN);
        assert_eq!(retry_wait(1), RETRY_MIN * 2);
        assert_eq!(retry_wait(1000), RETRY_MAX);
    }

    #[test]
    fn a_challenge_certificate_carries_the_digest() {
        let key = challenge_cert("app.example.com", &[7; 32]).expect("made");
        let (_, cert) = x509_parser::parse_x509_certificate(key.cert[0].as_ref()).expect("parses");
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        assert!(ext.value.ends_with(&[7; 32]));
        assert!(challenge_cert("app.example.com", &[7; 31]).is_err());
    }

    #[test]
    fn stored_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("k.pem");
        write_private(&p, b"secret").expect("written");
        let mode = std::fs::metadata(&p).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
