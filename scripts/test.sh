#!/usr/bin/env bash
# The whole test suite, after clippy. Starts its own nats-server, PostgreSQL, MariaDB,
# Garage (S3), moto (object lock only) and Prometheus per test (on free ports, in temp dirs); installs them first
# when missing. The Prometheus rules' checks and unit tests (promtool) run in the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_nats_server
ensure_postgres
ensure_mariadb
ensure_garage
ensure_moto
ensure_prometheus
ensure_sshd
ensure_k8s_tools
ensure_disk_space
echo "==> nats-server: $VAULTLINE_NATS_SERVER ($("$VAULTLINE_NATS_SERVER" --version))"
# Lints first: clippy.toml keeps the metrics macros inside vaultline-metrics.
echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The process tests start the per-stage binaries themselves.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
