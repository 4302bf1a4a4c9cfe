//! Faults `relay connect --fault` plays instead of the local app, and how
//! the client tells the server which one it played, so the capture can
//! mark the exchange (see `docs/protocol.md`, "Faults").
//!
//! - `delay=D` and `status=N` answer with a response head that carries
//!   [`FAULT_HEADER`] (`x-relay-fault: delay=12s`); the client removes that
//!   header from every real answer of the local app, so only a fault
//!   carries it.
//! - `reset` resets the stream with [`crate::frame::ResetCode::Fault`]: the
//!   server drops the visitor's connection without an answer.
//!
//! The server parses the header with [`Fault::parse`] and keeps the
//! canonical [`Fault::label`], or nothing if it does not parse: a client
//! can only mislabel its own tunnel's captures, and never with more than
//! [`MAX_FAULT_LABEL`] bytes.

use std::fmt;
use std::time::Duration;

/// Response header naming the fault played (`delay=12s`, `status=500`).
pub const FAULT_HEADER: &str = "x-relay-fault";

/// Longest `--fault` value, and header value, accepted.
pub const MAX_FAULT_LABEL: usize = 64;

/// Longest `--fault delay=`: past the server's request timeout (60 s by
/// default) the visitor gets 504 anyway, and a delay longer than any
/// caller's patience tells nothing more.
pub const MAX_FAULT_DELAY: Duration = Duration::from_secs(600);

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Wait this long, then ask the local app as usual.
    Delay(Duration),
    /// Answer with this status (200-599) without asking the local app.
    Status(u16),
    /// Drop the visitor's connection without an answer.
    Reset,
}

impl Fault {
    /// `delay=DURATION` (humantime: `12s`, `1500ms`), `status=CODE` or
    /// `reset`.
    pub fn parse(s: &str) -> Result<Self, String> {
        const FORMS: &str =
            "delay=DURATION (e.g. delay=12s), status=CODE (e.g. status=500) or reset";
        if s.len() > MAX_FAULT_LABEL {
            return Err(format!("a fault is at most {MAX_FAULT_LABEL} characters"));
        }
        let s = s.trim();
        if s == "reset" {
            return Ok(Self::Reset);
        }
        match s.split_once('=') {
            Some(("delay", d)) => {
                let d = humantime::parse_duration(d.trim())
                    .map_err(|e| format!("delay={d}: {e} (write e.g. delay=12s or delay=500ms)"))?;
                if d.is_zero() || d > MAX_FAULT_DELAY {
                    return Err(format!(
                        "delay={}: a delay is above 0 and at most {}",
                        d.as_millis(),
                        humantime::format_duration(MAX_FAULT_DELAY)
                    ));
                }
                Ok(Self::Delay(d))
            }
            Some(("status", c)) => match c.trim().parse::<u16>() {
                Ok(code @ 200..=599) => Ok(Self::Status(code)),
                _ => Err(format!(
                    "status={c}: a fault's status is a final HTTP status, 200 to 599"
                )),
            },
            _ => Err(format!("{s:?} is not a fault; use {FORMS}")),
        }
    }

    /// The canonical form, as stored in a capture's `fault` and sent in
    /// [`FAULT_HEADER`].
    pub fn label(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Delay(d) => {
                // humantime writes `1s 500ms`; one unit without a space
                // reads better in a header and a table.
                if d.subsec_millis() == 0 {
                    write!(f, "delay={}s", d.as_secs())
                } else {
                    write!(f, "delay={}ms", d.as_millis())
                }
            }
            Self::Status(c) => write!(f, "status={c}"),
            Self::Reset => f.write_str("reset"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_print_canonically() {
        assert_eq!(Fault::parse("reset"), Ok(Fault::Reset));
        assert_eq!(Fault::parse("status=500"), Ok(Fault::Status(500)));
        assert_eq!(
            Fault::parse("delay=12s"),
            Ok(Fault::Delay(Duration::from_secs(12)))
        );
        assert_eq!(
            Fault::parse("delay=1s 500ms").expect("parses").label(),
            "delay=1500ms"
        );
        assert_eq!(
            Fault::parse("delay=2m").expect("parses").label(),
            "delay=120s"
        );
        for label in ["reset", "status=503", "delay=12s", "delay=250ms"] {
            assert_eq!(Fault::parse(label).expect("parses").label(), label);
        }
    }

    #[test]
    fn bad_faults_are_refused_with_the_reason() {
        let err = |s: &str| Fault::parse(s).expect_err("refused");
        assert!(err("status=99").contains("200 to 599"));
        assert!(err("status=600").contains("200 to 599"));
        assert!(err("status=abc").contains("200 to 599"));
        assert!(err("bogus").contains("not a fault"));
        assert!(err("delay=soon").contains("delay=soon"));
        assert!(err("delay=0s").contains("above 0"));
        assert!(err("delay=11m").contains("at most"));
        assert!(err(&"x".repeat(100)).contains("at most"));
        assert!(err("").contains("not a fault"));
    }
}
