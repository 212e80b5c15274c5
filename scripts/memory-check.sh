#!/usr/bin/env bash
# Bounded memory, checked: backs up and restores a generated SIZE GiB dataset
# (default 4) through a private single-node stack and fails when any vaultline
# process peaks above LIMIT MiB (default 128, issue 5's target). `--s3` puts the repository on
# Garage and also reports S3 requests per GiB. `--files N` backs up and restores a tree of N
# tiny files instead (memory must not grow with the number of entries either). Prints
# throughput either way.
#   scripts/memory-check.sh [--s3] [--files N] [SIZE_GIB] [LIMIT_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
S3=0
if [ "${1:-}" = "--s3" ]; then S3=1; shift; fi
FILES=0
if [ "${1:-}" = "--files" ]; then FILES="$2"; shift 2; fi
SIZE="${1:-4}" LIMIT="${2:-128}"
ensure_nats_server
ensure_postgres
[ "$S3" = 1 ] && ensure_garage
WORK="$PWD/.memcheck"
mkdir -p "$WORK"
rm -rf "$WORK/nats" "$WORK/pg" "$WORK/repository" "$WORK/staging" "$WORK/garage" "$WORK"/*.log "$WORK/kek.txt"
NATS_PORT=14322 PG_PORT=15532 ADMIN=127.0.0.1:19564 STACK_S3="$S3"
. scripts/lib/stack.sh
stack_start
python3 scripts/memory/check.py --vl "$VL" --work "$WORK" --serve-pid "$SERVE_PID" \
  --admin "$ADMIN" --gib "$SIZE" --limit-mib "$LIMIT" --files "$FILES"
