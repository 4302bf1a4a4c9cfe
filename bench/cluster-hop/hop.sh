#!/usr/bin/env bash
# What the forwarding hop between relay-server nodes costs (issue 17): two
# nodes on loopback sharing a throwaway PostgreSQL, one `relay connect`
# through node A, and the shared bench's load (../shared/bench: the same wrk,
# bench.lua and nginx origin) against three targets, interleaved per round:
#
#   direct   the origin itself (127.0.0.1:18080)
#   holder   node A, which holds the tunnel's session (Host: bench.localhost)
#   hop      node B, which forwards each request to node A's node listener
#
# Rows: GET /small c1 and c64, POST /hook c16 (2 KiB body), wrk 5 s after a
# 1 s warm-up; one 64 MiB GET /big with curl. Pinned like the shared bench
# (PIN=split): wrk and curl on CPU 0; nginx, both nodes, the client and
# PostgreSQL on CPU 1. The cluster is started once, not per round.
#
#   bench/cluster-hop/hop.sh --bin-dir target/release [--rounds 3] [--duration 5]
#
# Builds nothing. Prints the Markdown table; raw lines in $BENCH_WORK/raw.jsonl.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$REPO/../shared/bench}"
export BENCH_WORK="${BENCH_WORK:-/tmp/hop-bench}"
export ORIGIN_PORT="${ORIGIN_PORT:-18080}"
BIN_DIR="" ROUNDS=3 DURATION=5 WARMUP=1
PORT_A=18601 NODE_A=18602 PORT_B=18603 NODE_B=18604
# The whole run's bound: 3 targets x 3 rounds x ~20 s, plus start-up.
MAX_SECONDS="${MAX_SECONDS:-900}"

while (($#)); do
  case $1 in
    --bin-dir) BIN_DIR=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    *) echo "usage: $0 --bin-dir DIR [--rounds N] [--duration S]" >&2; exit 2 ;;
  esac
done
[[ -x "$BIN_DIR/relay-server" && -x "$BIN_DIR/relay" ]] \
  || { echo "--bin-dir must hold release relay-server and relay" >&2; exit 2; }
BIN_DIR="$(cd "$BIN_DIR" && pwd)"
if [[ -z "${HOP_BOUNDED:-}" ]]; then
  HOP_BOUNDED=1 exec timeout "$MAX_SECONDS" "$0" --bin-dir "$BIN_DIR" --rounds "$ROUNDS" --duration "$DURATION"
fi
for t in wrk curl taskset python3; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
for p in $PORT_A $NODE_A $PORT_B $NODE_B; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "port $p is in use" >&2; exit 1; fi
done

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
load() { taskset -c 0 "$@"; }
# Servers are started with taskset directly (not through a function), so
# that $! is their own PID, which the cleanup kills.

mkdir -p "$BENCH_WORK"
WORK="$(mktemp -d /tmp/hop-run.XXXXXX)"
chmod 755 "$WORK"   # under /tmp and readable: as root, PostgreSQL runs as another user
RAW="$BENCH_WORK/raw.jsonl"; : >"$RAW"
PIDS=() PG_STARTED="" ORIGIN_STARTED=""
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [[ -n "$PG_STARTED" ]] && "$REPO/scripts/postgres" stop "$WORK/pg" 2>/dev/null
  [[ -n "$ORIGIN_STARTED" ]] && "$BENCH_DIR/origin" stop
  log "logs in $WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! curl -fso /dev/null "http://127.0.0.1:$ORIGIN_PORT/small"; then
  ORIGIN_CPUS=1 "$BENCH_DIR/origin" start >/dev/null; ORIGIN_STARTED=1
fi
PG_STARTED=1
DB="$(taskset -c 1 "$REPO/scripts/postgres" start "$WORK/pg" 2>"$WORK/pg-start.log")"
log "PostgreSQL at $DB"

