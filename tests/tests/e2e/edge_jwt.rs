//! `relay connect --verify-jwt ISSUER --audience AUD` through the real
//! binaries, against a local identity provider (keys made at test time,
//! served at ISSUER/.well-known/jwks.json): what passes, what is refused
//! (expired, wrong audience or issuer, unknown key until it is published,
//! `alg: none`, HS256 keyed with the public key, garbage), and that the rule
//! holds while the client is away.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use relay_tests::capture_api::TunnelApi;
use relay_tests::jwks::{forge_token, LocalIssuer, SigningKey};

use super::*;

const AUD: &str = "https://api.example.com";

async fn call(s: &Stack, token: Option<&str>) -> Result<Fetched> {
    let mut req = s.client.request(Routing::Host, "GET", "/echo?jwt=1");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    fetch(s.client.public_addr(), req.body(empty())?, REQ).await
}

/// A 401 `edge_rejected` whose message contains `why`, with a Bearer
/// challenge; returns its request id.
fn refused(f: &Fetched, why: &str) -> Result<String> {
    ensure!(
        f.status == StatusCode::UNAUTHORIZED,
        "expected 401 ({why}), got {} {}",
        f.status,
        String::from_utf8_lossy(&f.body)
    );
    let e = f.error_body()?;
    ensure!(e.code == "edge_rejected", "{e:?}");
    ensure!(e.message.contains(why), "{why:?} not in {:?}", e.message);
    let challenge = f
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    ensure!(challenge.starts_with("Bearer "), "challenge {challenge:?}");
    f.request_id().context("no request id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_jwt_accepts_the_issuers_tokens_and_refuses_the_rest() -> Result<()> {
    run_test(secs(90), async {
        let idp = LocalIssuer::start().await?;
        let issuer = idp.issuer();
        let mut s = Stack::builder()
            .name("jwt-guarded")
            .client_args(["--verify-jwt", &issuer, "--audience", AUD])
            .start()
            .await?;
        let api = TunnelApi::new(&s.server, &s.client.cfg, "jwt-guarded")?;

        // Valid RS256 and ES256 tokens pass.
        let good = idp.sign_rs256(&idp.claims(AUD, 3600))?;
        let f = call(&s, Some(&good)).await?;
        ensure!(f.status == StatusCode::OK, "RS256: {}", f.status);
        let f = call(&s, Some(&idp.sign_es256(&idp.claims(AUD, 3600))?)).await?;
        ensure!(f.status == StatusCode::OK, "ES256: {}", f.status);

        // Each way a token can be wrong.
        refused(&call(&s, None).await?, "bearer token refused")?;
        let expired = idp.sign_rs256(&idp.claims(AUD, -3600))?;
        let id = refused(&call(&s, Some(&expired)).await?, "expired")?;
        ensure!(api.summary(&id).await?["outcome"] == "rejected");
        let other_aud = idp.sign_rs256(&idp.claims("https://other.example", 3600))?;
        refused(&call(&s, Some(&other_aud)).await?, "audience")?;
        let mut wrong_iss = idp.claims(AUD, 3600);
        wrong_iss["iss"] = serde_json::json!("https://evil.example/");
        refused(
            &call(&s, Some(&idp.sign_rs256(&wrong_iss)?)).await?,
            "issuer",
        )?;
        refused(&call(&s, Some("not.a.jwt")).await?, "bearer token refused")?;

        // alg: none, and HS256 keyed with the issuer's RSA public key.
        let rsa = idp.rsa_key();
        let none = forge_token(
            &serde_json::json!({"alg": "none", "typ": "JWT", "kid": rsa.kid()}),
            &idp.claims(AUD, 3600),
            b"",
        );
        refused(&call(&s, Some(&none)).await?, "bearer token refused")?;
        let (pem, _) = rsa.rsa_public().context("an RSA key")?;
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some(rsa.kid().to_owned());
        let confused = jsonwebtoken::encode(
            &hs,
            &idp.claims(AUD, 3600),
            &EncodingKey::from_secret(pem.as_bytes())?,
        )?;
        refused(&call(&s, Some(&confused)).await?, "bearer token refused")?;

        // A key the issuer never published: one refetch at most.
        let fetches = idp.fetches();
        let stranger = SigningKey::rs256("not-yet")?;
        refused(
            &call(&s, Some(&stranger.sign(&idp.claims(AUD, 3600))?)).await?,
            "key",
        )?;
        ensure!(
            idp.fetches() <= fetches + 1,
            "an unknown kid fetched the key set {} times",
            idp.fetches() - fetches
        );

        // Offline: the rule still holds; a good token is kept for delivery.
        s.go_offline_quietly().await?;
        refused(&call(&s, Some(&expired)).await?, "expired")?;
        let f = call(&s, Some(&good)).await?;
        ensure!(
            f.status == StatusCode::SERVICE_UNAVAILABLE,
            "a valid token while offline: {}",
            f.status
        );
        let missed = api.missed().await?;
        ensure!(missed["count"] == 1, "only the valid call waits: {missed}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_accepted_after_one_refetch() -> Result<()> {
    run_test(secs(60), async {
        let idp = LocalIssuer::start().await?;
        let issuer = idp.issuer();
        let s = Stack::builder()
            .name("jwt-rotating")
            .client_args(["--verify-jwt", &issuer, "--audience", AUD])
            .start()
            .await?;
        let f = call(&s, Some(&idp.sign_rs256(&idp.claims(AUD, 3600))?)).await?;
        ensure!(f.status == StatusCode::OK, "before rotation: {}", f.status);
        let old = idp.sign_rs256(&idp.claims(AUD, 3600))?;
        idp.rotate()?;
        let before = idp.fetches();
        let f = call(&s, Some(&idp.sign_rs256(&idp.claims(AUD, 3600))?)).await?;
        ensure!(
            f.status == StatusCode::OK,
            "the new key after rotation: {} {}",
            f.status,
            String::from_utf8_lossy(&f.body)
        );
        ensure!(idp.fetches() == before + 1, "one refetch for the new kid");
        // The rotated-out key is gone from the set now.
        refused(&call(&s, Some(&old)).await?, "key")?;
        Ok(())
    })
    .await
}
