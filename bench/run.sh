#!/usr/bin/env bash
# image-gateway benchmark: one command, everything on loopback, every load bounded in time.
#
#   bench/run.sh            # results on stdout and in bench/results.md (overwritten)
#
# What it measures, side by side, with the same upstream and the same bodies:
#   (a) direct to a static Glance upstream (nginx serving bodies recorded from a real Glance);
#   (b) nginx proxy_pass (upstream keepalive) in front of that upstream;
#   (c) the gateway's image mount passing GET /image/v2/... through to that upstream;
#   (d) the gateway translating GET /v2.1/images/detail for 25 and 1000 images;
#   (e) Nova 34's own image proxy translating the same listing from a real Glance 33, next to
#       (g) the gateway translating from that same real Glance;
#   (f) the same Nova in front of the static upstream, next to (d);
# and a 1 GiB upload + download through the gateway's image mount (real Glance, and a
# download from the static upstream) and through its Glance v1 mount (real Glance), watching
# the gateway's resident memory; a burst of
# BENCH_BURST_CLIENTS clients each asking for the 1000-image detail list again as soon as
# answered (after Retry-After for a 503), with the shipped admission limit and without one,
# watching resident memory idle, at its peak and 10 s after; and the mapping engine's CPU
# against a plain serde_json parse + serialize of the same page (cargo bench --bench mapping).
# For every row: req/s at fixed concurrency (wrk), p50/p99 at a fixed rate below saturation
# (oha -q, open loop with latency correction; wrk at 1 connection if oha is unavailable), CPU
# time of the proxy process per request (/proc/<pid>/stat utime+stime), peak RSS (VmHWM).
# The proxy under test runs on one core (BENCH_PROXY_CPU), load generator + upstream on the
# other (BENCH_LOAD_CPU).
#
# Knobs (environment):
#   BENCH_DURATION=10        seconds of closed-loop load per row
#   BENCH_LAT_DURATION=10    seconds of fixed-rate load per row
#   BENCH_WARMUP=2           seconds of warm-up before each measured run
#   BENCH_CONNECTIONS=16     closed-loop connections
#   BENCH_RATE_FRACTION=0.5  fixed rate = this × the slowest row's req/s in the same group
#   BENCH_NOVA_DURATION=10   seconds of closed-loop load for the real-Glance rows (e25, g25)
#   BENCH_SEQ_REQUESTS=5     sequential requests for the 1000-image real-Glance rows (0: skip)
#   BENCH_STREAM_MIB=1024    size of the streamed image (0: skip streaming)
#   BENCH_PAGE_SIZE=1000     the gateway's glance.page_size
#   BENCH_PROXY_CPU=1 BENCH_LOAD_CPU=0 BENCH_PORT_BASE=19400
#   BENCH_OHA=1              build/use oha for fixed-rate latency (0: wrk -c1 latency instead)
#   BENCH_REAL=1             run the real Glance/Nova part (0: static rows only)
#   BENCH_PERF=0             1: perf record the gateway during d25/d1000 (top symbols in the log)
#   BENCH_BURST_CLIENTS=256  clients of the burst (0: skip it)
#   BENCH_BURST_SECS=20      seconds of burst
#   BENCH_ENGINE=1           run the engine benchmark (0: skip)
#   BENCH_MAX_REPEAT=2       closed-loop runs per row at most: a run during which other processes
#   BENCH_CLEAN_PCT=10         used more than this % of a core is repeated; the cleanest is kept
#   BENCH_QUIET_WAIT=10      before each run, wait at most this long for the machine to be idle
#   BENCH_QUIET_PCT=10         (both cores together under this % of one core)
#   BENCH_CONTENTION_BUDGET=150  seconds those waits and repeats may add to the run in all
#   OPENSTACK_VENV           venv with glance/nova/uwsgi (default target/openstack-venv; installed
#                            by scripts/openstack/install.sh if it lacks them)
set -euo pipefail
T0=$(date +%s)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

DURATION="${BENCH_DURATION:-10}"
LAT_DURATION="${BENCH_LAT_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
CONNS="${BENCH_CONNECTIONS:-16}"
RATE_FRACTION="${BENCH_RATE_FRACTION:-0.5}"
NOVA_DURATION="${BENCH_NOVA_DURATION:-10}"
SEQ_REQUESTS="${BENCH_SEQ_REQUESTS:-5}"
STREAM_MIB="${BENCH_STREAM_MIB:-1024}"
PAGE_SIZE="${BENCH_PAGE_SIZE:-1000}"
PCPU="${BENCH_PROXY_CPU:-1}"
LCPU="${BENCH_LOAD_CPU:-0}"
PORT="${BENCH_PORT_BASE:-19400}"
USE_OHA="${BENCH_OHA:-1}"
REAL="${BENCH_REAL:-1}"
PERF="${BENCH_PERF:-0}"
BURST_CLIENTS="${BENCH_BURST_CLIENTS:-256}"
BURST_SECS="${BENCH_BURST_SECS:-20}"
ENGINE="${BENCH_ENGINE:-1}"
MAX_REPEAT="${BENCH_MAX_REPEAT:-2}"
CLEAN_PCT="${BENCH_CLEAN_PCT:-10}"
QUIET_WAIT="${BENCH_QUIET_WAIT:-10}"
QUIET_PCT="${BENCH_QUIET_PCT:-10}"
BUDGET="${BENCH_CONTENTION_BUDGET:-150}"
LOADPIDS=""
export OPENSTACK_VENV="${OPENSTACK_VENV:-$repo/target/openstack-venv}"

# A CARGO_TARGET_DIR set by the caller (a target directory shared by worktrees) is kept.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
run="$repo/target/bench/run"            # per-run scratch (configs, logs, raw outputs)
state="$repo/target/bench/state"        # kept between runs: the seeded Glance
bodies="$here/bodies"                   # recorded Glance bodies served by the static upstream
results="$run/results.jsonl"
meta="$run/meta.json"
gw="$CARGO_TARGET_DIR/release/image-gateway"
HZ=$(getconf CLK_TCK)

