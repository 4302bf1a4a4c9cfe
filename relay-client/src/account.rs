//! `relay login` (check a token with the server, then save it) and
//! `relay status` (server, token, names, what runs with this config).

use std::fmt::Write as _;
use std::path::Path;

use relay_shared::api::Identity;

use crate::api::{self, Api, ApiError};
use crate::net::ServerAddr;
use crate::resolve::{parse_server, DEFAULT_SERVER};
use crate::running::{self, Running};
use crate::settings::{self, Settings};

/// How long `relay status` waits for the server before it says it is not
/// reachable.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An API handle that only asks who the caller is (no tunnel name).
fn identity_api(server: &str, who: api::Identity, ca_cert: Option<&Path>) -> anyhow::Result<Api> {
    let uri = parse_server(server)?;
    Ok(Api::new(
        ServerAddr::new(&uri, ca_cert)?,
        String::new(),
        who,
    ))
}

/// Checks `token` with `server` and saves both only if the server accepts
/// it: a typo or a revoked token is found now, not at the next connect.
pub fn login(server: &str, token: &str, ca_cert: Option<&Path>) -> anyhow::Result<String> {
    let api = identity_api(server, api::Identity::Token(token.to_owned()), ca_cert)?;
    let who = relay_shared::rt::runtime()?
        .block_on(api.identity())
        .map_err(|e| match ApiError::code_of(&e) {
            Some("unauthorized") => {
                anyhow::anyhow!("{server} does not accept this token ({e}); nothing saved")
            }
            _ => e.context(format!("checking the token with {server}; nothing saved")),
        })?;
    let path = settings::config_path()?;
    let mut s = Settings::load(&path)?;
    s.server = Some(server.to_owned());
    s.token = Some(token.to_owned());
    // Otherwise `relay requests` would keep asking the server of the last
    // `relay connect`, with the new server's token. (The last name stays:
    // it is most likely the one the user keeps using there.)
    s.last_server = None;
    s.save(&path)?;
    Ok(format!(
        "{} accepts the token ({}); saved server and token to {}",
        server,
        describe_token(&who),
        path.display()
    ))
}

/// `token 3 "laptop", names: app, api (2 of 3)`.
fn describe_token(who: &Identity) -> String {
    let mut out = match (who.token_id, &who.label) {
        (Some(id), Some(label)) => format!("token {id} {label:?}"),
        (Some(id), None) => format!("token {id}"),
        (None, _) => "no token: the server is open".to_owned(),
    };
    let names = if who.names.is_empty() {
        "none yet".to_owned()
    } else {
        who.names.join(", ")
    };
    let _ = write!(out, ", names: {names}");
    if let Some(max) = who.max_names {
        let _ = write!(out, " ({} of {max})", who.names.len());
    }
    out
}

/// What `relay status` found, printed by [`Status::render`].
pub struct Status {
    pub config: std::path::PathBuf,
    pub server: String,
    /// The server's answer about the token (or the client id).
    pub identity: Result<Identity, String>,
    pub token_source: &'static str,
    pub running: Vec<Running>,
}

/// Gathers the status: the server from `--server`, `RELAY_SERVER` or the
/// config; never fails on an unreachable server (that is the news).
pub fn status(
    server: Option<String>,
    token: Option<String>,
    ca_cert: Option<&Path>,
) -> anyhow::Result<Status> {
    let config = settings::config_path()?;
    let s = Settings::load(&config)?;
    let server = server
        .or_else(|| s.server.clone())
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let (who, token_source) = match (token, &s.token, &s.client_id) {
        (Some(t), _, _) => (Some(api::Identity::Token(t)), "--token / RELAY_TOKEN"),
        (None, Some(t), _) => (Some(api::Identity::Token(t.clone())), "config file"),
        (None, None, Some(id)) => (Some(api::Identity::ClientId(id.clone())), "none"),
        (None, None, None) => (None, "none"),
    };
    let identity = match who {
        Some(who) => {
            let api = identity_api(&server, who, ca_cert)?;
            let answer = relay_shared::rt::runtime()?
                .block_on(async { tokio::time::timeout(STATUS_TIMEOUT, api.identity()).await });
            match answer {
                Ok(Ok(identity)) => Ok(identity),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err(format!("no answer within {}s", STATUS_TIMEOUT.as_secs())),
            }
        }
        None => Err("no token and no client id yet: run `relay login` or `relay connect`".into()),
    };
    Ok(Status {
        running: running::list(&running::dir_for(&config)),
        config,
        server,
        identity,
        token_source,
    })
}

impl Status {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "config   {}", self.config.display());
        let _ = writeln!(out, "server   {}", self.server);
        match &self.identity {
            Ok(who) => {
                let _ = writeln!(
                    out,
                    "token    valid: {} (from {})",
                    describe_token(who),
                    self.token_source
                );
            }
            Err(e) => {
                let _ = writeln!(out, "token    not accepted: {e}");
            }
        }
        if self.running.is_empty() {
            let _ = writeln!(
                out,
                "running  nothing (start a tunnel with `relay connect PORT`)"
            );
        }
        let zone = crate::localtime::zone();
        for (i, r) in self.running.iter().enumerate() {
            let label = if i == 0 { "running" } else { "" };
            let since =
                crate::localtime::table_time(&r.started, zone).unwrap_or_else(|| r.started.clone());
            let _ = writeln!(
                out,
                "{label:<8} {} -> {} on {} (pid {}, since {since})",
                r.name, r.target, r.server, r.pid
            );
        }
        out
    }

    /// Exit status: failure when the server did not accept the caller.
    pub fn ok(&self) -> bool {
        self.identity.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_described_with_its_names_and_cap() {
        let who = Identity {
            token_id: Some(3),
            label: Some("laptop".into()),
            max_names: Some(3),
            names: vec!["app".into(), "api".into()],
            open: false,
        };
        assert_eq!(
            describe_token(&who),
            "token 3 \"laptop\", names: app, api (2 of 3)"
        );
        let open = Identity {
            token_id: None,
            label: None,
            max_names: None,
            names: vec![],
            open: true,
        };
        assert_eq!(
            describe_token(&open),
            "no token: the server is open, names: none yet"
        );
    }
}
