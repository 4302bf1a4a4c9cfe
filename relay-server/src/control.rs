//! `/_relay/v1/connect`: the WebSocket upgrade, the handshake (version,
//! token, name claim), then handing the socket to a tunnel session.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use relay_shared::api::MissedOverview;
use relay_shared::edge::EdgeRules;
use relay_shared::protocol::{
    ClientHello, RefusalReason, ServerHello, Welcome, HANDSHAKE_TIMEOUT, MAX_DEADLINE,
    MAX_HANDSHAKE_BYTES, PROTOCOL_VERSION,
};
use relay_shared::TunnelName;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{info, warn, Instrument};

use crate::edge::StoredRules;
use crate::error::PublicError;
use crate::listen::Visitor;
use crate::registry::Rules;
use crate::response::{full, new_request_id, ProxyBody};
use crate::store::Claim;
use crate::State;

use relay_shared::mux::ws::{ws_config, LazyReadBuf};

/// Answers the upgrade request and spawns the session task.
pub fn accept(
    state: &Arc<State>,
    mut req: Request<Incoming>,
    visitor: Visitor,
) -> Response<ProxyBody> {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let is_ws = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let (Some(key), true) = (key, is_ws) else {
        return PublicError::bad_request(
            "this endpoint takes a WebSocket upgrade from `relay connect`",
        )
        .response(&new_request_id());
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let state2 = state.clone();
    let peer = visitor.peer;
    state.sessions.spawn(
        async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    warn!(error = %e, "client upgrade failed");
                    return;
                }
            };
            let ws = WebSocketStream::from_raw_socket(
                LazyReadBuf::new(TokioIo::new(upgraded)),
                Role::Server,
                Some(ws_config()),
            )
            .await;
            session(state2, ws).await;
        }
        .instrument(tracing::info_span!("client", %peer)),
    );
    let mut res = Response::new(full(bytes::Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}

type Ws = WebSocketStream<LazyReadBuf<TokioIo<hyper::upgrade::Upgraded>>>;

/// The session's task as it stays for the tunnel's whole life: the
/// handshake's futures (the hello, the store, the revocation check) live in
/// a box that is freed once the tunnel is up, so an idle tunnel's task holds
/// only the running session, not room for a handshake it is done with.
async fn session(state: Arc<State>, ws: Ws) {
    let Some((handle, lease, run)) = Box::pin(open(&state, ws)).await else {
        return;
    };
    run.await;
    state.registry.remove(&handle);
    crate::cluster::release(&state, lease).await;
}

/// The running session of a tunnel that is up (boxed: it is as large as
/// the tunnel's reader, and this way it is allocated at its own size).
type Running = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Handshake and registration: the handle, the name's lease (cluster
/// mode) and the session to run, or `None` when the client was refused.
async fn open(
    state: &Arc<State>,
    mut ws: Ws,
) -> Option<(
    crate::tunnel::TunnelHandle,
    Option<crate::cluster::HeldLease>,
    Running,
)> {
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_hello(&mut ws)).await {
        Ok(Ok(h)) => h,
        Ok(Err(reason)) => {
            refuse(state, &mut ws, RefusalReason::Malformed, reason).await;
            return None;
        }
        Err(_) => {
            refuse(
                state,
                &mut ws,
                RefusalReason::Malformed,
                "no hello within the handshake timeout",
            )
            .await;
            return None;
        }
    };
    let Granted { name, rules, owner } = match check(state, &hello).await {
        Ok(granted) => granted,
        Err((reason, message)) => {
            info!(?reason, name = %hello.name, "handshake refused");
            refuse(state, &mut ws, reason, &message).await;
            return None;
        }
    };
    if let Some(acme) = &state.acme {
        // In the background: the tunnel works over path routing (and
        // plain DOMAIN's certificate) meanwhile.
        acme.want(&format!("{name}.{}", state.config.domain));
    }
    let welcome = ServerHello::Welcome(Welcome {
        protocol: PROTOCOL_VERSION,
        name: name.to_string(),
        urls: state.public_urls(name.as_str()),
        missed: missed_overview(state, name.as_str()).await,
    });
    let Ok(text) = serde_json::to_string(&welcome) else {
        return None;
    };
    // A child of `sessions_closed`: server shutdown closes every session.
    let closed = state.sessions_closed.child_token();
    let deadline = hello.deadline_ms.map(std::time::Duration::from_millis);
    let (handle, run) = crate::tunnel::start(name.to_string(), ws, text, closed, deadline);
    let edge = rules.edge.as_ref().map(|e| e.describe());
    if let Some(old) = state.registry.insert(handle.clone(), owner.clone(), rules) {
        old.replace();
    }
    let lease = crate::cluster::hold(state, &handle).await;
    if !crate::revocation::still_valid(state, &owner).await {
        handle.revoke();
    }
    info!(tunnel = %name, client = %hello.software, edge = edge.as_deref().unwrap_or("none"), "tunnel up");
    let run = run.instrument(tracing::info_span!("tunnel", name = %name));
    Some((handle, lease, Box::pin(run)))
}

async fn read_hello(ws: &mut Ws) -> Result<ClientHello, &'static str> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if t.len() > MAX_HANDSHAKE_BYTES {
                    return Err("hello too large");
                }
                return serde_json::from_str(t.as_str()).map_err(|_| "hello is not valid JSON");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(_)) => return Err("expected a JSON hello as the first message"),
            Some(Err(_)) | None => return Err("connection ended during the handshake"),
        }
    }
}

