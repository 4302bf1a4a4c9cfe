//! Missed requests (captured while no client was connected): the notice
//! `relay connect` prints after each (re)connect that finds some waiting.

use std::time::{Duration, SystemTime};

use relay_shared::api::MissedOverview;

/// How to deliver them.
const RESUME: &str = "relay replay --missed";

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
        Some(target) => format!("{what}{age}: delivering them to {target}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-24T12:00:00.000Z";

    fn now() -> SystemTime {
        humantime::parse_rfc3339(NOW).expect("valid time")
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
    }
}
