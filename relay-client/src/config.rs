//! `relay.toml`: the tunnels a user runs, written by hand and read by
//! `relay start` (see `docs/config.md`).
//!
//! It sits next to `config.toml` rather than inside it: `config.toml` is
//! state that `relay connect` and `relay login` rewrite (the generated
//! name, the last target), and a rewrite would lose a person's comments
//! and layout. relay never writes `relay.toml`.
//!
//! Read in two steps: serde (unknown keys and wrong types are errors that
//! name the file and the key's path, `tunnels.api.deliver_missed`), then
//! the values themselves (a target, a name, a duration), named the same way.

use std::path::{Path, PathBuf};

use anyhow::Context;
use relay_shared::protocol::WhenOffline;
use relay_shared::TunnelName;
use serde::Deserialize;

use crate::forward_opts::{parse_deadline, CallerDeadline, FaultPlan, ForwardOptions, HostHeader};
use crate::target::LocalTarget;
use relay_shared::fault::Fault;

/// The file name, in the directory of `config.toml`.
pub const FILE_NAME: &str = "relay.toml";

/// Where `relay.toml` is for the config file `config` (`config.toml`).
pub fn path_for(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(FILE_NAME)
}

/// `relay.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    tunnels: toml::Table,
}

/// One `[tunnels.KEY]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    target: RawTarget,
    name: Option<String>,
    server: Option<String>,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
    when_offline: Option<OfflineMode>,
    #[serde(default)]
    deliver_missed: bool,
    host_header: Option<String>,
    #[serde(default)]
    insecure_local: bool,
    deadline: Option<String>,
    caller: Option<crate::cli::Caller>,
    fault: Option<String>,
    fault_rate: Option<f64>,
    /// Edge rules, as `relay connect`'s flags.
    basic_auth: Option<String>,
    #[serde(default)]
    allow_ip: Vec<String>,
    #[serde(default)]
    require_headers: Vec<String>,
    verify_jwt: Option<String>,
    audience: Option<String>,
}

/// `target = 4000` or `target = "localhost:4000"`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a port number or a \"HOST:PORT\" / \"http://HOST:PORT\" string"
)]
enum RawTarget {
    Port(i64),
    Text(String),
}

/// `when_offline`, as `--when-offline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OfflineMode {
    Reject,
    Accept,
}

impl From<OfflineMode> for WhenOffline {
    fn from(m: OfflineMode) -> Self {
        match m {
            OfflineMode::Reject => Self::Reject,
            OfflineMode::Accept => Self::Accept,
        }
    }
}

/// One tunnel of `relay.toml`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TunnelConfig {
    /// The table's key (`[tunnels.KEY]`): what `relay start KEY` names.
    pub key: String,
    /// `name`, else the key.
    pub name: TunnelName,
    pub target: LocalTarget,
    pub server: Option<String>,
    pub token: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub when_offline: Option<OfflineMode>,
    pub deliver_missed: bool,
    pub edge: relay_shared::edge::EdgeRules,
    /// Deadline, fault and Host header, as `relay connect`'s flags make
    /// them (`insecure_local` and `host_header` also sit on the target,
    /// for replays).
    pub forward: ForwardOptions,
}

/// `relay.toml`, checked: its tunnels in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct TunnelsFile {
    pub path: PathBuf,
    pub tunnels: Vec<TunnelConfig>,
}

