//! The inspector API of one tunnel (`/api/...`, `/api/t/NAME/...`): the
//! server's capture API passed on (lists and records with what the page
//! shows added, see [`super::views`]), replays and missed-request delivery
//! to the local app, search, and exports made by [`crate::export`], so
//! that "Copy as curl" is the command `relay requests export` prints.

use std::collections::VecDeque;
use std::path::PathBuf;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use relay_shared::api::{ReplayEdits, Summary};

use super::views::{self, Secrets};
use super::{error, full, json, json_body, status_json, upstream, Body, Tunnel};
use crate::events::{Event, Parser};
use crate::missed;
use crate::replay::{self, Refusal};

/// Most requests in one HAR download (the page offers the list it shows).
pub const HAR_MAX: usize = 1000;
/// Newest replays looked through for a record's own replays.
pub const REPLAYS_SCAN: u32 = 1000;
/// Folder, in the system's temporary directory, where "Copy as curl"
/// writes a body that cannot be put on a command line (binary, or over
/// 64 KiB): the command reads it with `--data-binary @FILE`, as
/// `relay requests export --format curl --out-dir DIR` does.
pub const BODY_DIR: &str = "relay-bodies";
/// Records fetched at once for a HAR download.
const FETCH_AT_ONCE: usize = 8;

/// Answers `rest` (the path after `/api/` or `/api/t/NAME/`) for `t`.
pub(super) async fn tunnel(t: &Tunnel, rest: &[String], req: Request<Incoming>) -> Response<Body> {
    let api = &t.inspected.api;
    let query = req.uri().query().unwrap_or("").to_owned();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match (req.method(), rest.as_slice()) {
        (&Method::GET, ["status"]) => json(StatusCode::OK, &status_json(&t.inspected)),
        (&Method::GET, ["requests"]) => match api.list(&query).await {
            Ok(page) => json(
                StatusCode::OK,
                &serde_json::json!({
                    "requests": page.requests.iter().map(views::summary).collect::<Vec<_>>(),
                    "next_before": page.next_before,
                }),
            ),
            Err(e) => upstream(e),
        },
        (&Method::GET, ["requests", id]) => record(t, id, &query).await,
        (&Method::GET, ["search"]) => {
            let q = param(&query, "q").unwrap_or_default();
            if q.trim().is_empty() {
                return error(StatusCode::BAD_REQUEST, "bad_request", "give ?q=TEXT");
            }
            match super::search::search(api, &t.search, &q).await {
                Ok(found) => json(StatusCode::OK, &found),
                Err(e) => upstream(e),
            }
        }
        (&Method::GET, ["events"]) => match api.events().await {
            Ok(res) => {
                let mut out = Response::new(events_body(res.into_body()));
                out.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                out.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                out
            }
            Err(e) => upstream(e),
        },
        (&Method::POST, ["requests", id, "replay"]) => {
            let id = (*id).to_owned();
            replay_request(t, &id, req).await
        }
        (&Method::POST, ["requests", id, "curl"]) => {
            let id = (*id).to_owned();
            curl(t, &id, req).await
        }
        (&Method::GET, ["har"]) => har(t, &query).await,
        (&Method::GET, ["missed"]) => match api.missed(&query).await {
            Ok(overview) => json(StatusCode::OK, &overview),
            Err(e) => upstream(e),
        },
        (&Method::POST, ["missed", "deliver"]) => deliver_missed(t, req).await,
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such page"),
    }
}

/// The value of query parameter `name`, decoded.
fn param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A record with what the page shows (`?secrets=1`: secrets unmasked)
/// and its replays.
async fn record(t: &Tunnel, id: &str, query: &str) -> Response<Body> {
    let api = &t.inspected.api;
    let rec = match api.get(id).await {
        Ok(r) => r,
        Err(e) => return upstream(e),
    };
    let secrets = match param(query, "secrets").as_deref() {
        Some("1") => Secrets::Shown,
        _ => Secrets::Masked,
    };
    let replays: Vec<Summary> = match api.list(&format!("kind=replay&limit={REPLAYS_SCAN}")).await {
        Ok(page) => page
            .requests
            .into_iter()
            .filter(|s| s.replay_of.as_deref() == Some(id))
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "no replays listed");
            Vec::new()
        }
    };
    json(StatusCode::OK, &views::record(&rec, secrets, &replays))
}

/// The server's event stream with each summary as the page lists it
/// ([`views::summary`]); other events and comments pass as they are.
fn events_body(upstream: Incoming) -> Body {
    let state = (upstream, Parser::default(), VecDeque::<Bytes>::new());
    let frames = stream::unfold(state, |(mut body, mut parser, mut ready)| async move {
        loop {
            if let Some(b) = ready.pop_front() {
                return Some((Ok(Frame::data(b)), (body, parser, ready)));
            }
            match body.frame().await? {
                Err(e) => return Some((Err(e), (body, parser, ready))),
                Ok(frame) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let events = parser.push(&data).ok()?;
                    if events.is_empty() {
                        // A ping (or part of an event): keep the browser's
                        // connection as busy as the server keeps ours.
                        ready.push_back(Bytes::from_static(b": ping\n\n"));
                    }
                    ready.extend(events.into_iter().map(event_text));
                }
            }
        }
    });
    BodyExt::boxed(StreamBody::new(frames))
}

