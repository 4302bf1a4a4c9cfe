//! Edge rules as the proxy checks them: addresses, required headers and
//! basic auth against a real Argon2 hash.

use std::net::IpAddr;

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode};
use relay_shared::edge::{BasicAuth, EdgeRules};

use super::*;

fn edge(rules: EdgeRules) -> Arc<Edge> {
    let stored = StoredRules::from_rules(&rules).expect("valid rules");
    let json = serde_json::to_string(&stored).expect("json");
    Edge::from_json(Some(&json)).expect("rules")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn only_allowed_networks_pass_v4_v6_and_mapped() {
    let checks = Checks::default();
    let e = edge(EdgeRules {
        allow_ip: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
        ..EdgeRules::default()
    });
    let none = HeaderMap::new();
    for ok in ["10.1.2.3", "2001:db8::1", "::ffff:10.9.9.9"] {
        assert_eq!(e.check(&none, ip(ok), &checks).await, Ok(()), "{ok}");
    }
    let refused = e
        .check(&none, ip("192.0.2.1"), &checks)
        .await
        .expect_err("not allowed");
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.reason.contains("192.0.2.1"), "{}", refused.reason);
    assert!(refused.challenge.is_none());
}

#[tokio::test]
async fn required_headers_need_their_exact_value() {
    let checks = Checks::default();
    let e = edge(EdgeRules {
        require_headers: vec![("X-Hook-Secret".into(), "s3cr3t".into())],
        ..EdgeRules::default()
    });
    let at = ip("127.0.0.1");
    assert_eq!(
        e.check(&headers(&[("x-hook-secret", "s3cr3t")]), at, &checks)
            .await,
        Ok(())
    );
    for bad in [
        headers(&[]),
        headers(&[("x-hook-secret", "s3cr3")]),
        headers(&[("x-hook-secret", "s3cr3t ")]),
    ] {
        let r = e.check(&bad, at, &checks).await.expect_err("refused");
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(
            !r.reason.contains("s3cr3t"),
            "the value leaked: {}",
            r.reason
        );
    }
}

#[tokio::test]
async fn basic_auth_checks_user_and_hashed_password_with_a_challenge() {
    let checks = Checks::default();
    let rules = EdgeRules {
        basic_auth: Some(BasicAuth {
            user: "ada".into(),
            password: "correct horse".into(),
        }),
        ..EdgeRules::default()
    };
    let stored = StoredRules::from_rules(&rules).expect("valid");
    let hash = &stored.basic_auth.as_ref().expect("basic").hash;
    assert!(hash.starts_with("$argon2"), "{hash}");
    assert!(!serde_json::to_string(&stored)
        .expect("json")
        .contains("correct horse"));
    let e = edge(rules);
    let at = ip("127.0.0.1");
    let good = headers(&[("authorization", &basic("ada", "correct horse"))]);
    assert_eq!(e.check(&good, at, &checks).await, Ok(()));
    // Remembered: the second time is a digest lookup.
    assert_eq!(e.lock_verified().len(), 1);
    assert_eq!(e.check(&good, at, &checks).await, Ok(()));
    for bad in [
        headers(&[]),
        headers(&[("authorization", &basic("ada", "wrong"))]),
        headers(&[("authorization", &basic("eve", "correct horse"))]),
        headers(&[("authorization", "Basic !!!not-base64")]),
        headers(&[("authorization", "Bearer abc")]),
    ] {
        let r = e.check(&bad, at, &checks).await.expect_err("refused");
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let challenge = r.challenge.expect("a challenge");
        assert!(challenge
            .to_str()
            .expect("text")
            .starts_with("Basic realm="));
    }
}

#[tokio::test]
async fn rules_that_do_not_parse_refuse_everything() {
    let checks = Checks::default();
    let e = Edge::from_json(Some("{not json")).expect("fails closed");
    let r = e
        .check(&HeaderMap::new(), ip("127.0.0.1"), &checks)
        .await
        .expect_err("refused");
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(Edge::from_json(None).is_none());
    assert!(Edge::from_json(Some("{}")).is_none(), "no rules");
}