/// What the welcome says about requests that wait for this client; a
/// store error costs the line, not the session.
async fn missed_overview(state: &Arc<State>, name: &str) -> MissedOverview {
    let n = name.to_owned();
    match state.store.call(move |s| s.missed_overview(&n, 0)).await {
        Ok(o) => o,
        Err(e) => {
            warn!(error = %format!("{e:#}"), "counting missed requests failed");
            MissedOverview::default()
        }
    }
}

/// A handshake that passed [`check`].
struct Granted {
    name: TunnelName,
    /// What the name answers while the client is away, and its edge rules.
    rules: Rules,
    /// `token:ID` or `client:ID`: whose session this is, so a revoked
    /// token's sessions can be found.
    owner: String,
}

/// Version, token, name rules and ownership, in that order.
async fn check(
    state: &Arc<State>,
    hello: &ClientHello,
) -> Result<Granted, (RefusalReason, String)> {
    if hello.protocol != PROTOCOL_VERSION {
        return Err((
            RefusalReason::VersionMismatch,
            format!(
                "this server speaks relay protocol {PROTOCOL_VERSION}, the client speaks {}; install a matching relay",
                hello.protocol
            ),
        ));
    }
    if state.shutting_down() {
        return Err((
            RefusalReason::ShuttingDown,
            "the server is shutting down".into(),
        ));
    }
    let token = match &hello.token {
        Some(token) => {
            let secret = token.expose().to_owned();
            match state.store.call(move |s| s.verify_token(&secret)).await {
                Ok(Some(check)) => Some(check),
                Ok(None) => {
                    return Err((
                        RefusalReason::BadToken,
                        "the token is unknown or revoked".into(),
                    ))
                }
                Err(e) => {
                    warn!(error = %e, "token lookup failed");
                    return Err((
                        RefusalReason::BadToken,
                        "the token could not be checked".into(),
                    ));
                }
            }
        }
        None if state.config.open => None,
        None => {
            return Err((
                RefusalReason::TokenRequired,
                "this server needs a token: pass --token or run `relay login`".into(),
            ))
        }
    };
    let name = TunnelName::parse(&hello.name).map_err(|e| {
        (
            RefusalReason::BadName,
            format!("cannot use name {:?}: {e}", hello.name),
        )
    })?;
    if hello
        .deadline_ms
        .is_some_and(|ms| ms == 0 || ms > MAX_DEADLINE.as_millis() as u64)
    {
        return Err((
            RefusalReason::Malformed,
            format!(
                "deadline_ms must be 1 to {} (24 hours)",
                MAX_DEADLINE.as_millis()
            ),
        ));
    }
    if hello.client_id.is_empty() || hello.client_id.len() > 128 {
        return Err((
            RefusalReason::Malformed,
            "client_id must be 1 to 128 characters".into(),
        ));
    }
    let owner = match token {
        Some(check) => check.owner(),
        None => format!("client:{}", hello.client_id),
    };
    let edge = match &hello.edge {
        Some(rules) => Some(stored_rules(state, rules).await?),
        None => None,
    };
    let max_names = token.and_then(|t| t.max_names);
    let (n, o) = (name.to_string(), owner.clone());
    let when_offline = hello.when_offline;
    match state
        .store
        .call(move |s| s.claim_name(&n, &o, when_offline, edge, max_names))
        .await
    {
        Ok(Claim::Granted(kept)) => Ok(Granted {
            name,
            rules: Rules::from_settings(&kept),
            owner,
        }),
        Ok(Claim::Taken) => Err((
            RefusalReason::NameTaken,
            format!("the name {name:?} belongs to someone else on this server; pick another with --name"),
        )),
        Ok(Claim::LimitReached(max)) => Err((
            RefusalReason::NameLimit,
            format!(
                "this token may claim {max} name(s) and has them all; reuse one of them with --name (see `relay status`), or ask the server's admin for another token"
            ),
        )),
        Err(e) => {
            warn!(error = %e, "name claim failed");
            Err((RefusalReason::NameTaken, "the name could not be claimed".into()))
        }
    }
}

/// The hello's edge rules as the store keeps them (JSON, the password
/// hashed; `None` for no rules), or the refusal that says what is wrong.
async fn stored_rules(
    state: &Arc<State>,
    rules: &EdgeRules,
) -> Result<Option<String>, (RefusalReason, String)> {
    if rules.is_empty() {
        return Ok(None);
    }
    rules.validate().map_err(|m| (RefusalReason::BadRules, m))?;
    // Hashing is Argon2: it shares the password checks' limit.
    let _permit = state.edge_checks.password_permit().await;
    let rules = rules.clone();
    let stored = tokio::task::spawn_blocking(move || StoredRules::from_rules(&rules))
        .await
        .map_err(|_| {
            (
                RefusalReason::BadRules,
                "the rules could not be stored".to_owned(),
            )
        })?
        .map_err(|m| (RefusalReason::BadRules, m))?;
    serde_json::to_string(&stored).map(Some).map_err(|e| {
        (
            RefusalReason::BadRules,
            format!("the rules could not be stored: {e}"),
        )
    })
}

/// Tells the client why its handshake failed (counted by reason) and
/// closes the WebSocket.
async fn refuse(state: &State, ws: &mut Ws, reason: RefusalReason, message: &str) {
    state.metrics.refused(reason);
    if let Ok(text) = serde_json::to_string(&ServerHello::refused(reason, message)) {
        let _ = ws.send(Message::text(text)).await;
    }
    let _ = ws.close(None).await;
}
