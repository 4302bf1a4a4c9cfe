#!/usr/bin/env bash
# CPU µs per request of each tunnel process (server, client), for one or
# more relay builds and rathole, on the benchmark's small-request rows,
# pinned like ../shared/bench (load on CPU 0; tunnel processes and nginx on
# CPU 1). Builds and rathole alternate round by round; the table keeps the
# least CPU per request seen per process and row (interference on a shared
# machine only ever adds), and the median req/s.
#
# CPU = utime+stime from /proc/PID/stat over one fixed wrk run (after a 1 s
# warm-up), divided by the requests wrk completed.
#
#   bench/cpu-per-request/cpu.sh                          # target/release, 5 rounds
#   BUILDS="base=/tmp/a new=target/release" ROUNDS=6 bench/cpu-per-request/cpu.sh
#   ROWS="c1 hook" DURATION=4 bench/cpu-per-request/cpu.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$REPO/../shared/bench}"
BUILDS="${BUILDS:-relay=$REPO/target/release}"
PEERS_BIN="${PEERS_BIN:-/tmp/peers/bin}"
ROUNDS="${ROUNDS:-5}"
ROWS="${ROWS:-c1 c64 hook}"
DURATION="${DURATION:-5}"
ORIGIN_PORT="${ORIGIN_PORT:-18080}"
PUBLIC="${PUBLIC:-18711}" CONTROL="${CONTROL:-18712}"

for tool in wrk taskset curl; do command -v $tool >/dev/null || { echo "missing $tool" >&2; exit 1; }; done
[[ -x "$PEERS_BIN/rathole" ]] || { echo "no $PEERS_BIN/rathole: run $BENCH_DIR/install-deps.sh" >&2; exit 1; }

WORK="$(mktemp -d)"
SERVER_PID="" CLIENT_PID=""
stop_all() {
  for p in $CLIENT_PID $SERVER_PID; do kill "$p" 2>/dev/null || true; done
  for p in $CLIENT_PID $SERVER_PID; do wait "$p" 2>/dev/null || true; done
  SERVER_PID="" CLIENT_PID=""
}
cleanup() { stop_all; [[ -n "${ORIGIN_STARTED:-}" ]] && ORIGIN_PORT=$ORIGIN_PORT "$BENCH_DIR/origin" stop >/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

if ! curl -fso /dev/null "http://127.0.0.1:$ORIGIN_PORT/small"; then
  ORIGIN_CPUS=1 ORIGIN_PORT=$ORIGIN_PORT "$BENCH_DIR/origin" start >/dev/null; ORIGIN_STARTED=1
fi

wait_ok() {
  for _ in $(seq 300); do
    curl -fso /dev/null ${2:+-H "Host: $2"} "$1" && return 0
    sleep 0.05
  done
  echo "$1 did not come up; logs in $WORK" >&2; exit 1
}

# start NAME [BIN_DIR]: sets SERVER_PID, CLIENT_PID, HOST.
start() {
  case $1 in
    rathole)
      cat >"$WORK/server.toml" <<TOML
[server]
bind_addr = "127.0.0.1:$CONTROL"
default_token = "cpu"
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
default_token = "cpu"
[client.transport]
type = "tcp"
[client.transport.tcp]
nodelay = true
[client.services.bench]
local_addr = "127.0.0.1:$ORIGIN_PORT"
TOML
      taskset -c 1 env RUST_LOG=warn "$PEERS_BIN/rathole" --server "$WORK/server.toml" >"$WORK/rs.log" 2>&1 & SERVER_PID=$!
      taskset -c 1 env RUST_LOG=warn "$PEERS_BIN/rathole" --client "$WORK/client.toml" >"$WORK/rc.log" 2>&1 & CLIENT_PID=$!
      HOST="127.0.0.1" ;;
    *)
      local bin=$2 home="$WORK/relay-home"; rm -rf "$home"; mkdir -p "$home"
      taskset -c 1 env HOME="$home" XDG_CONFIG_HOME="$home/config" RUST_LOG=warn \
        "$bin/relay-server" --listen 127.0.0.1:$PUBLIC --domain localhost --open \
        --data-dir "$home/data" ${RELAY_SERVER_ARGS:-} >"$WORK/s.log" 2>&1 & SERVER_PID=$!
      wait_ok "http://127.0.0.1:$PUBLIC/_relay/health" ""
      taskset -c 1 env HOME="$home" XDG_CONFIG_HOME="$home/config" RUST_LOG=warn \
        "$bin/relay" connect $ORIGIN_PORT --server http://127.0.0.1:$PUBLIC --name bench --no-inspect \
        >"$WORK/c.log" 2>&1 & CLIENT_PID=$!
      HOST="bench.localhost" ;;
  esac
  wait_ok "http://127.0.0.1:$PUBLIC/small" "$HOST"
}

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# load ROW: prints "req/s server_µs client_µs".
load() {
  local args path lua=()
  case $1 in
    c1) args="-t1 -c1"; path=/small ;;
    c64) args="-t2 -c64"; path=/small ;;
    hook) args="-t2 -c16"; path=/hook; lua=(-s "$BENCH_DIR/wrk/bench.lua") ;;
  esac
  local env=(); [[ $1 == hook ]] && env=(WRK_METHOD=POST WRK_BODY_BYTES=2048)
  env "${env[@]}" taskset -c 0 wrk $args -d1s -H "Host: $HOST" "${lua[@]}" "http://127.0.0.1:$PUBLIC$path" >/dev/null
  local s0 c0 s1 c1; s0=$(ticks $SERVER_PID); c0=$(ticks $CLIENT_PID)
  env "${env[@]}" taskset -c 0 wrk $args -d"${DURATION}s" -H "Host: $HOST" "${lua[@]}" \
    "http://127.0.0.1:$PUBLIC$path" >"$WORK/wrk.out"
  s1=$(ticks $SERVER_PID); c1=$(ticks $CLIENT_PID)
  if grep -qE "Non-2xx|Socket errors" "$WORK/wrk.out"; then
    echo "errors in $WORK/wrk.out:" >&2; cat "$WORK/wrk.out" >&2; exit 1
  fi
  local rps total
  rps=$(grep -oP 'Requests/sec:\s+\K[0-9.]+' "$WORK/wrk.out")
  total=$(grep -oP '^\s+\K[0-9]+(?= requests in)' "$WORK/wrk.out")
  awk -v r="$rps" -v s=$((s1 - s0)) -v c=$((c1 - c0)) -v n="$total" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%d %.2f %.2f\n", r, s * 1e6 / hz / n, c * 1e6 / hz / n }'
}