P25=bbbb0000000000000000000000000025     # project owning the 25 images
P1000=bbbb0000000000000000000000001000   # project owning the 1000 images
U=0a1b2c3d4e5f40718293a4b5c6d7e8f9
ROLES=member,reader
ident() {  # ident PROJECT -> header args (Nova's contract; Glance token filter reads the token)
  printf '%s\n' -H "X-Auth-Token: gw:$1:$U:$ROLES" -H "X-User-Id: $U" -H "X-Project-Id: $1" -H "X-Roles: $ROLES"
}

log() { printf '[%4ds] %s\n' $(( $(date +%s) - T0 )) "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
notes=()
note() { notes+=("$*"); log "note: $*"; }

# ---------------------------------------------------------------------------------------
# Processes this script started, stopped on any exit.
pids=()
glance_up=0; nova_up=0
cleanup() {
  set +e; trap - ERR
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  [ "$nova_up" = 1 ] && scripts/openstack/nova.sh stop "$state/nova" >/dev/null 2>&1
  [ "$glance_up" = 1 ] && scripts/openstack/glance.sh stop "$state/glance" >/dev/null 2>&1
  rm -f "$run/blob.bin" "$run/blob-1g.bin"
}
trap cleanup EXIT
set -E
trap 'log "FAILED at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------
log "tools"
need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v taskset >/dev/null || need_apt+=(util-linux)
command -v curl >/dev/null || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq "${need_apt[@]}" >/dev/null \
    || die "apt-get install ${need_apt[*]}"
fi
NGINX=$(command -v nginx)
command -v wrk >/dev/null || die "wrk is not available"
OHA=""
if [ "$USE_OHA" = 1 ]; then
  OHA="$repo/target/bench-tools/bin/oha"
  if [ ! -x "$OHA" ]; then
    log "building oha (cargo install oha --locked; once, kept in target/bench-tools)"
    CARGO_TARGET_DIR="$repo/target/bench-tools/build" \
      cargo install oha --locked --root "$repo/target/bench-tools" >"$repo/target/bench-tools.log" 2>&1 \
      || { OHA=""; log "oha did not build (see target/bench-tools.log): latency from wrk at 1 connection"; }
  fi
fi

log "building the gateway and the burst load generator (release)"
cargo build --release --quiet 2>&1 | tail -n 20 >&2 || true
[ -x "$gw" ] || die "no $gw after cargo build --release"
cargo bench --bench burst --no-run --quiet 2>&1 | tail -n 20 >&2 || die "cannot build benches/burst.rs"
burst_bin=$(cargo bench --bench burst --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys; print(next(m["executable"] for m in map(json.loads, sys.stdin) if m.get("target", {}).get("name") == "burst" and m.get("executable")))') \
  || die "cannot find the benches/burst.rs binary"

rm -rf "$run"; mkdir -p "$run" "$state" "$bodies"
: >"$results"

# ---------------------------------------------------------------------------------------
# Measurement helpers.

# cpu_ticks PID... : utime+stime of those processes (all their threads), in clock ticks.
cpu_ticks() {
  local t=0 p s
  for p in "$@"; do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    s=${s##*) }
    t=$(( t + $(awk '{print $12 + $13}' <<<"$s") ))
  done
  echo "$t"
}
# status_kib PID FIELD -> VmHWM / VmRSS in KiB
status_kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
max_hwm() { local m=0 p v; for p in "$@"; do v=$(status_kib "$p" VmHWM); [ "${v:-0}" -gt "$m" ] && m=$v; done; echo "$m"; }

wait_http() {  # wait_http URL [seconds]
  local t0; t0=$(date +%s)
  until curl -s -o /dev/null --max-time 2 "$1"; do
    [ $(( $(date +%s) - t0 )) -ge "${2:-20}" ] && die "$1 did not answer"
    sleep 0.1
  done
}

# check URL EXPECT PROJECT: one request; status must be 200 and the body must hold EXPECT
# images (a list), or be an image (EXPECT=image); prints the body size.
check() {
  local url="$1" expect="$2" proj="$3" code
  mapfile -t h < <(ident "$proj")
  code=$(curl -sS -o "$run/check.body" -w '%{http_code}' "${h[@]}" "$url") || die "curl $url"
  [ "$code" = 200 ] || { head -c 600 "$run/check.body" >&2; die "$url answered $code"; }
  python3 - "$run/check.body" "$expect" "$url" <<'PY' || die "unexpected body from $3"
import json, sys
d = json.load(open(sys.argv[1]))
want = sys.argv[2]
if want == "image":
    assert "id" in d or "image" in d, list(d)[:5]
else:
    n = len(d["images"])
    assert n == int(want), f"{n} images, expected {want}"
PY
  stat -c %s "$run/check.body"
}

# Other people's load. This machine may be shared: CPU that neither the proxy, nor the load
# generator, nor our upstream used during a run is "other" load, reported per row.
# busy_ticks CPU... -> busy clock ticks of those CPUs since boot (user+nice+system+irq+softirq+steal)
busy_ticks() {
  local t=0 c
  for c in "$@"; do t=$(( t + $(awk -v c="cpu$c" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat) )); done
  echo "$t"
}
# child_ticks VAR: CPU of this shell's finished children (bash `times`, which must run in this
# shell, not in a $(...) subshell), in clock ticks, into VAR.
child_ticks() {
  times >"$run/times.txt"
  printf -v "$1" '%s' "$(tail -n1 "$run/times.txt" | awk -v hz="$HZ" '{ s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); s += a[1] * 60 + a[2] } printf "%d", s * hz }')"
}
# wait_quiet: before a run, wait (at most BENCH_QUIET_WAIT s) until both cores are nearly idle.
# Waiting and repeated runs draw on one budget (BENCH_CONTENTION_BUDGET s) so that a machine
# that stays busy cannot stretch the run much.
extra=0
wait_quiet() {
  local t0 b0 b1 pct waited=0
  t0=$(date +%s)
  while :; do
    b0=$(busy_ticks "$PCPU" "$LCPU"); sleep 1; b1=$(busy_ticks "$PCPU" "$LCPU")
    pct=$(( (b1 - b0) * 100 / HZ ))    # % of one core, both cores together
    [ "$pct" -le "$QUIET_PCT" ] && break
    waited=1
    if [ $(( $(date +%s) - t0 )) -ge "$QUIET_WAIT" ] || [ $(( extra + $(date +%s) - t0 )) -ge "$BUDGET" ]; then
      log "  machine busy ($pct% of a core used by others): measuring anyway"
      break
    fi
  done
  extra=$(( extra + $(date +%s) - t0 - 1 ))
  [ "$waited" = 1 ] && log "  waited $(( $(date +%s) - t0 )) s for other load to stop"
  return 0
}

# closed KEY URL PROJECT DURATION PIDS... : warm-up, then wrk at CONNS connections; CPU of PIDS.
# LOADPIDS (global) are our other processes that work during the run (upstream, Glance).
# A run during which other processes used more than BENCH_CLEAN_PCT % of a core is repeated
# (up to BENCH_MAX_REPEAT runs); the run with the least other load is kept.
closed() {
  local key="$1" url="$2" proj="$3" dur="$4"; shift 4
  local hdr=() j perfpid="" rep=0 best="" bestother=""
  mapfile -t hdr < <(ident "$proj")
  local ours; ours=$(printf '%s\n' "$@" $LOADPIDS | sort -u | tr '\n' ' ')
  taskset -c "$LCPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${hdr[@]}" "$url" >/dev/null 2>&1 || true
  while [ "$rep" -lt "$MAX_REPEAT" ]; do
    rep=$((rep + 1))
    wait_quiet
    local out="$run/$key.$rep.wrk" c0 c1 o0 o1 b0 b1 k0 k1 t0 t1
    if [ "$PERF" = 1 ] && [ "$rep" = 1 ] && [[ "$key" == d* ]] && command -v perf >/dev/null; then
      perf record -q -F 999 -p "$1" -o "$run/$key.perf.data" -- sleep "$dur" >/dev/null 2>&1 &
      perfpid=$!
    fi
    t0=$(date +%s%N); c0=$(cpu_ticks "$@"); o0=$(cpu_ticks $ours); b0=$(busy_ticks "$PCPU" "$LCPU"); child_ticks k0
    taskset -c "$LCPU" wrk -t1 -c"$CONNS" -d"${dur}s" --latency --timeout 30s "${hdr[@]}" "$url" >"$out" 2>&1 \
      || die "wrk $url"
    child_ticks k1; b1=$(busy_ticks "$PCPU" "$LCPU"); o1=$(cpu_ticks $ours); c1=$(cpu_ticks "$@"); t1=$(date +%s%N)
    if [ -n "$perfpid" ]; then
      wait "$perfpid" || true; perfpid=""
      perf report -i "$run/$key.perf.data" --no-children --stdio --percent-limit 1.5 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -n 40 >"$run/$key.perf.txt" || true
    fi
    j=$(python3 "$here/report.py" wrk "$out")
    local other
    other=$(python3 - "$results" "$key" "$j" "$c0" "$c1" "$HZ" "$here/report.py" "$o0" "$o1" "$b0" "$b1" "$k0" "$k1" "$t0" "$t1" "$rep" "$best" <<'PY'
import json, subprocess, sys
results, key, j, c0, c1, hz, rep, o0, o1, b0, b1, k0, k1, t0, t1, n, best = sys.argv[1:]
hz = int(hz)
d = json.loads(j)
cpu_s = (int(c1) - int(c0)) / hz
wall = (int(t1) - int(t0)) / 1e9
ours = (int(o1) - int(o0)) + (int(k1) - int(k0))          # proxy + upstream + load generator
other = max(0, (int(b1) - int(b0)) - ours) / hz / wall * 100  # % of one core
row = {"rps": d["rps"], "requests": d["requests"], "errors": d["errors"],
       "wrk_p50_us": d.get("p50_us"), "wrk_p99_us": d.get("p99_us"), "cpu_s": cpu_s,
       "cpu_us_per_req": (cpu_s * 1e6 / d["requests"]) if d["requests"] else None,
       "other_pct": other, "proxy_util_pct": cpu_s / wall * 100, "runs": int(n)}
if not best or other < float(best):
    subprocess.run([sys.executable, rep, "add", results, key, json.dumps(row)], check=True)
else:
    subprocess.run([sys.executable, rep, "add", results, key, json.dumps({"runs": int(n)})], check=True)
print(f"{other:.1f} {row['rps']:.1f} {row['cpu_us_per_req'] or 0:.1f}")
PY
)
    log "  $key run $rep: $(awk '{print $2}' <<<"$other") req/s, $(awk '{print $3}' <<<"$other") µs CPU/req, other load $(awk '{print $1}' <<<"$other")% of a core"
    other=$(awk '{print $1}' <<<"$other")
    if [ -z "$best" ] || python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)' "$other" "$best"; then
      best=$other
    fi
    python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$best" "$CLEAN_PCT" && break
    [ "$extra" -ge "$BUDGET" ] && break
    extra=$(( extra + dur ))
  done
  return 0
}

# fixed KEY URL PROJECT RATE : latency at a fixed request rate (oha, open loop), or at one
# connection with wrk when oha is unavailable.
fixed() {
  local key="$1" url="$2" proj="$3" rate="$4" hdr=() j
  mapfile -t hdr < <(ident "$proj")
  if [ -n "$OHA" ]; then
    local c=$CONNS
    taskset -c "$LCPU" "$OHA" --no-tui --output-format json -z "${LAT_DURATION}s" -q "$rate" -c "$c" \
      --latency-correction --disable-compression "${hdr[@]}" "$url" >"$run/$key.oha.json" 2>"$run/$key.oha.err" \
      || die "oha $url (see $run/$key.oha.err)"
    j=$(python3 "$here/report.py" oha "$run/$key.oha.json")
    python3 "$here/report.py" add "$results" "$key" \
      "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(json.dumps({"lat_rate": float(sys.argv[2]), "lat_p50_us": d["p50_us"], "lat_p99_us": d["p99_us"], "lat_errors": d["errors"], "lat_achieved_rps": d["rps"]}))' "$j" "$rate")"
  else
    taskset -c "$LCPU" wrk -t1 -c1 -d"${LAT_DURATION}s" --latency "${hdr[@]}" "$url" >"$run/$key.lat.wrk" 2>&1 || die "wrk $url"
    j=$(python3 "$here/report.py" wrk "$run/$key.lat.wrk")
    python3 "$here/report.py" add "$results" "$key" \
      "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(json.dumps({"lat_note": "1 conn", "lat_p50_us": d.get("p50_us"), "lat_p99_us": d.get("p99_us"), "lat_errors": d["errors"]}))' "$j")"
  fi
}

row() {  # row KEY JSON : metadata of a row
  python3 "$here/report.py" add "$results" "$1" "$2"
}

# start_nginx NAME CONF CPU: sets LAST to its pid (single process: master_process off).
# (Not called in $(...): the pid must reach this shell's cleanup list.)
start_nginx() {
  taskset -c "$3" "$NGINX" -p "$run" -e "$run/$1-error.log" -c "$2" >>"$run/$1.log" 2>&1 &
  LAST=$!; pids+=("$LAST")
}
# start_gateway NAME PORT GLANCE_URL [VAR=VALUE...]: sets LAST to its pid (a fresh process on
# the proxy core; the extra variables configure it further)
start_gateway() {
  local name="$1" port="$2" upstream="$3"; shift 3
  ( unset RUST_LOG && exec taskset -c "$PCPU" env "$@" \
      IMAGE_GATEWAY_MAPPINGS_DIR="$repo/mappings" IMAGE_GATEWAY_LISTEN="127.0.0.1:$port" IMAGE_GATEWAY_GLANCE__URL="$upstream" \
      IMAGE_GATEWAY_LOG__FILTER=warn IMAGE_GATEWAY_GLANCE__PAGE_SIZE="$PAGE_SIZE" \
      IMAGE_GATEWAY_LIMITS__REQUEST_TIMEOUT_SECS=600 IMAGE_GATEWAY_GLANCE__TIMEOUT_SECS=120 \
      IMAGE_GATEWAY_SHUTDOWN__DRAIN_DELAY_SECS=0 IMAGE_GATEWAY_SHUTDOWN__GRACE_PERIOD_SECS=2 \
      "$gw" serve --config "$repo/config/gateway.toml" ) >>"$run/$name.log" 2>&1 &
  LAST=$!; pids+=("$LAST")
  wait_http "http://127.0.0.1:$port/healthz"
}
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}

render() {  # render TEMPLATE OUT
  sed -e "s#@RUN@#$run#g" -e "s#@BODIES@#$bodies#g" \
      -e "s#@PORT_G25@#$((PORT + 1))#g" -e "s#@PORT_G1000@#$((PORT + 2))#g" \
      -e "s#@PORT_PROXY25@#$((PORT + 3))#g" -e "s#@PORT_PROXY1000@#$((PORT + 4))#g" "$1" >"$2"
}

# ---------------------------------------------------------------------------------------
# 1. A real Glance with the benchmark's images; record its answers for the static upstream.
GPORT=$((PORT + 90)); NPORT=$((PORT + 91))
G="http://127.0.0.1:$GPORT"
if [ "$REAL" = 1 ] || [ ! -f "$bodies/glance-1000/images.json" ]; then
  for t in uwsgi glance-manage nova-manage; do
    [ -x "$OPENSTACK_VENV/bin/$t" ] || { log "installing Glance/Nova into $OPENSTACK_VENV"; scripts/openstack/install.sh; break; }
  done
  log "starting Glance 33 (GLANCE_AUTH=token) on CPU $LCPU"
  glance_up=1
  GLANCE_AUTH=token taskset -c "$LCPU" scripts/openstack/glance.sh start "$state/glance" "$GPORT" >"$run/glance-start.log" 2>&1 \
    || { cat "$run/glance-start.log" >&2; die "glance start"; }
  n25=$(python3 "$here/glance_seed.py" count "$G" "$P25"); n1000=$(python3 "$here/glance_seed.py" count "$G" "$P1000")
  if [ "$n25" != 25 ] || [ "$n1000" != 1000 ]; then
    if [ "$n25" != 0 ] || [ "$n1000" != 0 ]; then
      log "Glance state holds $n25/$n1000 images: starting it afresh"
      scripts/openstack/glance.sh stop "$state/glance" >/dev/null
      rm -rf "$state/glance"
      GLANCE_AUTH=token taskset -c "$LCPU" scripts/openstack/glance.sh start "$state/glance" "$GPORT" >"$run/glance-start.log" 2>&1 \
        || die "glance start"
    fi
    log "seeding Glance: 25 + 1000 images (once; kept in target/bench/state)"
    python3 "$here/glance_seed.py" seed "$G" "$P25" 25 small >&2
    python3 "$here/glance_seed.py" seed "$G" "$P1000" 1000 large >&2
  fi
  log "recording Glance's bodies into bench/bodies/"
  python3 "$here/glance_seed.py" record "$G" "$P25" "$bodies/glance-25" >&2
  python3 "$here/glance_seed.py" record "$G" "$P1000" "$bodies/glance-1000" >&2
fi
IMG25=$(cat "$bodies/glance-25/image-id")

# ---------------------------------------------------------------------------------------
# 2. Static upstream, nginx proxy, gateways.
truncate -s "${STREAM_MIB}M" "$run/blob-1g.bin" 2>/dev/null || truncate -s 1M "$run/blob-1g.bin"
mkdir -p "$run/upstream-body" "$run/upstream-proxy" "$run/proxy-body" "$run/proxy-temp"
render "$here/nginx/upstream-locations.conf.in" "$run/upstream-locations.conf"
render "$here/nginx/upstream.conf.in" "$run/upstream.conf"
render "$here/nginx/proxy.conf.in" "$run/proxy.conf"
"$NGINX" -t -p "$run" -e "$run/nginx-test.log" -c "$run/upstream.conf" 2>"$run/nginx-t.log" || { cat "$run/nginx-t.log" >&2; die "upstream.conf"; }
"$NGINX" -t -p "$run" -e "$run/nginx-test.log" -c "$run/proxy.conf" 2>"$run/nginx-t.log" || { cat "$run/nginx-t.log" >&2; die "proxy.conf"; }

log "static upstream on CPU $LCPU"
start_nginx upstream "$run/upstream.conf" "$LCPU"; UP=$LAST; LOADPIDS=$UP
S25="http://127.0.0.1:$((PORT + 1))"; S1000="http://127.0.0.1:$((PORT + 2))"
wait_http "$S25/versions"; wait_http "$S1000/versions"

nginx_version=$("$NGINX" -v 2>&1 | sed 's/.*: //')
wrk_version=$( (wrk -v 2>&1 || true) | head -n1 | awk "{print \$1, \$2}")
oha_version=$([ -n "$OHA" ] && "$OHA" --version 2>/dev/null | head -n1 || echo "")
python3 - "$meta" <<PY
import json, sys
json.dump({"date": "$(date -u +%Y-%m-%dT%H:%MZ)",
           "machine": "$(nproc) CPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -r)",
           "gateway": "$("$gw" --version 2>/dev/null || echo image-gateway) (page_size $PAGE_SIZE, log warn)",
           "nginx": "$nginx_version", "loadgen": "$wrk_version${oha_version:+ + $oha_version}",
           "proxy_cpu": $PCPU, "load_cpu": $LCPU, "connections": $CONNS, "duration": $DURATION, "warmup": $WARMUP,
           "clean_pct": $CLEAN_PCT, "latency_method": ("oha -q <rate> -c $CONNS --latency-correction for $LAT_DURATION s, rate = $RATE_FRACTION × the slowest row of the group" if "$OHA" else "wrk -c1 for $LAT_DURATION s (no fixed-rate tool)")},
          open(sys.argv[1], "w"))
PY

# Each row gets its own proxy process so its VmHWM is its own.
# group: name, upstream port, URL paths, expected body
order=0
declare -A ROW_PID ROW_URL ROW_EXPECT ROW_PROJ
add_row() {  # add_row KEY ID LABEL BODY PID URL EXPECT PROJECT
  order=$((order + 1))
  ROW_PID[$1]="$5"; ROW_URL[$1]="$6"; ROW_EXPECT[$1]="$7"; ROW_PROJ[$1]="$8"
  local bytes; bytes=$(check "$6" "$7" "$8")
  row "$1" "$(python3 -c 'import json,sys; print(json.dumps(dict(zip(["id","label","body","order","resp_bytes"], sys.argv[1:4] + [int(sys.argv[4]), int(sys.argv[5])]))))' "$2" "$3" "$4" "$order" "$bytes")"
}

run_group() {  # run_group KEY... : closed loop for each, then a fixed rate shared by the group
  local k min=""
  for k in "$@"; do
    closed "$k" "${ROW_URL[$k]}" "${ROW_PROJ[$k]}" "$DURATION" ${ROW_PID[$k]}
    local r; r=$(python3 "$here/report.py" get "$results" "$k" rps)
    min=$(python3 -c 'import sys; a=sys.argv[1]; b=float(sys.argv[2]); print(b if not a else min(float(a), b))' "$min" "$r")
  done
  local rate; rate=$(python3 -c 'import sys; print(max(1, int(float(sys.argv[1]) * float(sys.argv[2]))))' "$min" "$RATE_FRACTION")
  log "  fixed rate for this group: $rate req/s"
  for k in "$@"; do
    fixed "$k" "${ROW_URL[$k]}" "${ROW_PROJ[$k]}" "$rate"
    row "$k" "{\"hwm_kib\": $(max_hwm ${ROW_PID[$k]})}"
  done
}

log "group 1: one image (GET /v2/images/<id>, $(stat -c %s "$bodies/glance-25/image.json") bytes)"
start_nginx proxy-1 "$run/proxy.conf" "$PCPU"; PX1=$LAST
sed "s#listen 127.0.0.1:$((PORT + 3))#listen 127.0.0.1:$((PORT + 5))#; s#listen 127.0.0.1:$((PORT + 4))#listen 127.0.0.1:$((PORT + 6))#; s#proxy.pid#proxy-25.pid#" "$run/proxy.conf" >"$run/proxy-25.conf"
sed "s#listen 127.0.0.1:$((PORT + 3))#listen 127.0.0.1:$((PORT + 7))#; s#listen 127.0.0.1:$((PORT + 4))#listen 127.0.0.1:$((PORT + 8))#; s#proxy.pid#proxy-1000.pid#" "$run/proxy.conf" >"$run/proxy-1000.conf"
start_nginx proxy-25 "$run/proxy-25.conf" "$PCPU"; PX25=$LAST
start_nginx proxy-1000 "$run/proxy-1000.conf" "$PCPU"; PX1000=$LAST
wait_http "http://127.0.0.1:$((PORT + 3))/image/versions"
wait_http "http://127.0.0.1:$((PORT + 5))/image/versions"
wait_http "http://127.0.0.1:$((PORT + 8))/image/versions"
start_gateway gw-c1 $((PORT + 11)) "$S25"; GWC1=$LAST
start_gateway gw-c25 $((PORT + 12)) "$S25"; GWC25=$LAST
start_gateway gw-c1000 $((PORT + 13)) "$S1000"; GWC1000=$LAST
start_gateway gw-d25 $((PORT + 14)) "$S25"; GWD25=$LAST
start_gateway gw-d1000 $((PORT + 15)) "$S1000"; GWD1000=$LAST

add_row a1 "(a)" "direct to static upstream" "1 image" "$UP" "$S25/v2/images/$IMG25" image "$P25"
add_row b1 "(b)" "nginx proxy_pass" "1 image" "$PX1" "http://127.0.0.1:$((PORT + 3))/image/v2/images/$IMG25" image "$P25"
add_row c1 "(c)" "gateway passthrough /image/v2" "1 image" "$GWC1" "http://127.0.0.1:$((PORT + 11))/image/v2/images/$IMG25" image "$P25"
run_group a1 b1 c1

log "group 2: 25 images ($(stat -c %s "$bodies/glance-25/images.json") bytes of Glance list)"
add_row a25 "(a)" "direct to static upstream" "Glance list, 25" "$UP" "$S25/v2/images?limit=1000" 25 "$P25"
add_row b25 "(b)" "nginx proxy_pass" "Glance list, 25" "$PX25" "http://127.0.0.1:$((PORT + 5))/image/v2/images?limit=1000" 25 "$P25"
add_row c25 "(c)" "gateway passthrough /image/v2" "Glance list, 25" "$GWC25" "http://127.0.0.1:$((PORT + 12))/image/v2/images?limit=1000" 25 "$P25"
add_row d25 "(d)" "gateway translating /v2.1/images/detail" "Nova detail, 25" "$GWD25" "http://127.0.0.1:$((PORT + 14))/v2.1/images/detail" 25 "$P25"
run_group a25 b25 c25 d25

log "group 3: 1000 images ($(stat -c %s "$bodies/glance-1000/images.json") bytes of Glance list)"
add_row a1000 "(a)" "direct to static upstream" "Glance list, 1000" "$UP" "$S1000/v2/images?limit=1000" 1000 "$P1000"
add_row b1000 "(b)" "nginx proxy_pass" "Glance list, 1000" "$PX1000" "http://127.0.0.1:$((PORT + 8))/image/v2/images?limit=1000" 1000 "$P1000"
add_row c1000 "(c)" "gateway passthrough /image/v2" "Glance list, 1000" "$GWC1000" "http://127.0.0.1:$((PORT + 13))/image/v2/images?limit=1000" 1000 "$P1000"
add_row d1000 "(d)" "gateway translating /v2.1/images/detail" "Nova detail, 1000" "$GWD1000" "http://127.0.0.1:$((PORT + 15))/v2.1/images/detail" 1000 "$P1000"
run_group a1000 b1000 c1000 d1000
note "d1000: the gateway makes 2 Glance calls per request (limit=$PAGE_SIZE, then marker=<last> because Glance's full page carries \`next\`); the static upstream answers the second with Glance's recorded empty page."

for p in "$PX1" "$PX25" "$PX1000" "$GWC1" "$GWC25" "$GWC1000" "$GWD25" "$GWD1000"; do stop_pid "$p"; done

# ---------------------------------------------------------------------------------------
# 2b. A burst: BURST_CLIENTS clients on the 1000-image detail list, with the admission limit
# the gateway ships with and with none, each in a fresh gateway. Idle RSS is read after a few
# requests and 10 s of rest, the peak is VmHWM, and "after" is read 10 s after the burst.
# burst KEY LABEL PORT [VAR=VALUE...]
burst() {
  local key="$1" label="$2" port="$3"; shift 3
  start_gateway "gw-$key" "$port" "$S1000" "$@"; local pid=$LAST url="http://127.0.0.1:$port/v2.1/images/detail"
  mapfile -t hdr < <(ident "$P1000")
  for _ in 1 2 3 4 5; do curl -sS -o /dev/null "${hdr[@]}" "$url"; done
  sleep 10
  local idle; idle=$(status_kib "$pid" VmRSS)
  wait_quiet
  local c0; c0=$(cpu_ticks "$pid")
  taskset -c "$LCPU" "$burst_bin" "$url" "$BURST_CLIENTS" "$BURST_SECS" \
    "X-Auth-Token: gw:$P1000:$U:$ROLES" "X-User-Id: $U" "X-Project-Id: $P1000" "X-Roles: $ROLES" \
    >"$run/$key.json" 2>"$run/$key.err" || die "burst $key (see $run/$key.err)"
  local c1; c1=$(cpu_ticks "$pid")
  local hwm; hwm=$(status_kib "$pid" VmHWM)
  sleep 10
  local after; after=$(status_kib "$pid" VmRSS)
  stop_pid "$pid"
  order=$((order + 1))
  row "$key" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.update(kind="burst", label=sys.argv[2], order=int(sys.argv[3]), idle_kib=int(sys.argv[4]), hwm_kib=int(sys.argv[5]), after_kib=int(sys.argv[6]), cpu_s=(int(sys.argv[8]) - int(sys.argv[7])) / int(sys.argv[9])); print(json.dumps(d))' \
    "$run/$key.json" "$label" "$order" "$idle" "$hwm" "$after" "$c0" "$c1" "$HZ")"
  log "  $key: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print({k: v["count"] for k, v in d["statuses"].items()}, "errors", sum(d["errors"].values()))' "$run/$key.json"), RSS idle $idle KiB, peak $hwm KiB, 10 s after $after KiB"
}
if [ "$BURST_CLIENTS" -gt 0 ]; then
  log "group 3b: a burst of $BURST_CLIENTS clients on the 1000-image detail list for ${BURST_SECS} s"
  burst burst "limits.max_heavy_in_flight = 32 (shipped)" $((PORT + 19))
  burst burst-nolimit "no admission limit (max_heavy_in_flight = 100000)" $((PORT + 20)) \
    IMAGE_GATEWAY_LIMITS__MAX_HEAVY_IN_FLIGHT=100000
fi

# ---------------------------------------------------------------------------------------
# 3. Real Glance: Nova's image proxy vs the gateway, the same listing from the same Glance.
if [ "$REAL" = 1 ]; then
  log "starting Nova 34 on CPU $PCPU"
  nova_up=1
  taskset -c "$PCPU" scripts/openstack/nova.sh start "$state/nova" "$NPORT" "$G" >"$run/nova-start.log" 2>&1 \
    || { tail -n 30 "$run/nova-start.log" >&2; die "nova start"; }
  NOVA_PG=$(cat "$state/nova/nova.pid")
  nova_pids() { pgrep -g "$NOVA_PG" | tr '\n' ' '; }
  start_gateway gw-g $((PORT + 16)) "$G"; GWG=$LAST
  N="http://127.0.0.1:$NPORT"; GG="http://127.0.0.1:$((PORT + 16))"
  LOADPIDS=$(pgrep -g "$(cat "$state/glance/glance.pid")" | tr '\n' ' ')

  log "group 4: 25 images from the real Glance (Glance on CPU $LCPU)"
  add_row e25 "(e)" "Nova 34 image proxy, real Glance" "Nova detail, 25" "$(nova_pids)" "$N/v2.1/images/detail" 25 "$P25"
  add_row g25 "(g)" "gateway translating, same real Glance" "Nova detail, 25" "$GWG" "$GG/v2.1/images/detail" 25 "$P25"
  # Nova and Glance serve one request at a time: CONNS connections just queue.
  saved=$DURATION; DURATION=$NOVA_DURATION
  run_group e25 g25
  DURATION=$saved

  if [ "$SEQ_REQUESTS" -gt 0 ]; then
    log "group 5: 1000 images from the real Glance, $SEQ_REQUESTS sequential requests each"
    add_row e1000 "(e)" "Nova 34 image proxy, real Glance" "Nova detail, 1000" "$(nova_pids)" "$N/v2.1/images/detail" 1000 "$P1000"
    add_row g1000 "(g)" "gateway translating, same real Glance" "Nova detail, 1000" "$GWG" "$GG/v2.1/images/detail" 1000 "$P1000"
    for k in e1000 g1000; do
      mapfile -t hdr < <(ident "$P1000")
      c0=$(cpu_ticks ${ROW_PID[$k]})
      : >"$run/$k.times"
      for _ in $(seq "$SEQ_REQUESTS"); do
        taskset -c "$LCPU" curl -sS -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 120 "${hdr[@]}" "${ROW_URL[$k]}" >>"$run/$k.times"
      done
      c1=$(cpu_ticks ${ROW_PID[$k]})
      python3 - "$run/$k.times" "$c0" "$c1" "$HZ" "$SEQ_REQUESTS" "$(max_hwm ${ROW_PID[$k]})" <<'PY' | xargs -0 python3 "$here/report.py" add "$results" "$k"
import json, statistics, sys
path, c0, c1, hz, n, hwm = sys.argv[1:]
lines = [l.split() for l in open(path) if l.strip()]
t = sorted(float(x[1]) for x in lines)
bad = sum(1 for x in lines if x[0] != "200")
cpu = (int(c1) - int(c0)) / int(hz)
print(json.dumps({"requests": len(t), "errors": bad, "rps": len(t) / sum(t), "cpu_s": cpu,
                  "cpu_us_per_req": cpu * 1e6 / len(t), "lat_note": f"{n} sequential",
                  "lat_p50_us": statistics.median(t) * 1e6, "lat_p99_us": t[-1] * 1e6, "hwm_kib": int(hwm)}), end="")
PY
      log "  $k: $(python3 "$here/report.py" get "$results" "$k" cpu_us_per_req) µs CPU/req"
    done
    note "e1000/g1000: $SEQ_REQUESTS sequential requests (1 connection), req/s = 1 / mean latency, p99 column = slowest; Nova is too slow for a timed closed-loop run at 1000 images."
  fi
  note "e/g rows: CPU is the proxy's own (all Nova uWSGI processes / the gateway process); Glance's CPU is not counted in either. Their req/s is bounded by Glance (one uWSGI worker), not by the proxy."
  stop_pid "$GWG"
  scripts/openstack/nova.sh stop "$state/nova" >/dev/null 2>&1

  # The same Nova in front of the static upstream, loaded as the gateway was in (d25): both
  # proxies busy, neither waiting on a slow Glance between requests.
  log "group 6: Nova 34 in front of the static upstream (25 images)"
  taskset -c "$PCPU" scripts/openstack/nova.sh start "$state/nova" "$NPORT" "$S25" >"$run/nova-static-start.log" 2>&1 \
    || { tail -n 30 "$run/nova-static-start.log" >&2; die "nova start (static upstream)"; }
  NOVA_PG=$(cat "$state/nova/nova.pid")
  add_row f25 "(f)" "Nova 34 image proxy, static upstream" "Nova detail, 25" "$(nova_pids)" "$N/v2.1/images/detail" 25 "$P25"
  run_group f25
  note "f25: Nova is compared with (d25), the gateway in front of the same static upstream under the same closed-loop load."
  scripts/openstack/nova.sh stop "$state/nova" >/dev/null 2>&1; nova_up=0
fi

# ---------------------------------------------------------------------------------------
# 4. Streaming through the image mount and the Glance v1 mount: RSS before, peak during.
# stream KEY LABEL UPSTREAM_NAME GATEWAY_PID CURL_ARGS... : sample VmRSS while curl runs.
stream() {
  local key="$1" label="$2" upname="$3" gpid="$4"; shift 4
  local before c0 c1 out sampler
  before=$(status_kib "$gpid" VmRSS)
  c0=$(cpu_ticks "$gpid")
  ( while kill -0 "$gpid" 2>/dev/null; do status_kib "$gpid" VmRSS; sleep 0.05; done ) >"$run/$key.rss" &
  sampler=$!
  out=$(taskset -c "$LCPU" curl -sS --max-time 600 -w '%{http_code} %{size_upload} %{size_download} %{time_total}' "$@") \
    || { kill "$sampler" 2>/dev/null; die "stream $key: curl failed"; }
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  c1=$(cpu_ticks "$gpid")
  local code up down secs hwm peak
  read -r code up down secs <<<"${out##*$'\n'}"
  case "$code" in 2??) ;; *) die "stream $key: HTTP $code ($out)";; esac
  hwm=$(status_kib "$gpid" VmHWM)
  peak=$(sort -n "$run/$key.rss" | tail -n1); [ "${peak:-0}" -gt "$hwm" ] && hwm=$peak
  local bytes; bytes=$(python3 -c "print(max(int(float('$up')), int(float('$down'))))")
  order=$((order + 1))
  row "$key" "{\"kind\": \"stream\", \"label\": \"$label\", \"upstream\": \"$upname\", \"order\": $order, \"bytes\": $bytes, \"seconds\": $secs, \"rss_before_kib\": $before, \"rss_peak_kib\": $hwm, \"growth_kib\": $((hwm - before)), \"cpu_s\": $(python3 -c "print(($c1 - $c0) / $HZ)")}"
  log "  $key: $bytes bytes in ${secs}s, VmRSS $before KiB -> peak $hwm KiB"
}

