#!/usr/bin/env bash
# Stops what scripts/up.sh started and removes its directory.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${VAULTLINE_STACK_DIR:-$PWD/.stack}"
if [ ! -f "$WORK/pids" ]; then
  echo "No stack runs under $WORK." >&2
  exit 1
fi
. scripts/lib/stack.sh
mapfile -t pids <"$WORK/pids"
PG_BIN="$(cat "$WORK/pg_bin")"
stack_cleanup
# Not our children: wait until they are gone before removing their files.
for pid in "${pids[@]}"; do
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
done
rm -rf "$WORK"
echo "Stopped and removed $WORK."
