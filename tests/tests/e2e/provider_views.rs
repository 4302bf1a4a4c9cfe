//! Provider-aware views (issue 13, part 4) through the real binaries: a
//! Hasura Action call carrying an Auth0-style bearer JWT goes through a
//! tunnel, and `relay requests show ID` prints the token's claims (its
//! expiry relative to now, "not verified") and the action's name, input
//! and session variables, never the token itself. A bearer token that is
//! not a JWT is shown as such, and `show` still succeeds. Replaying an
//! expired token warns first.
//!
//! The JWT is built here from JSON written here (base64url of header and
//! payload, a made-up signature): nothing verifies it, so nothing signs it.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use relay_tests::cli::relay;

use super::*;

/// `header.payload.signature` for `payload` (JSON text).
fn jwt(payload: &str) -> String {
    format!(
        "{}.{}.bm90LWEtcmVhbC1zaWduYXR1cmU",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#),
        URL_SAFE_NO_PAD.encode(payload)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_show_decodes_the_bearer_jwt_and_the_hasura_action() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("views").start().await?;
        let cfg = &s.client.cfg;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is after 1970")?
            .as_secs();
        // Expired two hours and a bit ago: "2 h" holds for the next 59 min.
        let exp = now - 2 * 3600 - 30;
        let token = jwt(&format!(
            r#"{{"iss":"https://dev-relay.eu.auth0.com/","sub":"auth0|6543","aud":["https://api.example.com","https://dev-relay.eu.auth0.com/userinfo"],"azp":"Xy12client","scope":"openid profile create:users","iat":{},"exp":{exp}}}"#,
            exp - 86_400
        ));
        let body = r#"{"action":{"name":"addUser"},"input":{"name":"Ada","age":36},"session_variables":{"x-hasura-role":"user","x-hasura-user-id":"6543"},"request_query":"mutation { addUser(name: \"Ada\", age: 36) { id } }"}"#;
        // Not /echo, whose answer would carry the token back in its body
        // (bodies are shown as captured): the origin answers 404.
        let req = s
            .client
            .request(Routing::Host, "POST", "/actions/add-user")
            .header(CONTENT_TYPE, "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(full(body))?;
        let (_, id) = visit(&s.client, req).await?;

        let out = relay(cfg, "requests", &["show", &id], CLI).await?;
        out.ensure_success()?;
        let text = &out.stdout;
        ensure!(
            !text.contains(&token) && !text.contains(token.split('.').nth(1).unwrap_or("-")),
            "`show` printed the token or its payload:\n{text}"
        );
        let want_lines = [
            "JWT (not verified, RS256)".to_owned(),
            "  iss    https://dev-relay.eu.auth0.com/".to_owned(),
            "  sub    auth0|6543".to_owned(),
            "  aud    https://api.example.com, https://dev-relay.eu.auth0.com/userinfo".to_owned(),
            "  azp    Xy12client".to_owned(),
            "  scope  openid profile create:users".to_owned(),
            "Hasura action addUser".to_owned(),
            "  query   mutation { addUser(name: \"Ada\", age: 36) { id } }".to_owned(),
            "  input   {".to_owned(),
            "            \"name\": \"Ada\",".to_owned(),
            "    x-hasura-role: user".to_owned(),
            "    x-hasura-user-id: 6543".to_owned(),
            format!("> authorization: Bearer eyJhbGci… [{} chars]", token.len()),
        ];
        for want in &want_lines {
            ensure!(
                text.lines().any(|l| l == want),
                "`show` lacks the line {want:?}:\n{text}"
            );
        }
        let exp_line = text
            .lines()
            .find(|l| l.starts_with("  exp    "))
            .with_context(|| format!("no exp line:\n{text}"))?;
        ensure!(
            exp_line.ends_with(" UTC (expired 2 h ago)"),
            "exp should say it expired 2 h ago: {exp_line:?}"
        );
        // The views come before the request's head.
        let at = |needle: &str| text.find(needle).unwrap_or(usize::MAX);
        ensure!(
            at("JWT (not verified") < at("Hasura action") && at("Hasura action") < at("> POST"),
            "the JWT and Hasura sections should come first:\n{text}"
        );

        // An opaque bearer token: said to be no JWT, and `show` works.
        let req = s
            .client
            .request(Routing::Host, "POST", "/actions/opaque")
            .header("authorization", "Bearer two.parts")
            .body(full("{}"))?;
        let (_, opaque) = visit(&s.client, req).await?;
        let out = relay(cfg, "requests", &["show", &opaque], CLI).await?;
        out.ensure_success()?;
        ensure!(
            out.stdout
                .lines()
                .any(|l| l == "Bearer token: not a JWT (2 dot-separated parts, a JWT has 3)")
                && !out.stdout.contains("Hasura action"),
            "an opaque token should be shown as not a JWT:\n{}",
            out.stdout
        );

        // Replaying the expired token warns before the app's 401 does; a
        // token that is not a JWT, or an edit that drops it, does not.
        let out = relay(cfg, "replay", &[&id], CLI).await?;
        ensure!(
            out.stderr
                .lines()
                .any(|l| l.starts_with("warning: the request's bearer token expired 2 h ago")),
            "replaying an expired token should warn:\n{}",
            out.stderr
        );
        let out = relay(cfg, "replay", &[&id, "--remove-header", "authorization"], CLI).await?;
        ensure!(
            !out.stderr.contains("warning:"),
            "no token, no warning:\n{}",
            out.stderr
        );
        let out = relay(cfg, "replay", &[&opaque], CLI).await?;
        ensure!(
            !out.stderr.contains("warning:"),
            "an opaque token cannot be judged:\n{}",
            out.stderr
        );
        Ok(())
    })
    .await
}
