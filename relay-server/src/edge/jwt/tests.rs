//! Against a real local identity provider (`relay_tests::jwks`, a hyper
//! server on 127.0.0.1:0 counting its key-set fetches); the cache's clock
//! is moved by hand, nothing sleeps.

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use relay_tests::jwks::{forge_token, now_secs, JwksAnswer, LocalIssuer, SigningKey};
use relay_tests::ReservedPort;
use serde_json::{json, Value};

use super::*;

const AUD: &str = "https://api.example";

/// A verifier whose clock moves only when the test says.
struct Manual {
    verifier: JwtVerifier,
    offset: Arc<Mutex<Duration>>,
}

impl Manual {
    fn new() -> Self {
        Self::with_limits(JwksLimits::default())
    }

    fn with_limits(limits: JwksLimits) -> Self {
        let offset = Arc::new(Mutex::new(Duration::ZERO));
        let mut verifier = JwtVerifier::with_limits(limits);
        verifier.clock = Clock {
            base: Instant::now(),
            manual: Some(offset.clone()),
        };
        Self { verifier, offset }
    }

    fn advance(&self, by: Duration) {
        *self.offset.lock().expect("clock lock") += by;
    }

    async fn check(&self, issuer: &str, token: &str) -> Result<(), JwtRejection> {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header value");
        self.verifier.verify(&rule(issuer), Some(&value)).await
    }
}

fn rule(issuer: &str) -> JwtRule {
    JwtRule {
        issuer: issuer.to_owned(),
        audience: AUD.to_owned(),
    }
}

async fn idp() -> LocalIssuer {
    LocalIssuer::start().await.expect("local issuer starts")
}

fn signed(idp: &LocalIssuer, claims: &Value) -> (String, String) {
    (
        idp.sign_rs256(claims).expect("RS256 signs"),
        idp.sign_es256(claims).expect("ES256 signs"),
    )
}

#[tokio::test]
async fn rs256_and_es256_tokens_of_the_issuer_pass_with_one_fetch() {
    let idp = idp().await;
    let v = Manual::new();
    let (rs, es) = signed(&idp, &idp.claims(AUD, 300));
    assert_eq!(v.check(&idp.issuer(), &rs).await, Ok(()));
    assert_eq!(v.check(&idp.issuer(), &es).await, Ok(()));
    // `aud` as an array holding the audience, scheme in any case.
    let mut claims = idp.claims(AUD, 300);
    claims["aud"] = json!(["other", AUD]);
    let token = idp.sign_rs256(&claims).expect("signs");
    let value = HeaderValue::from_str(&format!("bEaReR {token}")).expect("header value");
    assert_eq!(
        v.verifier.verify(&rule(&idp.issuer()), Some(&value)).await,
        Ok(())
    );
    assert_eq!(idp.fetches(), 1, "the keys are cached");
}

#[tokio::test]
async fn expiry_and_not_before_have_a_minute_of_leeway() {
    let idp = idp().await;
    let v = Manual::new();
    let (rs, es) = signed(&idp, &idp.claims(AUD, -300));
    for token in [rs, es] {
        let e = v.check(&idp.issuer(), &token).await.expect_err("expired");
        assert!(matches!(e, JwtRejection::Expired { .. }), "{e:?}");
        assert_eq!(e.to_string(), "expired 5 min ago");
    }
    let within = idp.sign_es256(&idp.claims(AUD, -30)).expect("signs");
    assert_eq!(v.check(&idp.issuer(), &within).await, Ok(()));

    let mut claims = idp.claims(AUD, 3600);
    claims["nbf"] = json!(now_secs() + 600);
    let early = idp.sign_rs256(&claims).expect("signs");
    assert_eq!(
        v.check(&idp.issuer(), &early).await,
        Err(JwtRejection::NotYetValid)
    );
    claims["nbf"] = json!(now_secs() + 30);
    let skewed = idp.sign_rs256(&claims).expect("signs");
    assert_eq!(v.check(&idp.issuer(), &skewed).await, Ok(()));
}

