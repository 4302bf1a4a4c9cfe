//! The server's capture API (`/_relay/v1/tunnels/NAME/requests[/ID]`, see
//! docs/api.md) as a test calls it: a GET on the server's own listener (the
//! bare domain) with a credential, and decoders for what it answers: bodies
//! in standard base64, headers as `[[name, value], ...]`, and listings of
//! summaries, here read through `relay requests --json` (one per line).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use http::header::HOST;
use http::{Request, StatusCode};

use crate::cli;
use crate::client::ClientConfig;
use crate::http::{empty, fetch, Fetched};
use crate::poll_until;
use crate::server::RelayServer;

/// Deadline for one capture API call.
pub const CALL: Duration = Duration::from_secs(15);
/// Deadline for one `relay requests` run.
const REQUESTS_RUN: Duration = Duration::from_secs(20);
/// How long a capture may take to show up in the listing: the server
/// stores captures from a background writer.
pub const LISTED: Duration = Duration::from_secs(10);
/// How long a delivery of a few missed requests may take to show in the
/// API, a client's reconnect (with its backoff) included.
pub const DELIVERED: Duration = Duration::from_secs(30);

/// Credentials for the capture API.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    None,
    /// `Authorization: Bearer TOKEN`.
    Bearer(&'a str),
    /// `X-Relay-Client-Id` (the identity on `--open` servers).
    ClientId(&'a str),
}

/// `GET path` on `server`'s own listener (bare domain) with `auth`.
pub async fn get(server: &RelayServer, path: &str, auth: Auth<'_>) -> Result<Fetched> {
    get_at(server.addr(), path, auth).await
}

/// `GET path` on the plain-HTTP server listening on `addr` (bare domain)
/// with `auth`.
pub async fn get_at(addr: SocketAddr, path: &str, auth: Auth<'_>) -> Result<Fetched> {
    let mut req = Request::get(path).header(HOST, format!("localhost:{}", addr.port()));
    req = match auth {
        Auth::None => req,
        Auth::Bearer(t) => req.header("authorization", format!("Bearer {t}")),
        Auth::ClientId(id) => req.header("x-relay-client-id", id),
    };
    fetch(addr, req.body(empty())?, CALL).await
}

/// [`get`] that must answer 200 JSON; the JSON.
pub async fn get_json(
    server: &RelayServer,
    path: &str,
    auth: Auth<'_>,
) -> Result<serde_json::Value> {
    let f = get(server, path, auth).await?;
    ensure!(
        f.status == StatusCode::OK,
        "GET {path}: {} {:?}",
        f.status,
        String::from_utf8_lossy(&f.body)
    );
    f.json()
}

/// The path of one capture record.
pub fn record_path(name: &str, id: &str) -> String {
    format!("/_relay/v1/tunnels/{name}/requests/{id}")
}

/// The decoded `body` (standard base64) of `message`: a record's `request`
/// or `response`, or a replay result's `response`.
pub fn body_of(message: &serde_json::Value) -> Result<Vec<u8>> {
    let b = message["body"]
        .as_str()
        .with_context(|| format!("no string `body` in {message}"))?;
    base64::engine::general_purpose::STANDARD
        .decode(b)
        .with_context(|| format!("`body` is not standard base64: {b:?}"))
}

/// Values of header `name` (case-insensitive) in a `[[name, value], ...]` array.
pub fn pair_values(headers: &serde_json::Value, name: &str) -> Result<Vec<String>> {
    let arr = headers
        .as_array()
        .with_context(|| format!("headers are not an array: {headers}"))?;
    let mut out = Vec::new();
    for pair in arr {
        let n = pair[0]
            .as_str()
            .with_context(|| format!("bad header pair {pair}"))?;
        let v = pair[1]
            .as_str()
            .with_context(|| format!("bad header pair {pair}"))?;
        if n.eq_ignore_ascii_case(name) {
            out.push(v.to_string());
        }
    }
    Ok(out)
}

/// The ids of a listing, in its order.
pub fn ids(list: &[serde_json::Value]) -> Vec<String> {
    list.iter()
        .map(|s| s["id"].as_str().unwrap_or("<no id>").to_string())
        .collect()
}

/// The summary with id `id` in a listing.
pub fn find<'a>(list: &'a [serde_json::Value], id: &str) -> Option<&'a serde_json::Value> {
    list.iter().find(|s| s["id"] == id)
}

/// `relay requests --json --limit 100 EXTRA...` for `cfg`'s tunnel: the summaries.
pub async fn list(cfg: &ClientConfig, extra: &[&str]) -> Result<Vec<serde_json::Value>> {
    let mut args = vec!["--json", "--limit", "100"];
    args.extend_from_slice(extra);
    let out = cli::relay(cfg, "requests", &args, REQUESTS_RUN).await?;
    out.ensure_success()?;
    out.json_lines()
}

/// Polls `relay requests --json` until every id in `want` is listed, for
/// up to [`LISTED`]; returns the whole listing. A failing `relay requests`
/// fails at once.
pub async fn wait_listed(cfg: &ClientConfig, want: &[&str]) -> Result<Vec<serde_json::Value>> {
    let what = format!("`relay requests --json` lists {want:?}");
    poll_until(&what, LISTED, || async {
        match list(cfg, &[]).await {
            Err(e) => Some(Err(e)),
            Ok(l) => want
                .iter()
                .all(|id| find(&l, id).is_some())
                .then_some(Ok(l)),
        }
    })
    .await?
}

