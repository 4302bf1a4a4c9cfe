#!/usr/bin/env python3
"""Idle-tunnel load for relay-server: memory, new-tunnel latency and idle CPU
with N tunnels connected and doing nothing but keep-alive PINGs.

    python3 idle_tunnels.py --server-bin target/release/relay-server --tunnels 10000

What it does, all on 127.0.0.1 and bounded by --max-seconds:

 1. Starts its own relay-server (`--listen 127.0.0.1:0 --domain localhost
    --open --data-dir <temp dir>`), reads the bound port from the server's
    "listening on" line, and remembers the server's PID.
 2. Baseline: the server's VmRSS with no tunnel, and the time a new tunnel
    takes to connect and serve (see "probe" below).
 3. Starts --procs loader processes (this same file, `worker` mode). Together
    they open N tunnels: each a WebSocket to /_relay/v1/connect that sends the
    JSON hello {"protocol":1,"software":"idle","client_id":...,"name":...},
    waits for {"type":"welcome"}, and then only sends a PING frame (binary
    message: kind 7, stream 0, u64 nonce) every --ping-interval seconds (15,
    as `relay connect` does) so the server's 45 s idle timeout keeps it. The
    first PING of each tunnel is at a random point of the interval, so the
    PINGs are spread evenly over time. Each loader raises its soft
    RLIMIT_NOFILE to the hard limit (one descriptor per tunnel).
 4. At N tunnels: waits --settle seconds (longer than one PING interval, so
    every tunnel has been through a PING/PONG), reads VmRSS/VmHWM, then the
    server's CPU (utime+stime from /proc/PID/stat) over --cpu-window seconds,
    VmRSS again, and runs the probe again.
 5. Stops everything it started, by PID: the loaders (stdin closed, then
    SIGTERM, then SIGKILL), an optional real `relay` client, and the server
    (SIGTERM, then SIGKILL). The temp data dir is removed unless --keep.

Probe ("does a new tunnel still connect and serve?"): this script opens one
more tunnel itself and times TCP connect -> HTTP upgrade -> hello -> welcome;
that tunnel answers every REQUEST_HEAD with a 200 RESPONSE_HEAD carrying an
inline body, and the script times --probe-requests GETs (a new TCP
connection each) to http://127.0.0.1:PORT/ with Host: NAME.localhost. It does
that --probes times with fresh tunnels. With --client-bin it also starts the
real `relay connect` against a throw-away local HTTP server and times its
start -> first 200 through the tunnel (as the tunnel bench's "ready").

Output: progress on stderr, one JSON summary on stdout (and --json FILE).
Only the Python standard library is used.
"""

import argparse
import asyncio
import base64
import ctypes
import hashlib
import heapq
import http.server
import json
import os
import random
import re
import resource
import shutil
import signal
import ssl
import subprocess
import statistics
import struct
import sys
import tempfile
import threading
import time

LOOPBACK = "127.0.0.1"
CONNECT_PATH = "/_relay/v1/connect"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PROTOCOL = 1

# relay frame kinds (docs/protocol.md)
KIND_REQUEST_HEAD = 1
KIND_RESPONSE_HEAD = 2
KIND_PING = 7
KIND_PONG = 8
FLAG_INLINE_BODY = 0x02

# WebSocket opcodes
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """preexec_fn: the child gets SIGTERM if this script dies, however it dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:
        pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def raise_nofile():
    """Soft RLIMIT_NOFILE -> hard. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ---------------------------------------------------------------- WebSocket --

