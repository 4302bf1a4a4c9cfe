#!/usr/bin/env bash
# shellcheck disable=SC2016  # the node -e programs are single-quoted on purpose
# The Auth0 post-login Action story, end to end, with the real binaries:
#
#   1. online:  alice's first login -> Action -> relay -> local app: alice added
#   2. offline: laptop closed (client stopped); bob's first login gets 503
#               tunnel_offline at once, and the server keeps the request
#   3. `relay requests` lists the captured offline request
#   4. back at the desk: `relay connect` again, `relay replay ID`: bob added
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
  start "$1" "$RELAY_BIN" connect "$APP_PORT" --server "$SERVER_URL" --name "$NAME" --no-inspect
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
say "relay connect $APP_PORT --name $NAME:"
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
DOWN_RE="tunnel down.*tunnel=$NAME"
DOWN_BEFORE=$(count_lines "$TMP/server.log" "$DOWN_RE")
stop_started "$CLIENT_PID"
# Wait until the server has seen the session go, so the login below cannot
# race the disconnect.
for ((i = 0; i < STEP_TIMEOUT * 10; i++)); do
  (($(count_lines "$TMP/server.log" "$DOWN_RE") > DOWN_BEFORE)) && break
  sleep 0.1
done
(($(count_lines "$TMP/server.log" "$DOWN_RE") > DOWN_BEFORE)) ||
  fail "step 2: relay-server logged no 'tunnel down' for $NAME within ${STEP_TIMEOUT}s of stopping the client"
say "   relay client stopped; the server saw the tunnel go down"
run_login bob@example.com
((LOGIN_RC == 2)) || fail "step 2: expected the Action to fail with an HTTP error (login.js exit 2), got exit $LOGIN_RC"
grep -q 'Action failed: HTTP 503' <<<"$LOGIN_OUT" || fail "step 2: expected HTTP 503 from relay"
grep -q '"error":"tunnel_offline"' <<<"$LOGIN_OUT" || fail "step 2: expected the JSON error tunnel_offline"
USERS=$(app_users)
has_user "$USERS" bob@example.com && fail "step 2: bob@example.com is in the app although the tunnel was down"
ok "the Action got 503 tunnel_offline at once; bob is not in the app (users: $USERS)"
say

# --- step 3 -------------------------------------------------------------------
say "-- Step 3: the relay server kept the request: relay requests"
relay_cli requests >"$TMP/requests.txt" 2>&1 || fail "step 3: 'relay requests' failed: $(cat "$TMP/requests.txt")"
indent <"$TMP/requests.txt"
relay_cli requests --json >"$TMP/requests.jsonl" 2>"$TMP/requests.err" ||
  fail "step 3: 'relay requests --json' failed: $(cat "$TMP/requests.err")"
OFFLINE_ID=$(node -e '
  const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter((l) => l.trim());
  const entries = lines.map((l, i) => {
    try { return JSON.parse(l); } catch (e) { console.error(`line ${i + 1} is not JSON: ${l}`); process.exit(1); }
  });
  // Newest first: the first offline POST /graphql is the newest.
  const hit = entries.find((e) => e.outcome === "offline" && e.path === "/graphql");
  if (!hit) { console.error(`no offline /graphql entry among ${entries.length}`); process.exit(1); }
  if (hit.method !== "POST" || hit.status !== 503) {
    console.error(`offline entry has method ${hit.method} status ${hit.status}, expected POST 503`); process.exit(1);
  }
  console.log(hit.id);
' "$TMP/requests.jsonl") || fail "step 3: no captured offline POST /graphql (503) in 'relay requests --json'"
ok "captured while offline: $OFFLINE_ID (POST /graphql, 503, outcome offline)"
say

# --- step 4 -------------------------------------------------------------------
say "-- Step 4: back at the desk: relay connect again, then relay replay $OFFLINE_ID"
start_client client2
REPLAY_RC=0
relay_cli replay "$OFFLINE_ID" --to "$APP_PORT" >"$TMP/replay.txt" 2>&1 || REPLAY_RC=$?
indent <"$TMP/replay.txt"
((REPLAY_RC == 0)) || fail "step 4: 'relay replay $OFFLINE_ID' exited $REPLAY_RC"
USERS=$(app_users)
has_user "$USERS" bob@example.com || fail "step 4: bob@example.com is not in the app after the replay ($USERS)"
ok "replayed to the app: bob is in the app now (users: $USERS)"

# The same with --json, as a script would: addUser is idempotent, so a second
# replay returns bob's row again.
relay_cli replay "$OFFLINE_ID" --to "$APP_PORT" --json >"$TMP/replay.json" 2>"$TMP/replay.err" ||
  fail "step 4: 'relay replay $OFFLINE_ID --json' failed: $(cat "$TMP/replay.err" "$TMP/replay.json")"
node -e '
  const [file, id] = process.argv.slice(1);
  const text = require("fs").readFileSync(file, "utf8").trim();
  let r;
  try { r = JSON.parse(text); } catch (e) { console.error(`not one JSON object: ${text}`); process.exit(1); }
  const problems = [];
  if (r.status !== 200) problems.push(`status ${r.status}, expected 200`);
  if (r.outcome !== "delivered") problems.push(`outcome ${r.outcome}, expected delivered`);
  if (r.replay_of !== id) problems.push(`replay_of ${r.replay_of}, expected ${id}`);
  const body = r.response && r.response.body ? Buffer.from(r.response.body, "base64").toString("utf8") : "";
  if (!body.includes("bob@example.com")) problems.push(`response body ${JSON.stringify(body)} lacks bob@example.com`);
  if (problems.length) { console.error(problems.join("; ")); process.exit(1); }
  console.log(`   relay replay --json: status ${r.status}, outcome ${r.outcome}, ${r.duration_ms} ms, target ${r.target}, body ${body}`);
' "$TMP/replay.json" "$OFFLINE_ID" || fail "step 4: unexpected 'relay replay --json' result: $(cat "$TMP/replay.json")"

relay_cli requests --json >"$TMP/requests2.jsonl" 2>"$TMP/requests.err" ||
  fail "step 4: 'relay requests --json' failed: $(cat "$TMP/requests.err")"
REPLAYS=$(node -e '
  const [file, id] = process.argv.slice(1);
  const entries = require("fs").readFileSync(file, "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  const replays = entries.filter((e) => e.replay_of === id);
  if (!replays.length) { console.error(`no entry with replay_of ${id} among ${entries.length}`); process.exit(1); }
  console.log(replays.map((e) => `${e.id} (${e.method} ${e.path} ${e.status} ${e.outcome})`).join(", "));
' "$TMP/requests2.jsonl" "$OFFLINE_ID") || fail "step 4: 'relay requests --json' shows no entry with replay_of $OFFLINE_ID"
ok "relay requests shows the replay(s) linked to $OFFLINE_ID: $REPLAYS"
say

say "PASS: the login made while the laptop was closed was kept by relay and replayed into the app."
