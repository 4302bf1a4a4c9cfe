//! Token mode: tokens, bad tokens, and name ownership.

use relay_tests::cli::relay_saved;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_checks_tokens_and_name_ownership() -> Result<()> {
    run_test(secs(90), async {
        let s = Stack::builder()
            .tokens(&["alice", "bob"])
            .offline()
            .start()
            .await?;
        let (alice, bob) = (s.token("alice"), s.token("bob"));
        ensure!(alice != bob, "two token create runs printed the same token");

        // No token at all.
        let mut p = RelayClient::spawn(&s.client_config("anon")?.name("anon"))?;
        let st = p
            .wait_exit(secs(20))
            .await
            .context("client without a token")?;
        ensure!(!st.success(), "client without a token exited with {st}");

        // A bad token.
        let mut p = RelayClient::spawn(
            &s.client_config("bad")?
                .name("mallory")
                .token("not-a-real-token"),
        )?;
        let st = p
            .wait_exit(secs(20))
            .await
            .context("client with a bad token")?;
        ensure!(!st.success(), "client with a bad token exited with {st}");
        let err = p.stderr_text();
        ensure!(
            err.to_ascii_lowercase().contains("token"),
            "bad-token refusal should say what is wrong (mention the token); stderr:\n{err}"
        );

        // A good token claims the name.
        let owner = RelayClient::connect(s.client_config("alice")?.name("shared").token(alice))
            .await
            .context("client with a valid token")?;
        echo_ok(&owner, Routing::Host).await?;

        // Another token asking for the same name is refused.
        let mut p = RelayClient::spawn(&s.client_config("bob")?.name("shared").token(bob))?;
        let st = p
            .wait_exit(secs(20))
            .await
            .context("second token asking for a taken name")?;
        ensure!(
            !st.success(),
            "a second token got the taken name (exit {st})"
        );
        let err = p.stderr_text();
        ensure!(
            err.contains("shared"),
            "name-taken refusal should mention the name `shared`; stderr:\n{err}"
        );
        ensure!(
            !p.stdout_seen()
                .iter()
                .any(|l| l.starts_with("relay connected as")),
            "refused client printed a connected banner"
        );
        // The owner still has it.
        echo_ok(&owner, Routing::Path).await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_created_while_server_runs_is_accepted() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder()
            .server(|c| c.open = false)
            .offline()
            .start()
            .await?;
        let (server, data) = (&s.server, &s.server.config().data_dir);
        // Let the server finish starting (its store is open once it serves),
        // so this test is about token lookup, not about start-up races.
        let health = Request::builder()
            .uri("/_relay/health")
            .header(HOST, format!("localhost:{}", server.port()))
            .body(empty())?;
        let f = fetch(server.addr(), health, REQ).await?;
        ensure!(f.status == StatusCode::OK, "health: {}", f.status);
        let token = create_token(data, "late").await?;
        let client =
            RelayClient::connect(s.client_config("home")?.name("late").token(&token)).await?;
        echo_ok(&client, Routing::Host).await?;
        Ok(())
    })
    .await
}

/// `token create` run right after the server printed its ready line (e.g. by
/// a deploy script) must work: both processes open the same database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_create_right_after_server_start_succeeds() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder()
            .server(|c| c.open = false)
            .offline()
            .start()
            .await?;
        create_token(&s.server.config().data_dir, "eager").await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_points_requests_at_the_server_it_saves() -> Result<()> {
    run_test(secs(90), async {
        // The user's last `relay connect` went to server A...
        let mut a = Stack::builder().name("mover").start().await?;
        let (target, home) = (a.origin.port().to_string(), a.client.cfg.home.clone());
        let on_a = &mut a.client;
        let req = on_a
            .request(Routing::Host, "GET", "/echo?via=a")
            .body(empty())?;
        ensure!(fetch(on_a.public_addr(), req, REQ).await?.status == StatusCode::OK);
        on_a.proc.kill().await?;

        // ...and the same name has traffic on server B (from another machine).
        let stack_b = Stack::builder()
            .name("mover")
            .tokens(&["mover"])
            .start()
            .await?;
        let (b, on_b) = (&stack_b.server, &stack_b.client);
        let token = stack_b.token("mover").to_string();
        let req = on_b
            .request(Routing::Host, "GET", "/echo?via=b")
            .body(empty())?;
        ensure!(fetch(on_b.public_addr(), req, REQ).await?.status == StatusCode::OK);

        // After `relay login` to B, `relay requests` asks B.
        let cfg = ClientConfig::new(&target, b.url(), home);
        relay_saved(
            &cfg,
            "login",
            &["--server", &b.url(), "--token", &token],
            secs(20),
        )
        .await?
        .ensure_success()?;
        // Captures are written a moment after the response: poll.
        poll_until(
            "`relay requests` after login lists server B's request",
            secs(20),
            || async {
                let listed = relay_saved(&cfg, "requests", &["--json"], secs(20))
                    .await
                    .ok()?;
                let lines = listed.json_lines().ok()?;
                lines
                    .iter()
                    .any(|r| r["path"] == "/echo?via=b")
                    .then_some(())
            },
        )
        .await?;
        Ok(())
    })
    .await
}