def _mask(mask, data):
    if not data:
        return b""
    reps = mask * (len(data) // 4 + 1)
    return (int.from_bytes(data, "big") ^ int.from_bytes(reps[: len(data)], "big")).to_bytes(len(data), "big")


def ws_frame(opcode, payload):
    """One final, masked client frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = os.urandom(4)
    return head + mask + _mask(mask, payload)


async def ws_read(reader):
    """One whole message: (opcode, payload). Control frames come back as is."""
    parts, first_op = [], None
    while True:
        b0, b1 = await reader.readexactly(2)
        op, n = b0 & 0x0F, b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await reader.readexactly(8))
        mask = await reader.readexactly(4) if b1 & 0x80 else None
        payload = await reader.readexactly(n) if n else b""
        if mask:
            payload = _mask(mask, payload)
        if op >= 0x8:                      # control frames are never fragmented
            return op, payload
        if op != OP_CONT:
            first_op = op
        parts.append(payload)
        if b0 & 0x80:
            return first_op, b"".join(parts)


def ping_frame(nonce):
    return ws_frame(OP_BINARY, struct.pack("!BIQ", KIND_PING, 0, nonce))


class Tunnel:
    __slots__ = ("name", "reader", "writer", "alive", "task")

    def __init__(self, name, reader, writer):
        self.name, self.reader, self.writer = name, reader, writer
        self.alive, self.task = True, None

    def close(self):
        self.alive = False
        try:
            self.writer.transport.abort()
        except Exception:
            pass


class Refused(Exception):
    pass


# Set by --tls (controller) / --ca-file (worker): the TLS context every
# connection to the server uses; None for plain TCP.
TLS_CTX = None


def client_tls(ca_file):
    """A client context that trusts only the run's self-signed certificate.
    Session tickets off: every tunnel does a full handshake, as distinct
    clients would."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


async def connect(port):
    if TLS_CTX is None:
        return await asyncio.open_connection(LOOPBACK, port)
    return await asyncio.open_connection(LOOPBACK, port, ssl=TLS_CTX, server_hostname="localhost")


async def open_tunnel(port, name, client_id):
    """TCP connect (and TLS), upgrade, hello, welcome. Returns (Tunnel, welcome dict)."""
    reader, writer = await connect(port)
    try:
        key = base64.b64encode(os.urandom(16))
        writer.write(
            b"GET " + CONNECT_PATH.encode() + b" HTTP/1.1\r\n"
            b"Host: " + f"{LOOPBACK}:{port}".encode() + b"\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise Refused(f"upgrade answered {status.decode(errors='replace')!r}")
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        if b"sec-websocket-accept: " + accept.lower() not in head.lower():
            raise Refused("bad Sec-WebSocket-Accept")
        hello = {"protocol": PROTOCOL, "software": "idle", "client_id": client_id, "name": name}
        writer.write(ws_frame(OP_TEXT, json.dumps(hello).encode()))
        while True:
            op, payload = await ws_read(reader)
            if op == OP_PING:
                writer.write(ws_frame(OP_PONG, payload))
                continue
            if op != OP_TEXT:
                raise Refused(f"expected the server's JSON hello, got opcode {op}")
            msg = json.loads(payload)
            if msg.get("type") != "welcome":
                raise Refused(f"refused: {msg.get('reason')}: {msg.get('message')}")
            return Tunnel(name, reader, writer), msg
    except BaseException:
        writer.transport.abort()
        raise


async def read_loop(t, stats, on_frame=None):
    """Reads a tunnel until it ends; answers WebSocket pings; counts PONGs."""
    try:
        while True:
            op, payload = await ws_read(t.reader)
            if op == OP_BINARY:
                if payload[:1] == bytes([KIND_PONG]):
                    stats["pongs"] += 1
                elif on_frame is not None:
                    on_frame(payload)
            elif op == OP_PING:
                t.writer.write(ws_frame(OP_PONG, payload))
            elif op == OP_CLOSE:
                stats["close_codes"].append(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None)
                break
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        pass
    except asyncio.CancelledError:
        raise
    if t.alive:
        stats["closed"] += 1
    t.close()


# ------------------------------------------------------------------ worker --

async def worker(args):
    """Loader process: opens its share of tunnels, keeps them alive with PINGs,
    reports JSON lines on stdout, exits when stdin closes, on SIGTERM, or at
    --max-seconds."""
    global TLS_CTX
    raise_nofile()
    if args.ca_file:
        TLS_CTX = client_tls(args.ca_file)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(args.max_seconds, stop.set)

    # Parent gone or asked us to stop: stdin reaches EOF.
    async def watch_stdin():
        r = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(r), sys.stdin)
        while await r.read(1024):
            pass
        stop.set()
    stdin_task = asyncio.create_task(watch_stdin())

    stats = {"up": 0, "failed": 0, "retries": 0, "closed": 0, "pings": 0, "pongs": 0,
             "close_codes": [], "errors": {}}
    tunnels = []
    due = []                                   # heap of (time, seq, tunnel)
    sem = asyncio.Semaphore(args.concurrency)

    async def open_one(i):
        name = f"{args.prefix}-w{args.worker_id}-{i}"
        client_id = f"{args.prefix}-{os.getpid()}-{args.worker_id}-{i}"
        for attempt in range(args.retries + 1):
            if stop.is_set():
                return
            async with sem:
                try:
                    t, _ = await asyncio.wait_for(open_tunnel(args.port, name, client_id), args.handshake_timeout)
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, Refused, ValueError) as e:
                    key = type(e).__name__ + (f": {e}" if isinstance(e, Refused) else "")
                    stats["errors"][key] = stats["errors"].get(key, 0) + 1
                    if attempt < args.retries:
                        stats["retries"] += 1
                        await asyncio.sleep(0.2 * (attempt + 1))
                    continue
            tunnels.append(t)
            t.task = asyncio.create_task(read_loop(t, stats))
            heapq.heappush(due, (time.monotonic() + random.uniform(0, args.ping_interval), id(t), t))
            stats["up"] += 1
            return
        stats["failed"] += 1

    async def pinger():
        nonce = 0
        while not stop.is_set():
            now = time.monotonic()
            while due and due[0][0] <= now:
                when, key, t = heapq.heappop(due)
                if not t.alive:
                    continue
                nonce += 1
                try:
                    t.writer.write(ping_frame(nonce))
                    stats["pings"] += 1
                except Exception:
                    t.close()
                    continue
                heapq.heappush(due, (when + args.ping_interval, key, t))
            await asyncio.sleep(0.05)

    def report(phase):
        alive = sum(1 for t in tunnels if t.alive)
        msg = dict(stats, phase=phase, alive=alive, worker=args.worker_id, pid=os.getpid())
        msg["close_codes"] = {str(c): msg["close_codes"].count(c) for c in set(msg["close_codes"])}
        print(json.dumps(msg), flush=True)

    async def reporter():
        while not stop.is_set():
            report("run")
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    ping_task = asyncio.create_task(pinger())
    rep_task = asyncio.create_task(reporter())
    opening = asyncio.gather(*(open_one(i) for i in range(args.count)))
    await opening
    report("opened")
    await stop.wait()
    report("stopping")
    for t in tunnels:
        t.close()
    for task in [ping_task, rep_task, stdin_task] + [t.task for t in tunnels if t.task]:
        task.cancel()
    await asyncio.sleep(0)


