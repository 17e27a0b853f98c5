#!/usr/bin/env bash
# The test suite, as CI runs it: format and lint gates, unit and integration tests against the
# embedded Glance store, then the integration tests again against a real Glance 33 installed from
# PyPI and run on loopback, and the checks after them. Installs what it needs; a first run takes
# a few minutes (Rust build, Python venv), later runs much less.
#
#   scripts/test.sh              every step below, in this order (what .ci/run runs)
#   scripts/test.sh list         the steps, one line each
#   scripts/test.sh STEP...      only those steps, starting (and then stopping) what they need
#
# Every runner writes its own result record in target/test-results/ (libtest's --logfile for
# cargo tests, a JSON file named by IG_TEST_RESULT for the others); the closing line adds up
# those records, and a record missing for a step that ran fails the run.
set -euo pipefail

# name|services it needs|what it runs
STEPS=(
  "lint|-|cargo fmt --check and clippy -D warnings (gates: nothing counted)"
  "embedded|-|cargo test: unit and integration tests against the embedded Glance store"
  "real-glance|openstack|integration tests against the real Glance 33 and Nova 34"
  "alliance-real|openstack|Alliance tests against the real Glance, one at a time"
  "parity|openstack|differential tests: the gateway and Nova in front of the same Glance"
  "keystone|openstack keystone|Alliance environments on a Keystone-protected Glance (Keystone 30)"
  "upstream-tls|openstack keystone|TLS to the upstreams: nginx with a private CA in front of Glance and Keystone"
  "sdk|openstack gateway|openstacksdk's compute image API through the gateway binary"
  "glance-v1|openstack|Glance v1 integration tests against the real Glance (after the others: they leave a public image)"
  "glance-v1-cli|openstack gateway|python-glanceclient's Glance v1 CLI through the gateway binary"
  "ops|-|SIGTERM drain of one of three gateways behind nginx under load, then a soak"
  "deploy|-|deployment artefacts: Kubernetes schemas, consistency with the Dockerfile and config, nginx -t"
  "container|-|deploy/Dockerfile built offline with podman and run read-only as uid 65532"
  "fuzz|-|every cargo-fuzz target for FUZZ_SECS seconds (default 20)"
)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
state="$repo/target/test-openstack"
results="$repo/target/test-results"
log="$repo/target/test-run.log"
gateway_bin="${CARGO_TARGET_DIR:-$repo/target}/debug/image-gateway"

step_field() { # NAME FIELD(1 name, 2 needs, 3 description): the STEPS row's field
  local row
  for row in "${STEPS[@]}"; do
    [ "${row%%|*}" = "$1" ] && { cut -d'|' -f"$2" <<<"$row"; return; }
  done
  return 1
}
list_steps() { local row n d; for row in "${STEPS[@]}"; do IFS='|' read -r n _ d <<<"$row"; printf '%-14s %s\n' "$n" "$d"; done; }

# --- result records ---------------------------------------------------------------------------

# Notes that the running step owes the record NAME: the summary fails the run if it is missing.
expect() { printf '%s %s\n' "$current" "$1" >>"$results/expected"; }
# cargo test RECORD [ARGS...] [-- TEST-ARGS...]: libtest writes one line per test to
# target/test-results/RECORD.libtest/log.* (scripts/libtest-runner gives each binary its own).
cargo_test() {
  local record=$1 args
  shift
  expect "$record"
  mkdir -p "$results/$record.libtest"
  args=("$@")
  [[ " $* " == *" -- "* ]] || args+=(--)
  args+=(--logfile "$results/$record.libtest/log")
  cargo test --locked --config "target.'cfg(all())'.runner=['$repo/scripts/libtest-runner']" \
    "${args[@]}" 2>&1 | tee -a "$log"
}
# RECORD COMMAND...: a runner that writes its own counts as JSON to $IG_TEST_RESULT.
counted() {
  local record=$1
  shift
  expect "$record"
  IG_TEST_RESULT="$results/$record.json" "$@" 2>&1 | tee -a "$log"
}

