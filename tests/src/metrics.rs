//! Reads `relay-server --metrics-listen`: finds the printed address and
//! parses the Prometheus / OpenMetrics text it serves, so tests assert on
//! values by name and label rather than on substrings.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::http::{empty, fetch};
use crate::server::RelayServer;

/// One sample line: `name{label="value",...} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A parsed scrape: samples, and each family's `# TYPE`.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    pub types: HashMap<String, String>,
}

impl Scrape {
    /// Parses exposition text; any line that is neither a comment nor a
    /// well-formed sample is an error (the format is what is under test).
    pub fn parse(text: &str) -> Result<Self> {
        let mut scrape = Self::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let (Some(name), Some(kind), None) = (parts.next(), parts.next(), parts.next())
                else {
                    bail!("line {}: bad TYPE line {line:?}", n + 1);
                };
                scrape.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let sample = parse_sample(line).with_context(|| format!("line {}: {line:?}", n + 1))?;
            scrape.samples.push(sample);
        }
        Ok(scrape)
    }

    /// The value of the sample named `name` with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    }

    /// Like [`Scrape::value`], failing with the whole scrape when missing.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        self.value(name, labels)
            .with_context(|| format!("no sample {name}{labels:?} in {:#?}", self.samples))
    }
}

fn parse_sample(line: &str) -> Result<Sample> {
    let name_end = line
        .find(['{', ' '])
        .context("a sample needs a value after its name")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        bail!("bad metric name {name:?}");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let end = loop {
            let Some((i, c)) = chars.next() else {
                bail!("unclosed label set");
            };
            if c == '}' {
                break i;
            }
            if c == ',' || c == ' ' {
                continue;
            }
            let mut key = String::from(c);
            loop {
                match chars.next() {
                    Some((_, '=')) => break,
                    Some((_, k)) => key.push(k),
                    None => bail!("label {key:?} without a value"),
                }
            }
            if !matches!(chars.next(), Some((_, '"'))) {
                bail!("label {key:?}: value not quoted");
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, e)) => value.push(e),
                        None => bail!("label {key:?}: dangling escape"),
                    },
                    Some((_, v)) => value.push(v),
                    None => bail!("label {key:?}: unterminated value"),
                }
            }
            labels.push((key, value));
        };
        rest = &inner[end + 1..];
    }
    let value = rest.split_whitespace().next().context("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().with_context(|| format!("value {v:?}"))?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The metrics address a server printed (`relay-server metrics on
/// http://ADDR/metrics`, the line after the listening line).
pub async fn metrics_addr(server: &mut RelayServer) -> Result<SocketAddr> {
    let seen = server
        .proc
        .stdout_seen()
        .iter()
        .find(|l| l.starts_with("relay-server metrics on "))
        .cloned();
    let line = match seen {
        Some(l) => l,
        None => {
            server
                .proc
                .wait_line("the metrics line", Duration::from_secs(10), |l| {
                    l.starts_with("relay-server metrics on ")
                })
                .await?
        }
    };
    let url = line["relay-server metrics on ".len()..].trim();
    let authority = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/metrics"))
        .with_context(|| format!("metrics URL {url:?} is not http://ADDR/metrics"))?;
    authority
        .parse()
        .with_context(|| format!("metrics address {authority:?}"))
}

/// `GET /metrics` at `addr`, checked for 200 and an exposition content
/// type, parsed.
pub async fn scrape(addr: SocketAddr) -> Result<(Scrape, String)> {
    let req = http::Request::get("/metrics")
        .header(http::header::HOST, addr.to_string())
        .body(empty())?;
    let f = fetch(addr, req, Duration::from_secs(15)).await?;
    if f.status != http::StatusCode::OK {
        bail!("GET /metrics answered {}", f.status);
    }
    let kind = f
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !kind.starts_with("application/openmetrics-text") && !kind.starts_with("text/plain") {
        bail!("GET /metrics has content type {kind:?}");
    }
    let text = String::from_utf8(f.body.to_vec()).context("metrics are not UTF-8")?;
    Ok((Scrape::parse(&text)?, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_values_and_types() {
        let text = "# HELP x help\n# TYPE relay_requests counter\n\
            relay_requests_total{outcome=\"delivered\",a=\"q\\\"x\"} 3\n\
            relay_up 1\nh_bucket{le=\"+Inf\"} 2\n# EOF\n";
        let s = Scrape::parse(text).expect("parses");
        assert_eq!(s.types["relay_requests"], "counter");
        assert_eq!(
            s.value(
                "relay_requests_total",
                &[("outcome", "delivered"), ("a", "q\"x")]
            ),
            Some(3.0)
        );
        assert_eq!(s.value("relay_up", &[]), Some(1.0));
        assert_eq!(s.value("h_bucket", &[("le", "+Inf")]), Some(2.0));
        assert!(Scrape::parse("relay_up\n").is_err());
        assert!(Scrape::parse("relay_up{a=\"b} 1\n").is_err());
    }
}