fn event_text(e: Event) -> Bytes {
    let data = match (e.kind.as_str(), serde_json::from_str::<Summary>(&e.data)) {
        ("request", Ok(s)) => views::summary(&s).to_string(),
        _ => e.data,
    };
    let mut out = format!("event: {}\n", e.kind);
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// What `POST .../missed/deliver` may ask for; `{}` delivers all.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliverAsk {
    /// Only requests that arrived within this many milliseconds.
    #[serde(default)]
    within_ms: Option<u64>,
    /// Send the captured part of truncated bodies.
    #[serde(default)]
    force: bool,
}

/// Delivers the waiting missed requests (as `relay replay --missed`) and
/// answers `{"results": [replay results], "left": N, "stopped": null |
/// {"error", "message", "id"}}`.
async fn deliver_missed(t: &Tunnel, req: Request<Incoming>) -> Response<Body> {
    let ask: DeliverAsk = match json_body(req).await {
        Ok(a) => a,
        Err(res) => return res,
    };
    let opts = missed::Options {
        within: ask.within_ms.map(std::time::Duration::from_millis),
        force: ask.force,
        ..missed::Options::default()
    };
    let (api, target) = (&t.inspected.api, &t.inspected.target);
    match missed::deliver(api, target, opts, None, |_, _| {}).await {
        Ok(report) => json(StatusCode::OK, &report),
        Err(e) => upstream(e),
    }
}

async fn replay_request(t: &Tunnel, id: &str, req: Request<Incoming>) -> Response<Body> {
    let edits: ReplayEdits = match json_body(req).await {
        Ok(e) => e,
        Err(res) => return res,
    };
    match replay::replay(&t.inspected.api, &t.inspected.target, id, edits).await {
        Ok(result) => json(StatusCode::OK, &result),
        Err(e) => match e.downcast_ref::<Refusal>() {
            Some(r @ Refusal::Truncated { .. }) => {
                error(StatusCode::CONFLICT, "body_truncated", &r.to_string())
            }
            Some(r @ Refusal::Invalid(_)) => {
                error(StatusCode::BAD_REQUEST, "bad_request", &r.to_string())
            }
            None => upstream(e),
        },
    }
}

/// `{"text": COMMAND, "body_file": PATH or null, "refused": WHY or null}`:
/// the curl command `relay requests export ID --format curl --out-dir
/// TMP/relay-bodies` prints, against the tunnel's local app; a body it
/// reads from a file is written there first. POST with a JSON body, like
/// replay: it writes a file.
async fn curl(t: &Tunnel, id: &str, req: Request<Incoming>) -> Response<Body> {
    if let Err(res) = json_body::<serde_json::Value>(req).await {
        return res;
    }
    let rec = match t.inspected.api.get(id).await {
        Ok(r) => r,
        Err(e) => return upstream(e),
    };
    let dir: PathBuf = std::env::temp_dir().join(BODY_DIR);
    let c = crate::export::curl(&rec, &t.inspected.target.base, &dir);
    let mut body_file = None;
    if let Some(bytes) = &c.body_file {
        let written =
            std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&c.body_path, bytes));
        if let Err(e) = written {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot_write",
                &format!("cannot write the body to {}: {e}", c.body_path.display()),
            );
        }
        body_file = Some(c.body_path.display().to_string());
    }
    json(
        StatusCode::OK,
        &serde_json::json!({ "text": c.text, "body_file": body_file, "refused": c.refused }),
    )
}

/// `?ids=A,B,...` as one HAR 1.2 file (`relay requests export --format
/// har`), in the order given, as a download.
async fn har(t: &Tunnel, query: &str) -> Response<Body> {
    let ids: Vec<String> = param(query, "ids")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.is_empty() || ids.len() > HAR_MAX {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("give ?ids=ID,ID,... (1 to {HAR_MAX} ids)"),
        );
    }
    let api = &t.inspected.api;
    let fetched: Vec<anyhow::Result<_>> = stream::iter(ids.clone())
        .map(|id| async move { api.get(&id).await })
        .buffered(FETCH_AT_ONCE)
        .collect()
        .await;
    let records = match fetched.into_iter().collect::<anyhow::Result<Vec<_>>>() {
        Ok(r) => r,
        Err(e) => return upstream(e),
    };
    let doc = crate::export::har(&records, Some(&t.inspected.target.base));
    let text = match serde_json::to_string_pretty(&doc) {
        Ok(t) => t,
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot encode JSON",
            )
        }
    };
    let name = match ids.as_slice() {
        [one] => format!("relay-{one}.har"),
        _ => format!("relay-{}.har", api.name()),
    };
    let mut res = full(StatusCode::OK, "application/json", text);
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_summaries_get_their_shown_path_and_other_events_pass() {
        let summary = r#"{"id":"01a","tunnel":"app","time":"2026-11-24T10:00:00.000Z","method":"GET","path":"/cb?code=abc","status":200,"outcome":"delivered","duration_ms":1,"request_size":0,"response_size":0,"replay_of":null}"#;
        let mut parser = Parser::default();
        let events = parser
            .push(
                format!("event: request\ndata: {summary}\n\nevent: lagged\ndata: 3\n\n").as_bytes(),
            )
            .expect("parses");
        let texts: Vec<Bytes> = events.into_iter().map(event_text).collect();
        let again = Parser::default().push(&texts[0]).expect("parses");
        let v: serde_json::Value = serde_json::from_str(&again[0].data).expect("JSON");
        assert_eq!(
            (v["path"].as_str(), v["shown_path"].as_str()),
            (Some("/cb?code=abc"), Some("/cb?code=***"))
        );
        assert_eq!(&texts[1][..], b"event: lagged\ndata: 3\n\n");
    }
}
