#!/usr/bin/env bash
# Relay, rathole and hyper-floor on the benchmark's small-request rows,
# interleaved round by round, pinned like ../shared/bench (load on CPU 0,
# tunnel processes and origin on CPU 1). Prints req/s and CPU µs per request
# of each process, then medians and each transport's ratio to rathole.
#
# Needs: wrk, the shared bench's origin (nginx) and rathole
# (../shared/bench/install-deps.sh), relay built in release mode.
#
#   bench/hyper-floor/compare.sh            # 5 rounds of c1, c64, hook
#   ROUNDS=3 ROWS="c64 hook" DURATION=4 bench/hyper-floor/compare.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$REPO/../shared/bench}"
RELAY_BIN_DIR="${RELAY_BIN_DIR:-$REPO/target/release}"
PEERS_BIN="${PEERS_BIN:-/tmp/peers/bin}"
ROUNDS="${ROUNDS:-5}"
ROWS="${ROWS:-c1 c64 hook}"
DURATION="${DURATION:-5}"
ORIGIN_PORT="${ORIGIN_PORT:-18080}"
PUBLIC=18701 CONTROL=18702

for tool in wrk taskset curl; do command -v $tool >/dev/null || { echo "missing $tool" >&2; exit 1; }; done
[[ -x "$PEERS_BIN/rathole" ]] || { echo "no $PEERS_BIN/rathole: run $BENCH_DIR/install-deps.sh" >&2; exit 1; }
[[ -x "$RELAY_BIN_DIR/relay-server" ]] || { echo "no relay build in $RELAY_BIN_DIR: cargo build --release" >&2; exit 1; }
cargo build --release --quiet --manifest-path "$HERE/Cargo.toml"
FLOOR="$HERE/target/release/hyper-floor"

WORK="$(mktemp -d)"
PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
             for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; PIDS=(); }
cleanup() { stop_all; [[ -n "${ORIGIN_STARTED:-}" ]] && ORIGIN_PORT=$ORIGIN_PORT "$BENCH_DIR/origin" stop >/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

if ! curl -fso /dev/null "http://127.0.0.1:$ORIGIN_PORT/small"; then
  ORIGIN_CPUS=1 ORIGIN_PORT=$ORIGIN_PORT "$BENCH_DIR/origin" start >/dev/null; ORIGIN_STARTED=1
fi

sut() { local log=$1; shift; taskset -c 1 "$@" >"$WORK/$log" 2>&1 & PIDS+=($!); }

# Starts one transport; sets HOST (Host header) and leaves its PIDs in PIDS.
start() {
  case $1 in
    relay)
      local home="$WORK/relay-home"; rm -rf "$home"; mkdir -p "$home"
      sut relay-server.log env HOME="$home" XDG_CONFIG_HOME="$home/config" RUST_LOG=warn \
        "$RELAY_BIN_DIR/relay-server" --listen 127.0.0.1:$PUBLIC --domain localhost --open \
        --data-dir "$home/data" ${RELAY_SERVER_ARGS:-}
      wait_ok "http://127.0.0.1:$PUBLIC/_relay/health" ""
      sut relay.log env HOME="$home" XDG_CONFIG_HOME="$home/config" RUST_LOG=warn \
        "$RELAY_BIN_DIR/relay" connect $ORIGIN_PORT --server http://127.0.0.1:$PUBLIC --name bench --no-inspect
      HOST="bench.localhost" ;;
    rathole)
      cat >"$WORK/server.toml" <<TOML
[server]
bind_addr = "127.0.0.1:$CONTROL"
default_token = "floor"
[server.transport]
type = "tcp"
[server.transport.tcp]
nodelay = true
[server.services.bench]
bind_addr = "127.0.0.1:$PUBLIC"
TOML
      cat >"$WORK/client.toml" <<TOML
[client]
remote_addr = "127.0.0.1:$CONTROL"
default_token = "floor"
[client.transport]
type = "tcp"
[client.transport.tcp]
nodelay = true
[client.services.bench]
local_addr = "127.0.0.1:$ORIGIN_PORT"
TOML
      sut rathole-server.log env RUST_LOG=warn "$PEERS_BIN/rathole" --server "$WORK/server.toml"
      sut rathole-client.log env RUST_LOG=warn "$PEERS_BIN/rathole" --client "$WORK/client.toml"
      HOST="127.0.0.1" ;;
    floor)
      sut floor.log "$FLOOR" 127.0.0.1:$PUBLIC 127.0.0.1:$ORIGIN_PORT
      HOST="127.0.0.1" ;;
  esac
  wait_ok "http://127.0.0.1:$PUBLIC/small" "$HOST"
}

# Polls until URL answers 2xx (processes print no reliable ready line here).
wait_ok() {
  for _ in $(seq 200); do
    curl -fso /dev/null ${2:+-H "Host: $2"} "$1" && return 0
    sleep 0.05
  done
  echo "$1 did not come up; logs in $WORK" >&2; exit 1
}

ticks() { local t=0 p; for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }

# Runs one row against the started transport; prints "req/s µs_per_req".
load() {
  local args path lua=()
  case $1 in
    c1) args="-t1 -c1"; path=/small ;;
    c64) args="-t2 -c64"; path=/small ;;
    hook) args="-t2 -c16"; path=/hook; lua=(-s "$BENCH_DIR/wrk/bench.lua") ;;
  esac
  local env=(); [[ $1 == hook ]] && env=(WRK_METHOD=POST WRK_BODY_BYTES=2048)
  env "${env[@]}" taskset -c 0 wrk $args -d1s -H "Host: $HOST" "${lua[@]}" "http://127.0.0.1:$PUBLIC$path" >/dev/null
  local t0; t0=$(ticks)
  env "${env[@]}" taskset -c 0 wrk $args -d"${DURATION}s" -H "Host: $HOST" "${lua[@]}" \
    "http://127.0.0.1:$PUBLIC$path" >"$WORK/wrk.out"
  local t1; t1=$(ticks)
  if grep -qE "Non-2xx|Socket errors" "$WORK/wrk.out"; then
    echo "errors in $WORK/wrk.out:" >&2; cat "$WORK/wrk.out" >&2; exit 1
  fi
  local rps total
  rps=$(grep -oP 'Requests/sec:\s+\K[0-9.]+' "$WORK/wrk.out")
  total=$(grep -oP '^\s+\K[0-9]+(?= requests in)' "$WORK/wrk.out")
  awk -v r="$rps" -v t=$((t1 - t0)) -v n="$total" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%d %.1f\n", r, t * 1e6 / hz / n }'
}

declare -A RESULTS
for round in $(seq "$ROUNDS"); do
  for row in $ROWS; do
    for t in relay rathole floor; do
      start $t
      read -r rps us < <(load "$row")
      stop_all
      RESULTS[$row.$t]+="$rps "
      printf 'round %d %-5s %-8s %7d req/s  %5.1f CPU µs/req\n' "$round" "$row" "$t" "$rps" "$us"
    done
  done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "| row | relay | rathole | hyper-floor | relay ÷ rathole | floor ÷ rathole |"
echo "|---|---|---|---|---|---|"
for row in $ROWS; do
  r=$(median <<<"${RESULTS[$row.relay]}"); h=$(median <<<"${RESULTS[$row.rathole]}"); f=$(median <<<"${RESULTS[$row.floor]}")
  awk -v row="$row" -v r="$r" -v h="$h" -v f="$f" \
    'BEGIN { printf "| %s | %d | %d | %d | %.2f | %.2f |\n", row, r, h, f, r / h, f / h }'
done
