//! The `relay connect` processes running with a config file, so that
//! `relay requests` and `relay replay` act for the tunnel being served
//! right now rather than the last one started (which may be a run that has
//! ended since, or another terminal's).
//!
//! Each `relay connect` writes `running/<pid>.json` next to the config file
//! (name, server, local target, start time) and removes it when it exits;
//! `relay start` with several tunnels writes `running/<pid>-<name>.json`
//! for each.
//! A file whose process is gone (a `kill -9`, a crash, a reboot) is stale:
//! readers skip it and remove it. The files hold no secrets.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What one running `relay connect` serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub pid: u32,
    pub name: String,
    /// `http(s)://host[:port]` of the server.
    pub server: String,
    /// The local app, `http://host:port`.
    pub target: String,
    /// RFC 3339, UTC, with milliseconds: sorts as text.
    pub started: String,
}

impl Running {
    /// An entry for this process, started now.
    pub fn now(name: String, server: String, target: String) -> Self {
        Self {
            pid: std::process::id(),
            name,
            server,
            target,
            started: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        }
    }
}

/// The directory of the running files for `config` (the config file).
pub fn dir_for(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("running")
}

/// A running file, removed when dropped (so on every way `relay connect`
/// returns; a process that is killed leaves a stale file behind).
#[derive(Debug)]
pub struct RunningFile {
    path: PathBuf,
}

impl RunningFile {
    /// Writes `entry` to `dir/<pid>.json`, atomically (temp file + rename),
    /// so a reader never sees half a file.
    pub fn create(dir: &Path, entry: &Running) -> anyhow::Result<Self> {
        Self::create_as(dir, &entry.pid.to_string(), entry)
    }

    /// [`Self::create`] as `dir/<stem>.json`: `relay start` writes
    /// `<pid>-<name>.json`, one per tunnel of the process.
    pub fn create_as(dir: &Path, stem: &str, entry: &Running) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{stem}.json"));
        let tmp = dir.join(format!("{stem}.json.tmp"));
        let text = serde_json::to_vec(entry)?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunningFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The `relay connect` processes running with this config, newest first.
/// Stale files are removed; unreadable ones are skipped (and left alone:
/// they may be another version's).
pub fn list(dir: &Path) -> Vec<Running> {
    list_with(dir, alive)
}

/// [`list`] with the liveness check given, for tests.
fn list_with(dir: &Path, alive: impl Fn(u32) -> bool) -> Vec<Running> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        let Ok(running) = serde_json::from_slice::<Running>(&text) else {
            continue;
        };
        if alive(running.pid) {
            found.push(running);
        } else {
            tracing::debug!(path = %path.display(), "removing a stale running file");
            let _ = std::fs::remove_file(&path);
        }
    }
    found.sort_by(|a, b| b.started.cmp(&a.started).then(b.pid.cmp(&a.pid)));
    found
}

/// Whether process `pid` exists. Where this cannot be told, it is assumed
/// to: a stale file kept is a wrong default, a live one removed is worse.
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(target_os = "linux")]
    {
        Path::new("/proc").join(pid.to_string()).exists()
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map_or(true, |s| s.success())
    }
    #[cfg(not(unix))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: u32, name: &str, started: &str) -> Running {
        Running {
            pid,
            name: name.into(),
            server: "http://localhost:8080".into(),
            target: "http://localhost:4000".into(),
            started: started.into(),
        }
    }

    #[test]
    fn lists_the_live_newest_first_and_removes_the_stale() {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().join("running");
        let old =
            RunningFile::create(&d, &entry(11, "old", "2026-01-01T10:00:00.000Z")).expect("writes");
        let new =
            RunningFile::create(&d, &entry(12, "new", "2026-01-01T11:00:00.000Z")).expect("writes");
        let gone = RunningFile::create(&d, &entry(13, "gone", "2026-01-01T12:00:00.000Z"))
            .expect("writes");
        std::fs::write(d.join("junk.json"), "{").expect("writes");
        let listed = list_with(&d, |pid| pid != 13);
        let names: Vec<&str> = listed.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["new", "old"]);
        assert!(!gone.path().exists(), "the stale file is removed");
        assert!(
            d.join("junk.json").exists(),
            "an unreadable file is left alone"
        );
        drop(new);
        assert!(!d.join("12.json").exists(), "dropping removes the file");
        assert_eq!(
            list_with(&d, |_| true),
            [entry(11, "old", "2026-01-01T10:00:00.000Z")]
        );
        drop(old);
    }

    #[test]
    fn a_missing_dir_is_nothing_running_and_this_process_is_alive() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(list(&dir.path().join("nope")).is_empty());
        assert!(alive(std::process::id()));
        let me = Running::now("n".into(), "http://s".into(), "http://t".into());
        assert_eq!(me.pid, std::process::id());
        assert!(me.started.ends_with('Z') && me.started.contains('.'));
        assert_eq!(
            dir_for(Path::new("/home/u/.config/relay/config.toml")),
            Path::new("/home/u/.config/relay/running")
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_exited_process_is_not_alive() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("runs true");
        let pid = child.id();
        child.wait().expect("reaps it");
        // The pid could be reused by now, but hardly within this test.
        assert!(!alive(pid));
    }
}