#[tokio::test]
async fn issuer_audience_and_required_claims_are_checked() {
    let idp = idp().await;
    let v = Manual::new();
    let wrong_aud = idp
        .sign_rs256(&idp.claims("https://other", 300))
        .expect("signs");
    let e = v
        .check(&idp.issuer(), &wrong_aud)
        .await
        .expect_err("refused");
    assert_eq!(
        (e.clone(), e.to_string().as_str()),
        (JwtRejection::WrongAudience, "wrong audience")
    );

    let mut claims = idp.claims(AUD, 300);
    // Exactly the rule's issuer: not even without its trailing slash.
    claims["iss"] = json!(idp.issuer().trim_end_matches('/'));
    let wrong_iss = idp.sign_es256(&claims).expect("signs");
    let e = v
        .check(&idp.issuer(), &wrong_iss)
        .await
        .expect_err("refused");
    assert_eq!(
        (e.clone(), e.to_string().as_str()),
        (JwtRejection::WrongIssuer, "wrong issuer")
    );

    for claim in ["exp", "iss", "aud"] {
        let mut claims = idp.claims(AUD, 300);
        claims.as_object_mut().expect("object").remove(claim);
        let token = idp.sign_rs256(&claims).expect("signs");
        assert_eq!(
            v.check(&idp.issuer(), &token).await,
            Err(JwtRejection::MissingClaim(claim.into()))
        );
    }
    let mut claims = idp.claims(AUD, 300);
    claims["exp"] = json!("tomorrow");
    let token = idp.sign_rs256(&claims).expect("signs");
    let e = v.check(&idp.issuer(), &token).await.expect_err("refused");
    assert_eq!(e, JwtRejection::MissingClaim("exp".into()));
    assert_eq!(e.to_string(), "claim exp missing or malformed");
    let mut claims = idp.claims(AUD, 300);
    claims["nbf"] = json!("soon");
    let token = idp.sign_rs256(&claims).expect("signs");
    assert_eq!(
        v.check(&idp.issuer(), &token).await,
        Err(JwtRejection::BadClaim("nbf".into()))
    );
}

#[tokio::test]
async fn an_unknown_kid_refetches_once_a_minute_and_finds_rotated_keys() {
    let idp = idp().await;
    let v = Manual::new();
    let old = idp.sign_rs256(&idp.claims(AUD, 300)).expect("signs");
    assert_eq!(v.check(&idp.issuer(), &old).await, Ok(()));
    assert_eq!(idp.fetches(), 1);

    idp.rotate().expect("rotates");
    let (rs, es) = signed(&idp, &idp.claims(AUD, 300));
    assert_eq!(
        v.check(&idp.issuer(), &rs).await,
        Ok(()),
        "new kid: refetched"
    );
    assert_eq!(idp.fetches(), 2);
    assert_eq!(
        v.check(&idp.issuer(), &es).await,
        Ok(()),
        "same fetch had it"
    );
    // The rotated-out key is gone with the refetch.
    assert_eq!(
        v.check(&idp.issuer(), &old).await,
        Err(JwtRejection::UnknownKey)
    );

    // Made-up kids within the minute: no fetch at all.
    let stranger = SigningKey::rs256("made-up").expect("key");
    let forged = stranger.sign(&idp.claims(AUD, 300)).expect("signs");
    for _ in 0..2 {
        let e = v.check(&idp.issuer(), &forged).await.expect_err("unknown");
        assert_eq!(e.to_string(), "unknown key id");
    }
    assert_eq!(idp.fetches(), 2, "one refetch per minute at most");

    // A minute later an unknown kid may fetch again, once.
    v.advance(JWKS_REFETCH_INTERVAL);
    assert_eq!(
        v.check(&idp.issuer(), &forged).await,
        Err(JwtRejection::UnknownKey)
    );
    assert_eq!(
        v.check(&idp.issuer(), &forged).await,
        Err(JwtRejection::UnknownKey)
    );
    assert_eq!(idp.fetches(), 3);
}

#[tokio::test]
async fn keys_are_fetched_again_after_the_cache_ttl() {
    let idp = idp().await;
    let v = Manual::new();
    let old = idp.sign_es256(&idp.claims(AUD, 3600)).expect("signs");
    assert_eq!(v.check(&idp.issuer(), &old).await, Ok(()));
    idp.rotate().expect("rotates");
    v.advance(JWKS_CACHE_TTL - Duration::from_secs(1));
    assert_eq!(v.check(&idp.issuer(), &old).await, Ok(()), "still cached");
    assert_eq!(idp.fetches(), 1);
    v.advance(Duration::from_secs(1));
    assert_eq!(
        v.check(&idp.issuer(), &old).await,
        Err(JwtRejection::UnknownKey)
    );
    assert_eq!(idp.fetches(), 2, "refreshed on schedule, not per request");
}

#[tokio::test]
async fn concurrent_requests_for_a_cold_issuer_share_one_fetch() {
    let idp = idp().await;
    let v = Manual::new();
    let (rs, es) = signed(&idp, &idp.claims(AUD, 300));
    let issuer = idp.issuer();
    let checks = (0..16).map(|i| v.check(&issuer, if i % 2 == 0 { &rs } else { &es }));
    let results = futures_util::future::join_all(checks).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(idp.fetches(), 1);
}