# ------------------------------------------------------------------- probe --

def response_head(status=200, body=b"ok\n"):
    headers = [(b"content-type", b"text/plain")]
    out = struct.pack("!BH", FLAG_INLINE_BODY, status) + struct.pack("!H", len(headers))
    for k, v in headers:
        out += struct.pack("!H", len(k)) + k + struct.pack("!I", len(v)) + v
    return out + body


async def http_get(port, host, timeout=10.0):
    """GET / with Connection: close on a new TCP connection. Returns (status, seconds)."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.wait_for(connect(port), timeout)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.transport.abort()
    dt = time.perf_counter() - t0
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return (int(m.group(1)) if m else None), dt, data


async def probe(port, label, n_probes, n_requests):
    """Fresh tunnels that answer 200: connect time and request times (ms)."""
    connect_ms, first_ms, req_ms, bad = [], [], [], []
    both_ms = []                 # connect + first request, per probe
    for k in range(n_probes):
        name = f"probe-{label}-{k}-{os.getpid()}"
        t0 = time.perf_counter()
        t, welcome = await asyncio.wait_for(open_tunnel(port, name, f"probe-{name}"), 30)
        connect_ms.append((time.perf_counter() - t0) * 1000)
        stats = {"pongs": 0, "closed": 0, "close_codes": []}

        def on_frame(payload, t=t):
            if payload[0] == KIND_REQUEST_HEAD:
                stream = payload[1:5]
                t.writer.write(ws_frame(OP_BINARY, bytes([KIND_RESPONSE_HEAD]) + stream + response_head()))
        t.task = asyncio.create_task(read_loop(t, stats, on_frame))
        host = f"{name}.localhost:{port}"
        try:
            for i in range(n_requests):
                status, dt, data = await http_get(port, host)
                if status != 200 or not data.endswith(b"ok\n"):
                    bad.append(f"{status} {data[:120]!r}")
                (first_ms if i == 0 else req_ms).append(dt * 1000)
                if i == 0:
                    both_ms.append(connect_ms[-1] + dt * 1000)
        finally:
            t.writer.write(ws_frame(OP_CLOSE, struct.pack("!H", 1000)))
            await asyncio.sleep(0.05)
            t.close()
            t.task.cancel()
    return {
        "probes": n_probes,
        "connect_ms_median": round(statistics.median(connect_ms), 2),
        "connect_ms_max": round(max(connect_ms), 2),
        "first_request_ms_median": round(statistics.median(first_ms), 2),
        "first_request_ms_max": round(max(first_ms), 2),
        "connect_plus_first_request_ms_median": round(statistics.median(both_ms), 2),
        "connect_plus_first_request_ms_max": round(max(both_ms), 2),
        "request_ms_median": round(statistics.median(req_ms), 2) if req_ms else None,
        "request_ms_p90": round(statistics.quantiles(req_ms, n=10)[-1], 2) if len(req_ms) >= 10 else None,
        "non_200": bad,
    }


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


async def probe_real_client(client_bin, port, workdir, ca_file=None, timeout=30.0):
    """Start `relay connect` to a throw-away local HTTP server; ms to first 200."""
    app = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Ok)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    home = os.path.join(workdir, "client-home")
    os.makedirs(home, exist_ok=True)
    name = f"probe-real-{os.getpid()}"
    env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=os.path.join(home, "config"))
    t0 = time.perf_counter()
    logf = open(os.path.join(workdir, f"client-{int(t0)}.log"), "wb")
    proc = await asyncio.create_subprocess_exec(
        client_bin, "connect", str(app.server_address[1]),
        "--server", f"https://localhost:{port}" if ca_file else f"http://{LOOPBACK}:{port}",
        *(["--ca-cert", ca_file] if ca_file else []), "--name", name, "--no-inspect", stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
        preexec_fn=die_with_parent)
    try:
        last = None
        while time.perf_counter() - t0 < timeout:
            try:
                status, _, _ = await http_get(port, f"{name}.localhost:{port}", timeout=2)
                last = status
                if status == 200:
                    return {"ready_ms": round((time.perf_counter() - t0) * 1000, 1), "client_pid": proc.pid}
            except (OSError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.02)
        return {"ready_ms": None, "error": f"no 200 within {timeout}s (last status {last})"}
    finally:
        await stop_process(proc, "relay client")
        logf.close()
        app.shutdown()
        app.server_close()


# -------------------------------------------------------------- controller --

def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[k] = int(v.split()[0])
    out.update(proc_pss(pid))
    return out


def proc_pss(pid):
    """Pss, Pss_Anon and Anonymous from smaps_rollup (kB): the heap's share
    without the binary's shared pages."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Pss", "Pss_Anon", "Anonymous"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK       # utime + stime


