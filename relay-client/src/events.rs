//! The server's live event stream (`GET .../events`, `text/event-stream`)
//! read as capture summaries, for `relay requests --follow`. The inspector
//! passes the stream to the browser untouched and does not use this.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{bail, Context};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use relay_shared::api::Summary;

/// Longest an event may be: a summary is a few hundred bytes; a stream
/// that sends more without an end of event is not the server's.
const MAX_EVENT: usize = 1 << 20;
/// Longest silence before the stream counts as lost: the server sends a
/// `: ping` every 15 s.
pub const SILENCE: Duration = Duration::from_secs(45);

/// One dispatched event: its type (`message` when unnamed) and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: String,
    pub data: String,
}

/// An incremental `text/event-stream` parser (the fields relay uses:
/// `event`, `data`, comments; `id` and `retry` are ignored).
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    kind: String,
    data: String,
    /// The last byte seen was a CR, so a following LF ends no line.
    after_cr: bool,
}

impl Parser {
    /// Feeds `chunk`; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> anyhow::Result<Vec<Event>> {
        let mut done = Vec::new();
        for &b in chunk {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    let line = std::mem::take(&mut self.line);
                    if let Some(e) = self.line_ended(&line) {
                        done.push(e);
                    }
                }
                _ => self.line.push(b),
            }
            if self.line.len() + self.data.len() > MAX_EVENT {
                bail!("an event of the stream is over {MAX_EVENT} bytes");
            }
        }
        Ok(done)
    }

    fn line_ended(&mut self, line: &[u8]) -> Option<Event> {
        if line.is_empty() {
            let kind = std::mem::take(&mut self.kind);
            if self.data.is_empty() {
                return None;
            }
            let mut data = std::mem::take(&mut self.data);
            data.pop(); // the newline after the last data line
            let kind = if kind.is_empty() {
                "message".into()
            } else {
                kind
            };
            return Some(Event { kind, data });
        }
        if line[0] == b':' {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = line.split_once(':').unwrap_or((&line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.kind = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            _ => {}
        }
        None
    }
}

/// New captures from an open event stream.
pub struct Captures {
    body: Incoming,
    parser: Parser,
    ready: VecDeque<Event>,
}

impl Captures {
    pub fn new(body: Incoming) -> Self {
        Self {
            body,
            parser: Parser::default(),
            ready: VecDeque::new(),
        }
    }

    /// The next capture; `None` when the server ended the stream. An
    /// event that is not a summary is skipped. Errors: the stream broke,
    /// or stayed silent longer than [`SILENCE`].
    ///
    /// Cancel safe: events already read stay queued.
    pub async fn next(&mut self) -> anyhow::Result<Option<Summary>> {
        loop {
            while let Some(event) = self.ready.pop_front() {
                if event.kind != "request" {
                    continue;
                }
                match serde_json::from_str(&event.data) {
                    Ok(summary) => return Ok(Some(summary)),
                    Err(e) => {
                        tracing::debug!(error = %e, "skipping an event that is not a summary")
                    }
                }
            }
            let frame = tokio::time::timeout(SILENCE, self.body.frame())
                .await
                .with_context(|| format!("the server sent nothing for {}s", SILENCE.as_secs()))?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(e).context("reading the event stream"),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.ready.extend(self.parser.push(data)?);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, data: &str) -> Event {
        Event {
            kind: kind.into(),
            data: data.into(),
        }
    }

    #[test]
    fn events_split_across_chunks_and_line_endings() {
        let mut p = Parser::default();
        assert_eq!(p.push(b": ping\n\nevent: req").expect("parses"), []);
        assert_eq!(
            p.push(b"uest\ndata: {\"a\":1}\n\n").expect("parses"),
            [event("request", "{\"a\":1}")]
        );
        // CRLF split between chunks, two data lines, an unnamed event.
        assert_eq!(p.push(b"data:x\r").expect("parses"), []);
        assert_eq!(
            p.push(b"\ndata: y\r\n\r\n").expect("parses"),
            [event("message", "x\ny")]
        );
        assert_eq!(
            p.push(b"event: lone\n\n").expect("parses"),
            [],
            "no data, no event"
        );
        assert_eq!(
            p.push(b"data: a\rdata: b\r\r").expect("parses"),
            [event("message", "a\nb")],
            "bare CRs end lines too"
        );
    }

    #[test]
    fn an_endless_event_is_an_error_not_memory() {
        let mut p = Parser::default();
        let chunk = vec![b'x'; 64 * 1024];
        let mut failed = false;
        for _ in 0..(MAX_EVENT / chunk.len() + 2) {
            if p.push(&chunk).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }
}
