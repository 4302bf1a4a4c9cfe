//! The `relay requests` table: one line per capture, times in the user's
//! zone (named in the header), and the deadline and fault marks.

use std::time::Duration;

use jiff::tz::TimeZone;

use super::{printable, redact_query};
use crate::localtime;

/// The table `relay requests` prints, times in `zone`.
pub fn requests_table(rows: &[relay_shared::api::Summary], zone: &TimeZone) -> String {
    let mut out = table_header(zone);
    for r in rows {
        out.push_str(&table_row(r, zone));
    }
    out
}

/// `TIME (Asia/Tokyo)`: the time column's title names the zone.
fn time_title(zone: &TimeZone) -> String {
    format!("TIME ({})", localtime::zone_label(zone))
}

/// The header line of the table, with a newline.
pub fn table_header(zone: &TimeZone) -> String {
    let title = time_title(zone);
    let w = title.len().max(19);
    format!(
        "{:<26}  {title:<w$}  {:<7}  {:<40}  {:>6}  {:<19}  {:>8}  {:<9}  {}\n",
        "ID", "METHOD", "PATH", "STATUS", "OUTCOME", "DURATION", "DELIVERY", "MARKS"
    )
}

/// One row of the table, with a newline. The delivery column is set for
/// missed requests only (`missed`, `delivered`, `failed`).
pub fn table_row(r: &relay_shared::api::Summary, zone: &TimeZone) -> String {
    let w = time_title(zone).len().max(19);
    let time = localtime::table_time(&r.time, zone)
        .unwrap_or_else(|| printable(&r.time).chars().take(19).collect());
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
    let marks = marks(r).join(", ");
    let line = format!(
        "{:<26}  {time:<w$}  {:<7}  {:<40}  {:>6}  {:<19}  {:>6}ms  {delivery:<9}  {marks}",
        r.id, r.method, path, status, outcome, r.duration_ms
    );
    format!("{}\n", line.trim_end())
}

/// The deadline and fault marks of a capture, as `relay requests` and
/// `relay requests show` print them: `slow: over the 10s deadline`,
/// `fault: status=500`.
pub fn marks(r: &relay_shared::api::Summary) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(ms) = r.deadline_exceeded_ms {
        out.push(format!(
            "slow: over the {} deadline",
            humantime::format_duration(Duration::from_millis(ms))
        ));
    }
    if let Some(f) = &r.fault {
        out.push(format!("fault: {}", printable(f)));
    }
    out
}