impl TunnelsFile {
    /// Reads and checks `path`. A missing file is an error that says
    /// where to write one.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
                "no {} with tunnels: write one with a [tunnels.NAME] table per tunnel \
                 (see docs/config.md), or run `relay connect PORT`",
                path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Self::parse(&text, path)
    }

    /// Checks `text`, the contents of `path` (named in every error).
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let file = path.display();
        let table: toml::Table = toml::from_str(text).with_context(|| format!("parsing {file}"))?;
        let raw: RawFile = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| anyhow::anyhow!("{file}: {}: {}", e.path(), e.inner().message()))?;
        let mut tunnels = Vec::with_capacity(raw.tunnels.len());
        for (key, value) in raw.tunnels {
            let raw: RawTunnel = serde_path_to_error::deserialize(value).map_err(|e| {
                let at = e.path().to_string();
                let at = if at == "." {
                    format!("[tunnels.{key}]")
                } else {
                    format!("[tunnels.{key}] {at}")
                };
                // The message alone: the path is already said.
                anyhow::anyhow!("{file}: {at}: {}", e.inner().message())
            })?;
            let t = check(&key, raw).map_err(|(field, why)| {
                anyhow::anyhow!("{file}: [tunnels.{key}] {field}: {why}")
            })?;
            tunnels.push(t);
        }
        if tunnels.is_empty() {
            anyhow::bail!("{file}: no tunnels: add a [tunnels.NAME] table with a target");
        }
        for (i, t) in tunnels.iter().enumerate() {
            if let Some(other) = tunnels[..i].iter().find(|o| o.name == t.name) {
                anyhow::bail!(
                    "{file}: [tunnels.{}] and [tunnels.{}] both serve the name {}",
                    other.key,
                    t.key,
                    t.name
                );
            }
        }
        Ok(Self {
            path: path.to_owned(),
            tunnels,
        })
    }

    /// The tunnels `names` pick (by key), all of them when `names` is
    /// empty; an unknown name is an error listing the known ones.
    pub fn select(&self, names: &[String]) -> anyhow::Result<Vec<TunnelConfig>> {
        if names.is_empty() {
            return Ok(self.tunnels.clone());
        }
        let mut picked: Vec<TunnelConfig> = Vec::with_capacity(names.len());
        for n in names {
            let Some(t) = self.tunnels.iter().find(|t| &t.key == n) else {
                let known: Vec<&str> = self.tunnels.iter().map(|t| t.key.as_str()).collect();
                anyhow::bail!(
                    "no tunnel {n:?} in {}; it has: {}",
                    self.path.display(),
                    known.join(", ")
                );
            };
            if !picked.iter().any(|p| p.key == t.key) {
                picked.push(t.clone());
            }
        }
        Ok(picked)
    }
}

/// The values of one table checked; an error names the key.
fn check(key: &str, raw: RawTunnel) -> Result<TunnelConfig, (&'static str, String)> {
    let edge = edge_rules(&raw).map_err(|e| ("edge rules", e))?;
    let target = match raw.target {
        RawTarget::Port(p) => LocalTarget::parse(&p.to_string()),
        RawTarget::Text(t) => LocalTarget::parse(&t),
    }
    .map_err(|e| ("target", e))?;
    let name = match &raw.name {
        Some(n) => TunnelName::parse(n).map_err(|e| ("name", e.to_string()))?,
        None => TunnelName::parse(key).map_err(|e| {
            (
                "name",
                format!("the table's key is not a tunnel name ({e}); set name = \"...\""),
            )
        })?,
    };
    if let Some(s) = &raw.server {
        crate::resolve::parse_server(s).map_err(|e| ("server", format!("{e:#}")))?;
    }
    let host = raw
        .host_header
        .as_deref()
        .map(|v| HostHeader::parse(v).map_err(|e| ("host_header", e)))
        .transpose()?
        .unwrap_or_default();
    let deadline = raw
        .deadline
        .as_deref()
        .map(|d| parse_deadline(d).map_err(|e| ("deadline", e)))
        .transpose()?;
    let deadline = match (deadline, raw.caller) {
        (Some(_), Some(_)) => {
            return Err((
                "deadline",
                "set deadline or caller, not both (a caller implies its deadline)".into(),
            ))
        }
        (Some(limit), None) => Some(CallerDeadline {
            limit,
            caller: None,
        }),
        (None, Some(c)) => Some(c.deadline()),
        (None, None) => None,
    };
    let fault = raw
        .fault
        .as_deref()
        .map(|f| Fault::parse(f).map_err(|e| ("fault", e)))
        .transpose()?;
    let fault = match (fault, raw.fault_rate) {
        (None, Some(_)) => return Err(("fault_rate", "needs a fault".into())),
        (None, None) => None,
        (Some(fault), rate) => {
            let rate = rate.unwrap_or(1.0);
            if !(rate > 0.0 && rate <= 1.0) {
                return Err((
                    "fault_rate",
                    format!("{rate} is not a share of requests in (0, 1]"),
                ));
            }
            Some(FaultPlan { fault, rate })
        }
    };
    let mut target = target;
    target.insecure = raw.insecure_local;
    target.host_header = host;
    Ok(TunnelConfig {
        key: key.to_owned(),
        name,
        target,
        server: raw.server,
        token: raw.token,
        ca_cert: raw.ca_cert,
        when_offline: raw.when_offline,
        deliver_missed: raw.deliver_missed,
        edge,
        forward: ForwardOptions { deadline, fault },
    })
}

