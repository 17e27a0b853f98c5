#!/usr/bin/env bash
# Bounded soak: one gateway on its embedded store, every route of both dialects under load.
#
#   tests/ops/soak.sh                 # 120 s of load, the first 20 s a warm-up
#   SOAK_SECS=600 tests/ops/soak.sh   # longer
#
# tests/ops/soak.py drives the load (about 10% deliberately bad requests) and checks: no
# unexpected status (5xx, connection errors, or a status outside the exact set expected for
# that request), VmRSS at the end within +20% (or +16 MiB, whichever is larger) of VmRSS after
# the warm-up, open descriptors back to their idle count once the clients have gone and bounded
# meanwhile, /metrics requests_in_flight back to 0 and no 5xx in the gateway's own counters.
# This script then checks the log (no panic, no error) and that SIGTERM still stops the
# gateway cleanly. Everything stays on 127.0.0.1 and is stopped on exit.
#
# RSS and the embedded store: the store never frees an image, it marks deleted ones `deleted`
# (src/glance/embedded.rs `delete`), so RSS grows by about 1.3 KiB for every image created
# (measured: flat over 120k reads, +12.5 MiB per 10k create+delete). Creates are therefore
# paced in time (one per worker every 0.5 s at most, ~16/s, ~2 MiB per 100 s) rather than a
# share of requests; the figures line gives the number created. A SOAK_SECS much beyond
# 10 minutes can exceed the +16 MiB allowance through the store alone.
#
# Knobs: SOAK_SECS=120 SOAK_WARMUP_SECS=20 SOAK_WORKERS=8 SOAK_SEED=1,
#        OPS_GATEWAY_BIN=path (skips the cargo build), OPS_KEEP=1 (keeps the logs).
set -euo pipefail

# shellcheck source=tests/ops/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECS=${SOAK_SECS:-120}
WARMUP=${SOAK_WARMUP_SECS:-20}
WORKERS=${SOAK_WORKERS:-8}
SEED=${SOAK_SEED:-1}
T_START=$(ops_now)

ops_init soak
W=$OPS_WORK
summary() { ops_summary soak; }

ops_log "building the gateway"
ops_build || { ops_fail "the gateway builds"; summary; exit 1; }

PORT=$(ops_ports 1)
BASE=http://127.0.0.1:$PORT
cat >"$W/gateway.toml" <<EOF
listen = "127.0.0.1:$PORT"
identity_proxies = ["127.0.0.0/8"]
[glance]
embedded_identity = "headers"
[shutdown]
drain_delay_secs = 0
grace_period_secs = 5
[alliance.namespaces.ops]
identity = "trusted_headers"
trusted_callers = [{ networks = ["127.0.0.0/8"] }]
[log]
format = "json"
filter = "info"
EOF
cd "$W"
ops_spawn GW_PID "$W/gateway.log" env -u RUST_LOG "$OPS_BIN" serve --config "$W/gateway.toml"
ops_wait_http "$BASE/readyz" 200 20 || { ops_fail "the gateway starts (see $W/gateway.log)"; summary; exit 1; }
ops_pass "the gateway starts on the embedded store"

ops_log "soak: ${SECS}s of load (${WARMUP}s warm-up), $WORKERS workers, on :$PORT"
set +e
python3 "$OPS_ROOT/tests/ops/soak.py" --port "$PORT" --pid "$GW_PID" --secs "$SECS" --warmup "$WARMUP" \
    --workers "$WORKERS" --seed "$SEED" | tee "$W/soak.out"
set -e
read -r py_passed py_failed < <(sed -n 's/^CHECKS passed=\([0-9]*\) failed=\([0-9]*\)$/\1 \2/p' "$W/soak.out")
if [[ -z ${py_passed:-} ]]; then
    ops_fail "soak.py ran to its end"
else
    OPS_PASSED=$((OPS_PASSED + py_passed))
    OPS_FAILED=$((OPS_FAILED + py_failed))
fi

panics=$(grep -c 'panicked' "$W/gateway.log" || true)
errors=$(grep -c '"level":"ERROR"' "$W/gateway.log" || true)
ops_check "no panic and no ERROR line in the gateway's log (panics $panics, errors $errors)" \
    test "$panics$errors" = 00

T_TERM=$(ops_now)
kill -TERM "$GW_PID"
exit_code=none
for ((n = 0; n < 200; n++)); do
    ops_ours "$GW_PID" || break
    sleep 0.05
done
if ! ops_ours "$GW_PID"; then
    set +e
    wait "$GW_PID"
    exit_code=$?
    set -e
    ops_forget "$GW_PID"
fi
ops_check "SIGTERM after the soak stops the gateway cleanly (status $exit_code after $(ops_elapsed "$T_TERM")s)" \
    test "$exit_code" = 0

echo "runtime: $(ops_elapsed "$T_START")s"
summary
((OPS_FAILED == 0))
