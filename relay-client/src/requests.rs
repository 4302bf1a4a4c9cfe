//! `relay requests`: the listing's filters (sent to the server as list
//! parameters, and applied here to live events), and `--follow`, which
//! prints the list and then each new capture as the server's event stream
//! reports it, across losses of the stream, until the user stops it.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::time::Duration;

use relay_shared::api::Summary;

use crate::api::Api;
use crate::events::Captures;
use crate::output::{table_header, table_row};

/// First wait before opening a lost event stream again; doubles up to
/// [`RETRY_MAX`].
const RETRY_START: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// Ids remembered so that a capture in both the list and the stream (or
/// in two lists around a reconnect) prints once.
const REMEMBERED: usize = 10_000;

/// What `relay requests` lists.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub limit: u32,
    pub method: Option<String>,
    pub status: Option<u16>,
    pub outcome: Option<String>,
    pub path: Option<String>,
    /// Only missed requests still waiting.
    pub missed: bool,
}

impl Filter {
    /// The server's list parameters.
    pub fn query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("limit", &self.limit.to_string());
        let optional = [
            ("method", self.method.clone()),
            ("status", self.status.map(|s| s.to_string())),
            ("outcome", self.outcome.clone()),
            ("path", self.path.clone()),
            ("missed", self.missed.then(|| "1".to_owned())),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                q.append_pair(k, &v);
            }
        }
        q.finish()
    }

    /// Whether a live capture passes, as the server would list it.
    pub fn matches(&self, s: &Summary) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(&s.method))
            && self.status.is_none_or(|st| s.status == Some(st))
            && self
                .outcome
                .as_deref()
                .is_none_or(|o| o == s.outcome.as_str())
            && self.path.as_deref().is_none_or(|p| s.path.contains(p))
            && (!self.missed || s.delivery.is_some_and(|d| d.is_waiting()))
    }
}

/// How followed captures print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    /// One summary per line.
    Json,
}

/// Ids printed so far (the newest [`REMEMBERED`]).
#[derive(Default)]
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// Whether `id` is new; remembers it.
    fn insert(&mut self, id: &str) -> bool {
        if !self.set.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back(id.to_owned());
        if self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// `relay requests --follow`: prints the newest `filter.limit` oldest
/// first, then each new capture that passes `filter`, until the process
/// is stopped. The stream is opened before the list is read, so a
/// capture stored in between is not missed; a lost stream is opened
/// again (and the list read again) with backoff.
///
/// Errors: only the first connection (bad credentials, unknown tunnel,
/// server down); later losses are retried.
pub async fn follow(api: &Api, filter: &Filter, format: Format) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    let mut seen = Seen::default();
    let mut first = true;
    let mut delay = RETRY_START;
    loop {
        let opened = async {
            let stream = api.events().await?;
            let page = api.list(&filter.query()).await?;
            anyhow::Ok((stream, page))
        }
        .await;
        let (stream, page) = match opened {
            Ok(ok) => ok,
            Err(e) if first => return Err(e),
            Err(e) => {
                eprintln!("relay: cannot follow {} yet: {e:#}", api.name());
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
                continue;
            }
        };
        delay = RETRY_START;
        if first && format == Format::Table {
            out.write_all(table_header(crate::localtime::zone()).as_bytes())?;
        }
        for s in page.requests.iter().rev() {
            if seen.insert(&s.id) {
                print(&mut out, s, format)?;
            }
        }
        if first {
            eprintln!(
                "following {}: new requests show below as they arrive (Ctrl-C to stop)",
                api.name()
            );
            first = false;
        }
        let mut captures = Captures::new(stream.into_body());
        let why = loop {
            match captures.next().await {
                Ok(Some(s)) => {
                    if filter.matches(&s) && seen.insert(&s.id) {
                        print(&mut out, &s, format)?;
                    }
                }
                Ok(None) => break "the server ended the event stream".to_owned(),
                Err(e) => break format!("{e:#}"),
            }
        };
        eprintln!("relay: lost the live events ({why}); reconnecting");
    }
}

fn print(out: &mut impl Write, s: &Summary, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Table => out.write_all(table_row(s, crate::localtime::zone()).as_bytes())?,
        Format::Json => writeln!(out, "{}", serde_json::to_string(s)?)?,
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(
        method: &str,
        status: Option<u16>,
        outcome: &str,
        delivery: Option<&str>,
    ) -> Summary {
        serde_json::from_value(serde_json::json!({
            "id": "01a", "tunnel": "t", "time": "2026-11-24T10:15:02.123Z", "method": method,
            "path": "/hooks/stripe?x=1", "status": status, "outcome": outcome,
            "duration_ms": 1, "request_size": 0, "response_size": 0, "replay_of": null,
            "delivery": delivery,
        }))
        .expect("a summary")
    }

    #[test]
    fn the_query_carries_every_filter_given() {
        let f = Filter {
            limit: 20,
            method: Some("POST".into()),
            status: Some(503),
            outcome: Some("offline".into()),
            path: Some("/a b".into()),
            missed: true,
        };
        assert_eq!(
            f.query(),
            "limit=20&method=POST&status=503&outcome=offline&path=%2Fa+b&missed=1"
        );
        assert_eq!(
            Filter {
                limit: 5,
                ..Filter::default()
            }
            .query(),
            "limit=5"
        );
    }

    #[test]
    fn live_captures_are_filtered_like_the_list() {
        let all = Filter::default();
        let offline = summary("POST", Some(503), "offline", Some("missed"));
        let done = summary("POST", Some(503), "offline", Some("delivered"));
        let ok = summary("GET", Some(200), "delivered", None);
        assert!(all.matches(&offline) && all.matches(&ok));
        let missed = Filter {
            missed: true,
            ..Filter::default()
        };
        assert!(missed.matches(&offline));
        assert!(!missed.matches(&done) && !missed.matches(&ok));
        let f = Filter {
            method: Some("post".into()),
            status: Some(503),
            path: Some("stripe".into()),
            ..Filter::default()
        };
        assert!(f.matches(&offline) && !f.matches(&ok));
        let f = Filter {
            outcome: Some("delivered".into()),
            ..Filter::default()
        };
        assert!(f.matches(&ok) && !f.matches(&offline));
    }

    #[test]
    fn seen_ids_print_once_and_memory_is_bounded() {
        let mut seen = Seen::default();
        assert!(seen.insert("a"));
        assert!(!seen.insert("a"));
        for i in 0..REMEMBERED {
            seen.insert(&i.to_string());
        }
        assert_eq!(seen.set.len(), REMEMBERED);
        assert!(seen.insert("a"), "forgotten once older than the window");
    }
}
