//! A local identity provider's signing side, for `--verify-jwt`: it serves
//! its public keys at `/.well-known/jwks.json` on 127.0.0.1 port 0 and signs
//! tokens with the matching private keys, made at test time (RS256: RSA
//! 2048, ES256: P-256).
//!
//! ```ignore
//! let idp = LocalIssuer::start().await?;
//! // relay connect 4000 --verify-jwt {idp.issuer()} --audience https://api
//! let token = idp.sign_rs256(&idp.claims("https://api", 300))?;
//! // ... Authorization: Bearer {token} ...
//! idp.rotate()?; // new keys; tokens signed with the old ones stop verifying
//! ```
//!
//! It counts the key-set requests it answers ([`LocalIssuer::fetches`]), so
//! a test can see the server's cache at work, and can be made to answer like
//! a broken identity provider ([`LocalIssuer::answer_with`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Where an issuer publishes its keys (relative to the issuer URL).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Seconds since the epoch, as JWT claims count time.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One private signing key and its public JWK.
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
    /// RSA only: the public key as PEM and as PKCS#1 DER, which an
    /// algorithm-confusion attacker uses as an HMAC secret.
    rsa_public: Option<(String, Vec<u8>)>,
}

impl SigningKey {
    /// A new RSA 2048 key for RS256.
    pub fn rs256(kid: &str) -> Result<Self> {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        let private =
            rsa::PrivateKey::new(&mut rand::rngs::SysRng, 2048).context("generating an RSA key")?;
        let der = private.to_pkcs1_der().context("RSA key to DER")?;
        let public = private.to_public_key();
        let pem = public
            .to_public_key_pem(LineEnding::LF)
            .context("RSA public key to PEM")?;
        let public_der = public.to_pkcs1_der().context("RSA public key to DER")?;
        let encoding = EncodingKey::from_rsa_der(der.as_bytes());
        Self::new(
            kid,
            Algorithm::RS256,
            encoding,
            Some((pem, public_der.as_bytes().to_vec())),
        )
    }

    /// A new P-256 key for ES256.
    pub fn es256(kid: &str) -> Result<Self> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating a P-256 key")?;
        let encoding = EncodingKey::from_ec_der(&pair.serialize_der());
        Self::new(kid, Algorithm::ES256, encoding, None)
    }

    fn new(
        kid: &str,
        alg: Algorithm,
        encoding: EncodingKey,
        rsa_public: Option<(String, Vec<u8>)>,
    ) -> Result<Self> {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).context("public JWK")?;
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.key_algorithm = Some(KeyAlgorithm::from(alg));
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk,
            rsa_public,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as the key set publishes it (`kid`, `alg`, `use: sig`).
    pub fn jwk(&self) -> Jwk {
        self.jwk.clone()
    }

    /// A token over `claims`, its header naming this key's `alg` and `kid`.
    pub fn sign(&self, claims: &Value) -> Result<String> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.sign_with(header, claims)
    }

    /// A token with any header, e.g. without `kid`.
    pub fn sign_with(&self, header: Header, claims: &Value) -> Result<String> {
        jsonwebtoken::encode(&header, claims, &self.encoding).context("signing a token")
    }

    /// RSA keys: the public key as PEM text and as PKCS#1 DER.
    pub fn rsa_public(&self) -> Option<(&str, &[u8])> {
        self.rsa_public
            .as_ref()
            .map(|(pem, der)| (pem.as_str(), der.as_slice()))
    }
}

/// How the key-set endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksAnswer {
    /// 200 with the current keys (the default).
    Keys,
    /// 200 with this body, as it is.
    Body(String),
    /// This status, empty body.
    Status(u16),
    /// 200 with this many bytes of a JSON string that never ends, its
    /// length declared.
    Oversized(usize),
    /// The same sent chunked, in 64 KiB chunks, no length declared.
    OversizedChunked(usize),
    /// Reads the request and never answers.
    Hang,
}

struct Shared {
    rsa: Arc<SigningKey>,
    ec: Arc<SigningKey>,
    answer: JwksAnswer,
    rotations: u64,
}

/// An identity provider on 127.0.0.1 port 0 with one RS256 and one ES256
/// key (kids `rsa-0` and `ec-0`; after each rotation the number goes up).
pub struct LocalIssuer {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    fetches: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl Drop for LocalIssuer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl LocalIssuer {
    pub async fn start() -> Result<Self> {
        let shared = Arc::new(Mutex::new(Shared {
            rsa: Arc::new(SigningKey::rs256("rsa-0")?),
            ec: Arc::new(SigningKey::es256("ec-0")?),
            answer: JwksAnswer::Keys,
            rotations: 0,
        }));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the JWKS endpoint")?;
        let addr = listener.local_addr()?;
        let fetches = Arc::new(AtomicU64::new(0));
        let (s, f) = (shared.clone(), fetches.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, f) = (s.clone(), f.clone());
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req| answer(req, s.clone(), f.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            shared,
            fetches,
            accept,
        })
    }