# node ID PUBLIC_PORT NODE_PORT: one relay-server on CPU 1.
node() {
  mkdir -p "$WORK/$1"
  taskset -c 1 env RUST_LOG=warn "$BIN_DIR/relay-server" --listen "127.0.0.1:$2" --domain localhost --open \
    --data-dir "$WORK/$1" --store "$DB" --node-id "$1" --node-listen "127.0.0.1:$3" \
    --node-url "http://127.0.0.1:$3" --node-secret hop-bench-secret-0123456789 \
    </dev/null >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
}
node a $PORT_A $NODE_A
node b $PORT_B $NODE_B
mkdir -p "$WORK/home"
taskset -c 1 env RUST_LOG=warn HOME="$WORK/home" XDG_CONFIG_HOME="$WORK/home/config" "$BIN_DIR/relay" connect \
  "$ORIGIN_PORT" --server "http://127.0.0.1:$PORT_A" --name bench --no-inspect </dev/null >"$WORK/client.log" 2>&1 &
PIDS+=($!)

# Ready when a GET /small answers 200 through both nodes (B only once it
# reads A's lease from the store), at most 30 s.
t0=$(date +%s%N)
for port in $PORT_A $PORT_B; do
  until curl -fso /dev/null --max-time 1 -H 'Host: bench.localhost' "http://127.0.0.1:$port/small"; do
    (( $(date +%s%N) - t0 < 30000000000 )) || { echo "tunnel not ready in 30 s; logs in $WORK" >&2; exit 1; }
    sleep 0.05
  done
done
log "ready through both nodes after $(( ($(date +%s%N) - t0) / 1000000 )) ms"

declare -A URL=([direct]="http://127.0.0.1:$ORIGIN_PORT" [holder]="http://127.0.0.1:$PORT_A" [hop]="http://127.0.0.1:$PORT_B")
host_hdr() { [[ $1 == direct ]] && return; echo "Host: bench.localhost"; }

# wrk_row ROUND TARGET TEST THREADS CONNS PATH METHOD
wrk_row() {
  local h; h="$(host_hdr "$2")"
  local args=(-t"$4" -c"$5" --timeout 5s -s "$BENCH_DIR/wrk/bench.lua" ${h:+-H "$h"} "${URL[$2]}$6")
  load timeout $((WARMUP + 10)) env WRK_METHOD="$7" WRK_BODY_BYTES=2048 wrk -d"${WARMUP}s" "${args[@]}" >/dev/null 2>&1 || true
  local out js
  out="$(load timeout $((DURATION + 15)) env WRK_METHOD="$7" WRK_BODY_BYTES=2048 wrk -d"${DURATION}s" "${args[@]}" 2>&1 || true)"
  js="$(grep '^WRKJSON ' <<<"$out" | head -1 | cut -c9-)" || true
  [[ -n "$js" ]] || js='{"failed":1}'
  echo "{\"round\":$1,\"target\":\"$2\",\"test\":\"$3\",${js:1}" >>"$RAW"
}

# big_row ROUND TARGET: one 64 MiB GET /big; anything but 200 + full size is an error.
big_row() {
  local h code size speed; h="$(host_hdr "$2")"
  read -r code size speed <<<"$(load timeout 120 curl -sS -o /dev/null ${h:+-H "$h"} \
    -w '%{http_code} %{size_download} %{speed_download}' "${URL[$2]}/big" 2>/dev/null || echo "0 0 0")"
  local ok=0; [[ $code == 200 && $size == $((64 * 1024 * 1024)) ]] && ok=1
  echo "{\"round\":$1,\"target\":\"$2\",\"test\":\"big_get\",\"mbps\":$(awk -v s="$speed" 'BEGIN{print s/1e6}'),\"err\":$((1 - ok))}" >>"$RAW"
}

TARGETS=(direct holder hop)
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < 3; i++)); do
    t=${TARGETS[$(((i + r - 1) % 3))]}   # rotate the order each round
    log "round $r: $t"
    wrk_row "$r" "$t" small_c1 1 1 /small GET
    wrk_row "$r" "$t" small_c64 2 64 /small GET
    wrk_row "$r" "$t" hook_c16 2 16 /hook POST
    big_row "$r" "$t"
  done
done
for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || log "process $p died during the run (logs in $WORK)"; done
python3 "$HERE/report.py" "$RAW"
# A node whose capture writer falls behind drops captures (and says so);
# the answers are unaffected, but the table should be read knowing it.
for n in a b; do
  echo "node $n: at least $(grep -o 'lost=[0-9]*' "$WORK/$n.log" | tail -1 | cut -d= -f2 | grep . || echo 0) captures dropped (capture queue full; the log counts in steps of 1000)"
done