def proc_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


async def stop_process(proc, what, grace=5.0):
    """SIGTERM, wait, SIGKILL: only ever a process this script started."""
    if proc.returncode is not None:
        return
    try:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), grace)
    except asyncio.TimeoutError:
        log(f"{what} pid {proc.pid} ignored SIGTERM for {grace}s: SIGKILL")
        proc.kill()
        await proc.wait()
    except ProcessLookupError:
        pass


def make_cert(workdir):
    """A self-signed P-256 certificate for localhost (openssl). Returns
    (cert, key) paths."""
    cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,DNS:*.localhost,IP:127.0.0.1",
         # Not a CA: `relay connect --ca-cert` refuses a CA certificate
         # used as the server's own.
         "-addext", "basicConstraints=critical,CA:FALSE",
         "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


async def start_server(server_bin, data_dir, extra):
    logf = open(os.path.join(data_dir, "server.log"), "wb")
    proc = await asyncio.create_subprocess_exec(
        server_bin, "--listen", f"{LOOPBACK}:0", "--domain", "localhost", "--open",
        "--data-dir", os.path.join(data_dir, "data"), *extra,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=logf,
        preexec_fn=die_with_parent)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
    except asyncio.TimeoutError:
        line = b""
    m = re.search(rb"listening on https?://127\.0\.0\.1:(\d+)", line)
    if not m:
        await stop_process(proc, "relay-server")
        raise SystemExit(f"relay-server did not print its address (got {line!r}); log: {data_dir}/server.log")
    # Keep draining stdout so the server never blocks on a full pipe.
    async def drain():
        while await proc.stdout.read(4096):
            pass
    asyncio.create_task(drain())
    return proc, int(m.group(1)), logf


