#!/usr/bin/env bash
# Zero-downtime drain: three gateways behind nginx, one of them stopped with SIGTERM under load.
#
#   tests/ops/drain.sh
#
# What it sets up, all on 127.0.0.1:
#   - one "Glance": a fourth gateway on its embedded store, whose /image/v2 mount is a native
#     Glance v2 API; DRAIN_IMAGES images are created there for one project;
#   - three gateways with glance.url = that store (so all three see the same images),
#     shutdown.drain_delay_secs = 2 and grace_period_secs = 5, and an Alliance namespace `ops`
#     with identity = "trusted_headers";
#   - nginx in front of the three: upstream keepalive, passive health (max_fails/fail_timeout)
#     and proxy_next_upstream for connection errors (GETs only: nginx never repeats a
#     non-idempotent request unless told to), as deploy/nginx/image-gateway.conf does;
#   - steady load through nginx (wrk, else tests/ops/load.py) for DRAIN_LOAD_SECS, a mix of
#     GET /v2.1/images/detail, GET /v2.1/images/<id> and Alliance GET /images.
# DRAIN_SIGNAL_AT seconds in, one gateway gets SIGTERM. Checked: no client request fails,
# that gateway's /readyz is 503 at once, it still serves during the drain delay, nginx kept
# routing to it meanwhile (so the drain really was under load), and it exits by itself, with
# status 0, within drain + grace + 1 s, without needing the grace deadline.
#
# Installs nginx-light (and wrk if apt has it) when missing. Knobs (environment):
#   DRAIN_LOAD_SECS=20 DRAIN_SIGNAL_AT=5 DRAIN_CONNS=32 DRAIN_IMAGES=20 DRAIN_P99_MAX_MS=1000
#   DRAIN_NEXT_UPSTREAM="error timeout"  nginx proxy_next_upstream ("off" shows what the
#                                        gateway alone does to clients while draining)
#   DRAIN_LOADER=wrk|python              force a load generator
#   OPS_GATEWAY_BIN=path               skip the cargo build; OPS_KEEP=1 keeps the logs
set -euo pipefail

# shellcheck source=tests/ops/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LOAD_SECS=${DRAIN_LOAD_SECS:-20}
SIGNAL_AT=${DRAIN_SIGNAL_AT:-5}
CONNS=${DRAIN_CONNS:-32}
IMAGES=${DRAIN_IMAGES:-20}
P99_MAX_MS=${DRAIN_P99_MAX_MS:-1000}
NEXT_UPSTREAM=${DRAIN_NEXT_UPSTREAM:-error timeout}
DRAIN_DELAY=2
GRACE=5
PROJECT=d7a1e0c4b5f64e2a9c3b8d1f0e2a4c6b
NS=ops
T_START=$(ops_now)

ops_init drain
W=$OPS_WORK

