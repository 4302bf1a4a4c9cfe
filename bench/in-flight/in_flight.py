#!/usr/bin/env python3
"""Many slow requests in flight on one tunnel: does every one get its answer,
what happens past the stream limit, and what it costs in memory.

    python3 bench/in-flight/in_flight.py --bin-dir target/release \
        --requests 1000 --requests 1100

What it does, all on 127.0.0.1 and bounded by --max-seconds:

 1. Starts a local app (asyncio, in this process) that answers every GET
    after --delay seconds (2) with a small body, and `GET /ready` at once.
 2. Starts its own relay-server (`--listen 127.0.0.1:0 --open`, a temp data
    dir) and one `relay connect APP_PORT --name slow --no-inspect`; waits
    until /ready answers 200 through the tunnel.
 3. For each --requests N (in order): opens N visitor connections at once,
    each sending one `GET /slow/I` with Host: slow.localhost, and waits for
    every answer. Counts answers by status (a 503 is checked for
    `tunnel_busy` in its body), and samples the server's and the client's
    VmRSS every 20 ms from /proc to give the peak during the burst (VmHWM
    is the peak since start, so it is also reported).
 4. Stops what it started, by PID (SIGTERM, then SIGKILL), and removes the
    temp dir.

The stream limit is `MAX_STREAMS` in shared/src/protocol.rs (1024): up to it
every request is answered by the app; past it the server answers 503
`tunnel_busy` at once instead of queueing.

Output: progress on stderr, a JSON result on stdout (and --json FILE).
Only the Python standard library is used.
"""

import argparse
import asyncio
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time

LOOPBACK = "127.0.0.1"
NAME = "slow"
PR_SET_PDEATHSIG = 1


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die_with_parent():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:
        pass


def rss_kb(pid, key="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


async def stop_process(proc, what, grace=5.0):
    """SIGTERM, wait, SIGKILL: only ever a process this script started."""
    if proc is None or proc.returncode is not None:
        return
    try:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), grace)
    except asyncio.TimeoutError:
        log(f"{what} pid {proc.pid} ignored SIGTERM: SIGKILL")
        proc.kill()
        await proc.wait()
    except ProcessLookupError:
        pass


# --------------------------------------------------------------- local app --

