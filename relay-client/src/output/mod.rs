//! What `relay connect` prints: the URL banner, then one line per request.
//! Lines go through one writer task that writes whatever is queued in one
//! go, so a burst of requests costs one write, not one per line.

use std::io::Write;
use std::time::{Duration, SystemTime};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use jiff::tz::TimeZone;
use relay_shared::api::MissedOverview;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::localtime;

mod table;
pub use table::{marks, requests_table, table_header, table_row};

/// Lines queued for stdout before new ones are dropped (and the number
/// dropped is printed with the next write): printing must never slow the
/// tunnel down.
const QUEUE_LINES: usize = 4096;

/// How long request lines may wait before they are written to a
/// non-terminal stdout.
const FILE_BATCH: Duration = Duration::from_millis(20);

/// What stdout carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The banner and one line per request, for a person.
    Human,
    /// `--json`: one event object per line ([`Event`]); anything else
    /// goes to stderr.
    Json,
}

/// Handle for printing; cheap to clone.
#[derive(Clone)]
pub struct Output {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
    /// Colour the status on a terminal, unless `NO_COLOR` is set.
    colour: bool,
    mode: Mode,
    /// The tunnel this handle prints for: named in every event, and, with
    /// `prefix`, in front of every human line.
    tunnel: Option<Arc<str>>,
    /// `NAME  ` padded to the longest name, when one process runs several
    /// tunnels (`relay start`).
    prefix: Option<Arc<str>>,
    zone: &'static TimeZone,
}

enum Msg {
    Line(String),
    /// Answered once every line queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// Lines gathered for the next write. Written out when dropped too, so the
/// lines of a batch interrupted by Ctrl-C (the runtime dropping the task)
/// still reach stdout.
struct Pending(String);

impl Pending {
    fn write(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(self.0.as_bytes());
        let _ = out.flush();
        self.0.clear();
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.write();
    }
}

/// One finished request, as printed.
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Status sent to the visitor, or what we answered for a failure;
    /// `None` when the visitor got no answer (`--fault reset`).
    pub status: Option<u16>,
    pub duration: Duration,
    pub id: &'a str,
    /// Why a 502, the fault played, a missed caller deadline.
    pub note: Option<&'a str>,
}

/// A `--json` line. Field names are part of the interface (documented in
/// `docs/events.md`): add fields, never rename or drop them.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event<'a> {
    /// The first welcome: the tunnel is up.
    Ready {
        urls: &'a [String],
        target: &'a str,
        /// `http://127.0.0.1:4040`, or null without an inspector.
        inspector: Option<&'a str>,
    },
    /// One finished request (as the human request line).
    Request {
        id: &'a str,
        method: &'a str,
        /// Path and query, secret-looking query values hidden.
        path: &'a str,
        /// Null when the visitor got no answer (`--fault reset`).
        status: Option<u16>,
        duration_ms: u128,
        /// What the human line adds after the id: why a 502
        /// (`connection refused on localhost:4000`), the fault played, a
        /// missed caller deadline.
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<&'a str>,
    },
    /// The server reports requests that arrived while no client was
    /// connected.
    Missed {
        count: u64,
        /// Arrival of the oldest, RFC 3339 UTC as the server keeps it.
        oldest: Option<&'a str>,
        /// Whether `deliver_missed` is delivering them now.
        delivering: bool,
    },
    /// The connection dropped or could not be made; the next attempt is
    /// after `delay_ms`.
    Reconnecting {
        attempt: u32,
        delay_ms: u128,
        reason: &'a str,
    },
    /// A welcome after a reconnect.
    Reconnected { urls: &'a [String] },
    /// Something the user should see; after a fatal one the process exits
    /// non-zero.
    Error { message: &'a str },
}

/// [`Event`] with what every line carries.
#[derive(Serialize)]
struct Stamped<'a> {
    #[serde(flatten)]
    event: &'a Event<'a>,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tunnel: Option<&'a str>,
}