# --- tools -------------------------------------------------------------------------------
need_apt=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx-light)
if [[ ${DRAIN_LOADER:-wrk} == wrk ]] && ! command -v wrk >/dev/null; then need_apt+=(wrk); fi
if ((${#need_apt[@]})); then
    ops_log "installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${need_apt[@]}" >"$W/apt.log" 2>&1 ||
        { apt-get update -q >>"$W/apt.log" 2>&1 && apt-get install -y -q "${need_apt[@]}" >>"$W/apt.log" 2>&1; } ||
        ops_log "apt-get install ${need_apt[*]} failed (see $W/apt.log)"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || { ops_fail "nginx is installed"; ops_summary drain; exit 1; }
LOADER=python
if [[ ${DRAIN_LOADER:-wrk} == wrk ]] && command -v wrk >/dev/null; then LOADER=wrk; fi

ops_log "building the gateway"
ops_build || { ops_fail "the gateway builds"; ops_summary drain; exit 1; }

# --- processes ---------------------------------------------------------------------------
mapfile -t PORTS < <(ops_ports 5)
GLANCE_PORT=${PORTS[0]}
GW_PORTS=("${PORTS[1]}" "${PORTS[2]}" "${PORTS[3]}")
NGINX_PORT=${PORTS[4]}
GLANCE=http://127.0.0.1:$GLANCE_PORT
LB=http://127.0.0.1:$NGINX_PORT

# The test's clients play the auth layer in front: their identity headers are believed from
# loopback, and the in-memory store takes them.
cat >"$W/glance.toml" <<EOF
listen = "127.0.0.1:$GLANCE_PORT"
identity_proxies = ["127.0.0.0/8"]
[glance]
embedded_identity = "headers"
[log]
format = "json"
filter = "info,access_log=off"
EOF
for i in 0 1 2; do
    cat >"$W/gw$i.toml" <<EOF
listen = "127.0.0.1:${GW_PORTS[i]}"
identity_proxies = ["127.0.0.0/8"]
[glance]
url = "$GLANCE/image"
[shutdown]
drain_delay_secs = $DRAIN_DELAY
grace_period_secs = $GRACE
[alliance.namespaces.$NS]
identity = "trusted_headers"
trusted_callers = [{ networks = ["127.0.0.0/8"] }]
[log]
format = "json"
filter = "info,access_log=off"
EOF
done

cd "$W"
ops_spawn GLANCE_PID "$W/glance.log" env -u RUST_LOG "$OPS_BIN" serve --config "$W/glance.toml"
ops_wait_http "$GLANCE/readyz" 200 20 || { ops_fail "the Glance gateway starts (see $W/glance.log)"; ops_summary drain; exit 1; }
GW_PIDS=()
for i in 0 1 2; do
    ops_spawn pid "$W/gw$i.log" env -u RUST_LOG "$OPS_BIN" serve --config "$W/gw$i.toml"
    GW_PIDS+=("$pid")
done
for i in 0 1 2; do
    ops_wait_http "http://127.0.0.1:${GW_PORTS[i]}/readyz" 200 20 ||
        { ops_fail "gateway $i starts and is ready (see $W/gw$i.log)"; ops_summary drain; exit 1; }
done

# Seed the shared store.
: >"$W/ids"
for ((n = 0; n < IMAGES; n++)); do
    curl --noproxy '*' -sf --max-time 5 -X POST "$GLANCE/image/v2/images" \
        -H "X-Project-Id: $PROJECT" -H 'X-Roles: member,reader' -H 'Content-Type: application/json' \
        -d "{\"name\": \"drain-$n\", \"disk_format\": \"qcow2\", \"container_format\": \"bare\", \"min_ram\": $n}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' >>"$W/ids" || true
done
ops_check "$IMAGES images created in the shared store" test "$(wc -l <"$W/ids")" -eq "$IMAGES"

mkdir -p "$W/nginx/tmp"
upstreams=""
for p in "${GW_PORTS[@]}"; do upstreams+="        server 127.0.0.1:$p max_fails=3 fail_timeout=10s;"$'\n'; done
cat >"$W/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 2;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log info;
events { worker_connections 1024; }
http {
    log_format ops '\$msec|\$status|\$upstream_addr|\$upstream_status|\$request_time|\$request_method \$request_uri';
    access_log $W/nginx/access.log ops buffer=256k flush=1s;
    client_body_temp_path $W/nginx/tmp/body;
    proxy_temp_path $W/nginx/tmp/proxy;
    upstream image_gateway {
$upstreams
        keepalive 32;
        keepalive_requests 1000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_connect_timeout 2s;
        proxy_send_timeout 75s;
        proxy_read_timeout 75s;
        # Connection refused or reset, or an answer that never started: another gateway, for
        # idempotent requests only (nginx's default without non_idempotent).
        proxy_next_upstream $NEXT_UPSTREAM;
        proxy_next_upstream_tries 3;
        proxy_next_upstream_timeout 10s;
        location / {
            proxy_pass http://image_gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
"$NGINX" -t -q -e "$W/nginx/error.log" -p "$W/nginx" -c "$W/nginx/nginx.conf" >"$W/nginx/test.log" 2>&1 ||
    { ops_fail "nginx configuration is valid: $(cat "$W/nginx/test.log")"; ops_summary drain; exit 1; }
ops_spawn NGINX_PID "$W/nginx/stderr.log" "$NGINX" -e "$W/nginx/error.log" -p "$W/nginx" -c "$W/nginx/nginx.conf"
ops_wait_http "$LB/" 200 10 || { ops_fail "nginx starts (see $W/nginx)"; ops_summary drain; exit 1; }

# Each gateway, and nginx, sees the whole shared store in both dialects.
count_images() {
    curl --noproxy '*' -sf --max-time 5 "$1" "${@:2}" |
        python3 -c 'import json, sys; print(len(json.load(sys.stdin)["images"]))' 2>/dev/null || echo -1
}
seen=""
for base in "${GW_PORTS[@]/#/http://127.0.0.1:}" "$LB"; do
    seen+=" $(count_images "$base/v2.1/images/detail" -H "X-Project-Id: $PROJECT" -H 'X-Roles: member,reader')"
    seen+="/$(count_images "$base/images" -H "X-Target-Ns: $NS" -H "X-Environment-Id: $PROJECT")"
done
ops_check "gateways 0-2 and nginx list all $IMAGES images (Nova/Alliance:$seen)" \
    test "$seen" = "$(printf " $IMAGES/$IMAGES%.0s" 1 2 3 4)"

# --- load --------------------------------------------------------------------------------
if [[ $LOADER == wrk ]]; then
    {
        echo "local ids = {"
        sed 's/.*/  "&",/' "$W/ids"
        echo "}"
        cat <<EOF
local project, ns = "$PROJECT", "$NS"
EOF
        cat <<'EOF'
local reqs = {}
local n = 0
bad = 0
first_bad = ""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local nova = {["X-Project-Id"] = project, ["X-Roles"] = "member,reader"}
  local alliance = {["X-Target-Ns"] = ns, ["X-Environment-Id"] = project}
  for _, id in ipairs(ids) do
    table.insert(reqs, wrk.format("GET", "/v2.1/images/detail", nova))
    table.insert(reqs, wrk.format("GET", "/v2.1/images/" .. id, nova))
    table.insert(reqs, wrk.format("GET", "/images", alliance))
  end
end

function request()
  n = n + 1
  return reqs[(n % #reqs) + 1]
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    bad = bad + 1
    if first_bad == "" then first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 200) end
  end
end

function done(summary, latency, requests)
  local nbad, first = 0, ""
  for _, t in ipairs(threads) do
    nbad = nbad + t:get("bad")
    if first == "" then first = t:get("first_bad") end
  end
  local e = summary.errors
  local conn_errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    "LOAD requests=%d failed=%d non2xx=%d conn_errors=%d p50_ms=%.1f p99_ms=%.1f max_ms=%.1f\n",
    summary.requests, nbad + conn_errors, nbad, conn_errors,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
  io.write(string.format("wrk errors: connect=%d read=%d write=%d timeout=%d status>399=%d\n",
    e.connect, e.read, e.write, e.timeout, e.status))
  if first ~= "" then io.write("failure: first non-2xx: " .. first .. "\n") end
end
EOF
    } >"$W/mix.lua"
    ops_spawn LOAD_PID "$W/load.out" wrk -t2 -c"$CONNS" -d"${LOAD_SECS}s" --timeout 5s -s "$W/mix.lua" "$LB"
else
    ops_spawn LOAD_PID "$W/load.out" python3 "$OPS_ROOT/tests/ops/load.py" --port "$NGINX_PORT" \
        --secs "$LOAD_SECS" --conns "$CONNS" --ids "$W/ids" --project "$PROJECT" --ns "$NS"
fi
ops_log "load ($LOADER, $CONNS connections, ${LOAD_SECS}s) through nginx on :$NGINX_PORT; SIGTERM to gateway 0 at ${SIGNAL_AT}s"
sleep "$SIGNAL_AT"

# --- the drain ---------------------------------------------------------------------------
VICTIM=${GW_PIDS[0]}
VICTIM_URL=http://127.0.0.1:${GW_PORTS[0]}
T_SIG=$(ops_now)
kill -TERM "$VICTIM"
ready_code="" ready_after=""
for ((n = 0; n < 40; n++)); do
    ready_code=$(ops_status "$VICTIM_URL/readyz")
    if [[ $ready_code == 503 ]]; then ready_after=$(ops_elapsed "$T_SIG"); break; fi
    sleep 0.025
done
ops_check "/readyz of the draining gateway is 503 right after SIGTERM (after ${ready_after:-never}s, last $ready_code)" \
    eval '[[ $ready_code == 503 ]] && ops_le "$ready_after" 0.5'
sleep 0.3
during=$(ops_status "$VICTIM_URL/v2.1/images/detail" -H "X-Project-Id: $PROJECT" -H 'X-Roles: member,reader')
during_health=$(ops_status "$VICTIM_URL/healthz")
during_at=$(ops_elapsed "$T_SIG")
ops_check "the draining gateway still serves during the drain delay (GET detail $during, /healthz $during_health at ${during_at}s)" \
    eval '[[ $during == 200 && $during_health == 200 ]] && ops_le "$during_at" "$DRAIN_DELAY"'

T_EXIT=""
for ((n = 0; n < (DRAIN_DELAY + GRACE + 5) * 20; n++)); do
    if ! ops_ours "$VICTIM"; then T_EXIT=$(ops_now); break; fi
    sleep 0.05
done
exit_code=none
if [[ -n $T_EXIT ]]; then
    set +e
    wait "$VICTIM"
    exit_code=$?
    set -e
    ops_forget "$VICTIM"
    exit_after=$(ops_elapsed "$T_SIG" "$T_EXIT")
else
    exit_after=never
fi
ops_check "the draining gateway exits by itself within drain+grace+1 = $((DRAIN_DELAY + GRACE + 1))s (after ${exit_after}s, status $exit_code)" \
    eval '[[ $exit_code == 0 ]] && ops_le "$exit_after" $((DRAIN_DELAY + GRACE + 1))'
ops_check "it closed every connection before the grace deadline (no 'grace period over' in its log)" \
    eval '! grep -q "grace period over" "$W/gw0.log" && [[ $exit_code == 0 ]] && ops_le "$exit_after" $((DRAIN_DELAY + GRACE))'

# --- results -----------------------------------------------------------------------------
for ((n = 0; n < (LOAD_SECS + 20) * 10; n++)); do
    ops_ours "$LOAD_PID" || break
    sleep 0.1
done
if ops_ours "$LOAD_PID"; then
    kill -TERM "$LOAD_PID" 2>/dev/null || true
    ops_fail "the load generator finished in time"
fi
wait "$LOAD_PID" 2>/dev/null || true
ops_forget "$LOAD_PID"
T_LOAD_END=$(ops_now)
for i in 1 2; do
    ops_check "gateway $i is still ready" test "$(ops_status "http://127.0.0.1:${GW_PORTS[i]}/readyz")" = 200
done
kill -USR1 "$NGINX_PID" 2>/dev/null || true   # reopens the logs: flushes the access log buffer
sleep 1.2

line=$(grep '^LOAD ' "$W/load.out" || true)
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$line"; }
REQS=$(field requests)
FAILED=$(field failed)
P99=$(field p99_ms)
ops_check "the load ran (${REQS:-0} requests)" eval '[[ -n $line ]] && (( ${REQS:-0} >= 1000 ))'

# nginx's view: requests the draining gateway got after SIGTERM, retries, upstream errors.
victim_addr=127.0.0.1:${GW_PORTS[0]}
read -r to_victim retried <<<"$(awk -F'|' -v s="$T_SIG" -v e="${T_EXIT:-$T_LOAD_END}" -v v="$victim_addr" '
    $1 > s && $1 < e && index($3, v) { t++ }
    index($3, ",") { r++ }
    END { print t + 0, r + 0 }' "$W/nginx/access.log")"
upstream_errors=$(grep -cE '\[(error|warn|crit)\].*upstream' "$W/nginx/error.log" || true)
ops_check "nginx sent requests to the draining gateway between SIGTERM and its exit ($to_victim)" \
    test "$to_victim" -gt 0
ops_check "zero failed client requests (${FAILED:-?} of ${REQS:-?})" test "${FAILED:-1}" = 0
ops_check "p99 latency ${P99:-?} ms <= $P99_MAX_MS ms" ops_le "${P99:-99999}" "$P99_MAX_MS"

if [[ ${FAILED:-1} != 0 || $upstream_errors != 0 ]]; then
    grep '^failure\|^wrk errors' "$W/load.out" | head -5 || true
    echo "nginx upstream errors (first 10 of $upstream_errors; $retried requests were retried on another" \
        "gateway), SIGTERM at $(date -d "@$T_SIG" +%T.%3N), listener closed about ${DRAIN_DELAY}s later:"
    grep -E '\[(error|warn|crit)\].*upstream' "$W/nginx/error.log" | head -10 | cut -c1-200 || true
    # 499: the load generator hung up on requests in flight when its time was up.
    echo "non-2xx answers in nginx's access log (499 aside): $(awk -F'|' '$2 !~ /^2/ && $2 != 499' "$W/nginx/access.log" | wc -l)"
fi
echo "figures: loader=$LOADER requests=${REQS:-0} failed=${FAILED:-?} p99_ms=${P99:-?} $(sed -n 's/.*\(p50_ms=[0-9.]*\).*\(max_ms=[0-9.]*\).*/\1 \2/p' <<<"$line")" \
    "readyz_503_after_s=${ready_after:-never} exit_after_s=$exit_after to_draining_after_sigterm=$to_victim" \
    "nginx_retries=$retried nginx_upstream_errors=$upstream_errors runtime_s=$(ops_elapsed "$T_START")"
ops_summary drain
((OPS_FAILED == 0))
