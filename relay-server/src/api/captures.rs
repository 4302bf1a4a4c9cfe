//! A tunnel's captures: list, read one, record a replay, and the live
//! event stream.

use super::*;

/// Parses the listing's query parameters.
pub(super) fn filter(query: Option<&str>) -> Result<Filter, PublicError> {
    let mut f = Filter {
        limit: DEFAULT_LIMIT,
        ..Filter::default()
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let v = v.into_owned();
        if v.is_empty() {
            continue;
        }
        match &*k {
            "limit" => {
                f.limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| PublicError::bad_request("limit must be 1 to 1000"))?
            }
            "before" => f.before = Some(v),
            "method" => f.method = Some(v),
            "status" => {
                f.status = Some(
                    v.parse()
                        .map_err(|_| PublicError::bad_request("status must be a number"))?,
                )
            }
            "outcome" => {
                f.outcome = Some(
                    v.parse::<Outcome>()
                        .map_err(|e| PublicError::bad_request(e.to_string()))?,
                )
            }
            "path" => f.path = Some(v),
            "missed" => f.missed = matches!(v.as_str(), "1" | "true"),
            "kind" => {
                f.replays = match v.as_str() {
                    "visitor" => Some(false),
                    "replay" => Some(true),
                    _ => return Err(PublicError::bad_request("kind must be visitor or replay")),
                }
            }
            _ => {}
        }
    }
    Ok(f)
}

pub(super) async fn list(
    state: &Arc<State>,
    name: &str,
    query: Option<&str>,
) -> Result<Response<ProxyBody>, PublicError> {
    let f = filter(query)?;
    state.capture.flush().await;
    let n = name.to_owned();
    let page = state
        .store
        .call(move |s| s.list_captures(&n, &f))
        .await
        .map_err(store_failed)?;
    ok_json(StatusCode::OK, &page)
}

pub(super) async fn get(
    state: &Arc<State>,
    name: &str,
    id: &str,
) -> Result<Response<ProxyBody>, PublicError> {
    state.capture.flush().await;
    let (n, i) = (name.to_owned(), id.to_owned());
    let record = state
        .store
        .call(move |s| s.get_capture(&n, &i))
        .await
        .map_err(store_failed)?;
    match record {
        Some(r) => ok_json(StatusCode::OK, &r),
        None => Err(PublicError::RequestNotFound(format!(
            "tunnel {name:?} has no captured request {id:?} (it may have been retired by --retain)"
        ))),
    }
}