#[tokio::test]
async fn only_rs256_and_es256_and_only_with_their_own_keys() {
    let idp = idp().await;
    let v = Manual::new();
    let claims = idp.claims(AUD, 300);
    let rsa = idp.rsa_key();

    let none = forge_token(&json!({"alg": "none", "typ": "JWT"}), &claims, b"");
    assert_eq!(
        v.check(&idp.issuer(), &none).await,
        Err(JwtRejection::UnsupportedHeader)
    );
    let none_kid = forge_token(&json!({"alg": "none", "kid": rsa.kid()}), &claims, b"");
    assert_eq!(
        v.check(&idp.issuer(), &none_kid).await,
        Err(JwtRejection::UnsupportedHeader)
    );

    // The confusion attack: HS256 keyed with the RSA public key, as PEM
    // and as DER, naming the RSA key's kid.
    let (pem, der) = rsa.rsa_public().expect("an RSA key");
    for secret in [pem.as_bytes(), der] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(rsa.kid().to_owned());
        let key = EncodingKey::from_secret(secret).expect("secret");
        let token = jsonwebtoken::encode(&header, &claims, &key).expect("signs");
        let e = v.check(&idp.issuer(), &token).await.expect_err("refused");
        assert_eq!(e, JwtRejection::Algorithm("HS256".into()));
    }
    for alg in [
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let header = json!({"alg": format!("{alg:?}"), "kid": rsa.kid()});
        let token = forge_token(&header, &claims, b"sig");
        assert_eq!(
            v.check(&idp.issuer(), &token).await,
            Err(JwtRejection::Algorithm(format!("{alg:?}")))
        );
    }

    // An ES256 token naming the RSA key's kid: the key decides.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(rsa.kid().to_owned());
    let token = idp.ec_key().sign_with(header, &claims).expect("signs");
    let e = v.check(&idp.issuer(), &token).await.expect_err("refused");
    assert!(matches!(e, JwtRejection::WrongAlgorithm { .. }), "{e:?}");

    // Signed by a stranger under the issuer's kid.
    let stranger = SigningKey::rs256(rsa.kid()).expect("key");
    let token = stranger.sign(&claims).expect("signs");
    assert_eq!(
        v.check(&idp.issuer(), &token).await,
        Err(JwtRejection::BadSignature)
    );
    assert_eq!(JwtRejection::BadSignature.to_string(), "signature invalid");

    // A genuine token with its payload swapped.
    let genuine = idp.sign_es256(&claims).expect("signs");
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let other = idp
        .sign_es256(&idp.claims("https://other", 300))
        .expect("signs");
    parts[1] = other.split('.').nth(1).expect("payload");
    let tampered = parts.join(".");
    assert_eq!(
        v.check(&idp.issuer(), &tampered).await,
        Err(JwtRejection::BadSignature)
    );
    assert_eq!(idp.fetches(), 1, "made-up algorithms never cost a fetch");
}

#[tokio::test]
async fn a_token_without_kid_needs_a_single_key_set() {
    let idp = idp().await;
    let v = Manual::new();
    let claims = idp.claims(AUD, 300);
    let no_kid = idp
        .rsa_key()
        .sign_with(Header::new(Algorithm::RS256), &claims)
        .expect("signs");
    assert_eq!(
        v.check(&idp.issuer(), &no_kid).await,
        Err(JwtRejection::AmbiguousKey)
    );

    let single = Manual::new();
    let set = json!({"keys": [idp.rsa_key().jwk()]});
    idp.answer_with(JwksAnswer::Body(set.to_string()));
    assert_eq!(single.check(&idp.issuer(), &no_kid).await, Ok(()));
}