/// The capture API of one tunnel as its owner calls it: the client's
/// token if it has one, else the client id its `relay connect` saved.
/// It holds the server's address, not the process, so it outlives a
/// [`RelayServer::restart`].
#[derive(Clone, Debug)]
pub struct TunnelApi {
    addr: SocketAddr,
    name: String,
    token: Option<String>,
    client_id: Option<String>,
}

impl TunnelApi {
    /// For tunnel `name` on `server` (plain HTTP), as the client `cfg`;
    /// without a token, `cfg`'s `relay connect` must have run once.
    pub fn new(server: &RelayServer, cfg: &ClientConfig, name: &str) -> Result<Self> {
        let client_id = match &cfg.token {
            Some(_) => None,
            None => Some(cli::client_id(cfg)?),
        };
        Ok(Self {
            addr: server.addr(),
            name: name.to_string(),
            token: cfg.token.clone(),
            client_id,
        })
    }

    fn auth(&self) -> Auth<'_> {
        match (&self.token, &self.client_id) {
            (Some(t), _) => Auth::Bearer(t),
            (None, Some(id)) => Auth::ClientId(id),
            (None, None) => Auth::None,
        }
    }

    /// `GET /_relay/v1/tunnels/NAME/TAIL`, which must answer 200 JSON.
    pub async fn get_json(&self, tail: &str) -> Result<serde_json::Value> {
        let path = format!("/_relay/v1/tunnels/{}/{tail}", self.name);
        let f = get_at(self.addr, &path, self.auth()).await?;
        ensure!(
            f.status == StatusCode::OK,
            "GET {path}: {} {:?}",
            f.status,
            String::from_utf8_lossy(&f.body)
        );
        f.json()
    }

    /// The summaries of `GET .../requests?QUERY`, newest first.
    pub async fn list(&self, query: &str) -> Result<Vec<serde_json::Value>> {
        let v = self.get_json(&format!("requests?{query}")).await?;
        v["requests"]
            .as_array()
            .cloned()
            .with_context(|| format!("no `requests` array in {v}"))
    }

    /// The summary of capture `id`, from the newest 1000.
    pub async fn summary(&self, id: &str) -> Result<serde_json::Value> {
        let all = self.list("limit=1000").await?;
        find(&all, id).cloned().with_context(|| {
            format!(
                "{id} is not among the {} listed: {:?}",
                all.len(),
                ids(&all)
            )
        })
    }

    /// The full record of capture `id`.
    pub async fn record(&self, id: &str) -> Result<serde_json::Value> {
        self.get_json(&format!("requests/{id}")).await
    }

    /// `GET .../missed?limit=1000`: `{count, oldest, requests}`.
    pub async fn missed(&self) -> Result<serde_json::Value> {
        self.get_json("missed?limit=1000").await
    }

    /// Polls the listing (for up to `limit`) until `done` holds for the
    /// summaries of `want` (in `want`'s order); returns them.
    pub async fn wait_summaries(
        &self,
        what: &str,
        limit: Duration,
        want: &[&str],
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Result<Vec<serde_json::Value>> {
        let last = std::sync::Mutex::new(Vec::new());
        let got = poll_until(what, limit, || async {
            let all = match self.list("limit=1000").await {
                Ok(all) => all,
                Err(e) => return Some(Err(e)),
            };
            let picked: Option<Vec<_>> = want.iter().map(|id| find(&all, id).cloned()).collect();
            let picked = picked?;
            if done(&picked) {
                return Some(Ok(picked));
            }
            *last.lock().expect("never poisoned") = picked;
            None
        })
        .await;
        match got {
            Ok(r) => r,
            Err(e) => Err(e.context(format!(
                "last seen: {:#?}",
                last.lock().expect("never poisoned")
            ))),
        }
    }

    /// Waits (up to [`DELIVERED`]) until every one of `want` is
    /// `delivery: delivered`; returns their summaries in `want`'s order.
    pub async fn wait_delivered(&self, want: &[&str]) -> Result<Vec<serde_json::Value>> {
        self.wait_summaries(
            &format!("{want:?} are all `delivery: delivered`"),
            DELIVERED,
            want,
            |l| l.iter().all(|s| s["delivery"] == "delivered"),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_of_decodes_padded_standard_base64_and_refuses_the_rest() {
        let msg = |b: &str| serde_json::json!({ "body": b });
        assert_eq!(body_of(&msg("")).expect("empty"), b"");
        assert_eq!(body_of(&msg("aGk=")).expect("one pad"), b"hi");
        assert_eq!(body_of(&msg("aGk/Pz8+")).expect("+ and /"), b"hi???>");
        assert!(body_of(&msg("aGk")).is_err(), "unpadded");
        assert!(body_of(&msg("aGk_")).is_err(), "URL-safe alphabet");
        assert!(body_of(&serde_json::json!({})).is_err(), "no body");
    }
}