class Workers:
    def __init__(self):
        self.procs, self.last, self.tasks = [], {}, []

    async def start(self, args, port):
        base, extra = divmod(args.tunnels, args.procs)
        for w in range(args.procs):
            count = base + (1 if w < extra else 0)
            cmd = [sys.executable, os.path.abspath(__file__), "worker", "--port", str(port),
                   "--worker-id", str(w), "--count", str(count), "--prefix", args.prefix,
                   "--concurrency", str(args.concurrency), "--ping-interval", str(args.ping_interval),
                   "--handshake-timeout", str(args.handshake_timeout), "--retries", str(args.retries),
                   "--max-seconds", str(args.max_seconds)]
            if args.ca_file:
                cmd += ["--ca-file", args.ca_file]
            p = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE,
                                                     stdout=asyncio.subprocess.PIPE,
                                                     preexec_fn=die_with_parent)
            self.procs.append(p)
            self.tasks.append(asyncio.create_task(self._read(w, p)))
        log(f"started {args.procs} loader processes: pids {[p.pid for p in self.procs]}")

    async def _read(self, w, p):
        while True:
            line = await p.stdout.readline()
            if not line:
                return
            try:
                self.last[w] = json.loads(line)
            except ValueError:
                pass

    def total(self, key):
        return sum(v.get(key, 0) for v in self.last.values())

    def errors(self):
        out = {}
        for v in self.last.values():
            for k, n in v.get("errors", {}).items():
                out[k] = out.get(k, 0) + n
        return out

    def close_codes(self):
        out = {}
        for v in self.last.values():
            for k, n in v.get("close_codes", {}).items():
                out[k] = out.get(k, 0) + n
        return out

    def all_done(self, n):
        return len(self.last) == len(self.procs) and self.total("up") + self.total("failed") >= n

    async def stop(self):
        for p in self.procs:
            if p.stdin and not p.stdin.is_closing():
                p.stdin.close()          # asks the loader to stop
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), 10)
            except asyncio.TimeoutError:
                await stop_process(p, "loader")
        for t in self.tasks:
            t.cancel()


