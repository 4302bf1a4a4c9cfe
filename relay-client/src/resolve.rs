//! Which server, tunnel, identity and local app a command acts for: flags
//! first (clap has already read `RELAY_SERVER` / `RELAY_TOKEN` into them),
//! then the `relay connect` running with this config ([`crate::running`]),
//! then what the last `relay connect` saved, then the config file's own
//! settings.

use anyhow::Context;
use http::Uri;
use relay_shared::TunnelName;

use crate::api;
use crate::cli::ServerArgs;
use crate::net;
use crate::running::Running;
use crate::settings::Settings;

/// The server when nothing names one.
pub const DEFAULT_SERVER: &str = "http://localhost:8080";

/// What a command acts for.
#[derive(Debug)]
pub struct Resolved {
    pub server: Uri,
    pub name: Option<TunnelName>,
    pub token: Option<String>,
    pub client_id: Option<String>,
    /// The local app of the running or last `relay connect`.
    pub target: Option<String>,
    /// Set when the tunnel came from a running `relay connect` while
    /// others run too: a note for the user.
    pub note: Option<String>,
}

/// `s` as a server URL: `http(s)://host[:port]`.
pub fn parse_server(s: &str) -> anyhow::Result<Uri> {
    let uri: Uri = s.parse().with_context(|| format!("{s:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => anyhow::bail!("server must be an http:// or https:// URL (got {s:?})"),
    }
}

/// Resolves for `relay requests` / `relay replay`: `--name`, else the
/// tunnel of the newest `relay connect` in `running` (narrowed to
/// `--server` when given), else the last one saved in `s`. Server and
/// local app follow the tunnel picked.
pub fn resolve(
    name: Option<&str>,
    args: &ServerArgs,
    s: &Settings,
    running: &[Running],
) -> anyhow::Result<Resolved> {
    let same_server = |r: &&Running| {
        args.server
            .as_deref()
            .is_none_or(|want| want.trim_end_matches('/') == r.server.trim_end_matches('/'))
    };
    let candidates: Vec<&Running> = running
        .iter()
        .filter(same_server)
        .filter(|r| name.is_none_or(|n| r.name == n))
        .collect();
    let picked = candidates.first().copied();
    let note = match picked {
        Some(p) if name.is_none() && candidates.iter().any(|r| r.name != p.name) => Some(format!(
            "{} `relay connect` run with this config; using {} (the newest), pass --name to pick another",
            candidates.len(),
            p.name
        )),
        _ => None,
    };
    let (saved_name, saved_server, saved_target) = match picked {
        Some(p) => (
            Some(p.name.clone()),
            Some(p.server.clone()),
            Some(p.target.clone()),
        ),
        None => (
            s.last_name.clone().or_else(|| s.name.clone()),
            s.last_server.clone().or_else(|| s.server.clone()),
            s.last_target.clone(),
        ),
    };
    let server = args
        .server
        .clone()
        .or(saved_server)
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let name = match name.map(str::to_owned).or(saved_name) {
        Some(n) => Some(TunnelName::parse(&n).with_context(|| format!("tunnel name {n:?}"))?),
        None => None,
    };
    Ok(Resolved {
        server: parse_server(&server)?,
        name,
        token: args.token.clone().or_else(|| s.token.clone()),
        client_id: s.client_id.clone(),
        target: saved_target,
        note,
    })
}

impl Resolved {
    /// The capture API of the resolved tunnel.
    pub fn api(&self, ca_cert: Option<&std::path::Path>) -> anyhow::Result<api::Api> {
        let name = self.name.as_ref().context(
            "no tunnel name: pass --name, or run `relay connect` once so the config file has one",
        )?;
        let identity = match (&self.token, &self.client_id) {
            (Some(t), _) => api::Identity::Token(t.clone()),
            (None, Some(id)) => api::Identity::ClientId(id.clone()),
            (None, None) => anyhow::bail!(
                "no identity: pass --token, or run `relay connect` once so the config file has a client id"
            ),
        };
        Ok(api::Api::new(
            net::ServerAddr::new(&self.server, ca_cert)?,
            name.to_string(),
            identity,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(name: &str, server: &str, target: &str) -> Running {
        Running {
            pid: 1,
            name: name.into(),
            server: server.into(),
            target: target.into(),
            started: String::new(),
        }
    }

    fn saved() -> Settings {
        Settings {
            name: Some("generated-1".into()),
            last_name: Some("last-one".into()),
            last_server: Some("http://last:1".into()),
            last_target: Some("http://localhost:1111".into()),
            ..Settings::default()
        }
    }

    fn flags(server: Option<&str>) -> ServerArgs {
        ServerArgs {
            server: server.map(str::to_owned),
            token: None,
            ca_cert: None,
        }
    }

    fn picked(r: &Resolved) -> (String, String, Option<String>) {
        (
            r.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
            r.server.to_string(),
            r.target.clone(),
        )
    }

    #[test]
    fn flag_then_running_then_last_then_generated() {
        let run = [
            running("newest", "http://run:2", "http://localhost:2222"),
            running("older", "http://run:3", "http://localhost:3333"),
        ];
        let r = resolve(None, &flags(None), &saved(), &run).expect("resolves");
        assert_eq!(
            picked(&r),
            (
                "newest".into(),
                "http://run:2/".into(),
                Some("http://localhost:2222".into())
            )
        );
        assert!(
            r.note.as_deref().is_some_and(|n| n.contains("--name")),
            "{r:?}"
        );

        // --name picks its running entry, with that entry's server and app.
        let r = resolve(Some("older"), &flags(None), &saved(), &run).expect("resolves");
        assert_eq!(
            picked(&r),
            (
                "older".into(),
                "http://run:3/".into(),
                Some("http://localhost:3333".into())
            )
        );
        assert!(r.note.is_none());

        // --server narrows the running ones.
        let r = resolve(None, &flags(Some("http://run:3/")), &saved(), &run).expect("resolves");
        assert_eq!(picked(&r).0, "older");

        // A name nobody runs: the flag, with the last server and app.
        let r = resolve(Some("other"), &flags(None), &saved(), &run).expect("resolves");
        assert_eq!(
            picked(&r),
            (
                "other".into(),
                "http://last:1/".into(),
                Some("http://localhost:1111".into())
            )
        );

        // Nothing running: the last one, else the generated name.
        let r = resolve(None, &flags(None), &saved(), &[]).expect("resolves");
        assert_eq!(picked(&r).0, "last-one");
        let only_generated = Settings {
            last_name: None,
            ..saved()
        };
        let r = resolve(None, &flags(None), &only_generated, &[]).expect("resolves");
        assert_eq!(picked(&r).0, "generated-1");
        let r = resolve(None, &flags(None), &Settings::default(), &[]).expect("resolves");
        assert_eq!(r.server.to_string(), "http://localhost:8080/");
        assert!(r.name.is_none());
        assert!(r.api(None).is_err(), "no name is a clear error");
    }

    #[test]
    fn bad_names_and_servers_are_errors() {
        assert!(resolve(Some("Not A Name"), &flags(None), &saved(), &[]).is_err());
        assert!(resolve(None, &flags(Some("ftp://x")), &saved(), &[]).is_err());
        assert!(parse_server("http://x:1").is_ok());
    }
}
