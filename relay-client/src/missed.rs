//! Missed requests (captured while no client was connected): the notice
//! `relay connect` prints, and their delivery to the local app, one at a
//! time in arrival order, which `relay connect --deliver-missed`,
//! `relay replay --missed` and the inspector's *Deliver all* share.
//!
//! The server decides which request comes next and that nobody else
//! delivers it meanwhile (a claim, `docs/api.md` "Delivering missed
//! requests"); this side replays it ([`crate::replay`]) and records the
//! replay under the claim, which moves the original to `delivered` or
//! `failed`. A failure stops the run: the app is down or broken, and
//! sending it the next request, out of order, would not help.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use relay_shared::api::{ClaimRequest, NewReplay, Outcome, Record, ReplayEdits, ReplayResult};
use relay_shared::api::{MissedOverview, Summary};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::api::{Api, ApiError};
use crate::output::{clock, printable, redact_query, Output};
use crate::replay::{self, Refusal};
use crate::target::LocalTarget;

/// What a delivery run may send.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only requests that arrived within this long.
    pub within: Option<Duration>,
    /// Send the captured part of a truncated body (else such a request
    /// stops the run).
    pub force: bool,
    /// Headers set on every request delivered (`--fresh-token`'s
    /// `Authorization`), replacing the captured ones of that name.
    pub set_headers: Vec<(String, String)>,
}

/// How a delivery run ended.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every replay made, in order; after a stop at a failure, the last
    /// one is the failure.
    pub results: Vec<ReplayResult>,
    /// Missed requests still waiting when the run ended, as far as known.
    pub left: u64,
    /// Why the run ended before the server had none left; `None` when
    /// all were delivered.
    pub stopped: Option<Stopped>,
}

/// Why a delivery run stopped early.
#[derive(Debug, Clone, Serialize)]
pub struct Stopped {
    /// `delivery_failed` (the local app did not accept it),
    /// `delivery_in_progress` (another client delivers), `body_truncated`
    /// or `not_sent` (refused before sending), `claim_lost`,
    /// `not_recorded`, `repeated` or `stopped` (the user quit).
    pub error: &'static str,
    /// What to print: which request, why, what is left and how to resume.
    pub message: String,
    /// The missed request it stopped at.
    pub id: Option<String>,
}

impl Report {
    /// The line printed at the end of a CLI run that was not stopped.
    pub fn done_line(&self) -> String {
        match self.results.len() {
            0 => "no missed requests waiting".to_owned(),
            1 => "delivered 1 missed request".to_owned(),
            n => format!("delivered {n} missed requests"),
        }
    }
}

/// Whether the local app took the request: it answered, below 500.
pub fn accepted(result: &ReplayResult) -> bool {
    result.outcome == Outcome::Delivered && result.status.is_some_and(|s| s < 500)
}