async def controller(args):
    t_start = time.monotonic()
    nofile = raise_nofile()     # inherited by the server (older builds do not raise it themselves)
    server_bin = os.path.abspath(args.server_bin)
    workdir = tempfile.mkdtemp(prefix="relay-idle-tunnels-")
    result = {"server_bin": server_bin, "tunnels_wanted": args.tunnels, "procs": args.procs,
              "ping_interval_s": args.ping_interval, "nofile": nofile, "workdir": workdir,
              "tls": args.tls}
    server = logf = None
    workers = Workers()
    global TLS_CTX
    ca_file = None
    try:
        extra = list(args.server_arg)
        if args.tls:
            ca_file, key = make_cert(workdir)
            extra += ["--tls-cert", ca_file, "--tls-key", key]
            TLS_CTX = client_tls(ca_file)
        args.ca_file = ca_file
        server, port, logf = await start_server(server_bin, workdir, extra)
        result["server_pid"], result["port"] = server.pid, port
        log(f"relay-server pid {server.pid} on {LOOPBACK}:{port} (data in {workdir})")
        await asyncio.sleep(2)
        result["baseline"] = {"status_kb": proc_status(server.pid), "fds": proc_fds(server.pid)}
        c0, w0 = proc_cpu_s(server.pid), time.monotonic()
        await asyncio.sleep(args.baseline_cpu_window)
        c1, w1 = proc_cpu_s(server.pid), time.monotonic()
        result["baseline"]["cpu"] = {"window_s": round(w1 - w0, 2), "cpu_s": round(c1 - c0, 3),
                                     "cpu_percent_of_one_core": round(100 * (c1 - c0) / (w1 - w0), 2)}
        result["baseline"]["probe"] = await probe(port, "base", args.probes, args.probe_requests)
        if args.client_bin:
            result["baseline"]["real_client"] = await probe_real_client(args.client_bin, port, workdir, ca_file)
        log(f"baseline: VmRSS {result['baseline']['status_kb']['VmRSS']} kB, "
            f"probe connect {result['baseline']['probe']['connect_ms_median']} ms")

        # Ramp up.
        t0 = time.monotonic()
        await workers.start(args, port)
        deadline = t_start + args.max_seconds - args.settle - args.cpu_window - 60
        last_log = 0
        while not workers.all_done(args.tunnels):
            if server.returncode is not None:
                raise SystemExit(f"relay-server exited ({server.returncode}) during the ramp; log: {workdir}/server.log")
            if time.monotonic() > deadline:
                log("ramp did not finish in time; measuring what is up")
                break
            if time.monotonic() - last_log > 5:
                log(f"ramp: {workers.total('up')} up, {workers.total('failed')} failed, "
                    f"{workers.total('retries')} retries, server VmRSS {proc_status(server.pid)['VmRSS']} kB")
                last_log = time.monotonic()
            await asyncio.sleep(0.2)
        ramp_s = time.monotonic() - t0
        up = workers.total("up")
        result["ramp"] = {"seconds": round(ramp_s, 1), "up": up, "failed": workers.total("failed"),
                          "retries": workers.total("retries"), "errors": workers.errors(),
                          "tunnels_per_s": round(up / ramp_s, 1) if ramp_s else None}
        log(f"ramp done: {up} up in {ramp_s:.1f} s; settling {args.settle} s")

        await asyncio.sleep(args.settle)
        loaded = {"status_kb": proc_status(server.pid), "fds": proc_fds(server.pid),
                  "alive": workers.total("alive"), "closed_by_server": workers.total("closed")}

        # Idle CPU window.
        pings0, pongs0 = workers.total("pings"), workers.total("pongs")
        c0, w0 = proc_cpu_s(server.pid), time.monotonic()
        await asyncio.sleep(args.cpu_window)
        c1, w1 = proc_cpu_s(server.pid), time.monotonic()
        await asyncio.sleep(1.2)           # one more worker report
        pings, pongs = workers.total("pings") - pings0, workers.total("pongs") - pongs0
        loaded["cpu"] = {"window_s": round(w1 - w0, 2), "cpu_s": round(c1 - c0, 3),
                         "cpu_percent_of_one_core": round(100 * (c1 - c0) / (w1 - w0), 2),
                         "pings_sent_in_window": pings, "pongs_received_in_window": pongs,
                         "cpu_us_per_ping": round((c1 - c0) * 1e6 / pings, 1) if pings else None}
        loaded["status_kb_after_cpu_window"] = proc_status(server.pid)
        loaded["probe"] = await probe(port, "load", args.probes, args.probe_requests)
        if args.client_bin:
            loaded["real_client"] = await probe_real_client(args.client_bin, port, workdir, ca_file)
        await asyncio.sleep(1.2)
        loaded["alive_at_end"] = workers.total("alive")
        loaded["closed_by_server_at_end"] = workers.total("closed")
        loaded["close_codes"] = workers.close_codes()
        loaded["status_kb_at_end"] = proc_status(server.pid)
        result["loaded"] = loaded

        base_rss = result["baseline"]["status_kb"]["VmRSS"]
        rss = loaded["status_kb"]["VmRSS"]
        result["summary"] = {
            "tunnels": loaded["alive"],
            "server_vmrss_mb": round(rss * 1024 / 1e6, 1),
            "server_vmrss_mib": round(rss / 1024, 1),
            "server_vmrss_after_cpu_window_mib": round(loaded["status_kb_after_cpu_window"]["VmRSS"] / 1024, 1),
            "server_vmhwm_mib": round(loaded["status_kb_at_end"]["VmHWM"] / 1024, 1),
            "baseline_vmrss_mib": round(base_rss / 1024, 1),
            "per_tunnel_kib": round((rss - base_rss) / loaded["alive"], 2) if loaded["alive"] else None,
            "new_tunnel_connect_ms": loaded["probe"]["connect_ms_median"],
            "new_tunnel_first_request_ms": loaded["probe"]["first_request_ms_median"],
            "new_tunnel_connect_plus_first_request_ms": loaded["probe"]["connect_plus_first_request_ms_median"],
            "new_tunnel_connect_plus_first_request_ms_max": loaded["probe"]["connect_plus_first_request_ms_max"],
            "server_pss_mib": round(loaded["status_kb"].get("Pss", 0) / 1024, 1),
            "per_tunnel_pss_kib": round((loaded["status_kb"].get("Pss", 0) - result["baseline"]["status_kb"].get("Pss", 0)) / loaded["alive"], 2) if loaded["alive"] else None,
            "tls": args.tls,
            "new_tunnel_request_ms": loaded["probe"]["request_ms_median"],
            "real_client_ready_ms": loaded.get("real_client", {}).get("ready_ms"),
            "idle_cpu_percent": loaded["cpu"]["cpu_percent_of_one_core"],
            "baseline_cpu_percent": result["baseline"]["cpu"]["cpu_percent_of_one_core"],
            "tunnels_lost_during_run": loaded["closed_by_server_at_end"],
        }
        log("summary: " + json.dumps(result["summary"]))
    finally:
        await workers.stop()
        if server is not None:
            if server.returncode is not None:
                result["server_exit"] = server.returncode
            await stop_process(server, "relay-server")
        if logf:
            logf.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        result["total_seconds"] = round(time.monotonic() - t_start, 1)
    out = json.dumps(result, indent=2)
    print(out)
    if args.json:
        with open(args.json, "w") as f:
            f.write(out + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode")
    w = sub.add_parser("worker", help="internal: one loader process")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--worker-id", type=int, required=True)
    w.add_argument("--count", type=int, required=True)
    w.add_argument("--prefix", required=True)
    w.add_argument("--concurrency", type=int, default=32)
    w.add_argument("--ping-interval", type=float, default=15)
    w.add_argument("--handshake-timeout", type=float, default=20)
    w.add_argument("--retries", type=int, default=3)
    w.add_argument("--max-seconds", type=float, default=900)
    w.add_argument("--ca-file", help="TLS: connect with wss, trusting this PEM")

    ap.add_argument("--server-bin", help="relay-server binary to start (required)")
    ap.add_argument("--client-bin", help="optional `relay` binary: also time a real client's first 200")
    ap.add_argument("--tls", action="store_true",
                    help="server with a self-signed certificate (openssl) for localhost; tunnels over wss, probes over https")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra relay-server flag (repeatable), e.g. --server-arg=--capture --server-arg=off")
    ap.add_argument("--tunnels", type=int, default=10000)
    ap.add_argument("--procs", type=int, default=4, help="loader processes (each needs one fd per tunnel)")
    ap.add_argument("--concurrency", type=int, default=32, help="handshakes in flight per loader")
    ap.add_argument("--ping-interval", type=float, default=15)
    ap.add_argument("--handshake-timeout", type=float, default=20)
    ap.add_argument("--retries", type=int, default=3, help="per tunnel, after a failed open")
    ap.add_argument("--settle", type=float, default=20, help="s at full load before measuring (> ping interval)")
    ap.add_argument("--cpu-window", type=float, default=30, help="s of server CPU measured at full load")
    ap.add_argument("--baseline-cpu-window", type=float, default=10, help="s of server CPU measured with no tunnel")
    ap.add_argument("--probes", type=int, default=5, help="fresh probe tunnels per measurement")
    ap.add_argument("--probe-requests", type=int, default=20, help="GETs through each probe tunnel")
    ap.add_argument("--prefix", default="idle", help="tunnel name prefix (a DNS label)")
    ap.add_argument("--max-seconds", type=float, default=600, help="hard bound on the whole run")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (server log, SQLite)")
    ap.add_argument("--json", help="also write the JSON summary here")
    args = ap.parse_args()

    if args.mode == "worker":
        asyncio.run(worker(args))
        return
    if not args.server_bin:
        ap.error("--server-bin is required")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", args.prefix):
        ap.error("--prefix must be a short DNS label")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per_proc = -(-args.tunnels // args.procs)
    if per_proc + 64 > hard:
        ap.error(f"{per_proc} tunnels per loader exceed the descriptor hard limit {hard}: raise --procs")
    if args.tunnels + 256 > hard:
        log(f"warning: the server needs ~{args.tunnels} descriptors, hard limit is {hard}")
    if args.settle + args.cpu_window + 120 > args.max_seconds:
        ap.error("--max-seconds too small for --settle + --cpu-window + ramp")
    asyncio.run(bounded(controller(args), args.max_seconds))


async def bounded(coro, seconds):
    """Whole run under a deadline; SIGTERM/SIGINT/deadline cancel it, and the
    controller's `finally` stops what it started."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    handle = loop.call_later(seconds, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        log(f"stopped (signal or --max-seconds {seconds:.0f} reached); everything started was stopped")
        sys.exit(1)
    finally:
        handle.cancel()


if __name__ == "__main__":
    main()
