#!/usr/bin/env python3
"""How long an offline tunnel's answer takes when every answer waits for a
disk commit: a burst of N concurrent webhook POSTs to a tunnel whose client
is away, each timed from its first byte sent to the whole answer read.

Starts its own relay-server (on 127.0.0.1, a fresh data dir), claims the name
with one short `relay connect --when-offline MODE`, stops that client, fires
the burst, then checks that every request is listed as missed by the API and
that all of them survive a `kill -9` of the server and a restart.

    bench/offline-burst/offline_burst.py [--bin-dir target/release] [-n 1000]
        [--mode accept|reject] [--rounds 3]

Prints, per round: answers by status, median / p99 / max latency in ms, and
whether all N were listed after the restart.
"""

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

NAME = "burst"
BODY = json.dumps({"event": "user.created", "data": {"id": "x" * 1800}}).encode()


def start_server(bin_dir, data, retain, port=0):
    # --retain above the burst: past it, retention deletes the oldest missed
    # requests (by design, and counted), which is not what this measures.
    proc = subprocess.Popen(
        [os.path.join(bin_dir, "relay-server"), "--listen", f"127.0.0.1:{port}",
         "--open", "--data-dir", data, "--retain", str(retain)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    m = re.search(r"127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        sys.exit(f"server did not start: {line!r}")
    return proc, int(m.group(1))


def claim_name(bin_dir, port, home, mode):
    env = dict(os.environ, RELAY_CONFIG=os.path.join(home, "config.toml"), HOME=home)
    client = subprocess.Popen(
        [os.path.join(bin_dir, "relay"), "connect", "9", "--name", NAME,
         "--server", f"http://127.0.0.1:{port}", "--no-inspect"]
        # reject is the default, so a build from before the flag runs too.
        + (["--when-offline", mode] if mode != "reject" else []),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = client.stdout.readline()
        if "Forwarding" in line:
            break
    else:
        client.kill()
        sys.exit("client did not connect")
    client.send_signal(signal.SIGTERM)
    client.wait(timeout=20)
    with open(os.path.join(home, "config.toml")) as f:
        return re.search(r'client_id = "([^"]+)"', f.read()).group(1)


async def one(port):
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /hook HTTP/1.1\r\nHost: " + NAME.encode() + b".localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + BODY)
    await writer.drain()
    answer = await reader.read()
    elapsed = time.perf_counter() - started
    writer.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, elapsed


async def wait_offline(port):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, _ = await one(port)
        if status in (202, 503):
            return
        await asyncio.sleep(0.05)
    sys.exit("tunnel never answered as offline")


async def burst(port, n):
    return await asyncio.gather(*(one(port) for _ in range(n)))


def missed_count(port, client_id):
    """Offline captures listed by the API (a build from before missed
    requests has no /missed: count offline captures in the list)."""
    out = subprocess.run(
        ["curl", "-s", "-H", f"x-relay-client-id: {client_id}",
         f"http://127.0.0.1:{port}/_relay/v1/tunnels/{NAME}/requests?outcome=offline&limit=1000"],
        capture_output=True, text=True, timeout=30, check=True).stdout
    page = json.loads(out)
    n = len(page["requests"])
    while page.get("next_before"):
        out = subprocess.run(
            ["curl", "-s", "-H", f"x-relay-client-id: {client_id}",
             f"http://127.0.0.1:{port}/_relay/v1/tunnels/{NAME}/requests?outcome=offline"
             f"&limit=1000&before={page['next_before']}"],
            capture_output=True, text=True, timeout=30, check=True).stdout
        page = json.loads(out)
        n += len(page["requests"])
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--mode", choices=["accept", "reject"], default="accept")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="relay-burst-") as tmp:
            data = os.path.join(tmp, "data")
            server, port = start_server(args.bin_dir, data, 2 * args.n + 10)
            try:
                client_id = claim_name(args.bin_dir, port, tmp, args.mode)
                asyncio.run(wait_offline(port))
                before = missed_count(port, client_id)
                results = asyncio.run(burst(port, args.n))
                statuses = {}
                for s, _ in results:
                    statuses[s] = statuses.get(s, 0) + 1
                ms = sorted(e * 1000 for _, e in results)
                p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
                answered = sum(c for s, c in statuses.items() if s in (202, 503))
                server.kill()  # SIGKILL: no graceful flush
                server.wait()
                server, port = start_server(args.bin_dir, data, 2 * args.n + 10, port)
                after = missed_count(port, client_id)
                kept = after - before
                if kept != answered:
                    import shutil
                    keep = tempfile.mkdtemp(prefix="relay-burst-kept-")
                    shutil.copytree(data, os.path.join(keep, "data"))
                    print(f"before={before} after={after}; data copied to {keep}", file=sys.stderr)
                print(f"round {r + 1}: n={args.n} mode={args.mode} answers={statuses} "
                      f"median={statistics.median(ms):.1f}ms p99={p99:.1f}ms max={ms[-1]:.1f}ms "
                      f"kept after kill -9: {kept}/{answered}")
            finally:
                server.kill()
                server.wait()


if __name__ == "__main__":
    main()
