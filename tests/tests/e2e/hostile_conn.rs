//! Hostile connections and scarce descriptors (issue 10): sockets that send
//! nothing, or an HTTP/2 preface and then nothing, a visitor that stops
//! reading, a server out of file descriptors, a client with few. The
//! server's deadlines must close what hangs, nobody may be locked out, no
//! accept loop may spin, and a client short of descriptors makes requests
//! wait rather than fail.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use relay_tests::http::{connect_h2, fetch_h2};

use super::*;

/// What a hostile connection sends before it goes silent, by kind.
const PREFACES: [(&str, &[u8]); 4] = [
    ("nothing", b""),
    ("part of the HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
    ("the HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    (
        "the HTTP/2 preface and SETTINGS (a connection with no stream)",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    ),
];

/// Raises this test process's soft descriptor limit to at least `n`.
fn need_fds(n: u64) -> Result<()> {
    let got = rlimit::increase_nofile_limit(n).context("raising RLIMIT_NOFILE")?;
    ensure!(
        got >= n,
        "this test needs {n} file descriptors; the hard limit allows {got}"
    );
    Ok(())
}

/// Reads (and drops) whatever the server sends until it closes the
/// connection, within `limit`.
async fn wait_closed(stream: &mut TcpStream, limit: Duration) -> Result<()> {
    within("the server to close the connection", limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
}

/// How many sockets process `pid` holds (its listener and connections).
fn socket_fds(pid: u32) -> Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        // A descriptor closed while we list is simply not counted.
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        n += usize::from(target.to_string_lossy().starts_with("socket:"));
    }
    Ok(n)
}

