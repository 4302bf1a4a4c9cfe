//! Edge rules through the real binaries: `relay connect --basic-auth`,
//! `--allow-ip`, `--require-header`. Each rule lets the right request
//! through, refuses the wrong one with 401/403 `edge_rejected` (captured as
//! `rejected`), and still refuses it while the client is away, where a
//! refused request is not kept for delivery. Bad rules never connect.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use relay_tests::capture_api::TunnelApi;

use super::*;

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// Sends `GET path` with `headers` to the stack's tunnel (by host).
async fn get_with(s: &Stack, path: &str, headers: &[(&str, &str)]) -> Result<Fetched> {
    let mut req = s.client.request(Routing::Host, "GET", path);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    fetch(s.client.public_addr(), req.body(empty())?, REQ).await
}

/// A refusal by the edge: its status, the JSON code, the reason in the
/// message, and the request id of the capture.
fn check_rejected(f: &Fetched, status: StatusCode, reason: &str) -> Result<String> {
    ensure!(
        f.status == status,
        "expected {status}, got {} {}",
        f.status,
        String::from_utf8_lossy(&f.body)
    );
    let e = f.error_body()?;
    ensure!(e.code == "edge_rejected", "{e:?}");
    ensure!(e.message.contains(reason), "reason {reason:?} not in {e:?}");
    f.request_id().context("no request id on a rejection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_lets_the_right_user_in_online_and_offline() -> Result<()> {
    run_test(secs(90), async {
        let mut s = Stack::builder()
            .name("guarded")
            .client_args(["--basic-auth", "ada:correct horse:staple"])
            .start()
            .await?;
        ensure!(
            s.client
                .proc
                .stdout_seen()
                .iter()
                .any(|l| l.contains("Edge rules  basic auth (user ada)")),
            "the banner should list the rules: {:?}",
            s.client.proc.stdout_seen()
        );
        let api = TunnelApi::new(&s.server, &s.client.cfg, "guarded")?;
        let good = basic("ada", "correct horse:staple");
        let f = get_with(&s, "/echo?ok=1", &[("authorization", &good)]).await?;
        ensure!(f.status == StatusCode::OK, "right password: {}", f.status);

        let f = get_with(
            &s,
            "/echo?wrong=1",
            &[("authorization", &basic("ada", "nope"))],
        )
        .await?;
        let id = check_rejected(&f, StatusCode::UNAUTHORIZED, "wrong user or password")?;
        let challenge = f
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        ensure!(
            challenge.starts_with("Basic realm="),
            "challenge: {challenge:?}"
        );
        // Committed before the answer: listed at once.
        let summary = api.summary(&id).await?;
        ensure!(summary["outcome"] == "rejected", "{summary}");
        ensure!(summary["status"] == 401, "{summary}");
        ensure!(
            !s.origin.requests().iter().any(|p| p.contains("wrong=1")),
            "a refused request reached the app"
        );

        // The client goes away: the rules still hold.
        s.go_offline_quietly().await?;
        let f = get_with(&s, "/echo?offline-wrong=1", &[]).await?;
        let refused = check_rejected(&f, StatusCode::UNAUTHORIZED, "user and password")?;
        let f = get_with(&s, "/echo?offline-right=1", &[("authorization", &good)]).await?;
        ensure!(
            f.status == StatusCode::SERVICE_UNAVAILABLE,
            "the right user while offline gets the offline answer: {}",
            f.status
        );
        let kept = f.request_id().context("no id")?;
        let missed = api.missed().await?;
        let waiting: Vec<&str> = missed["requests"]
            .as_array()
            .context("requests")?
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        ensure!(
            waiting == [kept.as_str()],
            "only the request that passed waits for delivery: {waiting:?} (refused {refused})"
        );
        ensure!(api.summary(&refused).await?["outcome"] == "rejected");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_ip_and_required_headers_are_enforced() -> Result<()> {
    run_test(secs(90), async {
        // Visitors come from 127.0.0.1, which 10.0.0.0/8 does not hold.
        let s = Stack::builder()
            .name("fenced")
            .client_args(["--allow-ip", "10.0.0.0/8,192.168.0.0/16"])
            .start()
            .await?;
        let f = get_with(&s, "/echo", &[]).await?;
        check_rejected(&f, StatusCode::FORBIDDEN, "127.0.0.1 is not in")?;
        ensure!(f.headers.get("www-authenticate").is_none());
        drop(s);

        let s = Stack::builder()
            .name("hooked")
            .client_args([
                "--allow-ip",
                "127.0.0.0/8",
                "--require-header",
                "X-Hook-Secret: whsec_123",
            ])
            .start()
            .await?;
        let f = get_with(&s, "/echo", &[("x-hook-secret", "whsec_123")]).await?;
        ensure!(f.status == StatusCode::OK, "all rules met: {}", f.status);
        for bad in [vec![], vec![("x-hook-secret", "whsec_12")]] {
            let f = get_with(&s, "/echo", &bad).await?;
            check_rejected(&f, StatusCode::FORBIDDEN, "x-hook-secret")?;
            ensure!(
                !String::from_utf8_lossy(&f.body).contains("whsec_123"),
                "the secret leaked into the answer"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_without_rules_clears_them() -> Result<()> {
    run_test(secs(90), async {
        let mut s = Stack::builder()
            .name("opened")
            .client_args(["--require-header", "X-Key: k"])
            .start()
            .await?;
        let f = get_with(&s, "/echo", &[]).await?;
        check_rejected(&f, StatusCode::FORBIDDEN, "x-key")?;
        s.client.proc.kill().await?;
        let cfg = s.client.cfg.clone();
        let plain = ClientConfig {
            extra_args: Vec::new(),
            ..cfg
        };
        let again = RelayClient::connect(plain).await?;
        echo_ok(&again, Routing::Host).await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rules_are_refused_before_connecting() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().offline().start().await?;
        for (args, says) in [
            (vec!["--allow-ip", "10.0.0.0/33"], "--allow-ip"),
            (vec!["--allow-ip", "not-an-ip"], "--allow-ip"),
            (vec!["--require-header", "Bad Name: x"], "header"),
            (vec!["--basic-auth", "no-colon"], "USER:PASS"),
            (
                vec!["--verify-jwt", "http://idp.example.com/", "--audience", "a"],
                "https://",
            ),
            (
                vec!["--verify-jwt", "https://idp.example.com/"],
                "--audience",
            ),
            (
                vec![
                    "--basic-auth",
                    "a:b",
                    "--verify-jwt",
                    "https://i.example/",
                    "--audience",
                    "x",
                ],
                "pick one",
            ),
        ] {
            let cfg = s.client_config("bad")?.name("badrules").args(args.clone());
            let mut p = RelayClient::spawn(&cfg)?;
            let st = p.wait_exit(secs(20)).await?;
            ensure!(!st.success(), "{args:?} connected");
            let err = p.stderr_text();
            ensure!(
                err.contains(says),
                "{args:?}: stderr should say {says:?}:\n{err}"
            );
        }
        Ok(())
    })
    .await
}
