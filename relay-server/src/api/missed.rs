//! Missed requests (offline captures still waiting) and the claims that
//! deliver each once.

use super::*;

/// Default number of missed requests listed by `GET .../missed`.
const MISSED_LIMIT: u32 = 50;

/// The missed requests that still wait, oldest first.
pub(super) async fn missed(
    state: &Arc<State>,
    name: &str,
    query: Option<&str>,
) -> Result<Response<ProxyBody>, PublicError> {
    let mut limit = MISSED_LIMIT;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == "limit" {
            limit = v
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= 1000)
                .ok_or_else(|| PublicError::bad_request("limit must be 0 to 1000"))?;
        }
    }
    state.capture.flush().await;
    let n = name.to_owned();
    let overview = state
        .store
        .call(move |s| s.missed_overview(&n, limit))
        .await
        .map_err(store_failed)?;
    ok_json(StatusCode::OK, &overview)
}

/// Largest claim request body; it holds one optional number.
pub(super) const CLAIM_BODY_MAX: usize = 4096;

/// Reserves the oldest waiting missed request for the caller.
pub(super) async fn claim(
    state: &Arc<State>,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, PublicError> {
    let body = Limited::new(req.into_body(), CLAIM_BODY_MAX)
        .collect()
        .await
        .map_err(|_| PublicError::bad_request("the claim request is too large"))?
        .to_bytes();
    let ask: ClaimRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ClaimRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| PublicError::bad_request(format!("not a claim request: {e}")))?
    };
    state.capture.flush().await;
    let n = name.to_owned();
    let found = state
        .store
        .call(move |s| s.claim_missed(&n, ask.within_ms, store::now_ms()))
        .await
        .map_err(store_failed)?;
    match found {
        ClaimOutcome::Claimed(c) => ok_json(StatusCode::OK, &c),
        ClaimOutcome::Busy => Err(PublicError::DeliveryInProgress),
        ClaimOutcome::Empty => {
            let mut res = Response::new(crate::response::full(Bytes::new()));
            *res.status_mut() = StatusCode::NO_CONTENT;
            Ok(res)
        }
    }
}
