//! Behind a reverse proxy: `--public-url` decides the URLs the server
//! prints and hands out (the welcome, the client's banner) while routing
//! stays on `--domain`; `--trusted-proxy` decides whose `X-Forwarded-*`
//! headers reach the local app as sent (For appended to) and whose are
//! replaced, and which address `--allow-ip` checks. The "proxy" is the
//! test itself, sending the headers from 127.0.0.1.

use super::hostile::{connect_ws, hello, hello_json};
use super::*;

const PUBLIC: &str = "https://relay.example.test:8443";

/// `GET /echo` on the stack's tunnel with these extra headers; the
/// X-Forwarded-* values the local app saw, and the status.
async fn echo_forwarded(
    s: &Stack,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, Vec<(String, String)>)> {
    let mut req = s.client.request(Routing::Host, "GET", "/echo");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let f = fetch(s.client.public_addr(), req.body(empty())?, REQ).await?;
    if f.status != StatusCode::OK {
        return Ok((f.status, Vec::new()));
    }
    let seen = echoed_headers(&f.json()?)?
        .into_iter()
        .filter(|(n, _)| n.starts_with("x-forwarded-"))
        .collect();
    Ok((f.status, seen))
}

fn one<'a>(seen: &'a [(String, String)], name: &str) -> Result<&'a str> {
    let v = header_values(seen, name);
    ensure!(
        v.len() == 1,
        "{name}: expected one value, got {v:?} in {seen:?}"
    );
    Ok(v[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_url_is_printed_handed_out_and_shown_in_the_banner() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder()
            .name("pub")
            .server(|c| c.extra_args.extend(["--public-url".into(), PUBLIC.into()]))
            .offline()
            .start()
            .await?;
        // The start line: the bound address first (what scripts parse), then
        // where visitors reach the server.
        let first = s
            .server
            .proc
            .stdout_seen()
            .first()
            .cloned()
            .unwrap_or_default();
        ensure!(
            first
                == format!(
                    "relay-server listening on http://{} (public URL {PUBLIC})",
                    s.server.addr()
                ),
            "start line {first:?}"
        );

        // The welcome a client reads.
        let mut ws = connect_ws(&s.server).await?;
        let reply = hello(&mut ws, &hello_json("raw-client", "raw", 1)).await?;
        ensure!(reply["type"] == "welcome", "{reply}");
        ensure!(
            reply["urls"]
                == serde_json::json!([
                    "https://raw.relay.example.test:8443/",
                    "https://relay.example.test:8443/t/raw/"
                ]),
            "welcome URLs {}",
            reply["urls"]
        );

        // The banner `relay connect` prints.
        let mut proc = RelayClient::spawn(&s.client)?;
        proc.wait_line("the banner", secs(20), |l| l == "relay connected as pub")
            .await?;
        for want in [
            "https://pub.relay.example.test:8443/",
            "https://relay.example.test:8443/t/pub/",
        ] {
            let line = proc.next_line(secs(5)).await?;
            let fields: Vec<&str> = line.split_whitespace().collect();
            ensure!(
                fields.first() == Some(&"Forwarding") && fields.get(1) == Some(&want),
                "expected `Forwarding  {want} -> ...`, got {line:?}"
            );
        }

        // Routing is still by --domain (localhost here, as a proxy would pass
        // the visitor's Host on).
        let req = public_request(s.server.port(), "pub", Routing::Host, "GET", "/echo");
        let f = fetch(s.server.addr(), req.body(empty())?, REQ).await?;
        ensure!(
            f.status == StatusCode::OK,
            "through the tunnel: {}",
            f.status
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_forwarded_headers_are_kept_and_its_client_is_checked() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder()
            .server(|c| {
                c.extra_args
                    .extend(["--trusted-proxy".into(), "127.0.0.1/32".into()])
            })
            .client_args(["--allow-ip", "203.0.113.0/24"])
            .start()
            .await?;
        let proxied = [
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.relay.example.test"),
        ];
        let (status, seen) = echo_forwarded(&s, &proxied).await?;
        ensure!(
            status == StatusCode::OK,
            "a visitor inside --allow-ip: {status}"
        );
        ensure!(
            one(&seen, "x-forwarded-for")? == "203.0.113.7, 127.0.0.1",
            "{seen:?}"
        );
        ensure!(one(&seen, "x-forwarded-proto")? == "https", "{seen:?}");
        ensure!(
            one(&seen, "x-forwarded-host")? == "app.relay.example.test",
            "{seen:?}"
        );

        // --allow-ip checks the proxy's client, not the proxy...
        let (status, _) = echo_forwarded(&s, &[("x-forwarded-for", "198.51.100.1")]).await?;
        ensure!(
            status == StatusCode::FORBIDDEN,
            "a client outside --allow-ip: {status}"
        );
        // ... the rightmost address the proxy did not write itself: an
        // allowed address forged to its left changes nothing.
        let (status, _) =
            echo_forwarded(&s, &[("x-forwarded-for", "203.0.113.9, 198.51.100.1")]).await?;
        ensure!(
            status == StatusCode::FORBIDDEN,
            "a forged left entry: {status}"
        );
        // With no X-Forwarded-For the proxy itself is the visitor.
        let (status, _) = echo_forwarded(&s, &[]).await?;
        ensure!(
            status == StatusCode::FORBIDDEN,
            "no X-Forwarded-For: {status}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_forwarded_headers_are_replaced() -> Result<()> {
    run_test(secs(60), async {
        // Without --trusted-proxy, the same headers are a visitor's claims.
        let s = Stack::builder()
            .client_args(["--allow-ip", "127.0.0.1/32"])
            .start()
            .await?;
        let forged = [
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "bank.example"),
        ];
        let (status, seen) = echo_forwarded(&s, &forged).await?;
        ensure!(
            status == StatusCode::OK,
            "the real address is allowed: {status}"
        );
        let (_, host) = s.client.target(Routing::Host, "/echo");
        ensure!(one(&seen, "x-forwarded-for")? == "127.0.0.1", "{seen:?}");
        ensure!(one(&seen, "x-forwarded-proto")? == "http", "{seen:?}");
        ensure!(one(&seen, "x-forwarded-host")? == host, "{seen:?}");
        Ok(())
    })
    .await
}
