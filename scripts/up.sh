#!/usr/bin/env bash
# Starts a single-node vaultline and leaves it running, to try the CLI and
# the README's examples against: nats-server with JetStream and vaultline's
# users, a private PostgreSQL and `vaultline serve` with a filesystem
# repository, all under $VAULTLINE_STACK_DIR (default ./.stack). Prints the
# line to export; scripts/down.sh stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_nats_server
ensure_postgres

WORK="${VAULTLINE_STACK_DIR:-$PWD/.stack}"
if [ -f "$WORK/pids" ]; then
  echo "A stack already runs under $WORK (scripts/down.sh stops it)." >&2
  exit 1
fi
rm -rf "$WORK"; mkdir -p "$WORK"
. scripts/lib/stack.sh
stack_start
# Keep it running: no cleanup on exit; down.sh reads what to stop.
trap - EXIT
printf '%s\n' "${pids[@]}" >"$WORK/pids"
echo "$PG_BIN" >"$WORK/pg_bin"
ln -sf "$VL" "$WORK/vaultline"
cat <<EOT

vaultline is up: NATS on 127.0.0.1:$NATS_PORT, PostgreSQL on :$PG_PORT, metrics at http://$ADMIN/metrics.
Run this, then e.g. \`vaultline tenant create demo\`:

  export VAULTLINE_CONFIG=$VAULTLINE_CONFIG PATH=$WORK:\$PATH

The NATS users' passwords are in $WORK/nats/<user>.password (operator: vaultline-operator).
Logs: $WORK/*.log. Stop it with scripts/down.sh.
EOT