if [ "$STREAM_MIB" -gt 0 ]; then
  log "streaming ${STREAM_MIB} MiB through the gateway's image mount and Glance v1 mount"
  mapfile -t H < <(ident "$P25")
  if [ "$REAL" = 1 ]; then
    start_gateway gw-stream $((PORT + 17)) "$G"; GWS=$LAST
    GS="http://127.0.0.1:$((PORT + 17))"
    # Warm the process (connection pool, allocator) before taking the "before" figure.
    curl -sS -o /dev/null "${H[@]}" "$GS/image/v2/images?limit=1"
    id=$(curl -sS --fail-with-body "${H[@]}" -H 'Content-Type: application/json' -X POST "$GS/image/v2/images" \
          -d '{"name":"bench-stream","disk_format":"raw","container_format":"bare"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    stream s-up "upload PUT /image/v2/images/<id>/file" "real Glance" "$GWS" "${H[@]}" \
      -H 'Content-Type: application/octet-stream' -T "$run/blob-1g.bin" -o /dev/null "$GS/image/v2/images/$id/file"
    stream s-down "download GET /image/v2/images/<id>/file" "real Glance" "$GWS" "${H[@]}" \
      -o /dev/null "$GS/image/v2/images/$id/file"
    curl -sS -o /dev/null "${H[@]}" -X DELETE "$GS/image/v2/images/$id" || true
    stop_pid "$GWS"

    # Glance v1, as python-glanceclient calls it: POST /v1/images with x-image-meta-* headers
    # and a chunked body (streamed into Glance v2's upload), then GET /v1/images/<id> (streamed
    # from v2's /file). A fresh gateway, so that its figures are its own.
    start_gateway gw-stream-v1 $((PORT + 21)) "$G"; GWV1=$LAST
    V1="http://127.0.0.1:$((PORT + 21))/image-v1/v1/images"
    curl -sS -o /dev/null "${H[@]}" "$V1/detail?limit=1"
    stream s-v1-up "v1 upload POST /image-v1/v1/images (chunked)" "real Glance" "$GWV1" "${H[@]}" \
      -H 'x-image-meta-name: bench-stream-v1' -H 'x-image-meta-disk_format: raw' \
      -H 'x-image-meta-container_format: bare' -H 'Content-Type: application/octet-stream' \
      -H 'Transfer-Encoding: chunked' -X POST -T "$run/blob-1g.bin" -o "$run/s-v1-up.json" "$V1"
    id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"]["id"])' "$run/s-v1-up.json") \
      || die "POST /v1/images answered no image: $(head -c 300 "$run/s-v1-up.json")"
    stream s-v1-down "v1 download GET /image-v1/v1/images/<id>" "real Glance" "$GWV1" "${H[@]}" \
      -o /dev/null "$V1/$id"
    curl -sS -o /dev/null "${H[@]}" -X DELETE "$V1/$id" || true
    stop_pid "$GWV1"
  fi
  start_gateway gw-stream-static $((PORT + 18)) "$S25"; GWS2=$LAST
  GS2="http://127.0.0.1:$((PORT + 18))"
  curl -sS -o /dev/null "${H[@]}" "$GS2/image/v2/images/$IMG25"
  stream s-down-static "download GET /image/v2/images/<id>/file" "static nginx" "$GWS2" "${H[@]}" \
    -o /dev/null "$GS2/image/v2/images/$IMG25/file"
  stop_pid "$GWS2"
fi

# ---------------------------------------------------------------------------------------
# 5. The mapping engine alone: CPU of a 1000-image translation ÷ a plain serde_json parse +
# serialize of the same page (median of alternated rounds; see benches/mapping.rs).
if [ "$ENGINE" = 1 ]; then
  log "engine: cargo bench --bench mapping"
  taskset -c "$PCPU" cargo bench --bench mapping -- --warm-up-time 1 --measurement-time 3 >"$run/engine.txt" 2>&1 \
    || die "cargo bench --bench mapping (see $run/engine.txt)"
  while IFS= read -r line; do note "engine: $line"; done < <(grep '÷ baseline' "$run/engine.txt")
fi

# ---------------------------------------------------------------------------------------
elapsed=$(( $(date +%s) - T0 ))
python3 - "$meta" "$elapsed" "${notes[@]}" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); m["elapsed"] = int(sys.argv[2]); m["notes"] = sys.argv[3:]
json.dump(m, open(sys.argv[1], "w"))
PY
python3 "$here/report.py" table "$results" "$meta" >"$here/results.md"
cat "$here/results.md"
for f in "$run"/*.perf.txt; do [ -f "$f" ] && { echo; echo "== perf: $(basename "$f")"; cat "$f"; }; done
log "done in ${elapsed}s; raw outputs in $run"
