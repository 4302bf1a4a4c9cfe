//! Where the local app listens: `relay connect`'s PORT | HOST:PORT | URL,
//! and how to reach it (TCP, then TLS for an `https://` app).

use std::sync::{Arc, OnceLock};

use http::Uri;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

/// Where the local app listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTarget {
    /// `http(s)://host:port`, no trailing slash.
    pub base: String,
    host: String,
    port: u16,
    tls: bool,
    /// `--insecure-local`: any certificate of an `https://` app is taken.
    pub insecure: bool,
    /// `--host-header`: the Host the app gets, from the tunnel and from
    /// replays alike (a dev server that checks it refuses both otherwise).
    pub host_header: crate::forward_opts::HostHeader,
}

impl LocalTarget {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the app is `https://`.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// `host:port`, for a Host header and for messages.
    pub fn authority(&self) -> &str {
        // Called per request (the Host header): a prefix test, not a
        // substring search.
        let base = self.base.as_str();
        base.strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .unwrap_or(base)
    }

    /// TLS over `io` for an `https://` app (HTTP/1.1 by ALPN), checking
    /// its certificate against the web's roots unless `--insecure-local`.
    pub async fn tls<IO>(&self, io: IO) -> std::io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(self.host.clone()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{:?} is not a valid TLS name", self.host),
            )
        })?;
        tokio_rustls::TlsConnector::from(local_tls_config(self.insecure))
            .connect(name, io)
            .await
    }

    /// `PORT`, `:PORT`, `HOST:PORT` or `http(s)://HOST[:PORT]`. A bare port
    /// means `localhost`, like ngrok: resolved per connection, so apps
    /// bound to `::1` only are reached too.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('/');
        if let Ok(port) = s.parse::<u16>() {
            return if port == 0 {
                Err("port 0 is not a port an app listens on".into())
            } else {
                Ok(Self {
                    base: format!("http://localhost:{port}"),
                    host: "localhost".into(),
                    port,
                    tls: false,
                    insecure: false,
                    host_header: Default::default(),
                })
            };
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s} is not a port (1-65535)"));
        }
        let with_scheme = if s.contains("://") {
            s.to_owned()
        } else if let Some(port) = s.strip_prefix(':') {
            // `:4000`, as some tools write a port on every interface.
            format!("http://localhost:{port}")
        } else if s.contains(':') {
            format!("http://{s}")
        } else {
            // A bare word is more likely a typo than a host on port 80;
            // `http://HOST` says port 80 on purpose.
            return Err(format!(
                "{s:?} is not PORT, HOST:PORT or an http:// URL (for port 80, write http://{s})"
            ));
        };
        let uri: Uri = with_scheme
            .parse()
            .map_err(|_| format!("{s:?} is not PORT, HOST:PORT or an http:// URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("a local app is http:// or https://".into()),
        };
        let scheme = if tls { "https" } else { "http" };
        let Some(auth) = uri.authority().filter(|a| !a.host().is_empty()) else {
            return Err(format!("{s:?} has no host"));
        };
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err("a local target is a host and port, without a path".into());
        }
        // After an IPv6 literal's `]`, a `:` means a port was written.
        let after_host = auth
            .as_str()
            .rsplit_once(']')
            .map_or(auth.as_str(), |(_, p)| p);
        let port = match auth.port_u16() {
            Some(0) => return Err("port 0 is not a port an app listens on".into()),
            Some(p) => p,
            None if after_host.contains(':') => {
                return Err(format!("{s:?} does not have a port in 1-65535"))
            }
            None if tls => 443,
            None => 80,
        };
        Ok(Self {
            base: format!("{scheme}://{}:{port}", auth.host()),
            host: auth
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            tls,
            insecure: false,
            host_header: Default::default(),
        })
    }
}

/// The TLS settings for local apps, built once per process for each of
/// the two trust choices.
fn local_tls_config(insecure: bool) -> Arc<rustls::ClientConfig> {
    static VERIFIED: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    static ANY: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let cell = if insecure { &ANY } else { &VERIFIED };
    cell.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            // The ring provider supports the default versions.
            .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"));
        let mut config = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        // The pool speaks HTTP/1.1 to the app.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    })
    .clone()
}

/// `--insecure-local`: takes any certificate the local app shows (a dev
/// server's self-signed one), still checking that the handshake's
/// signatures are sound. Used for the local app only, never for the relay
/// server.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether a TLS handshake failed because the app's certificate was not
/// trusted (self-signed, unknown issuer, wrong name, expired).
pub fn is_untrusted_certificate(e: &std::io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let base = |s: &str| LocalTarget::parse(s).map(|t| t.base);
        assert_eq!(base("4000"), Ok("http://localhost:4000".into()));
        assert_eq!(base("127.0.0.1:4000"), Ok("http://127.0.0.1:4000".into()));
        assert_eq!(
            base("http://app.internal:81/"),
            Ok("http://app.internal:81".into())
        );
        assert_eq!(
            base("http://app.internal"),
            Ok("http://app.internal:80".into())
        );
        assert_eq!(base(":4000"), Ok("http://localhost:4000".into()));
        assert_eq!(base("[::1]:4000"), Ok("http://[::1]:4000".into()));
        assert!(base("0").is_err());
        assert!(base("99999").is_err());
        assert!(base("abc").is_err());
        assert!(base("http://:4000").is_err());
        assert!(base("localhost:99999").is_err());
        assert!(base("").is_err());
        assert_eq!(base("https://x:1"), Ok("https://x:1".into()));
        assert_eq!(base("https://x"), Ok("https://x:443".into()));
        assert_eq!(
            LocalTarget::parse("https://localhost:8443").map(|t| t.authority().to_owned()),
            Ok("localhost:8443".into())
        );
        assert!(base("ftp://x:1").is_err());
        assert!(base("http://x:1/path").is_err());
        assert!(base("not a target").is_err());
    }
}