    /// `http://127.0.0.1:PORT/`: the `--verify-jwt` argument and the `iss`
    /// of its tokens.
    pub fn issuer(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// `iss` (this issuer), `aud`, `sub`, `iat` now, and `exp`
    /// `expires_in` seconds from now (negative: already expired).
    pub fn claims(&self, audience: &str, expires_in: i64) -> Value {
        let now = now_secs();
        json!({
            "iss": self.issuer(),
            "aud": audience,
            "sub": "test-user",
            "iat": now,
            "exp": now + expires_in,
        })
    }

    /// A token signed with the current RSA key (`kid` set).
    pub fn sign_rs256(&self, claims: &Value) -> Result<String> {
        self.rsa_key().sign(claims)
    }

    /// A token signed with the current P-256 key (`kid` set).
    pub fn sign_es256(&self, claims: &Value) -> Result<String> {
        self.ec_key().sign(claims)
    }

    pub fn rsa_key(&self) -> Arc<SigningKey> {
        self.lock().rsa.clone()
    }

    pub fn ec_key(&self) -> Arc<SigningKey> {
        self.lock().ec.clone()
    }

    /// Replaces both keys with new ones under new kids; the old keys are no
    /// longer published.
    pub fn rotate(&self) -> Result<()> {
        let n = self.lock().rotations + 1;
        let rsa = Arc::new(SigningKey::rs256(&format!("rsa-{n}"))?);
        let ec = Arc::new(SigningKey::es256(&format!("ec-{n}"))?);
        let mut s = self.lock();
        (s.rsa, s.ec, s.rotations) = (rsa, ec, n);
        Ok(())
    }

    /// The key set as served now.
    pub fn jwks(&self) -> JwkSet {
        let s = self.lock();
        JwkSet {
            keys: vec![s.rsa.jwk(), s.ec.jwk()],
        }
    }

    /// How the key-set endpoint answers from now on.
    pub fn answer_with(&self, answer: JwksAnswer) {
        self.lock().answer = answer;
    }

    /// Key-set requests received so far (answered or not).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn answer(
    req: Request<Incoming>,
    shared: Arc<Mutex<Shared>>,
    fetches: Arc<AtomicU64>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let reply = |status: StatusCode, body: Bytes| {
        let mut res = Response::new(Full::new(body).boxed());
        *res.status_mut() = status;
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(res)
    };
    if req.uri().path() != JWKS_PATH {
        return reply(StatusCode::NOT_FOUND, Bytes::from_static(b"{}"));
    }
    fetches.fetch_add(1, Ordering::SeqCst);
    let (answer, set) = {
        let s = shared.lock().unwrap_or_else(|e| e.into_inner());
        let set = JwkSet {
            keys: vec![s.rsa.jwk(), s.ec.jwk()],
        };
        (s.answer.clone(), set)
    };
    match answer {
        JwksAnswer::Keys => match serde_json::to_vec(&set) {
            Ok(body) => reply(StatusCode::OK, body.into()),
            Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, Bytes::new()),
        },
        JwksAnswer::Body(body) => reply(StatusCode::OK, body.into()),
        JwksAnswer::Status(code) => reply(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Bytes::new(),
        ),
        JwksAnswer::Oversized(len) => reply(StatusCode::OK, endless_string(len)),
        JwksAnswer::OversizedChunked(len) => {
            let body = endless_string(len);
            let chunks = (0..body.len()).step_by(64 * 1024).map(move |at| {
                Ok(Frame::data(
                    body.slice(at..(at + 64 * 1024).min(body.len())),
                ))
            });
            let stream = StreamBody::new(futures_util::stream::iter(chunks.collect::<Vec<_>>()));
            let mut res = Response::new(BodyExt::boxed(stream));
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok(res)
        }
        JwksAnswer::Hang => {
            std::future::pending::<()>().await;
            reply(StatusCode::OK, Bytes::new())
        }
    }
}

/// `"aaaa...` (`len` bytes, at least 2): JSON that never ends.
fn endless_string(len: usize) -> Bytes {
    let mut body = vec![b'a'; len.max(2)];
    body[0] = b'"';
    body.into()
}

/// A token with any header and claims and the given signature bytes, for
/// forgeries a real signer would not make (`alg: none`, bad signatures).
pub fn forge_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        part(header),
        part(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sign_tokens_their_jwks_verify() -> Result<()> {
        let rsa = SigningKey::rs256("r")?;
        let ec = SigningKey::es256("e")?;
        for key in [&rsa, &ec] {
            let token = key.sign(&json!({"exp": now_secs() + 60, "aud": "a"}))?;
            let mut v = jsonwebtoken::Validation::new(key.alg);
            v.set_audience(&["a"]);
            let dk = jsonwebtoken::DecodingKey::from_jwk(&key.jwk())?;
            jsonwebtoken::decode::<Value>(&token, &dk, &v)?;
        }
        Ok(())
    }
}
