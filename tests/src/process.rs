//! A child process under test. Its stdout lines are the events tests wait on;
//! stdout and stderr are mirrored to the test's stderr (shown by nextest on
//! failure) and stderr is kept for assertions and error messages.
//!
//! The child is started with `kill_on_drop`, so tokio sends SIGKILL to this
//! child's own PID when the handle drops: no stray processes, no broad kills.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// A command for `program`; with `nofile`, run under util-linux's
/// `prlimit --nofile=N:N`, which sets both limits and then execs the
/// program, so the child's PID is the program's own.
pub fn command(program: &std::path::Path, nofile: Option<u64>) -> Command {
    match nofile {
        None => Command::new(program),
        Some(n) => {
            let mut cmd = Command::new("prlimit");
            cmd.arg(format!("--nofile={n}:{n}")).arg("--").arg(program);
            cmd
        }
    }
}

/// A running (or exited) child process.
pub struct Proc {
    label: String,
    child: Child,
    pid: u32,
    stdout_rx: mpsc::UnboundedReceiver<String>,
    stdout_seen: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Woken (all waiters) whenever a stderr line arrives.
    stderr_changed: Arc<Notify>,
    stderr_task: Option<JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with piped stdout/stderr. `label` names it in logs and errors.
    pub fn spawn(label: &str, mut cmd: Command) -> Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("spawning {label}"))?;
        let pid = child.id().context("a just-spawned child has a pid")?;
        let label = format!("{label}[{pid}]");

        let stdout = child.stdout.take().context("stdout was piped")?;
        let (tx, stdout_rx) = mpsc::unbounded_channel();
        let out_label = label.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{out_label} stdout| {line}");
                // The receiver may be gone if the test is done with us.
                let _ = tx.send(line);
            }
        });

        let stderr_pipe = child.stderr.take().context("stderr was piped")?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let stderr_changed = Arc::new(Notify::new());
        let changed = stderr_changed.clone();
        let err_label = label.clone();
        let stderr_task = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr_pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{err_label} stderr| {line}");
                sink.lock()
                    .expect("stderr lock is never poisoned")
                    .push(line);
                changed.notify_waiters();
            }
        });

        Ok(Self {
            label,
            child,
            pid,
            stdout_rx,
            stdout_seen: Vec::new(),
            stderr,
            stderr_changed,
            stderr_task: Some(stderr_task),
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Every stdout line consumed so far by [`Proc::next_line`] / [`Proc::wait_line`].
    pub fn stdout_seen(&self) -> &[String] {
        &self.stdout_seen
    }

    /// The stderr lines received so far, joined.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .expect("stderr lock is never poisoned")
            .join("\n")
    }

    /// Waits (briefly) until stderr reached EOF, so `stderr_text` is complete
    /// after the process exited.
    async fn drain_stderr(&mut self) {
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }

    /// The next stdout line, within `limit`. Fails if the process closed stdout.
    pub async fn next_line(&mut self, limit: Duration) -> Result<String> {
        match tokio::time::timeout(limit, self.stdout_rx.recv()).await {
            Ok(Some(line)) => {
                self.stdout_seen.push(line.clone());
                Ok(line)
            }
            Ok(None) => {
                let status = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
                self.drain_stderr().await;
                Err(anyhow!(
                    "{} closed stdout (exit: {:?}) before the expected line.\nstdout so far:\n{}\nstderr:\n{}",
                    self.label,
                    status.ok().and_then(|s| s.ok()),
                    self.stdout_seen.join("\n"),
                    self.stderr_text()
                ))
            }
            Err(_) => Err(anyhow!(
                "{}: no stdout line within {limit:?}.\nstdout so far:\n{}\nstderr:\n{}",
                self.label,
                self.stdout_seen.join("\n"),
                self.stderr_text()
            )),
        }
    }

    /// Reads stdout lines until one satisfies `pred`; the whole wait is bounded by `limit`.
    pub async fn wait_line(
        &mut self,
        what: &str,
        limit: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = self
                .next_line(left)
                .await
                .with_context(|| format!("waiting for {what}"))?;
            if pred(&line) {
                return Ok(line);
            }
        }
    }

    /// Waits until some stderr line (already received or arriving within
    /// `limit`) satisfies `pred`, and returns it.
    pub async fn wait_stderr_line(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let wait = async {
            loop {
                let changed = self.stderr_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let found = self
                    .stderr
                    .lock()
                    .expect("stderr lock is never poisoned")
                    .iter()
                    .find(|l| pred(l))
                    .cloned();
                if let Some(line) = found {
                    return line;
                }
                changed.await;
            }
        };
        tokio::time::timeout(limit, wait).await.map_err(|_| {
            anyhow!(
                "{}: no stderr line with {what} within {limit:?}.\nstderr:\n{}",
                self.label,
                self.stderr_text()
            )
        })
    }

    /// After the process exited (or was killed): every stdout line not yet
    /// consumed, up to EOF, within `limit`; also recorded in `stdout_seen`.
    pub async fn rest_of_stdout(&mut self, limit: Duration) -> Result<Vec<String>> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stdout_rx.recv()).await {
                Ok(Some(line)) => {
                    self.stdout_seen.push(line.clone());
                    rest.push(line);
                }
                Ok(None) => return Ok(rest),
                Err(_) => bail!(
                    "{}: stdout still open after {limit:?}; read so far: {rest:?}",
                    self.label
                ),
            }
        }
    }

    /// Whether the process has exited (without blocking).
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().context("polling child status")?;
        }
        Ok(self.exit)
    }

    /// Waits for the process to exit by itself, within `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        if let Some(s) = self.exit {
            return Ok(s);
        }
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(s) => s.context("waiting for the child")?,
            Err(_) => bail!(
                "{} did not exit within {limit:?}.\nstdout so far:\n{}\nstderr:\n{}",
                self.label,
                self.stdout_seen.join("\n"),
                self.stderr_text()
            ),
        };
        self.exit = Some(status);
        self.drain_stderr().await;
        Ok(status)
    }

    /// Sends `signal` (e.g. "TERM") to this child's own PID, if it is still running.
    pub fn signal(&mut self, signal: &str) -> Result<()> {
        if self.try_exit()?.is_some() {
            bail!("{} already exited; not signalling", self.label);
        }
        let st = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .context("running kill(1)")?;
        if !st.success() {
            bail!("kill -{signal} {} failed: {st}", self.pid);
        }
        Ok(())
    }

    /// SIGKILLs this child and reaps it.
    pub async fn kill(&mut self) -> Result<()> {
        if self.try_exit()?.is_none() {
            self.child.start_kill().context("SIGKILL")?;
            let st = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .context("reaping a killed child")??;
            self.exit = Some(st);
        }
        Ok(())
    }

    /// Peak resident set size (`VmHWM`) in KiB, from /proc/PID/status.
    pub fn vm_hwm_kib(&mut self) -> Result<u64> {
        if self.try_exit()?.is_some() {
            bail!("{} exited; cannot read its VmHWM", self.label);
        }
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .with_context(|| format!("no VmHWM in {path}"))?;
        let kib = line
            .split_whitespace()
            .nth(1)
            .context("VmHWM value")?
            .parse::<u64>()
            .context("VmHWM is a number")?;
        Ok(kib)
    }
}

/// Runs `npm ci` in `dir` (a test's pinned npm packages) unless CI, or an
/// earlier run, already installed `package` there.
pub async fn npm_ci(dir: &std::path::Path, package: &str) -> Result<()> {
    if dir.join("node_modules").join(package).is_dir() {
        return Ok(());
    }
    let mut cmd = Command::new("npm");
    cmd.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
    let mut npm = Proc::spawn("npm ci", cmd).context("running npm (is Node.js installed?)")?;
    let status = npm.wait_exit(Duration::from_secs(300)).await?;
    if !status.success() {
        bail!(
            "`npm ci` in {} failed ({status}):\n{}",
            dir.display(),
            npm.stderr_text()
        );
    }
    Ok(())
}