/// Delivers the waiting missed requests, oldest first, until none is left,
/// one is not accepted, or `stop` turns true (checked between requests, so
/// a request being delivered is finished and recorded). `on_result` sees
/// each replay as it is recorded.
///
/// Errors: the server could not be asked (unreachable, refused the
/// credentials); whatever was delivered before stays delivered.
pub async fn deliver(
    api: &Api,
    target: &LocalTarget,
    opts: Options,
    stop: Option<&watch::Receiver<bool>>,
    mut on_result: impl FnMut(&Summary, &ReplayResult),
) -> anyhow::Result<Report> {
    let ask = ClaimRequest {
        within_ms: opts
            .within
            .map(|d| d.as_millis().min(u64::MAX as u128) as u64),
    };
    let mut report = Report {
        results: Vec::new(),
        left: 0,
        stopped: None,
    };
    let mut seen = HashSet::new();
    loop {
        if stop.is_some_and(|s| *s.borrow()) {
            report.stopped = Some(Stopped {
                error: "stopped",
                message: format!("delivery of missed requests stopped; the rest wait: {RESUME}"),
                id: None,
            });
            report.left = api.missed("limit=1").await.map_or(0, |o| o.count);
            return Ok(report);
        }
        let claimed = match api.claim(&ask).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                report.left = 0;
                return Ok(report);
            }
            Err(e) if ApiError::code_of(&e) == Some("delivery_in_progress") => {
                report.left = api.missed("limit=1").await.map_or(0, |o| o.count);
                report.stopped = Some(Stopped {
                    error: "delivery_in_progress",
                    message: format!(
                        "another client is delivering the missed requests of {} right now; stopped",
                        api.name()
                    ),
                    id: None,
                });
                return Ok(report);
            }
            Err(e) => return Err(e),
        };
        let summary = claimed.record.summary.clone();
        let id = summary.id.clone();
        if !seen.insert(id.clone()) {
            // The server should have moved it on; going round would
            // deliver it again and again.
            report.left = claimed.waiting;
            report.stopped = Some(Stopped {
                error: "repeated",
                message: format!(
                    "the server handed out {id} again after its delivery was recorded; stopped"
                ),
                id: Some(id),
            });
            return Ok(report);
        }
        let edits = ReplayEdits {
            force: opts.force,
            headers: (!opts.set_headers.is_empty()).then(|| {
                crate::edit::apply_headers(&claimed.record.request.headers, &opts.set_headers, &[])
            }),
            ..ReplayEdits::default()
        };
        let replayed = replay::replay_record(
            api,
            target,
            claimed.record.clone(),
            edits,
            Some(claimed.claim.clone()),
        )
        .await;
        let result = match replayed {
            Ok(r) => r,
            Err(e) if e.downcast_ref::<Refusal>().is_some() => {
                let truncated = matches!(e.downcast_ref(), Some(Refusal::Truncated { .. }));
                let result = not_sent(api, &claimed.record, &claimed.claim, &e.to_string()).await;
                on_result(&summary, &result);
                report.results.push(result);
                report.left = claimed.waiting;
                let hint = if truncated {
                    "`relay replay --missed --force` sends it with the part kept"
                } else {
                    RESUME
                };
                report.stopped = Some(Stopped {
                    error: if truncated {
                        "body_truncated"
                    } else {
                        "not_sent"
                    },
                    message: format!(
                        "delivery stopped at {}: {e}; {} left: {hint}",
                        describe(&summary, SystemTime::now()),
                        claimed.waiting
                    ),
                    id: Some(id),
                });
                return Ok(report);
            }
            Err(e) => {
                let code = match ApiError::code_of(&e) {
                    Some("claim_lost") => "claim_lost",
                    _ => "not_recorded",
                };
                report.left = claimed.waiting;
                report.stopped = Some(Stopped {
                    error: code,
                    message: format!(
                        "delivery stopped at {}: the replay was sent but the server did not \
                         record it as the delivery ({e:#}); it may be delivered again",
                        describe(&summary, SystemTime::now())
                    ),
                    id: Some(id),
                });
                return Ok(report);
            }
        };
        on_result(&summary, &result);
        let stopped = if !accepted(&result) {
            report.left = claimed.waiting;
            Some(Stopped {
                error: "delivery_failed",
                message: format!(
                    "delivery stopped at {}: {}; {} left: {RESUME}",
                    describe(&summary, SystemTime::now()),
                    why(&result),
                    claimed.waiting
                ),
                id: Some(id),
            })
        } else if result.id.is_none() {
            // The server does not know it was delivered: going on would
            // meet this claim (409) or, once it runs out, this request.
            report.left = claimed.waiting.saturating_sub(1);
            Some(Stopped {
                error: "not_recorded",
                message: format!(
                    "delivered {} but the server did not record it, so it may be delivered again; stopped",
                    describe(&summary, SystemTime::now())
                ),
                id: Some(id),
            })
        } else {
            None
        };
        report.results.push(result);
        if stopped.is_some() {
            report.stopped = stopped;
            return Ok(report);
        }
    }
}

/// How to resume a stopped delivery.
const RESUME: &str = "relay replay --missed";

/// Records a claimed request that was not sent (its captured body is
/// truncated): the claim ends now rather than when its lease runs out,
/// and the request stays waiting with the reason as its error.
async fn not_sent(api: &Api, record: &Record, claim: &str, why: &str) -> ReplayResult {
    let error = format!("not sent: {why}");
    let recorded = api
        .record_replay(&NewReplay {
            replay_of: record.summary.id.clone(),
            method: record.summary.method.clone(),
            path: record.summary.path.clone(),
            status: None,
            outcome: Outcome::BodyTooLarge,
            duration_ms: 0,
            request: record.request.clone(),
            response: None,
            error: Some(error.clone()),
            claim: Some(claim.to_owned()),
            diff: None,
        })
        .await;
    ReplayResult {
        id: recorded.ok().map(|s| s.id),
        replay_of: record.summary.id.clone(),
        target: String::new(),
        status: None,
        outcome: Outcome::BodyTooLarge,
        duration_ms: 0,
        response: None,
        error: Some(error),
        diff: None,
    }
}

