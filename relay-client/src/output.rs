//! What `relay connect` prints: the URL banner, then one line per request.
//! Lines go through one writer task that writes whatever is queued in one
//! go, so a burst of requests costs one write, not one per line.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// Lines queued for stdout before new ones are dropped (and the number
/// dropped is printed with the next write): printing must never slow the
/// tunnel down.
const QUEUE_LINES: usize = 4096;

/// How long request lines may wait before they are written to a
/// non-terminal stdout.
const FILE_BATCH: Duration = Duration::from_millis(20);

/// Handle for printing; cheap to clone.
#[derive(Clone)]
pub struct Output {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
    /// Colour the status on a terminal, unless `NO_COLOR` is set.
    colour: bool,
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
    /// Status sent to the visitor, or what we answered for a failure.
    pub status: u16,
    pub duration: Duration,
    pub id: &'a str,
}

impl Output {
    /// Starts the writer task. On a terminal every line shows at once; into
    /// a file or pipe, lines are gathered for up to [`FILE_BATCH`], so a busy
    /// tunnel logs with one write per batch rather than one per request.
    pub fn start() -> Self {
        use std::io::IsTerminal;
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        let terminal = std::io::stdout().is_terminal();
        let colour = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let batch = if terminal { Duration::ZERO } else { FILE_BATCH };
        tokio::spawn(async move {
            let mut buf = Pending(String::new());
            while let Some(line) = rx.recv().await {
                buf.0.push_str(&line);
                if !batch.is_zero() {
                    // Sleep, then take what gathered: lines arriving
                    // meanwhile wake nobody, so a busy tunnel pays one
                    // wake-up per batch rather than one per request.
                    tokio::time::sleep(batch).await;
                }
                while let Ok(more) = rx.try_recv() {
                    buf.0.push_str(&more);
                }
                let n = lost.swap(0, Ordering::Relaxed);
                if n > 0 {
                    buf.0
                        .push_str(&format!("({n} request lines not shown: stdout too slow)\n"));
                }
                buf.write();
            }
        });
        Self {
            tx,
            dropped,
            colour,
        }
    }

    /// Prints a line as is (a newline is added).
    pub fn line(&self, text: String) {
        if self.tx.try_send(text + "\n").is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn request(&self, r: &RequestLine<'_>) {
        self.line(format_request(r, SystemTime::now(), self.colour));
    }
}

/// `HH:MM:SS.mmm  METHOD  /path  STATUS  12ms  ID` (UTC clock).
///
/// Written into one buffer sized up front: it runs once per request on
/// the tunnel's thread.
pub fn format_request(r: &RequestLine<'_>, now: SystemTime, colour: bool) -> String {
    use std::fmt::Write;
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() % 86_400;
    let redacted = redact_query(r.path);
    let path = printable(&redacted);
    let path = match path.char_indices().nth(PATH_CHARS) {
        Some((cut, _)) => &path[..cut],
        None => &path[..],
    };
    let mut line = String::with_capacity(48 + path.len() + r.id.len());
    let _ = write!(
        line,
        "{:02}:{:02}:{:02}.{:03}  {:<7}  {path}  ",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        since.subsec_millis(),
        r.method,
    );
    if colour {
        line.push_str(&paint(r.status, true));
    } else {
        let _ = write!(line, "{}", r.status);
    }
    let _ = write!(line, "  {}ms  {}", r.duration.as_millis(), r.id);
    line
}

/// `HH:MM:SS.mmm` of `now` (UTC), as request lines start.
pub fn clock(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        since.subsec_millis()
    )
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

/// The table `relay requests` prints.
pub fn requests_table(rows: &[relay_shared::api::Summary]) -> String {
    let mut out = table_header();
    for r in rows {
        out.push_str(&table_row(r));
    }
    out
}

/// The header line of the table, with a newline.
pub fn table_header() -> String {
    format!(
        "{:<26}  {:<19}  {:<7}  {:<40}  {:>6}  {:<19}  {:>8}  {}\n",
        "ID", "TIME (UTC)", "METHOD", "PATH", "STATUS", "OUTCOME", "DURATION", "DELIVERY"
    )
}

/// One row of the table, with a newline. The delivery column is set for
/// missed requests only (`missed`, `delivered`, `failed`).
pub fn table_row(r: &relay_shared::api::Summary) -> String {
    let time: String = r.time.replacen('T', " ", 1).chars().take(19).collect();
    let mut path: String = printable(&redact_query(&r.path)).chars().take(40).collect();
    if r.path.chars().count() > 40 {
        path.pop();
        path.push('…');
    }
    let status = r.status.map_or("-".to_owned(), |s| s.to_string());
    let outcome = match &r.replay_of {
        Some(_) => format!("{} (replay)", r.outcome),
        None => r.outcome.to_string(),
    };
    let delivery = r.delivery.map_or("", |d| d.as_str());
    let line = format!(
        "{:<26}  {:<19}  {:<7}  {:<40}  {:>6}  {:<19}  {:>6}ms  {delivery}",
        r.id, time, r.method, path, status, outcome, r.duration_ms
    );
    format!("{}\n", line.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_has_every_field() {
        let line = format_request(
            &RequestLine {
                method: "POST",
                path: "/graphql?x=1",
                status: 200,
                duration: Duration::from_millis(12),
                id: "01abc",
            },
            UNIX_EPOCH + Duration::from_millis(3_723_004),
            false,
        );
        assert_eq!(
            line,
            "01:02:03.004  POST     /graphql?x=1  200  12ms  01abc"
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
