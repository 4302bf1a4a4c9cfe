//! What `relay connect` changes on the way to the local app and back:
//! the caller deadline (`--deadline`, `--caller`), faults (`--fault`,
//! `--fault-rate`) and the Host header (`--host-header`). Parsed and
//! checked at start, so a bad value stops `relay connect` with a clear
//! message instead of surfacing per request.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use relay_shared::fault::{Fault, FAULT_HEADER};
use relay_shared::protocol::MAX_DEADLINE;

/// Everything the forwarder does besides forwarding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ForwardOptions {
    pub deadline: Option<CallerDeadline>,
    pub fault: Option<FaultPlan>,
}

/// How long the caller waits for an answer; longer exchanges are marked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerDeadline {
    pub limit: Duration,
    /// `--caller`'s name, for the terminal line.
    pub caller: Option<&'static str>,
}

impl CallerDeadline {
    /// `slow: 12.3s > auth0 deadline 10s` when `took` is over the limit.
    pub fn note(&self, took: Duration) -> Option<String> {
        if took <= self.limit {
            return None;
        }
        let who = self.caller.map(|c| format!("{c} ")).unwrap_or_default();
        Some(format!(
            "slow: {:.1}s > {who}deadline {}",
            took.as_secs_f64(),
            humantime::format_duration(self.limit)
        ))
    }

    pub fn millis(&self) -> u64 {
        self.limit.as_millis() as u64
    }
}

/// `--deadline DURATION`: above zero, at most [`MAX_DEADLINE`].
pub fn parse_deadline(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (write e.g. 10s or 1500ms)"))?;
    if d.as_millis() == 0 || d > MAX_DEADLINE {
        return Err(format!(
            "a deadline is at least 1ms and at most {}",
            humantime::format_duration(MAX_DEADLINE)
        ));
    }
    Ok(d)
}

/// `--fault` played for a share (`--fault-rate`) of requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultPlan {
    pub fault: Fault,
    /// In (0, 1].
    pub rate: f64,
}

impl FaultPlan {
    /// The fault to play for one request, if this one is picked.
    pub fn pick(&self) -> Option<Fault> {
        use rand::RngExt;
        (self.rate >= 1.0 || rand::rng().random::<f64>() < self.rate).then_some(self.fault)
    }
}

/// `--fault` (see [`Fault::parse`]).
pub fn parse_fault(s: &str) -> Result<Fault, String> {
    Fault::parse(s)
}

/// `--fault-rate R`: 0 < R <= 1.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate above 0 and at most 1 (e.g. 0.5 for half the requests)"
        )),
    }
}

/// The answer of `--fault status=CODE`, made without the local app.
pub fn fault_answer(fault: Fault, code: u16) -> (StatusCode, HeaderMap, Bytes) {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({
        "error": "fault_injected",
        "message": format!("answered by relay connect --fault {fault}; the local app was not called"),
    });
    let body = Bytes::from(body.to_string());
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    mark_fault(&mut headers, Some(fault));
    (status, headers, body)
}

/// Sets [`FAULT_HEADER`] to the fault played, and removes one the local
/// app sent itself: the server records the header as the fault, so only
/// this client may set it.
pub fn mark_fault(headers: &mut HeaderMap, fault: Option<Fault>) {
    let name = HeaderName::from_static(FAULT_HEADER);
    headers.remove(&name);
    if let Some(v) = fault.and_then(|f| HeaderValue::from_str(&f.label()).ok()) {
        headers.insert(name, v);
    }
}

/// `--host-header`: the Host the local app gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HostHeader {
    /// The public host, as the visitor sent it.
    #[default]
    Keep,
    /// The local target's own `host:port`.
    Rewrite,
    /// This value.
    Value(HeaderValue),
}

impl HostHeader {
    /// `rewrite` or a Host value.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "rewrite" {
            return Ok(Self::Rewrite);
        }
        let valid = !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        match HeaderValue::from_str(s) {
            Ok(v) if valid => Ok(Self::Value(v)),
            _ => Err(format!(
                "{s:?} is not a Host value (printable ASCII without spaces, e.g. app.test:3000) nor `rewrite`"
            )),
        }
    }

    /// Puts the Host this setting asks for into `headers`.
    pub fn apply(&self, headers: &mut HeaderMap, authority: &str) {
        let v = match self {
            Self::Keep => return,
            Self::Rewrite => match HeaderValue::from_str(authority) {
                Ok(v) => v,
                Err(_) => return,
            },
            Self::Value(v) => v.clone(),
        };
        headers.insert(header::HOST, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_mark_only_slower_exchanges() {
        let d = CallerDeadline {
            limit: Duration::from_secs(10),
            caller: Some("auth0"),
        };
        assert_eq!(d.note(Duration::from_secs(10)), None);
        assert_eq!(d.note(Duration::from_millis(200)), None);
        assert_eq!(
            d.note(Duration::from_millis(12_340)).as_deref(),
            Some("slow: 12.3s > auth0 deadline 10s")
        );
        let plain = CallerDeadline {
            limit: Duration::from_millis(1500),
            caller: None,
        };
        assert_eq!(
            plain.note(Duration::from_secs(2)).as_deref(),
            Some("slow: 2.0s > deadline 1s 500ms")
        );
        assert_eq!(parse_deadline("10s"), Ok(Duration::from_secs(10)));
        assert!(parse_deadline("0s").is_err());
        assert!(parse_deadline("soon").is_err());
        assert!(parse_deadline("2days").is_err());
    }

    #[test]
    fn rates_are_above_zero_and_at_most_one() {
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert_eq!(parse_rate("1"), Ok(1.0));
        for bad in ["0", "2", "-0.1", "NaN", "half", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        let always = FaultPlan {
            fault: Fault::Reset,
            rate: 1.0,
        };
        assert!((0..100).all(|_| always.pick() == Some(Fault::Reset)));
        let rare = FaultPlan {
            fault: Fault::Reset,
            rate: 1e-9,
        };
        assert!((0..100).all(|_| rare.pick().is_none()));
    }

    #[test]
    fn a_status_fault_answers_json_marked_with_the_fault() {
        let (status, headers, body) = fault_answer(Fault::Status(503), 503);
        assert_eq!(status, 503);
        assert_eq!(headers[FAULT_HEADER], "status=503");
        assert_eq!(
            headers[header::CONTENT_LENGTH],
            body.len().to_string().as_str()
        );
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"], "fault_injected");
        let mut app = HeaderMap::new();
        app.insert(FAULT_HEADER, HeaderValue::from_static("status=500"));
        mark_fault(&mut app, None);
        assert!(app.is_empty(), "the app cannot mark its own answers");
    }

    #[test]
    fn host_header_keeps_rewrites_or_sets() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("app.relay.test"));
        HostHeader::Keep.apply(&mut h, "localhost:4000");
        assert_eq!(h[header::HOST], "app.relay.test");
        HostHeader::parse("rewrite")
            .expect("parses")
            .apply(&mut h, "localhost:4000");
        assert_eq!(h[header::HOST], "localhost:4000");
        HostHeader::parse("app.test:3000")
            .expect("parses")
            .apply(&mut h, "localhost:4000");
        assert_eq!(h[header::HOST], "app.test:3000");
        assert!(HostHeader::parse("bad host").is_err());
        assert!(HostHeader::parse("").is_err());
        assert!(HostHeader::parse("a\r\nb").is_err());
    }
}
