#!/usr/bin/env bash
# vaultline end to end on one node: installs nats-server and PostgreSQL when
# missing, builds, starts them and vaultline, creates a tenant, backs up a
# sample directory, restores it, diffs it, and prints the snapshot table.
# Everything lives under $VAULTLINE_QUICKSTART_DIR (default ./.quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_nats_server
ensure_postgres

WORK="${VAULTLINE_QUICKSTART_DIR:-$PWD/.quickstart}"
rm -rf "$WORK"; mkdir -p "$WORK"
NATS_PORT="${NATS_PORT:-14222}" PG_PORT="${PG_PORT:-15432}" ADMIN="${ADMIN:-127.0.0.1:19464}"
pids=()
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -f "$WORK/pg/data/postmaster.pid" ] && run_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m fast stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "==> building vaultline (release)"
cargo build --release --workspace --quiet
VL="$CARGO_TARGET_DIR/release/vaultline"

echo "==> starting nats-server with JetStream on :$NATS_PORT"
"$VAULTLINE_NATS_SERVER" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$WORK/nats" >"$WORK/nats.log" 2>&1 &
pids+=($!)

echo "==> starting a private PostgreSQL on :$PG_PORT"
mkdir -p "$WORK/pg"
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$WORK/pg"; fi
run_pg "$PG_BIN/initdb" -A trust -U postgres -D "$WORK/pg/data" >/dev/null
# -w: returns once it accepts queries, and fails (e.g. port taken) instead of pretending.
run_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w \
  -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $WORK/pg" start >/dev/null

cat >"$WORK/vaultline.toml" <<TOML
[nats]
url = "nats://127.0.0.1:$NATS_PORT"
[catalog]
url = "postgres://postgres@127.0.0.1:$PG_PORT/postgres"
[repository]
path = "$WORK/repository"
[staging]
path = "$WORK/staging"
[keys]
kek-file = "$WORK/kek.txt"
[admin]
listen = "$ADMIN"
TOML
export VAULTLINE_CONFIG="$WORK/vaultline.toml"
"$VL" kek-generate "$WORK/kek.txt"

echo "==> starting every stage: vaultline serve"
"$VL" serve >"$WORK/serve.log" 2>&1 &
pids+=($!)
SERVE_PID=$!
ready() { python3 -c "import urllib.request,sys; urllib.request.urlopen('http://$ADMIN/health/ready', timeout=2)" 2>/dev/null; }
for _ in $(seq 150); do ready && break; sleep 0.2; done
ready || { echo "vaultline serve did not become ready; see $WORK/serve.log" >&2; exit 1; }

SAMPLE="${VAULTLINE_SAMPLE_DIR:-$WORK/sample}"
if [ -z "${VAULTLINE_SAMPLE_DIR:-}" ]; then
  echo "==> a sample directory"
  mkdir -p "$WORK/sample/docs/nested dir" "$WORK/sample/empty"
  cp -r README.md schemas "$WORK/sample/docs/"
  head -c 20000000 /dev/urandom >"$WORK/sample/random.bin"
  seq 1 200000 >"$WORK/sample/docs/nested dir/numbers.txt"
  : >"$WORK/sample/empty.txt"
  ln -s docs/README.md "$WORK/sample/readme-link"
fi

"$VL" tenant create demo
"$VL" source add demo/sample --path "$SAMPLE"
echo "==> backup"
start=$(date +%s.%N)
"$VL" backup demo/sample --wait --timeout 3600
echo "    backup took $(python3 -c "print(round($(date +%s.%N) - $start, 1))")s"
SNAP=$("$VL" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
echo "==> restore $SNAP"
"$VL" restore "$SNAP" --to "$WORK/restored"
diff -r --no-dereference "$SAMPLE" "$WORK/restored"
echo "==> restored tree is identical to the source"
echo "==> a second backup (deduplicated)"
"$VL" backup demo/sample --wait --timeout 3600
"$VL" snapshots
echo "==> the operating loop: history, stats, retention preview, audit chain"
"$VL" retention set demo/sample --keep-last 1 --keep-daily 7
"$VL" retention preview demo/sample
"$VL" history
"$VL" stats
"$VL" audit verify
echo "==> peak memory of vaultline serve: $(awk '/VmHWM/ {print $2, $3}' /proc/$SERVE_PID/status)"
echo "==> done: metrics at http://$ADMIN/metrics while it runs; logs in $WORK/*.log"
