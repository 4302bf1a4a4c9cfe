#!/usr/bin/env bash
# shellcheck disable=SC2016  # the node -e programs are single-quoted on purpose
# The Auth0 post-login Action story, end to end, with the real binaries. The
# tunnel runs as `relay connect APP_PORT --when-offline accept --deliver-missed`:
#
#   1. online:  alice's first login -> Action -> relay -> local app: alice added
#   2. offline: laptop closed (client stopped); bob's first login still
#               succeeds: relay answers the Action 202 queued and keeps the call
#   3. `relay requests --missed` lists it, waiting to be delivered
#   4. laptop back: the same `relay connect` again, and nothing else: bob
#               appears in the app, delivered once, and the API shows by which
#               replay
#
# Usage: examples/auth0-action/run.sh   (after `cargo build --workspace`)
# Binaries from $RELAY_BIN_DIR (default: <repo>/target/debug).
# Set RELAY_EXAMPLE_KEEP=1 to keep the temp dir (logs, data) afterwards.

set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BIN_DIR=${RELAY_BIN_DIR:-$REPO/target/debug}
BIN_DIR=$(cd "$BIN_DIR" 2>/dev/null && pwd) || {
  echo "run.sh: no binary directory ${RELAY_BIN_DIR:-$REPO/target/debug}: run 'cargo build --workspace' first" >&2
  exit 1
}
SERVER_BIN=$BIN_DIR/relay-server
RELAY_BIN=$BIN_DIR/relay
NAME=auth0-demo
STEP_TIMEOUT=20 # seconds for any one wait or command

for b in "$SERVER_BIN" "$RELAY_BIN"; do
  [[ -x $b ]] || { echo "run.sh: $b not found: run 'cargo build --workspace' first" >&2; exit 1; }
done
for c in node npm timeout; do
  command -v "$c" >/dev/null || { echo "run.sh: '$c' is needed and not installed" >&2; exit 1; }
done

if [[ ! -d $HERE/node_modules ]]; then
  echo "run.sh: installing the example's npm packages (npm ci)"
  (cd "$HERE" && timeout 600 npm ci --no-audit --no-fund --loglevel=error)
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/relay-auth0-action.XXXXXX")
# The relay client keeps its config (client id, last target) here, not in
# the user's real config.
export HOME=$TMP RELAY_CONFIG=$TMP/config.toml
unset RELAY_SERVER RELAY_TOKEN

PIDS=()
FAILED=0