# --- services: started by the first step that needs them, stopped after the last -------------

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start_openstack() { # Glance 33 and Nova 34 (from PyPI, under uWSGI, sqlite) on loopback
  scripts/openstack/install.sh
  local glance_port nova_port
  glance_port="$(free_port)"
  nova_port="$(free_port)"
  # Token mode: Glance also takes the identity from the token Nova forwards (scripts/openstack).
  GLANCE_AUTH=token scripts/openstack/glance.sh start "$state/glance" "$glance_port"
  scripts/openstack/nova.sh start "$state/nova" "$nova_port" "http://127.0.0.1:$glance_port"
  export IG_TEST_GLANCE_URL="http://127.0.0.1:$glance_port" IG_TEST_NOVA_URL="http://127.0.0.1:$nova_port"
}
stop_openstack() {
  scripts/openstack/nova.sh stop "$state/nova" >/dev/null 2>&1 || true
  scripts/openstack/glance.sh stop "$state/glance" >/dev/null 2>&1 || true
}
start_keystone() { # Keystone 30 and a second Glance that it protects
  local keystone_port glance_ks_port
  keystone_port="$(free_port)"
  glance_ks_port="$(free_port)"
  scripts/openstack/keystone.sh start "$state/keystone" "$keystone_port"
  KEYSTONE_URL="http://127.0.0.1:$keystone_port/v3" GLANCE_AUTH=keystone \
    scripts/openstack/glance.sh start "$state/glance-keystone" "$glance_ks_port"
  export IG_TEST_KEYSTONE_CREDENTIALS="$state/keystone/credentials.json" \
    IG_TEST_KEYSTONE_GLANCE_URL="http://127.0.0.1:$glance_ks_port"
}
stop_keystone() {
  scripts/openstack/glance.sh stop "$state/glance-keystone" >/dev/null 2>&1 || true
  scripts/openstack/keystone.sh stop "$state/keystone" >/dev/null 2>&1 || true
}
start_gateway() { # the gateway binary in front of the real Glance
  build_gateway
  local gateway_port
  gateway_port="$(free_port)"
  # The SDK script plays the auth layer in front: its identity headers are believed from loopback.
  IMAGE_GATEWAY_IDENTITY_PROXIES='["127.0.0.0/8"]' \
    IMAGE_GATEWAY_LISTEN="127.0.0.1:$gateway_port" IMAGE_GATEWAY_GLANCE__URL="$IG_TEST_GLANCE_URL" \
    IMAGE_GATEWAY_LOG__FORMAT=text "$gateway_bin" serve --config config/gateway.toml \
    >"$state/gateway.log" 2>&1 &
  gateway_pid=$!
  gateway_url="http://127.0.0.1:$gateway_port"
  for _ in $(seq 100); do
    curl -fsS "$gateway_url/readyz" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "the gateway is not ready after 10 s; its log ($state/gateway.log) ends:" >&2
  tail -n 20 "$state/gateway.log" >&2
  exit 1
}
stop_gateway() {
  if [ -n "${gateway_pid:-}" ]; then
    kill "$gateway_pid" 2>/dev/null && wait "$gateway_pid" 2>/dev/null
    gateway_pid=
  fi
  return 0
}
# A no-op after `cargo test` (which built it); a fresh build when a step runs alone.
build_gateway() { cargo build --locked --bin image-gateway 2>&1 | tee -a "$log"; }