#[tokio::test]
async fn garbage_is_refused_without_a_fetch() {
    let idp = idp().await;
    let v = Manual::new();
    let issuer = idp.issuer();
    let check = |value: Option<HeaderValue>| {
        let rule = rule(&issuer);
        let v = &v.verifier;
        async move { v.verify(&rule, value.as_ref()).await }
    };
    let hv = |s: &str| Some(HeaderValue::from_str(s).expect("header value"));
    assert_eq!(check(None).await, Err(JwtRejection::Missing));
    assert_eq!(check(hv("Bearer")).await, Err(JwtRejection::Missing));
    assert_eq!(check(hv("Bearer   ")).await, Err(JwtRejection::Missing));
    assert_eq!(check(hv("Basic YTpi")).await, Err(JwtRejection::NotBearer));
    assert_eq!(
        check(hv("eyJhbGciOi.x.y")).await,
        Err(JwtRejection::NotBearer)
    );
    for junk in [
        "Bearer not-a-jwt",
        "Bearer a.b",
        "Bearer a.b.c.d",
        "Bearer ..",
        "Bearer a.b.c",
        "Bearer !!!.???.***",
        "Bearer eyJhbGciOiJSUzI1NiI.e30.e30",
    ] {
        assert_eq!(
            check(hv(junk)).await,
            Err(JwtRejection::Malformed),
            "{junk}"
        );
    }
    // JSON, but no algorithm.
    assert_eq!(
        check(hv("Bearer e30.e30.e30")).await,
        Err(JwtRejection::UnsupportedHeader)
    );
    // Not text at all.
    let bytes = HeaderValue::from_bytes(b"Bearer \xff\xfe.a.b").expect("obs-text value");
    assert_eq!(check(Some(bytes)).await, Err(JwtRejection::Malformed));
    // Oversized, before any decoding.
    let huge = format!(
        "Bearer {}.{}.{}",
        "a".repeat(8000),
        "b".repeat(8000),
        "c".repeat(8000)
    );
    let e = check(hv(&huge)).await.expect_err("refused");
    assert_eq!(e, JwtRejection::TooLarge);
    assert!(e.to_string().contains("16384"), "{e}");
    // Deeply nested JSON in the header.
    let deep = forge_token(
        &serde_json::from_str::<Value>(&format!("{}{}", "[".repeat(100), "]".repeat(100)))
            .expect("nested"),
        &json!({}),
        b"s",
    );
    assert!(check(hv(&format!("Bearer {deep}"))).await.is_err());
    assert_eq!(idp.fetches(), 0);
}