/// The table's edge rules, checked as `relay connect` checks its flags
/// (the message names the flag: `--allow-ip`, `--basic-auth`, ...).
fn edge_rules(raw: &RawTunnel) -> Result<relay_shared::edge::EdgeRules, String> {
    if raw.verify_jwt.is_some() != raw.audience.is_some() {
        return Err("verify_jwt and audience go together".into());
    }
    let flags = crate::cli::EdgeArgs {
        basic_auth: raw
            .basic_auth
            .as_deref()
            .map(crate::cli::parse_basic_auth)
            .transpose()
            .map_err(|e| format!("basic_auth: {e}"))?,
        allow_ip: raw.allow_ip.clone(),
        require_headers: raw
            .require_headers
            .iter()
            .map(|h| crate::edit::parse_header_arg(h).map_err(|e| format!("require_headers: {e}")))
            .collect::<Result<_, _>>()?,
        verify_jwt: raw.verify_jwt.clone(),
        audience: raw.audience.clone(),
    };
    flags.rules()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<TunnelsFile> {
        TunnelsFile::parse(text, Path::new("/home/u/.config/relay/relay.toml"))
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).expect_err("must fail"))
    }

    #[test]
    fn reads_every_key_in_file_order() {
        let f = parse(
            r#"
            [tunnels.web]
            target = 3000

            [tunnels.api]
            target = "http://127.0.0.1:4000"
            name = "my-api"
            server = "https://relay.example.com"
            token = "rly_x"
            ca_cert = "/etc/ca.pem"
            when_offline = "accept"
            deliver_missed = true
            host_header = "rewrite"
            insecure_local = true
            caller = "auth0"
            fault = "delay=12s"
            fault_rate = 0.5
            "#,
        )
        .expect("parses");
        let keys: Vec<&str> = f.tunnels.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["web", "api"], "file order");
        let web = &f.tunnels[0];
        assert_eq!(web.name.as_str(), "web", "the key is the default name");
        assert_eq!(web.target.base, "http://localhost:3000");
        assert_eq!(web.forward, ForwardOptions::default());
        assert!(!web.deliver_missed && web.when_offline.is_none() && web.server.is_none());
        let api = &f.tunnels[1];
        assert_eq!(api.name.as_str(), "my-api");
        assert_eq!(api.target.base, "http://127.0.0.1:4000");
        assert_eq!(api.server.as_deref(), Some("https://relay.example.com"));
        assert_eq!(api.token.as_deref(), Some("rly_x"));
        assert_eq!(api.ca_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(api.when_offline, Some(OfflineMode::Accept));
        assert!(api.deliver_missed);
        assert_eq!(
            api.forward,
            ForwardOptions {
                deadline: Some(crate::cli::Caller::Auth0.deadline()),
                fault: Some(FaultPlan {
                    fault: Fault::Delay(std::time::Duration::from_secs(12)),
                    rate: 0.5,
                }),
            }
        );
        assert!(api.target.insecure);
        assert_eq!(api.target.host_header, HostHeader::Rewrite);
        let d = parse("[tunnels.x]\ntarget = 1\ndeadline = \"1500ms\"\nfault = \"status=503\"\nhost_header = \"app.test\"")
            .expect("parses");
        let x = &d.tunnels[0];
        assert_eq!(
            x.forward.deadline.as_ref().map(|d| d.limit),
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(
            x.forward.fault.map(|f| (f.fault, f.rate)),
            Some((Fault::Status(503), 1.0))
        );
        assert_eq!(
            x.target.host_header,
            HostHeader::parse("app.test").expect("a value")
        );
        let e = err("[tunnels.x]\ntarget = 1\nfault = \"status=99\"\n");
        assert!(e.contains("[tunnels.x] fault:"), "{e}");
    }

    #[test]
    fn errors_name_the_file_the_table_and_the_key() {
        let e = err("[tunnels.api]\ntarget = 4000\ntagret = 1\n");
        assert!(
            e.contains("relay.toml") && e.contains("[tunnels.api]") && e.contains("tagret"),
            "{e}"
        );
        let e = err("[tunnels.api]\ntarget = \"nonsense\"\n");
        assert!(e.contains("[tunnels.api] target:"), "{e}");
        let e = err("[tunnels.api]\ntarget = 0\n");
        assert!(e.contains("[tunnels.api] target:"), "{e}");
        let e = err("[tunnels.api]\ntarget = 1\ndeliver_missed = \"yes\"\n");
        assert!(e.contains("[tunnels.api] deliver_missed"), "{e}");
        let e = err("[tunnels.api]\ntarget = 1\nwhen_offline = \"queue\"\n");
        assert!(e.contains("when_offline") && e.contains("accept"), "{e}");
        let e = err("[tunnels.api]\nname = \"x\"\n");
        assert!(e.contains("[tunnels.api]") && e.contains("target"), "{e}");
        let e = err("[tunnels.Bad_Name]\ntarget = 1\n");
        assert!(e.contains("[tunnels.Bad_Name] name:"), "{e}");
        let e = err("[tunnels.a]\ntarget = 1\nserver = \"ftp://x\"\n");
        assert!(e.contains("[tunnels.a] server:"), "{e}");
        let e = err("[tunnels.a]\ntarget = 1\ndeadline = \"soon\"\n");
        assert!(e.contains("[tunnels.a] deadline:"), "{e}");
        let e = err("[tunnels.a]\ntarget = 1\ndeadline = \"10s\"\ncaller = \"hasura\"\n");
        assert!(e.contains("not both"), "{e}");
        let e = err("[tunnels.a]\ntarget = 1\ncaller = \"stripe\"\n");
        assert!(
            e.contains("[tunnels.a] caller") && e.contains("auth0"),
            "{e}"
        );
        let e = err("[tunnels.a]\ntarget = 1\nfault = \"status=99\"\n");
        assert!(e.contains("[tunnels.a] fault:"), "{e}");
        let e = err("[tunnels.a]\ntarget = 1\nfault_rate = 0.5\n");
        assert!(e.contains("[tunnels.a] fault_rate: needs a fault"), "{e}");
        let e = err("[tunnels.a]\ntarget = 1\nfault = \"reset\"\nfault_rate = 1.5\n");
        assert!(e.contains("fault_rate"), "{e}");
        let e = err("[tunnels.a]\ntarget = 1\nhost_header = \"\"\n");
        assert!(e.contains("host_header"), "{e}");
        let e = err("[tunnels.a]\ntarget = 1\n[tunnels.b]\ntarget = 2\nname = \"a\"\n");
        assert!(e.contains("both serve the name a"), "{e}");
        let e = err("[tunnel.a]\ntarget = 1\n");
        assert!(e.contains("relay.toml") && e.contains("tunnel"), "{e}");
        let e = err("[tunnels.a\n");
        assert!(e.contains("relay.toml"), "{e}");
        assert!(err("").contains("no tunnels"));
    }

    #[test]
    fn select_picks_by_key_and_lists_the_known_ones() {
        let f =
            parse("[tunnels.a]\ntarget = 1\n[tunnels.b]\ntarget = 2\n[tunnels.c]\ntarget = 3\n")
                .expect("parses");
        assert_eq!(f.select(&[]).expect("all").len(), 3);
        let picked = f
            .select(&["c".into(), "a".into(), "c".into()])
            .expect("picks");
        let keys: Vec<&str> = picked.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["c", "a"]);
        let e = format!("{:#}", f.select(&["d".into()]).expect_err("unknown"));
        assert!(
            e.contains("\"d\"") && e.contains("a, b, c") && e.contains("relay.toml"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_file_says_where_to_write_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = path_for(&dir.path().join("config.toml"));
        assert!(p.ends_with("relay.toml"));
        let e = format!("{:#}", TunnelsFile::load(&p).expect_err("missing"));
        assert!(
            e.contains(&p.display().to_string()) && e.contains("[tunnels.NAME]"),
            "{e}"
        );
    }
}