# The services started so far, in order; stopped in reverse.
running=()
# Every service, whether or not this run started it: what an earlier run may have left behind.
stop_all() {
  stop_gateway
  stop_keystone
  stop_openstack
}
stop_running() {
  local k
  for ((k = ${#running[@]} - 1; k >= 0; k--)); do "stop_${running[$k]}"; done
  running=()
}

# --- steps: one function each ------------------------------------------------------------------

step_lint() {
  cargo fmt --check
  cargo clippy --all-targets --locked -- -D warnings
}
step_embedded() { cargo_test embedded; }
step_real-glance() {
  cargo_test real-glance --test nova_reads --test nova_writes --test proxy --test hostile --test resilience
}
step_alliance-real() {
  # One test at a time: Glance's import task writes to sqlite beside the request threads, and a
  # concurrent writer makes it fail with "database is locked" (a limit of the test Glance only).
  cargo_test alliance-real --test alliance -- --test-threads=1
}
step_parity() { cargo_test parity --test nova_parity -- --ignored; }
step_keystone() { cargo_test keystone --test alliance_keystone -- --ignored; }
step_upstream-tls() {
  # The tests make the CA and certificates (rcgen) and run nginx themselves; nginx-light has the
  # ssl module they need.
  if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q nginx-light >"$state/apt-nginx.log" 2>&1 ||
      { apt-get update -q >>"$state/apt-nginx.log" 2>&1 && apt-get install -y -q nginx-light >>"$state/apt-nginx.log" 2>&1; } ||
      { echo "apt-get install nginx-light failed (see $state/apt-nginx.log)" >&2; exit 1; }
  fi
  cargo_test upstream-tls --test upstream_tls -- --ignored --test-threads=1
}
step_sdk() {
  counted sdk target/openstack-venv/bin/python tests/sdk/compute_images.py "$gateway_url" "$IG_TEST_GLANCE_URL"
}
# After the Nova suites and the SDK: its fixtures include a public image, which every project
# sees, and those suites count what a project sees in a Glance of their own.
step_glance-v1() { cargo_test glance-v1 --test glance_v1; }
step_glance-v1-cli() {
  # glance --os-image-api-version 1 --os-image-url <the v1 mount> --os-auth-token gw:<project>:...:
  # each call checked against Glance's own v2 state (tests/glance_v1/cli.py).
  counted glance-v1-cli target/openstack-venv/bin/python tests/glance_v1/cli.py "$gateway_url/image-v1" "$IG_TEST_GLANCE_URL"
}
step_ops() {
  build_gateway
  counted drain env OPS_GATEWAY_BIN="$gateway_bin" tests/ops/drain.sh
  counted soak env SOAK_SECS="${SOAK_SECS:-30}" OPS_GATEWAY_BIN="$gateway_bin" tests/ops/soak.sh
}
step_deploy() {
  build_gateway
  counted deploy env IMAGE_GATEWAY_BIN="$gateway_bin" scripts/check-deploy.sh
}
step_container() { counted container scripts/container.sh; }
step_fuzz() { counted fuzz scripts/fuzz.sh "${FUZZ_SECS:-20}"; }

# --- the run -----------------------------------------------------------------------------------

if [ "${1:-}" = list ]; then
  list_steps
  exit 0
fi
selected=("$@")
if [ "${#selected[@]}" -eq 0 ]; then
  for row in "${STEPS[@]}"; do selected+=("${row%%|*}"); done
fi
for name in "${selected[@]}"; do
  step_field "$name" 1 >/dev/null || { printf 'unknown step: %s; the steps are:\n' "$name" >&2; list_steps >&2; exit 2; }
done

mkdir -p "$repo/target"
: >"$log"
rm -rf "$results"
mkdir -p "$results"
: >"$results/expected"
current=

finish() {
  local rc=$?
  stop_running
  [ -n "$current" ] && printf '\n==> %s stopped the run (status %s)\n' "$current" "$rc"
  python3 scripts/test_results.py "$results" || rc=1
  exit "$rc"
}
trap finish EXIT

# needed_later SERVICE INDEX: whether a selected step after INDEX needs SERVICE.
needed_later() {
  local j
  for ((j = $2 + 1; j < ${#selected[@]}; j++)); do
    [[ " $(step_field "${selected[$j]}" 2) " == *" $1 "* ]] && return 0
  done
  return 1
}

for i in "${!selected[@]}"; do
  current="${selected[$i]}"
  for service in $(step_field "$current" 2); do
    [ "$service" = - ] && continue
    [[ " ${running[*]} " == *" $service "* ]] && continue
    if [ "${#running[@]}" -eq 0 ]; then
      stop_all
      rm -rf "$state"
      mkdir -p "$state"
    fi
    printf '\n==> starting %s\n' "$service"
    running+=("$service") # first, so that a half-started service is stopped too
    "start_$service"
  done
  printf '\n==> %s: %s\n' "$current" "$(step_field "$current" 3)"
  "step_$current"
  still=()
  for ((k = ${#running[@]} - 1; k >= 0; k--)); do
    service="${running[$k]}"
    if needed_later "$service" "$i"; then still+=("$service"); else "stop_$service"; fi
  done
  running=("${still[@]}")
done
current=
