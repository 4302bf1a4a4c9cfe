//! Tokens for real: `token revoke` ends live sessions, `--max-names` caps
//! the names a token claims, `token list` shows names and last use, and
//! `relay login` / `relay status` ask the server about the token.

use relay_tests::cli::relay_saved;
use relay_tests::server_token;

use super::*;

/// The id `token list` shows for `label`.
async fn token_id(data_dir: &std::path::Path, label: &str) -> Result<String> {
    let listed = server_token(data_dir, &["list"]).await?;
    listed.ensure_success()?;
    listed
        .stdout
        .lines()
        .skip(1)
        .find(|l| l.split_whitespace().nth(1) == Some(label))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .with_context(|| format!("no token {label:?} in `token list`:\n{}", listed.stdout))
}

/// The `token list` row of token `id`.
async fn token_row(data_dir: &std::path::Path, id: &str) -> Result<String> {
    let listed = server_token(data_dir, &["list"]).await?;
    listed.ensure_success()?;
    listed
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .map(str::to_owned)
        .with_context(|| format!("no token {id} in `token list`:\n{}", listed.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_ends_its_live_session_and_the_client_says_why() -> Result<()> {
    run_test(secs(90), async {
        let mut s = Stack::builder()
            .name("leaky")
            .tokens(&["leaked", "other"])
            .start()
            .await?;
        let data = s.server.config().data_dir.clone();
        // A second token's tunnel must live on.
        let other = RelayClient::connect(
            s.client_config("other")?
                .name("keeper")
                .token(s.token("other")),
        )
        .await?;
        echo_ok(&s.client, Routing::Host).await?;

        let id = token_id(&data, "leaked").await?;
        let revoked_at = Instant::now();
        server_token(&data, &["revoke", &id])
            .await?
            .ensure_success()?;
        let status = s
            .client
            .proc
            .wait_exit(secs(15))
            .await
            .context("the client of a revoked token did not stop")?;
        let took = revoked_at.elapsed();
        ensure!(!status.success(), "client exited {status} after a revoke");
        ensure!(
            took < secs(10),
            "the session outlived the revoke by {took:?}"
        );
        let err = s.client.proc.stderr_text();
        ensure!(
            err.contains("revoked"),
            "the client should say its token was revoked; stderr:\n{err}"
        );

        // Its visitors now get the offline answer; the other tunnel serves.
        let req = s
            .client
            .request(Routing::Host, "GET", "/after-revoke")
            .body(empty())?;
        let f = fetch(s.client.public_addr(), req, REQ).await?;
        ensure!(
            f.status == StatusCode::SERVICE_UNAVAILABLE,
            "after a revoke: {} {}",
            f.status,
            String::from_utf8_lossy(&f.body)
        );
        ensure!(
            String::from_utf8_lossy(&f.body).contains("tunnel_offline"),
            "{}",
            String::from_utf8_lossy(&f.body)
        );
        echo_ok(&other, Routing::Host).await?;

        // It cannot come back, and `token list` says so.
        let mut again = RelayClient::spawn(&s.client.cfg)?;
        let st = again.wait_exit(secs(20)).await?;
        ensure!(!st.success(), "a revoked token connected again ({st})");
        let row = token_row(&data, &id).await?;
        ensure!(row.contains("revoked"), "token list row: {row}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_names_caps_the_names_a_token_claims() -> Result<()> {
    run_test(secs(90), async {
        let s = Stack::builder()
            .server(|c| c.open = false)
            .offline()
            .start()
            .await?;
        let data = s.server.config().data_dir.clone();
        let created =
            server_token(&data, &["create", "--label", "capped", "--max-names", "1"]).await?;
        created.ensure_success()?;
        let token = created.stdout.trim().to_owned();

        let mut first =
            RelayClient::connect(s.client_config("a")?.name("only-one").token(&token)).await?;
        echo_ok(&first, Routing::Host).await?;

        let mut second = RelayClient::spawn(&s.client_config("b")?.name("one-more").token(&token))?;
        let st = second.wait_exit(secs(20)).await?;
        ensure!(!st.success(), "a second name past --max-names 1 connected");
        let err = second.stderr_text();
        ensure!(
            err.contains("1 name"),
            "the refusal should give the cap; stderr:\n{err}"
        );

        // The name it has is not one more: it reconnects.
        first.proc.kill().await?;
        let back =
            RelayClient::connect(s.client_config("a")?.name("only-one").token(&token)).await?;
        echo_ok(&back, Routing::Path).await?;

        let id = token_id(&data, "capped").await?;
        let row = token_row(&data, &id).await?;
        ensure!(row.contains("only-one (1 of 1)"), "token list row: {row}");
        ensure!(!row.contains("never"), "last use not recorded: {row}");
        ensure!(!row.contains("one-more"), "a refused name was kept: {row}");

        // `--max-names 0` makes no sense and is refused.
        let zero = server_token(&data, &["create", "--max-names", "0"]).await?;
        zero.ensure_failure()?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_checks_the_token_and_status_reports_it() -> Result<()> {
    run_test(secs(90), async {
        let s = Stack::builder()
            .name("statusy")
            .tokens(&["laptop"])
            .start()
            .await?;
        let data = s.server.config().data_dir.clone();
        let token = s.token("laptop").to_owned();
        let server = s.server.url();
        let cfg = s.client_config("fresh")?;
        let config_file = cfg.home.join("config.toml");

        // A wrong token: refused, nothing saved.
        let bad = relay_saved(
            &cfg,
            "login",
            &["--server", &server, "--token", "rly_not-a-token"],
            secs(20),
        )
        .await?;
        bad.ensure_failure()?;
        ensure!(
            bad.stderr.contains("does not accept") && bad.stderr.contains("nothing saved"),
            "{}",
            bad.dump()
        );
        let saved = std::fs::read_to_string(&config_file).unwrap_or_default();
        ensure!(
            !saved.contains("rly_not-a-token"),
            "a refused token was saved:\n{saved}"
        );

        // The right one: saved, with what the server knows of it.
        let good = relay_saved(
            &cfg,
            "login",
            &["--server", &server, "--token", &token],
            secs(20),
        )
        .await?;
        good.ensure_success()?;
        ensure!(
            good.stdout.contains("\"laptop\"") && good.stdout.contains("statusy"),
            "login should name the token and its names:\n{}",
            good.dump()
        );
        let saved = std::fs::read_to_string(&config_file)?;
        ensure!(saved.contains(&token), "token not saved:\n{saved}");

        let st = relay_saved(&cfg, "status", &[], secs(20)).await?;
        st.ensure_success()?;
        ensure!(
            st.stdout.contains(&server) && st.stdout.contains("names: statusy"),
            "{}",
            st.dump()
        );

        // After a revoke, status says the token is not accepted, and fails.
        let id = token_id(&data, "laptop").await?;
        server_token(&data, &["revoke", &id])
            .await?
            .ensure_success()?;
        let st = relay_saved(&cfg, "status", &[], secs(20)).await?;
        st.ensure_failure()?;
        ensure!(st.stdout.contains("not accepted"), "{}", st.dump());
        Ok(())
    })
    .await
}
