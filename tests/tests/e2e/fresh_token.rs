//! `relay replay --fresh-token`: the captured `Authorization` is replaced by
//! a new access token from a local OAuth2 token endpoint (client
//! credentials, a profile in the config file); the client secret never
//! appears in the output; a refused grant sends nothing.

use relay_tests::cli::relay;
use relay_tests::idp::TokenEndpoint;

use super::*;

const SECRET: &str = "s3cr3t-client-secret";

/// Appends a `[profiles.NAME]` table to the client's config file.
fn add_profile(cfg: &ClientConfig, name: &str, token_url: &str, secret: &str) -> Result<()> {
    use std::io::Write as _;
    let path = cfg.home.join("config.toml");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)?;
    writeln!(
        f,
        "\n[profiles.{name}]\ntoken_url = {token_url:?}\nclient_id = \"relay-m2m\"\nclient_secret = {secret:?}\naudience = \"https://api.example.com\""
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_with_a_fresh_token_replaces_the_authorization_header() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("fresh").start().await?;
        let cfg = &s.client.cfg;
        let idp =
            TokenEndpoint::start("relay-m2m", SECRET, Some("https://api.example.com")).await?;
        add_profile(cfg, "auth0", &idp.token_url(), SECRET)?;
        add_profile(cfg, "wrong", &idp.token_url(), "not-the-secret")?;

        let req = s
            .client
            .request(Routing::Host, "POST", "/inbox/login")
            .header("authorization", "Bearer yesterdays-token")
            .header(CONTENT_TYPE, "application/json")
            .body(full(r#"{"user":"ada"}"#))?;
        let id = visit_ok(&s.client, req).await?;

        let out = relay(
            cfg,
            "replay",
            &[&id, "--fresh-token", "auth0", "--json"],
            CLI,
        )
        .await?;
        out.ensure_success()?;
        ensure!(idp.issued() == 1, "tokens granted: {}", idp.issued());
        let got = s
            .origin
            .inbox()
            .into_iter()
            .filter(|r| r.path == "/inbox/login")
            .map(|r| {
                r.header("authorization")
                    .iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        ensure!(
            got == [
                vec!["Bearer yesterdays-token".to_owned()],
                vec!["Bearer fresh-1".to_owned()]
            ],
            "Authorization the app saw (original, replay): {got:?}"
        );
        for text in [&out.stdout, &out.stderr] {
            ensure!(
                !text.contains(SECRET),
                "the client secret was printed:\n{}",
                out.dump()
            );
        }

        // Without a profile name: there is no `default` and two profiles.
        let out = relay(cfg, "replay", &[&id, "--fresh-token"], CLI).await?;
        out.ensure_failure()?;
        ensure!(out.stderr.contains("auth0, wrong"), "{}", out.dump());

        // A refused grant: the reason, and nothing sent to the app.
        let before = s.origin.inbox().len();
        let out = relay(cfg, "replay", &[&id, "--fresh-token", "wrong"], CLI).await?;
        out.ensure_failure()?;
        ensure!(
            out.stderr.contains("access_denied") && out.stderr.contains("profile wrong"),
            "{}",
            out.dump()
        );
        ensure!(!out.stderr.contains("not-the-secret"), "{}", out.dump());
        ensure!(
            s.origin.inbox().len() == before,
            "a replay went out without its fresh token"
        );
        Ok(())
    })
    .await
}
