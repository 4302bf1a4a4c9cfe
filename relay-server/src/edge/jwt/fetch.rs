//! One bounded fetch of an issuer's key set (HTTP/1.1, TLS with the web
//! roots for `https://`), and which of its keys are usable.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

use super::cache::{KeySet, VerifyKey};
use super::{JwksLimits, JWKS_PATH, MIN_RSA_BITS};

/// A TLS client trusting the Mozilla roots (webpki-roots), HTTP/1.1 only.
pub(super) fn tls_connector() -> TlsConnector {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// GETs the key set under the fetch limits and keeps its usable keys.
pub(super) async fn fetch_keys(
    url: &Uri,
    limits: &JwksLimits,
    tls: &TlsConnector,
) -> Result<KeySet, String> {
    let body = tokio::time::timeout(limits.fetch_timeout, get(url, limits, tls))
        .await
        .map_err(|_| format!("no answer from {url} within {:?}", limits.fetch_timeout))??;
    parse_key_set(&body, limits.max_keys).map_err(|e| format!("{url}: {e}"))
}

async fn get(url: &Uri, limits: &JwksLimits, tls: &TlsConnector) -> Result<Bytes, String> {
    let https = url.scheme_str() == Some("https");
    let host = url.host().ok_or_else(|| format!("{url} has no host"))?;
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let authority = url.authority().map_or(host, |a| a.as_str());
    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let path = url.path_and_query().map_or(JWKS_PATH, |p| p.as_str());
    let req = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "relay-server")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request for {url}: {e}"))?;
    if https {
        let name = rustls::pki_types::ServerName::try_from(bare_host.to_owned())
            .map_err(|_| format!("{host} is not a TLS server name"))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {authority}: {e}"))?;
        exchange(stream, req, url, limits.max_body_bytes).await
    } else {
        exchange(tcp, req, url, limits.max_body_bytes).await
    }
}

/// Aborts the connection task when the fetch ends, also by timeout.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange<S>(
    io: S,
    req: Request<Empty<Bytes>>,
    url: &Uri,
    max_body: usize,
) -> Result<Bytes, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if res.status() != StatusCode::OK {
        return Err(format!("{url} answered {}", res.status()));
    }
    let too_large = || format!("{url}: the key set is larger than {max_body} bytes");
    let declared = res
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body as u64) {
        return Err(too_large());
    }
    match Limited::new(res.into_body(), max_body).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(format!("{url}: reading the key set: {e}")),
    }
}

/// The usable keys of a JWK set: RSA (at least [`MIN_RSA_BITS`]) for RS256
/// and P-256 for ES256, marked for signatures if marked at all. Keys of
/// other types, or that do not parse, are skipped, so one odd key does not
/// hide the others.
fn parse_key_set(body: &[u8], max_keys: usize) -> Result<KeySet, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|e| format!("not a JWK set ({e})"))?;
    if raw.keys.len() > max_keys {
        return Err(format!(
            "the key set has {} keys, more than {max_keys}",
            raw.keys.len()
        ));
    }
    let keys: Vec<VerifyKey> = raw.keys.into_iter().filter_map(usable_key).collect();
    if keys.is_empty() {
        return Err("the key set has no RS256 or ES256 (P-256) signing key".into());
    }
    Ok(KeySet { keys })
}

fn usable_key(value: serde_json::Value) -> Option<VerifyKey> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    if jwk
        .common
        .key_algorithm
        .is_some_and(|a| a != KeyAlgorithm::from(alg))
    {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    let sound = match key.kind() {
        jsonwebtoken::DecodingKeyKind::RsaModulusExponent { n, e } => {
            let n = n.iter().skip_while(|b| **b == 0).count();
            n * 8 >= MIN_RSA_BITS && !e.is_empty()
        }
        // 0x04 || x || y, as `from_jwk` builds it for EC keys.
        jsonwebtoken::DecodingKeyKind::SecretOrDer(point) => point.len() == 65,
    };
    sound.then(|| VerifyKey {
        kid: jwk.common.key_id,
        alg,
        key,
    })
}