log_files() { ls "$TMP"/*.log 2>/dev/null || true; }

stop_pid() { # PID: SIGTERM, wait up to 10 s, then SIGKILL
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "run.sh: process $pid ignored SIGTERM for 10 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

stop_started() { # PID: stop a process this script started and forget it
  local pid=$1 i
  stop_pid "$pid"
  for i in "${!PIDS[@]}"; do
    [[ ${PIDS[i]} == "$pid" ]] && unset 'PIDS[i]'
  done
  PIDS=("${PIDS[@]}")
}

cleanup() {
  local rc=$? i f
  trap - EXIT ERR
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${PIDS[i]}"
  done
  if ((rc != 0 || FAILED)); then
    for f in $(log_files); do
      echo "----- last lines of $(basename "$f") -----" >&2
      tail -n 25 "$f" >&2 || true
    done
  fi
  if [[ ${RELAY_EXAMPLE_KEEP:-} == 1 ]]; then
    echo "run.sh: kept $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'echo "run.sh: unexpected failure at line $LINENO: $BASH_COMMAND" >&2' ERR

fail() {
  FAILED=1
  echo >&2
  echo "FAIL: $*" >&2
  exit 1
}
say() { printf '%s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
indent() { sed 's/^/   | /'; }

start() { # LOGNAME CMD...: run in the background, stdout+stderr to $TMP/LOGNAME.log
  local log=$TMP/$1.log
  shift
  "$@" >"$log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

wait_for_line() { # FILE ERE PID WHAT: bounded poll of a log file for a line
  local file=$1 re=$2 pid=$3 what=$4 i
  for ((i = 0; i < STEP_TIMEOUT * 10; i++)); do
    if grep -Eq -- "$re" "$file" 2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || fail "$what exited before printing a line matching /$re/"
    sleep 0.1
  done
  fail "$what printed no line matching /$re/ within ${STEP_TIMEOUT}s"
}

count_lines() { grep -Ec -- "$2" "$1" 2>/dev/null || true; }

# The emails in the app's database, straight from the app (not through relay).
app_users() {
  timeout "$STEP_TIMEOUT" node -e '
    const [port, secret] = process.argv.slice(1);
    fetch(`http://127.0.0.1:${port}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${secret}` },
      body: JSON.stringify({ query: "{ users { id email } }" }),
      signal: AbortSignal.timeout(10000),
    })
      .then((r) => r.json())
      .then((j) => {
        if (!j.data) throw new Error(`users query failed: ${JSON.stringify(j)}`);
        console.log(j.data.users.map((u) => u.email).join(" "));
      })
      .catch((e) => { console.error(e.message); process.exit(1); });
  ' "$APP_PORT" "$SECRET"
}

has_user() { [[ " $1 " == *" $2 "* ]]; }

start_client() { # LOGNAME: relay connect, wait for its Forwarding line
  start "$1" "$RELAY_BIN" connect "$APP_PORT" --server "$SERVER_URL" --name "$NAME" --no-inspect \
    --when-offline accept --deliver-missed
  CLIENT_PID=$LAST_PID
  wait_for_line "$TMP/$1.log" '^Forwarding  ' "$CLIENT_PID" "relay connect"
  # Both URLs are printed one after the other; wait briefly for the second.
  wait_for_line "$TMP/$1.log" "^Forwarding  .*/t/$NAME/" "$CLIENT_PID" "relay connect"
  grep -E '^Forwarding  ' "$TMP/$1.log" | indent
}

run_login() { # EMAIL: the Action as Auth0 runs it; sets LOGIN_RC and LOGIN_OUT
  LOGIN_RC=0
  LOGIN_OUT=$(RELAY_URL=$RELAY_URL ACTION_SECRET=$SECRET \
    timeout "$STEP_TIMEOUT" node "$HERE/login.js" --email "$1" 2>&1) || LOGIN_RC=$?
  printf '%s\n' "$LOGIN_OUT" | indent
}

relay_cli() { # ARGS...: a relay subcommand against this server and tunnel, bounded
  timeout "$STEP_TIMEOUT" "$RELAY_BIN" "$@" --name "$NAME" --server "$SERVER_URL"
}

wait_user() { # EMAIL: poll the app's users until EMAIL is there (bounded); sets USERS
  local i
  for ((i = 0; i < STEP_TIMEOUT * 5; i++)); do
    USERS=$(app_users)
    has_user "$USERS" "$1" && return 0
    sleep 0.2
  done
  return 1
}

wait_tunnel_gone() { # until the server counts no live tunnel (GET /_relay/health)
  timeout "$STEP_TIMEOUT" node -e '
    const url = `${process.argv[1]}/_relay/health`;
    const deadline = Date.now() + 15000;
    (async () => {
      for (;;) {
        const h = await (await fetch(url, { signal: AbortSignal.timeout(5000) })).json();
        if (h.tunnels === 0) return;
        if (Date.now() > deadline) throw new Error(`the server still counts ${h.tunnels} live tunnel(s)`);
        await new Promise((r) => setTimeout(r, 100));
      }
    })().catch((e) => { console.error(e.message); process.exit(1); });
  ' "$SERVER_URL"
}

# `relay requests --json [ARGS]` checked by a node program: JSON_CHECK FILE
# PROGRAM ARGS... runs PROGRAM with `entries` (the parsed lines, newest first)
# and `args`; what it prints is the result, exit 1 a failure.
json_check() {
  local file=$1 program=$2
  shift 2
  node -e '
    const [file, program, ...args] = process.argv.slice(1);
    const lines = require("fs").readFileSync(file, "utf8").split("\n").filter((l) => l.trim());
    const entries = lines.map((l, i) => {
      try { return JSON.parse(l); } catch (e) { console.error(`line ${i + 1} is not JSON: ${l}`); process.exit(1); }
    });
    const fail = (msg) => { console.error(msg); process.exit(1); };
    new Function("entries", "args", "fail", program)(entries, args, fail);
  ' "$file" "$program" "$@"
}