impl Output {
    /// Starts the writer task. On a terminal every line shows at once; into
    /// a file or pipe, lines are gathered for up to [`FILE_BATCH`], so a busy
    /// tunnel logs with one write per batch rather than one per request.
    pub fn start(mode: Mode) -> Self {
        use std::io::IsTerminal;
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        let terminal = std::io::stdout().is_terminal();
        let colour = mode == Mode::Human
            && terminal
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let batch = if terminal { Duration::ZERO } else { FILE_BATCH };
        let zone = localtime::zone();
        tokio::spawn(async move {
            let mut buf = Pending(String::new());
            let mut flushed = Vec::new();
            while let Some(msg) = rx.recv().await {
                let take = |msg, buf: &mut Pending, flushed: &mut Vec<_>| match msg {
                    Msg::Line(line) => buf.0.push_str(&line),
                    Msg::Flush(done) => flushed.push(done),
                };
                take(msg, &mut buf, &mut flushed);
                if !batch.is_zero() && flushed.is_empty() {
                    // Sleep, then take what gathered: lines arriving
                    // meanwhile wake nobody, so a busy tunnel pays one
                    // wake-up per batch rather than one per request.
                    tokio::time::sleep(batch).await;
                }
                while let Ok(more) = rx.try_recv() {
                    take(more, &mut buf, &mut flushed);
                }
                let n = lost.swap(0, Ordering::Relaxed);
                if n > 0 {
                    buf.0.push_str(&match mode {
                        Mode::Human => format!("({n} request lines not shown: stdout too slow)\n"),
                        Mode::Json => stamped(
                            &Event::Error {
                                message: &format!("{n} events not shown: stdout too slow"),
                            },
                            None,
                            zone,
                        ),
                    });
                }
                buf.write();
                for done in flushed.drain(..) {
                    let _ = done.send(());
                }
            }
        });
        Self {
            tx,
            dropped,
            colour,
            mode,
            tunnel: None,
            prefix: None,
            zone,
        }
    }