/// Records a replay the client performed, linked to its original.
pub(super) async fn record_replay(
    state: &Arc<State>,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, PublicError> {
    let capture = state.capture.config();
    if !capture.enabled {
        return Err(PublicError::CaptureOff);
    }
    let max = RECORD_MAX;
    let body = Limited::new(req.into_body(), max)
        .collect()
        .await
        .map_err(|_| PublicError::bad_request(format!("the record is larger than {max} bytes")))?
        .to_bytes();
    let replay: NewReplay = serde_json::from_slice(&body)
        .map_err(|e| PublicError::bad_request(format!("not a replay record: {e}")))?;
    let outcome = replay.outcome;
    if !Outcome::STORED.contains(&outcome) {
        return Err(PublicError::bad_request("unknown outcome"));
    }
    let method = Method::from_bytes(replay.method.as_bytes())
        .map_err(|_| PublicError::bad_request("bad method"))?;
    if !replay.path.starts_with('/') {
        return Err(PublicError::bad_request("path must start with /"));
    }
    // The original must be this tunnel's.
    let (n, orig) = (name.to_owned(), replay.replay_of.clone());
    let exists = state
        .store
        .call(move |s| s.get_capture(&n, &orig).map(|r| r.is_some()))
        .await
        .map_err(store_failed)?;
    if !exists {
        return Err(PublicError::RequestNotFound(format!(
            "no captured request {:?} to link the replay to",
            replay.replay_of
        )));
    }
    let message = |m: relay_shared::api::Message| -> Result<NewMessage, PublicError> {
        let headers = header_map(&m.headers).map_err(PublicError::bad_request)?;
        let mut body = m.body;
        let truncated = m.body_truncated || body.len() > capture.limit;
        body.truncate(capture.limit);
        Ok(NewMessage {
            headers: relay_shared::api::encode_headers(&headers),
            body,
            size: m.body_size,
            truncated,
        })
    };
    let entry = NewCapture {
        id: new_request_id(),
        tunnel: name.to_owned(),
        time_ms: store::now_ms(),
        method: method.as_str().to_owned(),
        path: replay.path,
        status: replay.status,
        outcome,
        duration_ms: replay.duration_ms,
        replay_of: Some(replay.replay_of),
        request: message(replay.request)?,
        response: replay.response.map(message).transpose()?,
        diff: replay
            .diff
            .as_ref()
            .and_then(|d| serde_json::to_string(d).ok()),
        // A replay goes to the local app directly: no caller, no fault.
        deadline_exceeded_ms: None,
        fault: None,
    };
    let summary = entry.summary();
    state.capture.commit(entry).await.map_err(store_failed)?;
    // A replay of a missed request settles its delivery: delivered when the
    // app answered below 500, else failed with the reason.
    let error = match (outcome, replay.status) {
        (Outcome::Delivered, Some(s)) if s < 500 => None,
        (Outcome::Delivered, Some(s)) => Some(format!("the local app answered {s}")),
        _ => Some(replay.error.unwrap_or_else(|| outcome.as_str().to_owned())),
    };
    let (n, original, claim, new_id) = (
        name.to_owned(),
        summary.replay_of.clone().unwrap_or_default(),
        replay.claim,
        summary.id.clone(),
    );
    let has_claim = claim.is_some();
    let settled = state
        .store
        .call(move |s| {
            s.settle_delivery(
                &n,
                &original,
                claim.as_deref(),
                &new_id,
                error.as_deref(),
                store::now_ms(),
            )
        })
        .await
        .map_err(store_failed)?;
    if settled == Settled::ClaimLost && has_claim {
        return Err(PublicError::ClaimLost(format!(
            "the replay was recorded as {}, but the claim on its original had run out and another client took it over; it may be delivered again",
            summary.id
        )));
    }
    ok_json(StatusCode::CREATED, &summary)
}

/// `text/event-stream` of the tunnel's new captures. A task forwards
/// matching events into the body; it ends when the visitor leaves or the
/// server stops.
pub(super) fn events(state: &Arc<State>, name: String) -> Response<ProxyBody> {
    let mut rx = state.capture.subscribe();
    let stop = state.sessions_closed.clone();
    let stopping = state.shutting_down_token();
    let (tx, body_rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut ping = tokio::time::interval(EVENTS_PING);
        ping.tick().await;
        // Opens the stream at once, so the caller knows it is subscribed.
        if tx
            .send(Bytes::from_static(b": subscribed\n\n"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let chunk = tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(s) if s.tunnel == name => match serde_json::to_string(&*s) {
                        Ok(json) => Bytes::from(format!("event: request\ndata: {json}\n\n")),
                        Err(_) => continue,
                    },
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        Bytes::from(format!("event: lagged\ndata: {n}\n\n"))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = ping.tick() => Bytes::from_static(b": ping\n\n"),
                _ = stop.cancelled() => return,
                _ = stopping.cancelled() => return,
                _ = tx.closed() => return,
            };
            // A listener that stops reading must not pin this task (nor
            // hold up shutdown): the send waits inside the select too.
            tokio::select! {
                sent = tx.send(chunk) => if sent.is_err() { return },
                _ = stop.cancelled() => return,
                _ = stopping.cancelled() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(body_rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(hyper::body::Frame::data(chunk)), rx))
    });
    let body = StreamBody::new(stream)
        .map_err(|never| match never {})
        .boxed();
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}