NAMES=()
declare -A BIN
for b in $BUILDS; do NAMES+=("${b%%=*}"); BIN[${b%%=*}]="${b#*=}"; done
NAMES+=(rathole)
declare -A RPS SRV CLI
for round in $(seq "$ROUNDS"); do
  # Rotate the order every round, so no transport always runs first.
  order=("${NAMES[@]:$(( (round - 1) % ${#NAMES[@]} ))}" "${NAMES[@]:0:$(( (round - 1) % ${#NAMES[@]} ))}")
  for row in $ROWS; do
    for t in "${order[@]}"; do
      start "$t" "${BIN[$t]:-}"
      read -r rps s c < <(load "$row")
      stop_all
      RPS[$row.$t]+="$rps "; SRV[$row.$t]+="$s "; CLI[$row.$t]+="$c "
      printf 'round %d %-5s %-10s %7d req/s  server %6.2f  client %6.2f CPU µs/req\n' "$round" "$row" "$t" "$rps" "$s" "$c"
    done
  done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
least() { tr ' ' '\n' | grep . | sort -g | head -1; }
echo
echo "| row | transport | req/s (median) | server µs/req (least) | client µs/req (least) | total |"
echo "|---|---|---|---|---|---|"
for row in $ROWS; do
  for t in "${NAMES[@]}"; do
    r=$(median <<<"${RPS[$row.$t]}"); s=$(least <<<"${SRV[$row.$t]}"); c=$(least <<<"${CLI[$row.$t]}")
    awk -v row="$row" -v t="$t" -v r="$r" -v s="$s" -v c="$c" \
      'BEGIN { printf "| %s | %s | %d | %.1f | %.1f | %.1f |\n", row, t, r, s, c, s + c }'
  done
done
