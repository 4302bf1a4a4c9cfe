//! One-shot `relay` subcommands (`relay requests ...`, `relay replay ...`)
//! run as subprocesses with the same private config and home as a
//! [`ClientConfig`], so they see what its `relay connect` saved (client id,
//! last name, server and target). Every run is bounded by a timeout and
//! killed (its own PID) if it overruns.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::process::Command;

use crate::bins;
use crate::client::ClientConfig;

/// What a finished `relay` subcommand left behind.
#[derive(Debug)]
pub struct CliOutput {
    /// The command line, for error messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Fails (showing stdout and stderr) unless the command exited 0.
    pub fn ensure_success(&self) -> Result<&Self> {
        if !self.success() {
            bail!(
                "`{}` failed ({}):\n{}",
                self.command,
                self.status,
                self.dump()
            );
        }
        Ok(self)
    }

    /// Fails unless the command exited non-zero.
    pub fn ensure_failure(&self) -> Result<&Self> {
        if self.success() {
            bail!(
                "`{}` exited 0, expected a failure:\n{}",
                self.command,
                self.dump()
            );
        }
        Ok(self)
    }

    /// stdout and stderr, labelled, for error messages.
    pub fn dump(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }

    /// stdout as one JSON value per non-empty line (`relay requests --json`).
    pub fn json_lines(&self) -> Result<Vec<serde_json::Value>> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).with_context(|| {
                    format!(
                        "a stdout line of `{}` is not JSON: {l:?}\n{}",
                        self.command,
                        self.dump()
                    )
                })
            })
            .collect()
    }

    /// stdout as exactly one JSON value (`relay replay --json`).
    pub fn json(&self) -> Result<serde_json::Value> {
        let mut lines = self.json_lines()?;
        if lines.len() != 1 {
            bail!(
                "`{}` printed {} JSON lines, expected one:\n{}",
                self.command,
                lines.len(),
                self.dump()
            );
        }
        Ok(lines.remove(0))
    }
}

/// How a subcommand picks its tunnel and server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// `--server`, `--name` (if the config has one), `--token` (if it has
    /// one) and `--ca-cert` from the [`ClientConfig`].
    Flags,
    /// No tunnel flags: the defaults saved by the last `relay connect`.
    Saved,
}

/// The command line `relay SUBCOMMAND ARGS...` with `cfg`'s environment (and,
/// for [`Tunnel::Flags`], its server/name/token flags), without running it.
pub fn command(cfg: &ClientConfig, tunnel: Tunnel, subcommand: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bins::relay_client());
    cmd.arg(subcommand).args(args);
    if tunnel == Tunnel::Flags {
        cmd.arg("--server").arg(&cfg.server);
        if let Some(n) = &cfg.name {
            cmd.arg("--name").arg(n);
        }
        if let Some(t) = &cfg.token {
            cmd.arg("--token").arg(t);
        }
        if let Some(ca) = &cfg.ca_cert {
            cmd.arg("--ca-cert").arg(ca);
        }
    }
    cfg.env(&mut cmd);
    cmd
}

/// Runs `cmd` to completion within `limit`; the child is killed if it overruns.
pub async fn run_command(mut cmd: Command, limit: Duration) -> Result<CliOutput> {
    let command = format!("{:?}", cmd.as_std());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().with_context(|| format!("spawning {command}"))?;
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("`{command}` did not finish within {limit:?}"))?
        .with_context(|| format!("waiting for {command}"))?;
    let out = CliOutput {
        command,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "cli: {} -> {}\n{}",
        out.command,
        out.status,
        out.dump()
            .lines()
            .map(|l| format!("cli| {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(out)
}

/// `relay SUBCOMMAND ARGS... --server S [--name N] [--token T]` with `cfg`'s
/// config and home, within `limit`.
pub async fn relay(
    cfg: &ClientConfig,
    subcommand: &str,
    args: &[&str],
    limit: Duration,
) -> Result<CliOutput> {
    run_command(command(cfg, Tunnel::Flags, subcommand, args), limit).await
}

/// `relay SUBCOMMAND ARGS...` with `cfg`'s config and home and no tunnel
/// flags: name, server and target come from the last `relay connect`.
pub async fn relay_saved(
    cfg: &ClientConfig,
    subcommand: &str,
    args: &[&str],
    limit: Duration,
) -> Result<CliOutput> {
    run_command(command(cfg, Tunnel::Saved, subcommand, args), limit).await
}

/// The `client_id` that `relay connect` saved in `cfg`'s `config.toml` (the
/// identity for `X-Relay-Client-Id` on `--open` servers).
pub fn client_id(cfg: &ClientConfig) -> Result<String> {
    let path = cfg.home.join("config.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "client_id").then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|id| !id.is_empty())
        .with_context(|| format!("no client_id in {}:\n{text}", path.display()))
}