    /// A handle for tunnel `name`; with `width` (the longest name, when one
    /// process runs several tunnels) its human lines start with the name.
    pub fn for_tunnel(&self, name: &str, width: Option<usize>) -> Self {
        Self {
            tunnel: Some(name.into()),
            prefix: width.map(|w| format!("{name:<w$}  ").into()),
            ..self.clone()
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn send(&self, text: String) {
        if self.tx.try_send(Msg::Line(text)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prints a human line as is (a newline is added); with `--json` it
    /// goes to stderr, keeping stdout to events.
    pub fn line(&self, mut text: String) {
        let prefix = self.prefix.as_deref().unwrap_or("");
        match self.mode {
            // Without a prefix (one tunnel) the line is sent as built, not
            // copied into a new one: request lines come through here.
            Mode::Human if prefix.is_empty() => {
                text.push('\n');
                self.send(text)
            }
            Mode::Human => self.send(format!("{prefix}{text}\n")),
            Mode::Json => eprintln!("{prefix}{text}"),
        }
    }

    /// Prints `event` with `--json`; nothing otherwise (the caller prints
    /// the human form).
    pub fn event(&self, event: &Event<'_>) {
        if self.mode == Mode::Json {
            self.send(stamped(event, self.tunnel.as_deref(), self.zone));
        }
    }

    pub fn request(&self, r: &RequestLine<'_>) {
        match self.mode {
            Mode::Human => self.line(format_request(r, SystemTime::now(), self.zone, self.colour)),
            Mode::Json => self.event(&Event::Request {
                id: r.id,
                method: r.method,
                path: &redact_query(r.path),
                status: r.status,
                duration_ms: r.duration.as_millis(),
                note: r.note,
            }),
        }
    }

    /// The banner after a welcome: `ready` for the first, `reconnected`
    /// after.
    pub fn welcome(
        &self,
        first: bool,
        name: &str,
        urls: &[String],
        target: &str,
        inspector: Option<&str>,
    ) {
        match self.mode {
            Mode::Human => {
                self.line(format!("relay connected as {name}"));
                for url in urls {
                    self.line(format!("Forwarding  {url} -> {target}"));
                }
            }
            Mode::Json if first => self.event(&Event::Ready {
                urls,
                target,
                inspector,
            }),
            Mode::Json => self.event(&Event::Reconnected { urls }),
        }
    }

    /// The welcome reported missed requests.
    pub fn missed(&self, m: &MissedOverview, delivering_to: Option<&str>) {
        match self.mode {
            Mode::Human => self.line(crate::missed::notice(m, SystemTime::now(), delivering_to)),
            Mode::Json => self.event(&Event::Missed {
                count: m.count,
                oldest: m.oldest.as_deref(),
                delivering: delivering_to.is_some(),
            }),
        }
    }

    /// The connection is down (`reason`); attempt `attempt` follows in
    /// `delay`. Human lines go to stderr at once, as a person watching
    /// wants to see the outage when it happens.
    pub fn reconnecting(&self, attempt: u32, delay: Duration, reason: &str) {
        match self.mode {
            Mode::Human => {
                let who = self.who();
                eprintln!("relay: {who}{reason}");
                eprintln!("relay: {who}reconnecting in {:.1}s", delay.as_secs_f64());
            }
            Mode::Json => self.event(&Event::Reconnecting {
                attempt,
                delay_ms: delay.as_millis(),
                reason,
            }),
        }
    }

    /// A problem: `relay: MESSAGE` on stderr, or an `error` event.
    pub fn error(&self, message: &str) {
        match self.mode {
            Mode::Human => eprintln!("relay: {}{message}", self.who()),
            Mode::Json => self.event(&Event::Error { message }),
        }
    }

    /// `NAME: ` when several tunnels share the terminal.
    fn who(&self) -> String {
        match (&self.prefix, &self.tunnel) {
            (Some(_), Some(name)) => format!("{name}: "),
            _ => String::new(),
        }
    }

    /// Waits until everything queued so far is written (before exit).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// `event` as one NDJSON line, newline included.
fn stamped(event: &Event<'_>, tunnel: Option<&str>, zone: &TimeZone) -> String {
    let line = Stamped {
        event,
        time: localtime::event_time(SystemTime::now(), zone),
        tunnel,
    };
    // Serialising these plain structs cannot fail; were it to, an error
    // event says so rather than a line missing.
    let mut text = serde_json::to_string(&line).unwrap_or_else(|e| {
        format!(r#"{{"type":"error","message":"cannot print an event: {e}"}}"#)
    });
    text.push('\n');
    text
}

/// `HH:MM:SS.mmm  METHOD  /path  STATUS  12ms  ID` (clock in `zone`).
///
/// Written into one buffer sized up front: it runs once per request on
/// the tunnel's thread.
pub fn format_request(
    r: &RequestLine<'_>,
    now: SystemTime,
    zone: &TimeZone,
    colour: bool,
) -> String {
    use std::fmt::Write;
    let redacted = redact_query(r.path);
    let path = printable(&redacted);
    let path = match path.char_indices().nth(PATH_CHARS) {
        Some((cut, _)) => &path[..cut],
        None => &path[..],
    };
    // Pushes rather than `write!` where it is cheap: this runs for every
    // request the tunnel carries.
    let mut line = String::with_capacity(48 + path.len() + r.id.len());
    localtime::push_clock(&mut line, now, zone);
    line.push_str("  ");
    line.push_str(r.method);
    for _ in r.method.len()..7 {
        line.push(' ');
    }
    line.push_str("  ");
    line.push_str(path);
    line.push_str("  ");
    match r.status {
        Some(status) if colour => line.push_str(&paint(status, true)),
        Some(status) => {
            let _ = write!(line, "{status}");
        }
        None => line.push_str("---"),
    }
    let _ = write!(line, "  {}ms  ", r.duration.as_millis());
    line.push_str(r.id);
    if let Some(note) = r.note {
        let _ = write!(line, "  {}", printable(note));
    }
    line
}

/// `HH:MM:SS.mmm` of `now` in the user's time zone, as request lines start.
pub fn clock(now: SystemTime) -> String {
    localtime::clock(now, localtime::zone())
}

/// Characters of a path shown in a request line.
const PATH_CHARS: usize = 120;

/// `text` safe to print on a terminal: control characters (C0 and C1,
/// which can start escape sequences) and bidirectional overrides, which
/// visitors can put in paths, become U+FFFD.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if text.chars().any(bad) {
        text.chars()
            .map(|c| if bad(c) { '\u{fffd}' } else { c })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// The status, in green, cyan, yellow or red by class on a terminal.
fn paint(status: u16, colour: bool) -> String {
    if !colour {
        return status.to_string();
    }
    let code = match status {
        200..=299 => "32",
        300..=399 => "36",
        400..=499 => "33",
        _ => "31",
    };
    format!("\x1b[{code}m{status}\x1b[0m")
}

/// Query parameters whose names suggest a secret (`token`, `key`,
/// `signature`, ...) with their values hidden: logs and terminals are
/// shared and scrolled back, captured secrets should not be.
pub fn redact_query(path: &str) -> std::borrow::Cow<'_, str> {
    const SECRET: &[&str] = &[
        "token", "secret", "key", "pass", "sig", "auth", "code", "session", "jwt",
    ];
    let Some((base, query)) = path.split_once('?') else {
        return path.into();
    };
    if !query.contains('=') {
        return path.into();
    }
    let mut changed = false;
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v))
                if !v.is_empty() && SECRET.iter().any(|s| k.to_ascii_lowercase().contains(s)) =>
            {
                changed = true;
                format!("{k}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    if changed {
        format!("{base}?{}", parts.join("&")).into()
    } else {
        path.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn request_line_has_every_field() {
        let line = format_request(
            &RequestLine {
                method: "POST",
                path: "/graphql?x=1",
                status: Some(200),
                duration: Duration::from_millis(12),
                id: "01abc",
                note: None,
            },
            UNIX_EPOCH + Duration::from_millis(3_723_004),
            &TimeZone::UTC,
            false,
        );
        assert_eq!(
            line,
            "01:02:03.004  POST     /graphql?x=1  200  12ms  01abc"
        );
        let line = format_request(
            &RequestLine {
                method: "GET",
                path: "/",
                status: None,
                duration: Duration::from_millis(3),
                id: "01abd",
                note: Some("fault: reset"),
            },
            UNIX_EPOCH,
            &TimeZone::UTC,
            false,
        );
        assert_eq!(
            line,
            "00:00:00.000  GET      /  ---  3ms  01abd  fault: reset"
        );
    }

    #[test]
    fn events_are_one_json_line_with_type_time_and_tunnel() {
        let tokyo = TimeZone::get("Asia/Tokyo").expect("tzdb has Asia/Tokyo");
        let urls = ["http://a.localhost:8080/".to_owned()];
        let line = stamped(
            &Event::Ready {
                urls: &urls,
                target: "http://localhost:4000",
                inspector: None,
            },
            Some("a"),
            &tokyo,
        );
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["type"], "ready");
        assert_eq!(v["tunnel"], "a");
        assert_eq!(v["urls"][0], "http://a.localhost:8080/");
        assert!(v["inspector"].is_null());
        let time = v["time"].as_str().expect("time");
        assert!(time.ends_with("+09:00") && time.len() == 29, "{time}");
        let v: serde_json::Value = serde_json::from_str(&stamped(
            &Event::Reconnecting {
                attempt: 2,
                delay_ms: 400,
                reason: "connection lost (x)",
            },
            None,
            &TimeZone::UTC,
        ))
        .expect("JSON");
        assert_eq!(v["type"], "reconnecting");
        assert_eq!(
            (v["attempt"].as_u64(), v["delay_ms"].as_u64()),
            (Some(2), Some(400))
        );
        assert!(v.get("tunnel").is_none());
        let v: serde_json::Value = serde_json::from_str(&stamped(
            &Event::Missed {
                count: 3,
                oldest: Some("2026-11-24T10:15:02.123Z"),
                delivering: true,
            },
            Some("a"),
            &TimeZone::UTC,
        ))
        .expect("JSON");
        assert_eq!(v["type"], "missed");
        assert_eq!(v["count"], 3);
        assert_eq!(v["delivering"], true);
    }

    #[test]
    fn table_times_are_in_the_zone_it_names() {
        let s: relay_shared::api::Summary = serde_json::from_value(serde_json::json!({
            "id": "01a", "tunnel": "t", "time": "2026-11-24T20:15:02.123Z", "method": "GET",
            "path": "/", "status": 200, "outcome": "delivered",
            "duration_ms": 1, "request_size": 0, "response_size": 0, "replay_of": null,
        }))
        .expect("a summary");
        let tokyo = TimeZone::get("Asia/Tokyo").expect("tzdb has Asia/Tokyo");
        let table = requests_table(std::slice::from_ref(&s), &tokyo);
        let mut lines = table.lines();
        let header = lines.next().expect("header");
        let row = lines.next().expect("row");
        assert!(header.contains("TIME (Asia/Tokyo)"), "{header}");
        assert!(row.contains("2026-11-25 05:15:02"), "{row}");
        let at = header.find("METHOD").expect("METHOD");
        assert_eq!(row.find("GET"), Some(at), "columns line up:\n{table}");
        let utc = requests_table(&[s], &TimeZone::UTC);
        assert!(
            utc.contains("TIME (UTC)") && utc.contains("2026-11-24 20:15:02"),
            "{utc}"
        );
    }

    #[test]
    fn secrets_in_queries_are_hidden_and_colour_is_opt_in() {
        assert_eq!(
            redact_query("/cb?code=abc123&state=x&api_key=k&access_token=t"),
            "/cb?code=***&state=x&api_key=***&access_token=***"
        );
        assert_eq!(redact_query("/plain?x=1"), "/plain?x=1");
        assert_eq!(printable("/a\u{9b}31m\u{202e}b"), "/a\u{fffd}31m\u{fffd}b");
        assert_eq!(printable("/ok/é"), "/ok/é");
        assert_eq!(paint(503, false), "503");
        assert_eq!(paint(503, true), "\x1b[31m503\x1b[0m");
    }
}