class SlowApp:
    """HTTP/1.1 app: /ready answers at once, anything else after `delay`."""

    def __init__(self, delay):
        self.delay, self.in_flight, self.peak, self.served = delay, 0, 0, 0

    async def handle(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                if path != b"/ready":
                    self.in_flight += 1
                    self.peak = max(self.peak, self.in_flight)
                    try:
                        await asyncio.sleep(self.delay)
                    finally:
                        self.in_flight -= 1
                body = b"done " + path + b"\n"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
                self.served += 1
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()


async def get(port, path, timeout):
    """One GET on a new connection. Returns (status, body, seconds)."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {NAME}.localhost\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.transport.abort()
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    return (int(m.group(1)) if m else None), body, time.perf_counter() - t0


async def burst(port, n, timeout, pids):
    """N requests at once; returns counts by status and memory peaks (kB)."""
    peaks = {k: rss_kb(p) or 0 for k, p in pids.items()}
    before = dict(peaks)
    done = asyncio.Event()

    async def sample():
        while not done.is_set():
            for k, p in pids.items():
                v = rss_kb(p)
                if v and v > peaks[k]:
                    peaks[k] = v
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    t0 = time.perf_counter()

    async def one(i):
        try:
            return await get(port, f"/slow/{i}", timeout)
        except (OSError, asyncio.TimeoutError) as e:
            return type(e).__name__, b"", None

    results = await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - t0
    done.set()
    await sampler
    by_status, busy, other_503, wrong_body = {}, 0, 0, 0
    ok_s = []
    for i, (status, body, dt) in enumerate(results):
        by_status[str(status)] = by_status.get(str(status), 0) + 1
        if status == 200:
            ok_s.append(dt)
            if body != f"done /slow/{i}\n".encode():
                wrong_body += 1
        elif status == 503:
            if b"tunnel_busy" in body:
                busy += 1
            else:
                other_503 += 1
    return {
        "requests": n,
        "answered_200": by_status.get("200", 0),
        "tunnel_busy_503": busy,
        "other_503": other_503,
        "by_status": by_status,
        "wrong_body": wrong_body,
        "wall_s": round(wall, 2),
        "ok_latency_s_median": round(statistics.median(ok_s), 3) if ok_s else None,
        "ok_latency_s_max": round(max(ok_s), 3) if ok_s else None,
        "rss_kb_before": before,
        "rss_kb_peak": peaks,
        "rss_kb_after": {k: rss_kb(p) for k, p in pids.items()},
    }


async def main_async(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if 3 * max(args.requests) + 256 > hard:
        sys.exit(f"{max(args.requests)} requests need ~{3 * max(args.requests)} descriptors here; hard limit {hard}")
    work = tempfile.mkdtemp(prefix="relay-in-flight-")
    server = client = app_srv = None
    result = {"delay_s": args.delay, "runs": []}
    try:
        app = SlowApp(args.delay)
        app_srv = await asyncio.start_server(app.handle, LOOPBACK, 0, backlog=4096)
        app_port = app_srv.sockets[0].getsockname()[1]

        server = await asyncio.create_subprocess_exec(
            os.path.join(args.bin_dir, "relay-server"), "--listen", f"{LOOPBACK}:0",
            "--domain", "localhost", "--open", "--data-dir", os.path.join(work, "data"),
            *args.server_arg, stdout=asyncio.subprocess.PIPE,
            stderr=open(os.path.join(work, "server.log"), "wb"), preexec_fn=die_with_parent)
        line = await asyncio.wait_for(server.stdout.readline(), 15)
        m = re.search(rb"127\.0\.0\.1:(\d+)", line)
        if not m:
            sys.exit(f"relay-server did not start: {line!r}")
        port = int(m.group(1))
        home = os.path.join(work, "home")
        os.makedirs(home)
        env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=os.path.join(home, "config"))
        client = await asyncio.create_subprocess_exec(
            os.path.join(args.bin_dir, "relay"), "connect", str(app_port), "--name", NAME,
            "--server", f"http://{LOOPBACK}:{port}", "--no-inspect",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=open(os.path.join(work, "client.log"), "wb"), env=env, preexec_fn=die_with_parent)
        t0 = time.monotonic()
        while True:
            try:
                status, _, _ = await get(port, "/ready", 2)
                if status == 200:
                    break
            except (OSError, asyncio.TimeoutError):
                pass
            if time.monotonic() - t0 > 20:
                sys.exit("tunnel not ready within 20 s")
            await asyncio.sleep(0.05)
        pids = {"server": server.pid, "client": client.pid}
        log(f"server pid {server.pid} port {port}, client pid {client.pid}, app port {app_port}")
        await asyncio.sleep(1)
        result["idle_rss_kb"] = {k: rss_kb(p) for k, p in pids.items()}
        for n in args.requests:
            app.peak = 0
            run = await burst(port, n, args.delay + args.timeout, pids)
            run["app_peak_in_flight"] = app.peak
            log(f"{n} requests: {run['answered_200']} answered, {run['tunnel_busy_503']} tunnel_busy, "
                f"by status {run['by_status']}, wall {run['wall_s']} s, peak RSS server "
                f"{run['rss_kb_peak']['server']} kB client {run['rss_kb_peak']['client']} kB")
            result["runs"].append(run)
            await asyncio.sleep(1)
        result["hwm_kb"] = {k: rss_kb(p, "VmHWM") for k, p in pids.items()}
    finally:
        await stop_process(client, "relay client")
        await stop_process(server, "relay-server")
        if app_srv is not None:
            app_srv.close()
        shutil.rmtree(work, ignore_errors=True)
    out = json.dumps(result, indent=2)
    print(out)
    if args.json:
        with open(args.json, "w") as f:
            f.write(out + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", default="target/release", help="holds relay-server and relay")
    ap.add_argument("--requests", type=int, action="append",
                    help="requests at once, one burst per flag (default: 1000 and 1100)")
    ap.add_argument("--delay", type=float, default=2.0, help="s the app waits before answering")
    ap.add_argument("--timeout", type=float, default=30.0, help="s per request beyond --delay")
    ap.add_argument("--server-arg", action="append", default=[], help="extra relay-server flag")
    ap.add_argument("--max-seconds", type=float, default=300, help="hard bound on the whole run")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    args.requests = args.requests or [1000, 1100]
    args.bin_dir = os.path.abspath(args.bin_dir)

    async def bounded():
        task = asyncio.ensure_future(main_async(args))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        handle = loop.call_later(args.max_seconds, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            sys.exit("stopped (signal or --max-seconds); everything started was stopped")
        finally:
            handle.cancel()

    asyncio.run(bounded())


if __name__ == "__main__":
    main()
