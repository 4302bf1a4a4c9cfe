//! Times as the terminal shows them: in the user's time zone (`TZ`, else
//! the system's), since a developer matches a request line against their
//! own clock and logs. The zone is read by `jiff`, which parses the tz
//! database itself and so is safe in a multi-threaded process (libc's
//! `localtime_r` and `time`'s local offset are not, or refuse).
//!
//! Machine-readable output (`--json`, exports, the API) keeps RFC 3339 in
//! UTC as the server writes it; only [`event_time`] carries a local offset,
//! which is still an exact instant for any RFC 3339 parser.

use std::sync::OnceLock;
use std::time::SystemTime;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};

/// The user's time zone, read once per process: `TZ` when set (an IANA
/// name such as `Asia/Tokyo`, or a POSIX rule), else the system's; UTC
/// when neither can be read.
pub fn zone() -> &'static TimeZone {
    static ZONE: OnceLock<TimeZone> = OnceLock::new();
    ZONE.get_or_init(|| {
        TimeZone::try_system().unwrap_or_else(|e| {
            tracing::debug!(error = %e, "no local time zone, using UTC");
            TimeZone::UTC
        })
    })
}

/// How a zone is named where times are shown: its IANA name
/// (`Asia/Tokyo`, `UTC`), else its offset now (`UTC+05:30`).
pub fn zone_label(tz: &TimeZone) -> String {
    match tz.iana_name() {
        Some(name) => name.to_owned(),
        None => {
            let now = Timestamp::now().to_zoned_datetime(tz.clone());
            format!("UTC{}", now.strftime("%:z"))
        }
    }
}

fn zoned(t: SystemTime, tz: &TimeZone) -> ZonedDateTime {
    Timestamp::try_from(t)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned_datetime(tz.clone())
}

/// `HH:MM:SS.mmm` of `t` in `tz`, as request lines start.
pub fn clock(t: SystemTime, tz: &TimeZone) -> String {
    let mut out = String::with_capacity(12);
    push_clock(&mut out, t, tz);
    out
}

/// Appends `HH:MM:SS.mmm` of `t` in `tz` to `out`. Every request line
/// starts with one, so it is written digit by digit from the zone's offset
/// instead of through a formatter (a third of the line's cost before).
pub fn push_clock(out: &mut String, t: SystemTime, tz: &TimeZone) {
    let ts = Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH);
    let local = ts.as_millisecond() + i64::from(tz.to_offset(ts).seconds()) * 1000;
    let ms = local.rem_euclid(86_400_000);
    let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let digit = |n: i64| char::from(b'0' + (n % 10) as u8);
    for (i, (n, width)) in [(h, 2), (m, 2), (s, 2), (milli, 3)].into_iter().enumerate() {
        if i > 0 {
            out.push(if i == 3 { '.' } else { ':' });
        }
        if width == 3 {
            out.push(digit(n / 100));
        }
        out.push(digit(n / 10));
        out.push(digit(n));
    }
}

/// `t` as RFC 3339 with milliseconds and `tz`'s offset
/// (`2026-11-24T19:15:02.123+09:00`): the `time` of a `--json` event.
pub fn event_time(t: SystemTime, tz: &TimeZone) -> String {
    zoned(t, tz)
        .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

/// A server time (RFC 3339) in `tz` as `YYYY-MM-DD HH:MM:SS`; `None`
/// when it does not parse.
pub fn table_time(rfc3339: &str, tz: &TimeZone) -> Option<String> {
    let t: Timestamp = rfc3339.parse().ok()?;
    Some(
        t.to_zoned_datetime(tz.clone())
            .strftime("%F %T")
            .to_string(),
    )
}

/// A server time (RFC 3339) in `tz` with milliseconds, offset and zone:
/// `2026-11-24 19:15:02.123 +09:00 (Asia/Tokyo)`; `None` when it does not
/// parse.
pub fn full_time(rfc3339: &str, tz: &TimeZone) -> Option<String> {
    let t: Timestamp = rfc3339.parse().ok()?;
    let z = t.to_zoned_datetime(tz.clone());
    let shown = z.strftime("%F %H:%M:%S%.3f %:z").to_string();
    Some(match tz.iana_name() {
        Some(name) => format!("{shown} ({name})"),
        None => shown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn tokyo() -> TimeZone {
        TimeZone::get("Asia/Tokyo").expect("tzdb has Asia/Tokyo")
    }

    #[test]
    fn times_follow_the_zone() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_947_302_123); // 2026-11-29T10:15:02.123Z
        assert_eq!(clock(t, &TimeZone::UTC), "10:15:02.123");
        assert_eq!(clock(t, &tokyo()), "19:15:02.123");
        assert_eq!(event_time(t, &tokyo()), "2026-11-29T19:15:02.123+09:00");
        assert_eq!(
            event_time(t, &TimeZone::UTC),
            "2026-11-29T10:15:02.123+00:00"
        );
        let s = "2026-11-24T10:15:02.123Z";
        assert_eq!(
            table_time(s, &tokyo()).as_deref(),
            Some("2026-11-24 19:15:02")
        );
        assert_eq!(
            full_time(s, &tokyo()).as_deref(),
            Some("2026-11-24 19:15:02.123 +09:00 (Asia/Tokyo)")
        );
        assert_eq!(
            full_time(s, &TimeZone::UTC).as_deref(),
            Some("2026-11-24 10:15:02.123 +00:00 (UTC)")
        );
        assert_eq!(table_time("yesterday", &TimeZone::UTC), None);
        assert_eq!(zone_label(&tokyo()), "Asia/Tokyo");
        let fixed = TimeZone::fixed(jiff::tz::offset(5));
        assert_eq!(zone_label(&fixed), "UTC+05:00");
    }
}