#[tokio::test]
async fn an_issuer_that_cannot_serve_its_keys_fails_closed() {
    let idp = idp().await;
    let limits = JwksLimits {
        fetch_timeout: Duration::from_millis(300),
        ..JwksLimits::default()
    };
    let claims = idp.claims(AUD, 300);
    let token = idp.sign_rs256(&claims).expect("signs");
    let cases = [
        (JwksAnswer::Status(500), "500"),
        (JwksAnswer::Hang, "no answer"),
        (
            JwksAnswer::Oversized(2 * 1024 * 1024),
            "larger than 262144 bytes",
        ),
        (
            JwksAnswer::OversizedChunked(2 * 1024 * 1024),
            "larger than 262144 bytes",
        ),
        (JwksAnswer::Body("<html>".into()), "not a JWK set"),
        (
            JwksAnswer::Body(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.into()),
            "no RS256",
        ),
        (
            JwksAnswer::Body(json!({"keys": vec![idp.rsa_key().jwk(); 33]}).to_string()),
            "33 keys, more than 32",
        ),
    ];
    for (answer, reason) in cases {
        idp.answer_with(answer.clone());
        let v = Manual::with_limits(limits.clone());
        let e = v.check(&idp.issuer(), &token).await.expect_err("no keys");
        let JwtRejection::KeysUnavailable(why) = &e else {
            panic!("{answer:?}: {e:?}");
        };
        assert!(why.contains(reason), "{answer:?}: {why}");
        assert!(e
            .to_string()
            .starts_with("the issuer's keys are unavailable"));
    }

    // Nothing listening.
    let port = ReservedPort::new().expect("reserved port");
    let down = format!("http://127.0.0.1:{}/", port.port());
    let v = Manual::new();
    let e = v.check(&down, &token).await.expect_err("down");
    assert!(
        matches!(&e, JwtRejection::KeysUnavailable(w) if w.contains("cannot connect")),
        "{e:?}"
    );

    // https: TLS is spoken (here to a plain HTTP server, which fails).
    let tls = idp.issuer().replace("http://", "https://");
    let e = v.check(&tls, &token).await.expect_err("no TLS there");
    assert!(
        matches!(&e, JwtRejection::KeysUnavailable(w) if w.contains("TLS")),
        "{e:?}"
    );

    // https with a certificate no web root vouches for.
    let dir = tempfile::tempdir().expect("temp dir");
    let files = relay_tests::certs::self_signed_cert(dir.path()).expect("certificate");
    let (acceptor, _) = crate::tls::file_acceptor(&crate::config::TlsPaths {
        cert: files.cert,
        key: files.key,
    })
    .expect("TLS acceptor");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let self_signed = format!("https://{}/", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    let e = v.check(&self_signed, &token).await.expect_err("untrusted");
    assert!(
        matches!(&e, JwtRejection::KeysUnavailable(w) if w.contains("UnknownIssuer")),
        "{e:?}"
    );
    server.abort();

    // Plain HTTP is for loopback only, also when a rule got here unchecked.
    let e = v
        .check("http://example.com/", &token)
        .await
        .expect_err("refused");
    assert!(
        matches!(&e, JwtRejection::KeysUnavailable(w) if w.contains("https")),
        "{e:?}"
    );
}

#[tokio::test]
async fn failed_fetches_are_rate_limited_and_cached_keys_outlive_them() {
    let idp = idp().await;
    let v = Manual::new();
    let issuer = idp.issuer();
    let good = idp.sign_rs256(&idp.claims(AUD, 3600)).expect("signs");
    assert_eq!(v.check(&issuer, &good).await, Ok(()));

    idp.answer_with(JwksAnswer::Status(503));
    let stranger = SigningKey::es256("new-kid").expect("key");
    let unknown = stranger.sign(&idp.claims(AUD, 300)).expect("signs");
    assert_eq!(
        v.check(&issuer, &unknown).await,
        Err(JwtRejection::UnknownKey)
    );
    assert_eq!(idp.fetches(), 2, "the unknown kid refetched, which failed");
    assert_eq!(
        v.check(&issuer, &good).await,
        Ok(()),
        "cached keys still verify"
    );

    // Past the TTL the refetch fails too: the old keys stay in use.
    v.advance(JWKS_CACHE_TTL);
    assert_eq!(v.check(&issuer, &good).await, Ok(()));
    assert_eq!(idp.fetches(), 3);
    // ... but not forever.
    v.advance(JWKS_MAX_STALE);
    let e = v.check(&issuer, &good).await.expect_err("too stale");
    assert!(
        matches!(&e, JwtRejection::KeysUnavailable(w) if w.contains("503")),
        "{e:?}"
    );
    assert_eq!(idp.fetches(), 4);

    // A cold issuer that is down: one fetch a minute, not one per request.
    let cold = Manual::new();
    for _ in 0..3 {
        let e = cold.check(&issuer, &good).await.expect_err("down");
        assert!(matches!(e, JwtRejection::KeysUnavailable(_)), "{e:?}");
    }
    assert_eq!(idp.fetches(), 5);
    idp.answer_with(JwksAnswer::Keys);
    assert!(
        cold.check(&issuer, &good).await.is_err(),
        "within the minute"
    );
    cold.advance(JWKS_REFETCH_INTERVAL);
    assert_eq!(cold.check(&issuer, &good).await, Ok(()), "back");
    assert_eq!(idp.fetches(), 6);
}

#[tokio::test]
async fn the_least_recently_used_issuer_is_forgotten_past_the_limit() {
    let idp = idp().await;
    let v = Manual::with_limits(JwksLimits {
        max_issuers: 2,
        ..JwksLimits::default()
    });
    // Three spellings of one issuer are three cache entries.
    let base = idp.issuer();
    let spellings = [
        base.clone(),
        base.trim_end_matches('/').to_owned(),
        format!("{base}/"),
    ];
    let tokens: Vec<String> = spellings
        .iter()
        .map(|iss| {
            let mut claims = idp.claims(AUD, 300);
            claims["iss"] = json!(iss);
            idp.sign_rs256(&claims).expect("signs")
        })
        .collect();
    for (i, (iss, token)) in spellings.iter().zip(&tokens).enumerate() {
        assert_eq!(v.check(iss, token).await, Ok(()), "{iss}");
        assert_eq!(idp.fetches(), i as u64 + 1);
        v.advance(Duration::from_secs(1));
    }
    assert_eq!(v.check(&spellings[2], &tokens[2]).await, Ok(()));
    assert_eq!(idp.fetches(), 3, "the newest is cached");
    assert_eq!(v.check(&spellings[0], &tokens[0]).await, Ok(()));
    assert_eq!(idp.fetches(), 4, "the oldest was forgotten");
}

#[test]
fn verify_can_run_in_a_spawned_task() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_sync<T: Sync>(_: &T) {}
    let verifier = JwtVerifier::new();
    let rule = rule("https://tenant.auth0.com/");
    assert_send(&verifier.verify(&rule, None));
    assert_sync(&verifier);
}

#[test]
fn durations_read_like_a_person_wrote_them() {
    let e = |secs_ago| JwtRejection::Expired { secs_ago }.to_string();
    assert_eq!(e(61), "expired 61 s ago");
    assert_eq!(e(300), "expired 5 min ago");
    assert_eq!(e(3 * 3600), "expired 3 h ago");
    assert_eq!(e(5 * 86400), "expired 5 days ago");
}
