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
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "==> building vaultline (release)"
cargo build --release --workspace --quiet
VL="$CARGO_TARGET_DIR/release/vaultline"

echo "==> starting nats-server with JetStream on :$NATS_PORT"
"$VAULTLINE_NATS_SERVER" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$WORK/nats" >"$WORK/nats.log" 2>&1 &
pids+=($!)

echo "==> starting a private PostgreSQL on :$PG_PORT"
mkdir -p "$WORK/pg"
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK/pg"
run_pg "$PG_BIN/initdb" -A trust -U postgres -D "$WORK/pg/data" >/dev/null
run_pg "$PG_BIN/postgres" -D "$WORK/pg/data" -p "$PG_PORT" -c listen_addresses=127.0.0.1 -k "$WORK/pg" >"$WORK/pg.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 0.1; done

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
for _ in $(seq 100); do curl -fs "http://$ADMIN/health/ready" >/dev/null 2>&1 && break; sleep 0.2; done

echo "==> a sample directory"
mkdir -p "$WORK/sample/docs/nested dir" "$WORK/sample/empty"
cp -r README.md schemas "$WORK/sample/docs/"
head -c 20000000 /dev/urandom >"$WORK/sample/random.bin"
seq 1 200000 >"$WORK/sample/docs/nested dir/numbers.txt"
: >"$WORK/sample/empty.txt"
ln -s docs/README.md "$WORK/sample/readme-link"

"$VL" tenant create demo
"$VL" source add demo/sample --path "$WORK/sample"
echo "==> backup"
"$VL" backup demo/sample --wait --timeout 600
SNAP=$("$VL" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
echo "==> restore $SNAP"
"$VL" restore "$SNAP" --to "$WORK/restored"
diff -r --no-dereference "$WORK/sample" "$WORK/restored"
echo "==> restored tree is identical to the source"
echo "==> a second backup (deduplicated)"
"$VL" backup demo/sample --wait --timeout 600
"$VL" snapshots
echo "==> done: metrics at http://$ADMIN/metrics while it runs; logs in $WORK/*.log"
