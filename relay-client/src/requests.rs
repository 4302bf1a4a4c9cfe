//! `relay requests`: the listing's filters, sent to the server as list
//! parameters, and applied here to live events.

use relay_shared::api::Summary;

/// What `relay requests` lists.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub limit: u32,
    pub method: Option<String>,
    pub status: Option<u16>,
    pub outcome: Option<String>,
    pub path: Option<String>,
    /// Only missed requests still waiting.
    pub missed: bool,
}

impl Filter {
    /// The server's list parameters.
    pub fn query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("limit", &self.limit.to_string());
        let optional = [
            ("method", self.method.clone()),
            ("status", self.status.map(|s| s.to_string())),
            ("outcome", self.outcome.clone()),
            ("path", self.path.clone()),
            ("missed", self.missed.then(|| "1".to_owned())),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                q.append_pair(k, &v);
            }
        }
        q.finish()
    }

    /// Whether a live capture passes, as the server would list it.
    pub fn matches(&self, s: &Summary) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(&s.method))
            && self.status.is_none_or(|st| s.status == Some(st))
            && self
                .outcome
                .as_deref()
                .is_none_or(|o| o == s.outcome.as_str())
            && self.path.as_deref().is_none_or(|p| s.path.contains(p))
            && (!self.missed || s.delivery.is_some_and(|d| d.is_waiting()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(
        method: &str,
        status: Option<u16>,
        outcome: &str,
        delivery: Option<&str>,
    ) -> Summary {
        serde_json::from_value(serde_json::json!({
            "id": "01a", "tunnel": "t", "time": "2026-11-24T10:15:02.123Z", "method": method,
            "path": "/hooks/stripe?x=1", "status": status, "outcome": outcome,
            "duration_ms": 1, "request_size": 0, "response_size": 0, "replay_of": null,
            "delivery": delivery,
        }))
        .expect("a summary")
    }

    #[test]
    fn the_query_carries_every_filter_given() {
        let f = Filter {
            limit: 20,
            method: Some("POST".into()),
            status: Some(503),
            outcome: Some("offline".into()),
            path: Some("/a b".into()),
            missed: true,
        };
        assert_eq!(
            f.query(),
            "limit=20&method=POST&status=503&outcome=offline&path=%2Fa+b&missed=1"
        );
        assert_eq!(
            Filter {
                limit: 5,
                ..Filter::default()
            }
            .query(),
            "limit=5"
        );
    }

    #[test]
    fn live_captures_are_filtered_like_the_list() {
        let all = Filter::default();
        let offline = summary("POST", Some(503), "offline", Some("missed"));
        let done = summary("POST", Some(503), "offline", Some("delivered"));
        let ok = summary("GET", Some(200), "delivered", None);
        assert!(all.matches(&offline) && all.matches(&ok));
        let missed = Filter {
            missed: true,
            ..Filter::default()
        };
        assert!(missed.matches(&offline));
        assert!(!missed.matches(&done) && !missed.matches(&ok));
        let f = Filter {
            method: Some("post".into()),
            status: Some(503),
            path: Some("stripe".into()),
            ..Filter::default()
        };
        assert!(f.matches(&offline) && !f.matches(&ok));
        let f = Filter {
            outcome: Some("delivered".into()),
            ..Filter::default()
        };
        assert!(f.matches(&ok) && !f.matches(&offline));
    }
}
