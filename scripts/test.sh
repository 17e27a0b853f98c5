#!/usr/bin/env bash
# The whole test suite, as CI runs it: format and lint gates, unit and integration tests
# against the embedded Glance store, then the integration tests again against a real Glance 33
# installed from PyPI and run on loopback. Installs what it needs; a first run takes a few
# minutes (Rust build, Python venv), later runs much less.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
state="$repo/target/test-openstack"
log="$repo/target/test-run.log"
mkdir -p "$repo/target"
: > "$log"

step() { printf '\n==> %s\n' "$*"; }
# Runs cargo test, keeping its output for the closing count.
cargo_test() { cargo test --locked "$@" 2>&1 | tee -a "$log"; }

step "format and lint"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

step "tests against the embedded Glance store"
cargo_test

step "real Glance 33 and Nova 34 (from PyPI, under uWSGI, sqlite) on loopback"
scripts/openstack/install.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
stop_all() {
  [ -n "${gateway_pid:-}" ] && kill "$gateway_pid" 2>/dev/null && wait "$gateway_pid" 2>/dev/null
  scripts/openstack/nova.sh stop "$state/nova" >/dev/null 2>&1 || true
  scripts/openstack/glance.sh stop "$state/glance" >/dev/null 2>&1 || true
  scripts/openstack/glance.sh stop "$state/glance-keystone" >/dev/null 2>&1 || true
  scripts/openstack/keystone.sh stop "$state/keystone" >/dev/null 2>&1 || true
}
stop_all
rm -rf "$state"
mkdir -p "$state"
trap stop_all EXIT
glance_port="$(free_port)"
nova_port="$(free_port)"
# Token mode: Glance also takes the identity from the token Nova forwards (scripts/openstack).
GLANCE_AUTH=token scripts/openstack/glance.sh start "$state/glance" "$glance_port"
scripts/openstack/nova.sh start "$state/nova" "$nova_port" "http://127.0.0.1:$glance_port"
export IG_TEST_GLANCE_URL="http://127.0.0.1:$glance_port" IG_TEST_NOVA_URL="http://127.0.0.1:$nova_port"

step "integration tests against the real Glance"
cargo_test --test nova_reads --test nova_writes --test proxy --test hostile --test resilience --test glance_v1
# One test at a time: Glance's import task writes to sqlite beside the request threads, and a
# concurrent writer makes it fail with "database is locked" (a limit of the test Glance only).
cargo_test --test alliance -- --test-threads=1

step "differential tests: the gateway and Nova in front of the same Glance"
cargo_test --test nova_parity -- --ignored

step "Alliance environments on a Keystone-protected Glance (Keystone 30 from PyPI)"
keystone_port="$(free_port)"
glance_ks_port="$(free_port)"
scripts/openstack/keystone.sh start "$state/keystone" "$keystone_port"
KEYSTONE_URL="http://127.0.0.1:$keystone_port/v3" GLANCE_AUTH=keystone \
  scripts/openstack/glance.sh start "$state/glance-keystone" "$glance_ks_port"
IG_TEST_KEYSTONE_CREDENTIALS="$state/keystone/credentials.json" \
  IG_TEST_KEYSTONE_GLANCE_URL="http://127.0.0.1:$glance_ks_port" \
  cargo_test --test alliance_keystone -- --ignored

step "TLS to the upstreams: nginx with a private CA in front of the real Glance and Keystone"
# The tests make the CA and certificates (rcgen) and run nginx themselves; nginx-light has the
# ssl module they need.
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q nginx-light >"$state/apt-nginx.log" 2>&1 ||
    { apt-get update -q >>"$state/apt-nginx.log" 2>&1 && apt-get install -y -q nginx-light >>"$state/apt-nginx.log" 2>&1; } ||
    { echo "apt-get install nginx-light failed (see $state/apt-nginx.log)" >&2; exit 1; }
fi
IG_TEST_KEYSTONE_CREDENTIALS="$state/keystone/credentials.json" \
  IG_TEST_KEYSTONE_GLANCE_URL="http://127.0.0.1:$glance_ks_port" \
  cargo_test --test upstream_tls -- --ignored --test-threads=1

step "openstacksdk's compute image API through the gateway binary"
gateway_port="$(free_port)"
# The SDK script plays the auth layer in front: its identity headers are believed from loopback.
IMAGE_GATEWAY_IDENTITY_PROXIES='["127.0.0.0/8"]' \
  IMAGE_GATEWAY_LISTEN="127.0.0.1:$gateway_port" IMAGE_GATEWAY_GLANCE__URL="$IG_TEST_GLANCE_URL" \
  IMAGE_GATEWAY_LOG__FORMAT=text target/debug/image-gateway serve --config config/gateway.toml \
  >"$state/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$gateway_port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
target/openstack-venv/bin/python tests/sdk/compute_images.py "http://127.0.0.1:$gateway_port" "$IG_TEST_GLANCE_URL" 2>&1 | tee -a "$log"

step "python-glanceclient's Glance v1 CLI through the same gateway binary"
# glance --os-image-api-version 1 --os-image-url <the v1 mount> --os-auth-token gw:<project>:...:
# each call checked against Glance's own v2 state (tests/glance_v1/cli.py).
target/openstack-venv/bin/python tests/glance_v1/cli.py "http://127.0.0.1:$gateway_port/image-v1" "$IG_TEST_GLANCE_URL" 2>&1 | tee -a "$log"

stop_all
trap - EXIT

step "operations: SIGTERM drain of one of three gateways behind nginx under load, then a soak"
OPS_GATEWAY_BIN="$repo/target/debug/image-gateway" tests/ops/drain.sh 2>&1 | tee -a "$log"
SOAK_SECS="${SOAK_SECS:-30}" OPS_GATEWAY_BIN="$repo/target/debug/image-gateway" tests/ops/soak.sh 2>&1 | tee -a "$log"

step "deployment artefacts: Kubernetes schemas, consistency with the Dockerfile and config, nginx -t"
IMAGE_GATEWAY_BIN="$repo/target/debug/image-gateway" scripts/check-deploy.sh 2>&1 | tee -a "$log"

step "container image: deploy/Dockerfile built offline (podman, a local base) and run read-only as uid 65532"
scripts/container.sh 2>&1 | tee -a "$log"

step "fuzzing: every cargo-fuzz target for ${FUZZ_SECS:-20} s (the first build instruments the gateway: ~9 min)"
scripts/fuzz.sh "${FUZZ_SECS:-20}" 2>&1 | tee -a "$log"

awk '/^test result:/ { p += $4; f += $6 } /^(sdk|glance-v1|deploy|drain|soak|fuzz|container): / { p += $2; f += $4 }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
