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

step "real Glance v2 (PyPI glance, uWSGI, sqlite) on loopback"
scripts/openstack/install.sh
scripts/openstack/glance.sh stop "$state/glance" >/dev/null 2>&1 || true
rm -rf "$state"
mkdir -p "$state"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
trap 'scripts/openstack/glance.sh stop "$state/glance" || true' EXIT
scripts/openstack/glance.sh start "$state/glance" "$port"

step "integration tests against the real Glance"
IG_TEST_GLANCE_URL="http://127.0.0.1:$port" cargo_test --test nova_reads
scripts/openstack/glance.sh stop "$state/glance"
trap - EXIT

awk '/^test result:/ { p += $4; f += $6 } END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