/// Why a replay was not accepted.
fn why(result: &ReplayResult) -> String {
    match (result.status, &result.error) {
        (Some(status), _) => format!("the local app answered {status}"),
        (None, Some(e)) => e.clone(),
        (None, None) => result.outcome.to_string(),
    }
}

/// `ID (POST /path, arrived 2h ago)`.
fn describe(s: &Summary, now: SystemTime) -> String {
    let path = printable(&redact_query(&s.path)).into_owned();
    match age_of(&s.time, now) {
        Some(age) => format!(
            "{} ({} {path}, arrived {} ago)",
            s.id,
            s.method,
            humanise(age)
        ),
        None => format!("{} ({} {path})", s.id, s.method),
    }
}

/// One line per delivered (or failed) missed request, like the request
/// lines of `relay connect`: `CLOCK  METHOD  /path  STATUS  12ms  ID`, then
/// what happened to the missed request.
pub fn format_delivery(s: &Summary, r: &ReplayResult, now: SystemTime) -> String {
    let path = printable(&redact_query(&s.path)).into_owned();
    let status = r.status.map_or("-".to_owned(), |s| s.to_string());
    let age = age_of(&s.time, now).map_or(String::new(), |a| format!(" {} ago", humanise(a)));
    let what = if accepted(r) {
        match &r.id {
            Some(id) => format!("missed{age}, delivered as {id}"),
            None => format!("missed{age}, delivered (not recorded)"),
        }
    } else {
        format!("missed{age}, not delivered: {}", why(r))
    };
    format!(
        "{}  {:<7}  {path}  {status}  {}ms  {}  {what}",
        clock(now),
        s.method,
        r.duration_ms,
        s.id
    )
}

/// What `relay connect` prints after a welcome with missed requests:
/// `3 requests arrived while you were offline (oldest 2h ago): relay replay --missed`.
pub fn notice(m: &MissedOverview, now: SystemTime, delivering_to: Option<&str>) -> String {
    let what = match m.count {
        1 => "1 request arrived while you were offline".to_owned(),
        n => format!("{n} requests arrived while you were offline"),
    };
    let age = m
        .oldest
        .as_deref()
        .and_then(|t| age_of(t, now))
        .map(|a| match m.count {
            1 => format!(" ({} ago)", humanise(a)),
            _ => format!(" (oldest {} ago)", humanise(a)),
        })
        .unwrap_or_default();
    match delivering_to {
        Some(target) => {
            let them = if m.count == 1 { "it" } else { "them" };
            format!("{what}{age}: delivering {them} to {target}")
        }
        None => format!("{what}{age}: {RESUME}"),
    }
}

/// How long ago `rfc3339` was; `None` when it does not parse. A time
/// ahead of this machine's clock counts as now.
pub fn age_of(rfc3339: &str, now: SystemTime) -> Option<Duration> {
    let then = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    Some(now.duration_since(then).unwrap_or_default())
}

/// `45s`, `12min`, `3h`, `2d`: the largest unit, rounded down.
pub fn humanise(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}min", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `relay connect --deliver-missed`: a task that runs a delivery each
/// time it is woken (after each welcome), printing a line per request.
pub struct AutoDeliver {
    wake: mpsc::Sender<()>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Wakes an [`AutoDeliver`]; cheap to clone.
#[derive(Clone)]
pub struct Wake(mpsc::Sender<()>);

impl Wake {
    /// Asks for a delivery run; wakes while one runs are folded into one
    /// more run after it.
    pub fn wake(&self) {
        let _ = self.0.try_send(());
    }
}

impl AutoDeliver {
    pub fn spawn(api: Api, target: LocalTarget, output: Output) -> Self {
        // One pending wake is enough: a run delivers all there is.
        let (wake, mut woken) = mpsc::channel::<()>(1);
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(async move {
            while woken.recv().await.is_some() {
                if *stopping.borrow() {
                    break;
                }
                let run = deliver(
                    &api,
                    &target,
                    Options::default(),
                    Some(&stopping),
                    |s, r| output.line(format_delivery(s, r, SystemTime::now())),
                )
                .await;
                match run {
                    Ok(Report {
                        stopped: Some(s), ..
                    }) if s.error != "stopped" => output.line(s.message),
                    Ok(_) => {}
                    Err(e) => output.error(&format!("delivering missed requests: {e:#}")),
                }
            }
        });
        Self { wake, stop, task }
    }

    pub fn waker(&self) -> Wake {
        Wake(self.wake.clone())
    }

