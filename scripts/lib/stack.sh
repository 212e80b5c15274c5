# Starts a private single-node stack under $WORK: nats-server with JetStream
# and the shipped users and permissions,
# a PostgreSQL cluster, and `vaultline serve` with a filesystem repository, or
# with STACK_S3=1 a Garage S3 server and the repository in its bucket.
# Needs deps.sh sourced and ensure_* run (ensure_garage for STACK_S3). Sets VL,
# VAULTLINE_CONFIG, SERVE_PID and PG_PORT; stack_cleanup (installed as the
# EXIT trap) stops everything.
NATS_PORT="${NATS_PORT:-14222}" PG_PORT="${PG_PORT:-15432}" ADMIN="${ADMIN:-127.0.0.1:19464}"
pids=()
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
stack_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -f "$WORK/pg/data/postmaster.pid" ] && run_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m fast stop >/dev/null 2>&1 || true
}

stack_start() {
  trap stack_cleanup EXIT
  # BENCH_VL: another build (an earlier commit's) measured on the same stack;
  # it must understand per-stage logins ([nats.stages], [catalog.stages]).
  if [ -n "${BENCH_VL:-}" ]; then
    VL="$BENCH_VL"
  else
    echo "==> building vaultline (release)"
    cargo build --release --workspace --quiet
    VL="$CARGO_TARGET_DIR/release/vaultline"
  fi

  stack_nats

  echo "==> starting a private PostgreSQL on :$PG_PORT"
  mkdir -p "$WORK/pg"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$WORK/pg"; fi
  run_pg "$PG_BIN/initdb" -A trust -U postgres -D "$WORK/pg/data" >/dev/null
  # -w: returns once it accepts queries, and fails (e.g. port taken) instead of pretending.
  run_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $WORK/pg" start >/dev/null

  [ "${STACK_S3:-0}" = 1 ] && stack_garage
  stack_write_config
  # Catalog schema and stage roles, stream and consumers: the admin's job.
  "$VL" migrate >/dev/null
  "$VL" kek-generate "$WORK/kek.txt"
  # The staging key pair (an age identity, as kek-generate writes) goes in
  # the environment: the config stays readable by builds that predate it.
  [ -f "$WORK/staging-key.txt" ] || "$VL" kek-generate "$WORK/staging-key.txt" >/dev/null
  VAULTLINE_STAGING_KEY="$(cat "$WORK/staging-key.txt")"
  export VAULTLINE_STAGING_KEY
  stack_serve
}

# Writes $WORK/vaultline.toml and exports VAULTLINE_CONFIG: the repository is
# $WORK/repository, or with STACK_S3=1 the bucket of the Garage that
# stack_garage started.
stack_write_config() {
  local repository="path = \"$WORK/repository\""
  if [ "${STACK_S3:-0}" = 1 ]; then
    repository="url = \"s3://vaultline/repo\"
[repository.s3]
endpoint = \"$S3_ENDPOINT\"
region = \"garage\"
access-key-id = \"$S3_KEY_ID\"
secret-access-key-file = \"$WORK/s3-secret\""
  fi
  # Each stage logs in as its own NATS user and catalog role (the private
  # cluster trusts loopback, so the roles need no password); the CLI is the
  # operator, `vaultline migrate` the admin.
  local logins="" role
  for role in scheduler extractor packager uploader verifier copier retention auditor api; do
    logins+="[nats.stages.$role]
user = \"vaultline-$role\"
password-file = \"$WORK/nats/$role.password\"
[catalog.stages.$role]
user = \"vaultline_$role\"
"
  done
  cat >"$WORK/vaultline.toml" <<TOML
[nats]
url = "nats://127.0.0.1:$NATS_PORT"
user = "vaultline-operator"
password-file = "$WORK/nats/operator.password"
[nats.admin]
user = "vaultline-admin"
password-file = "$WORK/nats/admin.password"
$logins[catalog]
url = "postgres://postgres@127.0.0.1:$PG_PORT/postgres"
[repository]
$repository
[staging]
path = "$WORK/staging"
[keys]
kek-file = "$WORK/kek.txt"
[admin]
listen = "$ADMIN"
TOML
  export VAULTLINE_CONFIG="$WORK/vaultline.toml"
}

# nats-server with JetStream and the shipped users (deploy/nats/auth.conf),
# each with a fresh password in $WORK/nats/<role>.password.
stack_nats() {
  echo "==> starting nats-server with JetStream and vaultline's users on :$NATS_PORT"
  mkdir -p "$WORK/nats"
  cp deploy/nats/auth.conf "$WORK/nats/auth.conf"
  cat >"$WORK/nats/server.conf" <<CONF
listen: "127.0.0.1:$NATS_PORT"
jetstream { store_dir: "$WORK/nats/store" }
include auth.conf
CONF
  local role vars=()
  for role in scheduler extractor packager uploader verifier copier retention auditor api operator admin; do
    (umask 077; python3 -c 'import secrets; print(secrets.token_hex(18))' >"$WORK/nats/$role.password")
    vars+=("VAULTLINE_NATS_${role^^}_PASSWORD=$(cat "$WORK/nats/$role.password")")
  done
  env "${vars[@]}" "$VAULTLINE_NATS_SERVER" -c "$WORK/nats/server.conf" >"$WORK/nats.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && return 0; sleep 0.1; done
  echo "nats-server did not start; see $WORK/nats.log" >&2
  return 1
}

# (Re)starts `vaultline serve` and waits until it is ready.
stack_serve() {
  echo "==> starting every stage: vaultline serve"
  "$VL" serve >>"$WORK/serve.log" 2>&1 &
  pids+=($!)
  SERVE_PID=$!
  local ready="import urllib.request; urllib.request.urlopen('http://$ADMIN/health/ready', timeout=2)"
  for _ in $(seq 150); do python3 -c "$ready" 2>/dev/null && return 0; sleep 0.2; done
  echo "vaultline serve did not become ready; see $WORK/serve.log" >&2
  return 1
}

# A single-node Garage (S3) with bucket `vaultline` and one key; sets
# S3_ENDPOINT and S3_KEY_ID and writes the secret to $WORK/s3-secret.
stack_garage() {
  local port="${GARAGE_PORT:-13900}" rpc="${GARAGE_RPC_PORT:-13901}" dir="$WORK/garage"
  mkdir -p "$dir"
  cat >"$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"
TOML
  local g=("$VAULTLINE_GARAGE" -c "$dir/garage.toml")
  echo "==> starting Garage (S3) on :$port"
  RUST_LOG=warn "${g[@]}" server >"$WORK/garage.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 150); do "${g[@]}" status >/dev/null 2>&1 && break; sleep 0.1; done
  local id; id=$("${g[@]}" node id -q | cut -d@ -f1)
  "${g[@]}" layout assign -z dc1 -c 100G "$id" >/dev/null
  "${g[@]}" layout apply --version 1 >/dev/null
  S3_KEY_ID="GK$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
  local secret; secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
  "${g[@]}" key import --yes -n vaultline "$S3_KEY_ID" "$secret" >/dev/null
  "${g[@]}" bucket create vaultline >/dev/null
  "${g[@]}" bucket allow --read --write --owner vaultline --key vaultline >/dev/null
  (umask 077; echo "$secret" >"$WORK/s3-secret")
  S3_ENDPOINT="http://127.0.0.1:$port"
  export S3_ENDPOINT S3_KEY_ID
}
