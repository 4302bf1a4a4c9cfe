//! `relay replay` with edits (SPEC "Replay"): `--header`, `--remove-header`,
//! `--method`, `--path`, `--body @FILE|-|TEXT` and `--edit` reach the local
//! app exactly (checked in the origin's `/inbox`, byte for byte), and a
//! bad edit sends nothing.

use std::process::Stdio;

use relay_tests::capture_api::wait_listed;
use relay_tests::cli::{self, CliOutput, Tunnel};
use relay_tests::origin::Received;
use tokio::io::AsyncWriteExt;

use super::*;

/// A captured `POST /inbox/orig` with repeated and removable headers.
async fn captured(s: &Stack) -> Result<String> {
    let req = s
        .client
        .request(Routing::Host, "POST", "/inbox/orig")
        .header(CONTENT_TYPE, "application/json")
        .header("x-keep", "1")
        .header("x-tag", "a")
        .header("x-tag", "b")
        .header("cookie", "s=1")
        .body(full(&br#"{"id":41}"#[..]))?;
    let id = visit_ok(&s.client, req).await?;
    wait_listed(&s.client.cfg, &[&id]).await?;
    Ok(id)
}

/// `relay replay ARGS...` with `VISUAL` and `EDITOR` unset, except as `env` sets them.
async fn replay_with_env(s: &Stack, args: &[&str], env: &[(&str, &str)]) -> Result<CliOutput> {
    let mut cmd = cli::command(&s.client.cfg, Tunnel::Flags, "replay", args);
    cmd.env_remove("VISUAL").env_remove("EDITOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cli::run_command(cmd, CLI).await
}

/// The one request `/inbox` received since it held `before`.
fn received_one(s: &Stack, before: usize) -> Result<Received> {
    let inbox = s.origin.inbox();
    ensure!(
        inbox.len() == before + 1,
        "the local app should have received one replay; its inbox: {:?}",
        inbox
    );
    Ok(inbox[before].clone())
}

fn ensure_header(r: &Received, name: &str, want: &[&str]) -> Result<()> {
    let got: Vec<String> = r
        .header(name)
        .into_iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    ensure!(
        got == want,
        "{name} should be {want:?} at the local app, was {got:?}; all: {:?}",
        r.headers
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_flags_reach_the_local_app_byte_for_byte() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("edit-flags").start().await?;
        let id = captured(&s).await?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("body.bin");
        let binary: Vec<u8> = (0..=255u8).rev().chain(*b"\r\n\r\n\0end").collect();
        std::fs::write(&file, &binary)?;
        let body_arg = format!("@{}", file.display());

        let before = s.origin.inbox().len();
        let out = cli::relay(
            &s.client.cfg,
            "replay",
            &[
                &id,
                "--header",
                "X-TAG: new",
                "--header",
                "x-added: yes",
                "--remove-header",
                "COOKIE",
                "--method",
                "PUT",
                "--path",
                "/inbox/edited?v=2",
                "--body",
                &body_arg,
                "--json",
            ],
            CLI,
        )
        .await?;
        out.ensure_success()?;
        check_replay_result(&out.json()?, &id, Some(200), "delivered")?;
        let r = received_one(&s, before)?;
        ensure!(
            r.method == "PUT" && r.path == "/inbox/edited?v=2",
            "{} {}",
            r.method,
            r.path
        );
        ensure!(r.body[..] == binary[..], "the body differs: {:?}", r.body);
        ensure_header(&r, "x-tag", &["new"])?;
        ensure_header(&r, "x-added", &["yes"])?;
        ensure_header(&r, "cookie", &[])?;
        ensure_header(&r, "x-keep", &["1"])?;
        ensure_header(&r, "content-type", &["application/json"])?;
        ensure_header(&r, "content-length", &[&binary.len().to_string()])?;

        // --body TEXT, and no edit keeps the capture.
        let before = s.origin.inbox().len();
        cli::relay(&s.client.cfg, "replay", &[&id, "--body", "-x text"], CLI)
            .await?
            .ensure_success()?;
        let r = received_one(&s, before)?;
        ensure!(
            r.method == "POST" && r.path == "/inbox/orig" && r.body == "-x text",
            "{} {} {:?}",
            r.method,
            r.path,
            r.body
        );
        ensure_header(&r, "x-tag", &["a", "b"])?;
        ensure_header(&r, "content-length", &["7"])?;

        // --body - reads standard input to its end.
        let before = s.origin.inbox().len();
        let mut cmd = cli::command(
            &s.client.cfg,
            Tunnel::Flags,
            "replay",
            &[&id, "--body", "-"],
        );
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let mut stdin = child.stdin.take().context("piped stdin")?;
        stdin.write_all(&binary).await?;
        drop(stdin);
        let done = within("relay replay --body -", CLI, child.wait_with_output()).await??;
        ensure!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        let r = received_one(&s, before)?;
        ensure!(r.body[..] == binary[..], "stdin body differs: {:?}", r.body);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_opens_the_editor_and_sends_what_it_saved() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("edit-editor").start().await?;
        let id = captured(&s).await?;
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("edit.sh");
        // GNU sed -i; the `x-tag: b` line goes, the body's id changes.
        std::fs::write(
            &script,
            "sed -i -e 's#^POST /inbox/orig#PATCH /inbox/from-editor#' -e '/^x-tag: b/d' \
             -e 's/41/42/' \"$1\"\n",
        )?;
        let editor = format!("sh {}", script.display());

        let before = s.origin.inbox().len();
        // EDITOR split on whitespace; an empty VISUAL counts as unset.
        let out = replay_with_env(
            &s,
            &[&id, "--edit", "--header", "x-added: 1", "--json"],
            &[("EDITOR", &editor), ("VISUAL", "")],
        )
        .await?;
        out.ensure_success()?;
        check_replay_result(&out.json()?, &id, Some(200), "delivered")?;
        let r = received_one(&s, before)?;
        ensure!(
            r.method == "PATCH" && r.path == "/inbox/from-editor",
            "{} {}",
            r.method,
            r.path
        );
        ensure!(r.body == r#"{"id":42}"#, "body {:?}", r.body);
        ensure_header(&r, "x-tag", &["a"])?;
        ensure_header(&r, "x-added", &["1"])?;
        ensure_header(&r, "content-length", &["9"])?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_edit_sends_nothing() -> Result<()> {
    run_test(secs(60), async {
        let s = Stack::builder().name("edit-bad").start().await?;
        let id = captured(&s).await?;
        let dir = tempfile::tempdir()?;
        let bad_line = dir.path().join("bad.sh");
        std::fs::write(&bad_line, "sed -i 's/^x-keep: 1/x-keep 1/' \"$1\"\n")?;
        let fails = dir.path().join("fails.sh");
        std::fs::write(&fails, "exit 3\n")?;
        let missing = format!("@{}", dir.path().join("missing.bin").display());
        let seen = s.origin.requests().len();

        /// What is wrong, the flags, the environment, what stderr says.
        type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, String)>, &'a str);
        let cases: Vec<Case> = vec![
            (
                "a header line without a colon",
                vec!["--edit"],
                vec![("EDITOR", format!("sh {}", bad_line.display()))],
                "\"x-keep 1\", has no colon",
            ),
            (
                "an editor that fails",
                vec!["--edit"],
                vec![("EDITOR", format!("sh {}", fails.display()))],
                "exited with exit status: 3",
            ),
            (
                "no editor",
                vec!["--edit"],
                vec![],
                "set $VISUAL or $EDITOR",
            ),
            (
                "a missing --body file",
                vec!["--body", &missing],
                vec![],
                "missing.bin",
            ),
        ];
        for (what, flags, env, says) in cases {
            let mut args = vec![id.as_str()];
            args.extend(flags);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let out = replay_with_env(&s, &args, &env).await?;
            out.ensure_failure()?;
            ensure!(
                out.stderr.contains(says),
                "{what}: stderr should say {says:?}:\n{}",
                out.dump()
            );
            // The invalid text is kept for the user; not for this test.
            if let Some((_, kept)) = out.stderr.split_once("your text is kept in ") {
                let _ = std::fs::remove_file(kept.split(')').next().unwrap_or_default());
            }
            ensure!(
                s.origin.requests().len() == seen,
                "{what}: nothing may reach the local app; it saw {:?}",
                s.origin.requests()
            );
        }
        Ok(())
    })
    .await
}
