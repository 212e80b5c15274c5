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
. scripts/lib/stack.sh
stack_start

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