/// CPU time (user + system) of process `pid` so far, from /proc.
fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the command name, which is in parentheses: state is
    // field 3, utime and stime are fields 14 and 15 (in clock ticks).
    let rest = stat.rsplit_once(')').context("no `)` in /proc/PID/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("getconf CLK_TCK")?;
    let per_sec: u64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    Ok(Duration::from_millis(ticks * 1000 / per_sec))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_and_bare_http2_prefaces_are_closed_after_the_idle_timeout() -> Result<()> {
    /// Connections opened, a quarter of each kind in `PREFACES`.
    const SILENT: usize = 1000;
    /// Opened at a time, then waited for until the server has taken them:
    /// less than the listen backlog (128), which a burst would overflow
    /// into SYN cookies, leaving sockets the server never heard of.
    const BATCH: usize = 100;
    /// `--idle-timeout` of this server.
    const IDLE: Duration = Duration::from_secs(2);
    run_test(secs(120), async {
        need_fds(SILENT as u64 + 256)?;
        let s = Stack::builder()
            .server(|c| c.extra_args = vec!["--idle-timeout".into(), "2s".into()])
            .offline()
            .start()
            .await?;
        let server = &s.server;
        let pid = server.proc.pid();
        let base = socket_fds(pid)?;
        let mut tasks = Vec::new();
        for i in 0..SILENT {
            let (kind, bytes) = PREFACES[i % PREFACES.len()];
            let addr = server.addr();
            tasks.push(tokio::spawn(async move {
                // Counted from before the connect: the server's deadline
                // starts at its accept, which comes later, whereas this task
                // may resume late after the connect on a loaded machine.
                let opened = Instant::now();
                let mut s = TcpStream::connect(addr).await?;
                s.write_all(bytes).await?;
                wait_closed(&mut s, IDLE + secs(30))
                    .await
                    .with_context(|| format!("a connection that sent {kind}"))?;
                Ok::<_, anyhow::Error>((kind, opened.elapsed()))
            }));
            if (i + 1) % BATCH == 0 {
                let want = base + i + 1;
                poll_until("the server to take the connections", secs(20), || async {
                    (socket_fds(pid).ok()? >= want).then_some(())
                })
                .await?;
            }
        }
        let last_taken = Instant::now();
        // Less than the connections' own wait, after which they close.
        poll_until("the server to close them all", IDLE + secs(20), || async {
            (socket_fds(pid).ok()? <= base).then_some(())
        })
        .await?;
        let all_closed = last_taken.elapsed();
        let mut open_for = Vec::new();
        let mut failures = Vec::new();
        for t in tasks {
            match t.await? {
                Ok(x) => open_for.push(x),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        ensure!(
            failures.is_empty(),
            "{} of {SILENT} silent connections were not closed:\n{}",
            failures.len(),
            failures.join("\n")
        );
        for (kind, _) in PREFACES {
            let times = open_for.iter().filter(|(k, _)| *k == kind).map(|(_, t)| *t);
            let (min, max) = (times.clone().min(), times.max());
            eprintln!("connections that sent {kind}: closed after {min:?} to {max:?}");
            // Not long before the deadline: it is the idle timeout that
            // closes them (the margin is for the test's own scheduling).
            ensure!(
                min >= Some(IDLE * 3 / 4),
                "a connection that sent {kind} was closed after {min:?}, before the idle timeout {IDLE:?}"
            );
        }
        eprintln!(
            "{SILENT} silent connections: the server had closed them all {all_closed:?} \
             after it had taken the last (--idle-timeout {IDLE:?})"
        );

        // The server still answers.
        let health = Request::builder()
            .uri("/_relay/health")
            .header(HOST, format!("localhost:{}", server.port()))
            .body(empty())?;
        let f = fetch(server.addr(), health, REQ).await?;
        ensure!(f.status == StatusCode::OK, "health: {}", f.status);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_server_keeps_serving_and_lets_visitors_in_once_silent_ones_close(
) -> Result<()> {
    /// The server's descriptor limit (soft and hard): about 20 go to its
    /// stdio, runtime, listener and database.
    const SERVER_FDS: u64 = 64;
    /// Silent connections opened: more than the server can take (some of
    /// its descriptors are taken), few enough that those left waiting in
    /// its backlog fit once the first ones are closed.
    const SILENT: u64 = SERVER_FDS;
    /// `--idle-timeout`: long enough to look at the server while it is out
    /// of descriptors.
    const IDLE: Duration = Duration::from_secs(10);
    /// Most CPU the server may use while its accept loop keeps failing.
    const MAX_CPU_SHARE: f64 = 0.10;
    run_test(secs(120), async {
        let s = Stack::builder()
            .name("steady")
            .server(|c| {
                c.nofile = Some(SERVER_FDS);
                c.extra_args = vec!["--idle-timeout".into(), "10s".into()];
            })
            .start()
            .await?;
        let (origin, server, client) = (&s.origin, &s.server, &s.client);
        let uri = |p: &str| format!("http://steady.localhost:{}{p}", server.port());

        // An HTTP/2 visitor with a response in progress, so its connection
        // is not idle and stays open through what follows.
        let mut h2 = connect_h2(server.addr()).await?;
        within("the HTTP/2 connection", REQ, h2.ready()).await??;
        let req = Request::get(uri("/stream?key=held"))
            .version(http::Version::HTTP_2)
            .body(empty())?;
        let resp = within("the held response's head", REQ, h2.send_request(req)).await??;
        ensure!(
            resp.status() == StatusCode::OK,
            "/stream: {}",
            resp.status()
        );
        let mut held = resp.into_body();
        let first = within("the first chunk", REQ, held.frame())
            .await?
            .context("body ended early")??;
        ensure!(first.data_ref().map(|d| &d[..]) == Some(FIRST_CHUNK));

        // Fill the server's descriptor table; the rest wait in its backlog.
        let mut silent = Vec::new();
        for _ in 0..SILENT {
            silent.push(TcpStream::connect(server.addr()).await?);
        }
        server
            .proc
            .wait_stderr_line("a failed accept", REQ, |l| l.contains("accept failed"))
            .await?;

        // The accept loop does not spin.
        let window = secs(2);
        let before = cpu_time(server.proc.pid())?;
        tokio::time::sleep(window).await;
        let used = cpu_time(server.proc.pid())? - before;
        let share = used.as_secs_f64() / window.as_secs_f64();
        eprintln!(
            "server CPU while out of descriptors: {used:?} in {window:?} ({:.1}%)",
            share * 100.0
        );
        ensure!(
            share < MAX_CPU_SHARE,
            "the server used {used:?} of CPU in {window:?} while out of descriptors"
        );

        // Connections already open are served, through the tunnel.
        let req = Request::post(uri("/echo"))
            .version(http::Version::HTTP_2)
            .body(full("ping"))?;
        let f = fetch_h2(&mut h2, req, REQ).await?;
        ensure!(
            f.status == StatusCode::OK,
            "a new stream on an open connection while out of descriptors: {} {:?}",
            f.status,
            String::from_utf8_lossy(&f.body)
        );
        origin.release("held");
        let second = within("the second chunk", REQ, held.frame())
            .await?
            .context("body ended early")??;
        ensure!(second.data_ref().map(|d| &d[..]) == Some(SECOND_CHUNK));

        // Once the silent connections time out, a new visitor gets in.
        let req = client
            .request(Routing::Host, "POST", "/echo")
            .body(full("new"))?;
        let f = fetch(server.addr(), req, IDLE * 2 + secs(20)).await?;
        ensure!(f.status == StatusCode::OK, "a new visitor: {}", f.status);
        server
            .proc
            .wait_stderr_line("accepting again", REQ, |l| {
                l.contains("accepting connections again")
            })
            .await?;
        drop(silent);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_that_stops_reading_a_download_is_closed_after_the_write_timeout() -> Result<()> {
    /// `--write-timeout` of this server.
    const WRITE: Duration = Duration::from_secs(2);
    /// Far more than the kernel buffers between the server and the visitor.
    const SIZE: u64 = 256 << 20;
    run_test(secs(90), async {
        let mut s = Stack::builder().name("stall").server(|c| {
            c.extra_args = vec!["--write-timeout".into(), "2s".into()];
        }).start()
        .await?;
        let (target, host) = s.client.target(Routing::Host, &format!("/download?bytes={SIZE}"));
        let mut visitor = TcpStream::connect(s.server.addr()).await?;
        let head = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        // The lower bound counts from here: no write can stall before the
        // request is sent, whereas the moment the test notices the head can
        // come late on a loaded machine.
        let asked = Instant::now();
        visitor.write_all(head.as_bytes()).await?;
        // Read the response head (and whatever body came with it), then
        // stop reading and keep the connection.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let head_end = within("the download's response head", REQ, async {
            loop {
                let n = visitor.read(&mut buf).await?;
                ensure!(n > 0, "connection closed before the response head");
                got.extend_from_slice(&buf[..n]);
                if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    return Ok(end + 4);
                }
            }
        })
        .await??;
        let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
        ensure!(head.starts_with("http/1.1 200"), "download answered {head:?}");
        let id = head
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{REQUEST_ID}: ")))
            .context("no request id on the download")?
            .trim()
            .to_string();
        let stopped = Instant::now();

        // The server gives up on the visitor, and so the tunnel's stream
        // ends: the client prints the request's line.
        s.client
            .wait_request_line(&id, WRITE + secs(30))
            .await
            .context("the stalled download's stream did not end")?;
        let ended = stopped.elapsed();
        let since_asked = asked.elapsed();
        ensure!(
            since_asked >= WRITE,
            "the stream ended {since_asked:?} after the request was sent, before the write timeout {WRITE:?}"
        );
        eprintln!("the stalled download's stream ended {ended:?} after the visitor stopped reading");

        // What was buffered still arrives, then the end of the connection,
        // long before the whole body.
        let mut body = (got.len() - head_end) as u64;
        within("the end of the stalled connection", REQ, async {
            loop {
                match visitor.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => body += n as u64,
                }
            }
        })
        .await?;
        ensure!(body < SIZE, "the whole body arrived ({body} bytes) after a stall");
        eprintln!("the visitor got {body} of {SIZE} bytes");

        // The tunnel goes on serving.
        echo_ok(&s.client, Routing::Host).await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_256_descriptors_answers_1000_concurrent_requests_without_a_502() -> Result<()>
{
    /// The client's descriptor limit: macOS's default soft limit.
    const CLIENT_FDS: u64 = 256;
    /// Requests sent at once.
    const REQUESTS: usize = 1000;
    /// Requests held at the local app until this many are there at once,
    /// then answered together: the client must keep this many connections
    /// open while the others wait. Below what 256 descriptors allow.
    const HOLD: usize = 128;
    run_test(secs(180), async {
        need_fds(4 * REQUESTS as u64)?;
        let s = Stack::builder()
            .name("few-fds")
            .client(|c| c.nofile = Some(CLIENT_FDS))
            .start()
            .await?;
        let (origin, client) = (&s.origin, &s.client);

        let failed = Arc::new(AtomicUsize::new(0));
        let failed_changed = Arc::new(Notify::new());
        let mut visitors = Vec::new();
        for i in 0..REQUESTS {
            let req = client
                .request(Routing::Host, "GET", &format!("/hold?key=c{i}"))
                .body(empty())?;
            let (addr, failed, changed) =
                (client.public_addr(), failed.clone(), failed_changed.clone());
            visitors.push(tokio::spawn(async move {
                let f = fetch(addr, req, secs(120)).await;
                let status = f.as_ref().map(|f| f.status);
                if !matches!(status, Ok(StatusCode::OK)) {
                    failed.fetch_add(1, Ordering::SeqCst);
                    changed.notify_one();
                }
                f
            }));
        }

        // Answers the held requests HOLD at a time, and the last ones once
        // every other request has either arrived or failed.
        let mut arrived = HashSet::new();
        let mut held = Vec::new();
        let mut most_at_once = 0;
        loop {
            let new = {
                let seen = &arrived;
                tokio::select! {
                    r = origin.wait_request("a held request", secs(60), |r| {
                        r.starts_with("/hold?key=c") && !seen.contains(r)
                    }) => Some(r?),
                    _ = failed_changed.notified() => None,
                }
            };
            if let Some(r) = new {
                arrived.insert(r.clone());
                held.push(r);
            }
            most_at_once = most_at_once.max(held.len());
            let settled = arrived.len() + failed.load(Ordering::SeqCst);
            if held.len() >= HOLD || settled >= REQUESTS {
                for r in held.drain(..) {
                    origin.release(r.trim_start_matches("/hold?key="));
                }
            }
            if settled >= REQUESTS {
                break;
            }
        }

        let mut statuses = BTreeMap::new();
        for v in visitors {
            let status = match v.await? {
                Ok(f) => f.status.to_string(),
                Err(e) => format!("error: {e:#}"),
            };
            *statuses.entry(status).or_insert(0) += 1;
        }
        eprintln!(
            "{REQUESTS} requests through a client with {CLIENT_FDS} descriptors \
             (up to {most_at_once} held at once): {statuses:?}"
        );
        ensure!(
            statuses.get("200 OK") == Some(&REQUESTS),
            "not every request was answered 200: {statuses:?}"
        );
        Ok(())
    })
    .await
}
