//! `scripts/demo`, the README's first run: a server and a tunnel in one
//! terminal. A request reaches the app; SIGINT to the script stops both
//! processes (checked by the server's PID and by the script's stdout
//! closing, which the tunnel shares); the server's data went to the user's
//! data directory, not the current folder.

use std::net::SocketAddr;
use std::path::PathBuf;

use relay_tests::process::Proc;

use super::*;

/// Whether a process with this PID exists (`kill -0`; signals nothing).
fn alive(pid: u32) -> Result<bool> {
    Ok(std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .context("running kill -0")?
        .success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_a_request_and_ctrl_c_leaves_no_server() -> Result<()> {
    run_test(secs(60), async {
        let sandbox = Sandbox::new()?;
        let home = sandbox.subdir("home")?;
        let data_home = sandbox.subdir("data-home")?;
        let cwd = sandbox.subdir("cwd")?;
        let origin = Origin::start().await?;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo");
        let bin_dir = relay_tests::bins::relay_server()
            .parent()
            .context("the binary's directory")?
            .to_path_buf();

        let mut cmd = tokio::process::Command::new(&script);
        cmd.arg(origin.port().to_string())
            .arg("--no-inspect")
            .current_dir(&cwd)
            .env("RELAY_BIN_DIR", &bin_dir)
            .env("RELAY_DEMO_LISTEN", "127.0.0.1:0")
            .env("HOME", &home)
            .env("XDG_DATA_HOME", &data_home)
            .env("XDG_CONFIG_HOME", &home)
            .env("RELAY_CONFIG", home.join("config.toml"))
            .env_remove("RELAY_DATA_DIR")
            .env_remove("RELAY_SERVER")
            .env_remove("RELAY_TOKEN");
        let mut demo = Proc::spawn("scripts/demo", cmd)?;

        // "relay-server (pid 123) on http://127.0.0.1:PORT; Ctrl-C stops it ..."
        let started = demo
            .wait_line("the server's pid and address", secs(30), |l| {
                l.starts_with("relay-server (pid ")
            })
            .await?;
        let (pid, rest) = started["relay-server (pid ".len()..]
            .split_once(") on http://")
            .with_context(|| format!("unexpected line {started:?}"))?;
        let server_pid: u32 = pid.parse().context("the server's pid")?;
        let addr: SocketAddr = rest
            .split(';')
            .next()
            .context("address")?
            .parse()
            .with_context(|| format!("the server's address in {started:?}"))?;

        // The path-routed URL, the form the README tells code to use.
        let prefix = format!("Forwarding  http://localhost:{}/t/", addr.port());
        let line = demo
            .wait_line("the path-routed URL", secs(30), |l| l.starts_with(&prefix))
            .await?;
        let path_url = line[prefix.len() - "/t/".len()..]
            .split_whitespace()
            .next()
            .context("the URL")?
            .to_owned();
        let req = Request::get(format!("{path_url}echo?demo=1"))
            .header(HOST, format!("localhost:{}", addr.port()))
            .body(empty())?;
        let f = fetch(addr, req, REQ).await?;
        ensure!(
            f.status == StatusCode::OK,
            "through the demo's tunnel: {} {:?}",
            f.status,
            String::from_utf8_lossy(&f.body)
        );
        origin
            .wait_request("the demo request", REQ, |r| r == "/echo?demo=1")
            .await?;

        // The data dir is the user's, never the folder the demo ran in.
        ensure!(
            data_home.join("relay-server").join("relay.db").is_file(),
            "no relay.db in XDG_DATA_HOME/relay-server"
        );
        ensure!(
            std::fs::read_dir(&cwd)?.next().is_none(),
            "the demo wrote into the current folder"
        );

        demo.signal("INT")?;
        let status = demo.wait_exit(secs(20)).await?;
        ensure!(
            status.code() == Some(130),
            "scripts/demo after SIGINT: {status}"
        );
        ensure!(
            !alive(server_pid)?,
            "relay-server (pid {server_pid}) outlived scripts/demo"
        );
        // relay connect shares the script's stdout: EOF means it is gone too.
        demo.rest_of_stdout(secs(10))
            .await
            .context("relay connect outlived scripts/demo")?;
        ensure!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "something still listens on the demo server's {addr}"
        );
        Ok(())
    })
    .await
}
