#!/usr/bin/env bash
# The benchmark: vaultline against restic, borg and the raw pipe
# `tar | zstd -3 -T0 | age` on the same generated ~1 GiB dataset, in the same
# run, with a fresh repository per repetition. Installs restic, borgbackup,
# age and zstd with apt when missing (and nats-server / PostgreSQL like the
# quickstart). Writes docs/benchmarks.md. Not run by CI.
#
#   scripts/bench.sh                 # 3 repetitions, scale 1 (~1 GiB)
#   BENCH_REPS=5 BENCH_SCALE=4 scripts/bench.sh   # the 4 GiB variant
#   BENCH_GARAGE=0 scripts/bench.sh  # without the Garage row (which builds
#                                    # Garage with cargo the first time, ~13 min)
#   BENCH_TOOLS=raw,vaultline BENCH_REPS=1 BENCH_GARAGE=0 BENCH_OUT=/tmp/b.md scripts/bench.sh
#                                    # a quick look while profiling
#   BENCH_VL=/tmp/vaultline-before scripts/bench.sh
#                                    # an earlier build on the same stack and dataset
#                                    # (for before/after: run it, then without BENCH_VL)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_nats_server
ensure_postgres
missing=()
for tool in restic borg age zstd; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]} with apt"
  pkgs=(); for t in "${missing[@]}"; do [ "$t" = borg ] && pkgs+=(borgbackup) || pkgs+=("$t"); done
  # A fresh machine's package lists are empty: without an update, apt finds no restic.
  as_root apt-get update -qq
  as_root apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

WORK="${VAULTLINE_BENCH_DIR:-$PWD/.bench}"
SCALE="${BENCH_SCALE:-1}" REPS="${BENCH_REPS:-3}" OUT="${BENCH_OUT:-docs/benchmarks.md}"
mkdir -p "$WORK"
rm -rf "$WORK/nats" "$WORK/pg" "$WORK/garage" "$WORK/repository" "$WORK/staging" "$WORK"/restic* "$WORK"/borg* "$WORK/kek.txt" "$WORK/serve.log"
. scripts/lib/stack.sh
stack_start

PSQL="$PG_BIN/psql -h 127.0.0.1 -p $PG_PORT -U postgres"
CONN="-h 127.0.0.1 -p $PG_PORT -U postgres"
DATASET=(python3 scripts/bench/dataset.py "--psql=$PSQL" "--conn=$CONN" --pg-dump "$PG_BIN/pg_dump" --scale "$SCALE")
BASE="$WORK/base-$SCALE"
if [ ! -f "$BASE.complete" ]; then
  echo "==> generating the dataset (scale $SCALE) in $BASE"
  rm -rf "$BASE"
  "${DATASET[@]}" generate "$BASE"
  touch "$BASE.complete"
else
  echo "==> reusing the dataset in $BASE; recreating its database for the mutation"
  "${DATASET[@]}" --db-only generate "$BASE"
fi

echo "==> measuring (${REPS} repetitions)"
python3 scripts/bench/bench.py --work "$WORK" --base "$BASE" --vl "$VL" --config "$VAULTLINE_CONFIG" \
  --serve-pid "$SERVE_PID" --admin "$ADMIN" --reps "$REPS" --out "$OUT" --tools "${BENCH_TOOLS:-}" \
  --mutate "$(printf '%q ' "${DATASET[@]}") mutate $WORK/data"

if [ "${BENCH_GARAGE:-1}" = 1 ]; then
  echo "==> the same full backup with the repository in Garage (S3)"
  ensure_garage
  kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
  stack_garage
  STACK_S3=1 stack_write_config
  stack_serve
  python3 scripts/bench/bench.py --garage --work "$WORK" --base "$BASE" --vl "$VL" --config "$VAULTLINE_CONFIG" \
    --serve-pid "$SERVE_PID" --admin "$ADMIN" --reps "$REPS" --out "$OUT" --mutate :
fi