SECRET=$(node -e 'process.stdout.write(require("crypto").randomBytes(16).toString("hex"))')

say "== relay example: an Auth0 post-login Action calling an app on your laptop"
say

# --- the relay server ---------------------------------------------------------
start server env RUST_LOG=warn,relay_server=info "$SERVER_BIN" \
  --listen 127.0.0.1:0 --open --data-dir "$TMP/data"
SERVER_PID=$LAST_PID
wait_for_line "$TMP/server.log" '^relay-server listening on http://127\.0\.0\.1:[0-9]+$' "$SERVER_PID" relay-server
SERVER_PORT=$(sed -nE 's#^relay-server listening on http://127\.0\.0\.1:([0-9]+)$#\1#p' "$TMP/server.log" | head -n1)
SERVER_URL=http://127.0.0.1:$SERVER_PORT
say "relay-server listening on $SERVER_URL (--open, data in a temp dir)"

# --- the app on the laptop ----------------------------------------------------
start app env PORT=0 HOST=127.0.0.1 ACTION_SECRET="$SECRET" USERS_FILE="$TMP/users.json" \
  node "$HERE/app.js"
APP_PID=$LAST_PID
wait_for_line "$TMP/app.log" '^app listening on http://127\.0\.0\.1:[0-9]+$' "$APP_PID" "the app"
APP_PORT=$(sed -nE 's#^app listening on http://127\.0\.0\.1:([0-9]+)$#\1#p' "$TMP/app.log" | head -n1)
say "app (Express + GraphQL) listening on http://127.0.0.1:$APP_PORT, users in users.json"

# --- the tunnel ---------------------------------------------------------------
say "relay connect $APP_PORT --name $NAME --when-offline accept --deliver-missed:"
start_client client
# Path routing: *.localhost does not resolve to loopback everywhere in Node.
RELAY_URL=$SERVER_URL/t/$NAME
say "the Action's RELAY_URL secret: $RELAY_URL  (the same URL on every run)"
say

# --- step 1 -------------------------------------------------------------------
say "-- Step 1: laptop online; alice@example.com logs in for the first time"
run_login alice@example.com
((LOGIN_RC == 0)) || fail "step 1: the Action failed (exit $LOGIN_RC); expected it delivered"
USERS=$(app_users)
has_user "$USERS" alice@example.com || fail "step 1: alice@example.com is not in the app's users ($USERS)"
ok "delivered through the tunnel; the app's users: $USERS"
say

# --- step 2 -------------------------------------------------------------------
say "-- Step 2: laptop closed (relay client stopped); bob@example.com logs in for the first time"
stop_started "$CLIENT_PID"
# Wait until the server has seen the session go, so the login below cannot
# race the disconnect.
wait_tunnel_gone || fail "step 2: relay-server still counts the tunnel as connected ${STEP_TIMEOUT}s after the client stopped"
say "   relay client stopped; the server saw the tunnel go"
run_login bob@example.com
((LOGIN_RC == 0)) || fail "step 2: bob's login failed (login.js exit $LOGIN_RC); with --when-offline accept the Action should go on"
grep -q -- '-> HTTP 202$' <<<"$LOGIN_OUT" || fail "step 2: expected the Action's call to get HTTP 202 from relay"
QUEUED_ID=$(sed -nE 's/.*queued by relay as ([0-9a-z]+);.*/\1/p' <<<"$LOGIN_OUT")
[[ -n $QUEUED_ID ]] || fail "step 2: the Action did not log the request id relay queued the call under"
USERS=$(app_users)
has_user "$USERS" bob@example.com && fail "step 2: bob@example.com is in the app although the tunnel was down"
ok "the login went on: relay answered 202 queued ($QUEUED_ID); bob is not in the app yet (users: $USERS)"
say