    /// Lets a request being delivered finish and be recorded, for up to
    /// `limit`, so it is not delivered twice; then ends the task.
    pub async fn finish(self, limit: Duration) {
        let _ = self.stop.send(true);
        drop(self.wake);
        let mut task = self.task;
        if tokio::time::timeout(limit, &mut task).await.is_err() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-24T12:00:00.000Z";

    fn now() -> SystemTime {
        humantime::parse_rfc3339(NOW).expect("valid time")
    }

    fn summary(time: &str) -> Summary {
        serde_json::from_value(serde_json::json!({
            "id": "01orig", "tunnel": "t", "time": time, "method": "POST",
            "path": "/cb?token=abc&x=1", "status": 503, "outcome": "offline",
            "duration_ms": 0, "request_size": 3, "response_size": 0, "replay_of": null,
            "delivery": "missed"
        }))
        .expect("a summary")
    }

    fn result(status: Option<u16>, outcome: Outcome, error: Option<&str>) -> ReplayResult {
        ReplayResult {
            id: Some("01new".into()),
            replay_of: "01orig".into(),
            target: "http://localhost:4000/cb".into(),
            status,
            outcome,
            duration_ms: 12,
            response: None,
            error: error.map(str::to_owned),
            diff: None,
        }
    }

    #[test]
    fn ages_are_humanised_in_the_largest_unit() {
        assert_eq!(humanise(Duration::from_secs(0)), "0s");
        assert_eq!(humanise(Duration::from_secs(59)), "59s");
        assert_eq!(humanise(Duration::from_secs(60)), "1min");
        assert_eq!(humanise(Duration::from_secs(3599)), "59min");
        assert_eq!(humanise(Duration::from_secs(7200)), "2h");
        assert_eq!(humanise(Duration::from_secs(86_399)), "23h");
        assert_eq!(humanise(Duration::from_secs(3 * 86_400 + 5)), "3d");
        assert_eq!(
            age_of("2026-11-24T10:00:00.123Z", now()).map(humanise),
            Some("1h".into())
        );
        assert_eq!(
            age_of("2026-11-25T10:00:00Z", now()),
            Some(Duration::ZERO),
            "ahead"
        );
        assert_eq!(age_of("yesterday", now()), None);
    }

    #[test]
    fn the_notice_says_count_age_and_command() {
        let m = |count, oldest: Option<&str>| MissedOverview {
            count,
            oldest: oldest.map(str::to_owned),
            requests: Vec::new(),
        };
        assert_eq!(
            notice(&m(3, Some("2026-11-24T10:00:00Z")), now(), None),
            "3 requests arrived while you were offline (oldest 2h ago): relay replay --missed"
        );
        assert_eq!(
            notice(&m(1, Some("2026-11-24T11:59:15Z")), now(), None),
            "1 request arrived while you were offline (45s ago): relay replay --missed"
        );
        assert_eq!(
            notice(&m(2, None), now(), Some("http://localhost:4000")),
            "2 requests arrived while you were offline: delivering them to http://localhost:4000"
        );
        assert_eq!(
            notice(&m(1, None), now(), Some("http://localhost:4000")),
            "1 request arrived while you were offline: delivering it to http://localhost:4000"
        );
    }

    #[test]
    fn a_delivery_line_reads_like_a_request_line() {
        let s = summary("2026-11-22T12:00:00Z");
        let ok = result(Some(200), Outcome::Delivered, None);
        assert_eq!(
            format_delivery(&s, &ok, now()),
            "12:00:00.000  POST     /cb?token=***&x=1  200  12ms  01orig  missed 2d ago, delivered as 01new"
        );
        let refused = result(
            None,
            Outcome::LocalUnreachable,
            Some("cannot connect to http://localhost:4000: refused"),
        );
        assert!(format_delivery(&s, &refused, now()).ends_with(
            "  -  12ms  01orig  missed 2d ago, not delivered: cannot connect to http://localhost:4000: refused"
        ));
    }

    #[test]
    fn only_an_answer_below_500_is_accepted() {
        assert!(accepted(&result(Some(200), Outcome::Delivered, None)));
        assert!(accepted(&result(Some(404), Outcome::Delivered, None)));
        assert!(!accepted(&result(Some(500), Outcome::Delivered, None)));
        assert!(!accepted(&result(None, Outcome::Timeout, Some("slow"))));
        assert!(!accepted(&result(None, Outcome::LocalError, Some("broke"))));
        assert_eq!(
            why(&result(Some(503), Outcome::Delivered, None)),
            "the local app answered 503"
        );
        assert_eq!(
            describe(&summary("2026-11-24T10:00:00Z"), now()),
            "01orig (POST /cb?token=***&x=1, arrived 2h ago)"
        );
    }
}
