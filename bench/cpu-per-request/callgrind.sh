#!/usr/bin/env bash
# Instructions per request of relay-server and relay, counted by callgrind
# (noise on a shared machine does not move them): runs N1 and then N2
# keep-alive requests through a tunnel under valgrind, both processes pinned
# to one CPU (so they run the current-thread runtime, as in the bench), and
# prints (Ir(N2) - Ir(N1)) / (N2 - N1) per process, and per thread of the
# server: its runtime thread (the request path) apart from the capture
# writer's, whose cost under valgrind's slow arrival rate (a few hundred
# requests a second, small batches) is far above what it is under load.
#
#   bench/cpu-per-request/callgrind.sh BIN_DIR [small|hook] [N1] [N2]
#
# Needs valgrind, curl and the shared bench's origin on $ORIGIN_PORT
# (../shared/bench/origin start). Profiles stay in $OUT for callgrind_annotate.
set -euo pipefail
bin=$(cd "$1" && pwd) kind=${2:-small} n1=${3:-200} n2=${4:-2200}
ORIGIN_PORT="${ORIGIN_PORT:-18080}" PORT="${PORT:-18562}"
OUT="${OUT:-$(mktemp -d)}"
now_ms() { echo $(($(date +%s%N) / 1000000)); }

run() { # run N: one tunnel, N requests, profiles $OUT/cg.N.{server,client}
  local n=$1 dir="$OUT/home.$1"; rm -rf "$dir"; mkdir -p "$dir"
  env RUST_LOG=warn HOME="$dir" XDG_CONFIG_HOME="$dir/config" taskset -c 1 \
    valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$OUT/cg.$n.server" \
    "$bin/relay-server" --listen 127.0.0.1:$PORT --domain localhost --open --data-dir "$dir/data" \
    </dev/null >"$OUT/log.$n.server" 2>&1 &
  local spid=$! d
  d=$(($(now_ms) + 60000))
  until (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do (($(now_ms) < d)) || { echo "server did not listen" >&2; exit 1; }; sleep 0.1; done
  env RUST_LOG=warn HOME="$dir" XDG_CONFIG_HOME="$dir/config" taskset -c 1 \
    valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$OUT/cg.$n.client" \
    "$bin/relay" connect "$ORIGIN_PORT" --server http://127.0.0.1:$PORT --name bench --no-inspect \
    </dev/null >"$OUT/log.$n.client" 2>&1 &
  local cpid=$! o=""
  d=$(($(now_ms) + 120000))
  until [[ "$o" == "200 1024" ]]; do (($(now_ms) < d)) || { echo "tunnel never ready: $o" >&2; exit 1; }
    o=$(curl -s -o /dev/null --max-time 10 -H 'Host: bench.localhost' -w '%{http_code} %{size_download}' \
      http://127.0.0.1:$PORT/small || true); sleep 0.2; done
  # `#[1-N]`: curl's URL globbing on the fragment, which is not sent, so
  # every request has the bench's path.
  if [[ $kind == hook ]]; then
    head -c 2048 /dev/zero | tr '\0' 'a' >"$OUT/body"
    curl -s -H 'Host: bench.localhost' -H 'Content-Type: application/json' --data-binary @"$OUT/body" \
      "http://127.0.0.1:$PORT/hook#[1-$n]" >/dev/null
  else
    curl -s -H 'Host: bench.localhost' "http://127.0.0.1:$PORT/small#[1-$n]" >/dev/null
  fi
  for p in $cpid $spid; do kill -TERM $p; wait $p || true; done
}

# Inclusive Ir of the functions matching $2 in profile $1.
incl() { callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
  grep -E "$2" | head -1 | awk '{gsub(",", "", $1); print $1}'; }
total() { grep -m1 -E '^(summary|totals):' "$1" | awk '{print $2}'; }

run "$n1"; run "$n2"
per() { echo $(( ($2 - $1) / (n2 - n1) )); }
echo "$kind, instructions per request ($n1 -> $n2 requests), profiles in $OUT:"
echo "  server process:          $(per "$(total "$OUT/cg.$n1.server")" "$(total "$OUT/cg.$n2.server")")"
echo "  server runtime thread:   $(per "$(incl "$OUT/cg.$n1.server" ':relay_server::main ')" "$(incl "$OUT/cg.$n2.server" ':relay_server::main ')")"
echo "  server capture writer:   $(per "$(incl "$OUT/cg.$n1.server" 'capture::writer::insert_and_trim ')" "$(incl "$OUT/cg.$n2.server" 'capture::writer::insert_and_trim ')")"
echo "  client process:          $(per "$(total "$OUT/cg.$n1.client")" "$(total "$OUT/cg.$n2.client")")"