# --- step 3 -------------------------------------------------------------------
say "-- Step 3: the relay server kept the call: relay requests --missed"
relay_cli requests --missed >"$TMP/missed.txt" 2>&1 || fail "step 3: 'relay requests --missed' failed: $(cat "$TMP/missed.txt")"
indent <"$TMP/missed.txt"
relay_cli requests --missed --json >"$TMP/missed.jsonl" 2>"$TMP/requests.err" ||
  fail "step 3: 'relay requests --missed --json' failed: $(cat "$TMP/requests.err")"
json_check "$TMP/missed.jsonl" '
  const [id] = args;
  if (entries.length !== 1 || entries[0].id !== id) fail(`expected just ${id}, got ${JSON.stringify(entries.map((e) => e.id))}`);
  const e = entries[0];
  if (e.method !== "POST" || e.path !== "/graphql" || e.status !== 202 || e.outcome !== "offline" || e.delivery !== "missed") {
    fail(`expected POST /graphql 202 offline, delivery missed: ${JSON.stringify(e)}`);
  }
' "$QUEUED_ID" || fail "step 3: 'relay requests --missed --json' does not show $QUEUED_ID waiting: $(cat "$TMP/missed.jsonl")"
ok "waiting to be delivered: $QUEUED_ID (POST /graphql, 202, outcome offline, delivery missed)"
say

# --- step 4 -------------------------------------------------------------------
say "-- Step 4: laptop open again: the same relay connect command, and nothing else"
start_client client2
wait_user bob@example.com || fail "step 4: bob@example.com is not in the app ${STEP_TIMEOUT}s after relay connect --deliver-missed (users: $USERS)"
ok "relay connect delivered the missed call by itself: bob is in the app (users: $USERS)"
# The client records the delivery just after the app answered it: poll.
DELIVERED_CHECK='
  const [id] = args;
  const original = entries.find((e) => e.id === id);
  if (!original) fail(`${id} is not listed`);
  if (original.delivery !== "delivered") fail(`${id} is ${original.delivery}, expected delivered`);
  const replay = entries.find((e) => e.id === original.delivered_by);
  if (!replay || replay.replay_of !== id || replay.status !== 200) {
    fail(`delivered_by ${original.delivered_by} should be a replay of ${id} answered 200: ${JSON.stringify(replay)}`);
  }
  console.log(`${id} delivered by ${replay.id} (${replay.method} ${replay.path} ${replay.status})`);
'
DELIVERY=
for ((i = 0; i < STEP_TIMEOUT * 5; i++)); do
  relay_cli requests --json >"$TMP/requests.jsonl" 2>"$TMP/requests.err" ||
    fail "step 4: 'relay requests --json' failed: $(cat "$TMP/requests.err")"
  DELIVERY=$(json_check "$TMP/requests.jsonl" "$DELIVERED_CHECK" "$QUEUED_ID" 2>"$TMP/check.err") && break
  DELIVERY=
  sleep 0.2
done
[[ -n $DELIVERY ]] || fail "step 4: 'relay requests --json' does not show $QUEUED_ID delivered within ${STEP_TIMEOUT}s: $(cat "$TMP/check.err")"
grep -vE '^Forwarding  ' "$TMP/client2.log" | indent
ok "$DELIVERY"
ADDED=$(count_lines "$TMP/app.log" 'addUser bob@example\.com')
((ADDED == 1)) || fail "step 4: the app got addUser for bob $ADDED times, expected once"
ok "the app got bob's addUser once"
relay_cli requests --missed --json >"$TMP/missed2.jsonl" 2>"$TMP/requests.err" ||
  fail "step 4: 'relay requests --missed --json' failed: $(cat "$TMP/requests.err")"
[[ ! -s $TMP/missed2.jsonl ]] || fail "step 4: requests still wait after the delivery: $(cat "$TMP/missed2.jsonl")"
ok "nothing waits any more"
say

say "PASS: the login made while the laptop was closed went on, and relay delivered its call to the app when the laptop was back."
