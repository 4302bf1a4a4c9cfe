//! Who calls the API: a live token or, on an `--open` server, a client
//! id; the tunnel's owner check; and `GET /_relay/v1/token`.

use super::*;

/// Who is calling: a live token (`Authorization: Bearer`), or on an
/// `--open` server a client id (`X-Relay-Client-Id`).
async fn caller(state: &Arc<State>, headers: &http::HeaderMap) -> Result<Caller, PublicError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let client_id = headers
        .get(CLIENT_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned);
    match (bearer, client_id) {
        (Some(token), _) => {
            let check = state
                .store
                .call(move |s| s.verify_token(&token))
                .await
                .map_err(store_failed)?;
            match check {
                Some(check) => Ok(Caller::Token(check)),
                None => Err(PublicError::Unauthorized("the token is unknown or revoked")),
            }
        }
        (None, Some(client)) if state.config.open => Ok(Caller::Client(client)),
        _ => Err(PublicError::Unauthorized(
            "send the tunnel's token as `Authorization: Bearer TOKEN`",
        )),
    }
}

enum Caller {
    Token(crate::store::TokenCheck),
    Client(String),
}

impl Caller {
    /// The owner string names are stored under.
    fn owner(&self) -> String {
        match self {
            Self::Token(check) => check.owner(),
            Self::Client(id) => format!("client:{id}"),
        }
    }
}

/// The caller must own `name`. A name owned by someone else looks like an
/// unknown one, so the API does not tell who has which names.
pub(super) async fn authorize(
    state: &Arc<State>,
    headers: &http::HeaderMap,
    name: &str,
) -> Result<(), PublicError> {
    let caller = caller(state, headers).await?.owner();
    let n = name.to_owned();
    let owner = state
        .store
        .call(move |s| s.name_owner(&n))
        .await
        .map_err(store_failed)?;
    if owner.as_deref() != Some(caller.as_str()) {
        return Err(PublicError::NotYourTunnel(name.to_owned()));
    }
    Ok(())
}

/// `GET /_relay/v1/token`: what the server knows of the caller, so
/// `relay login` can check a token before saving it and `relay status`
/// can show its names. 401 for an unknown or revoked token.
pub(super) async fn identity(
    state: &Arc<State>,
    headers: &http::HeaderMap,
) -> Result<Response<ProxyBody>, PublicError> {
    let caller = caller(state, headers).await?;
    let owner = caller.owner();
    let names = state
        .store
        .call(move |s| s.names_of(&owner))
        .await
        .map_err(store_failed)?;
    let identity = match caller {
        Caller::Token(check) => {
            let label = state
                .store
                .call(move |s| s.token_label(check.id))
                .await
                .map_err(store_failed)?;
            Identity {
                token_id: Some(check.id),
                label,
                max_names: check.max_names,
                names,
                open: state.config.open,
            }
        }
        Caller::Client(_) => Identity {
            token_id: None,
            label: None,
            max_names: None,
            names,
            open: state.config.open,
        },
    };
    ok_json(StatusCode::OK, &identity)
}
