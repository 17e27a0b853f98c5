# Shared by tests/ops/drain.sh and tests/ops/soak.sh: sourced, never run on its own.
#
# Everything here stays on 127.0.0.1, every wait is bounded in count and time, and every
# process started through `ops_spawn` is stopped by `ops_cleanup` (installed as the EXIT trap
# by `ops_init`), by its own pid only.

OPS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OPS_PIDS=()
OPS_PASSED=0
OPS_FAILED=0
OPS_KEEP=${OPS_KEEP:-0}

ops_log() { printf '[%s] %s\n' "$(date +%T.%3N)" "$*" >&2; }

ops_pass() {
    OPS_PASSED=$((OPS_PASSED + 1))
    printf 'ok    %s\n' "$*"
}

ops_fail() {
    OPS_FAILED=$((OPS_FAILED + 1))
    printf 'FAIL  %s\n' "$*"
}

# ops_summary NAME [SKIPPED]: the closing `NAME: N passed, M failed[, K skipped]` line; the same
# counts go as JSON to the file IG_TEST_RESULT names, when set (scripts/test.sh adds those up).
ops_summary() {
    echo "$1: $OPS_PASSED passed, $OPS_FAILED failed${2:+, $2 skipped}"
    if [[ -n ${IG_TEST_RESULT:-} ]]; then
        printf '{"passed": %d, "failed": %d, "skipped": %d}\n' "$OPS_PASSED" "$OPS_FAILED" "${2:-0}" >"$IG_TEST_RESULT"
    fi
}

# ops_check DESCRIPTION COMMAND...: a pass when the command succeeds.
ops_check() {
    local what=$1
    shift
    if "$@"; then ops_pass "$what"; else ops_fail "$what"; fi
}

# Seconds since the epoch, with fractions.
ops_now() { date +%s.%N; }

# ops_elapsed START [END]: END (default now) minus START, in seconds with 3 decimals.
ops_elapsed() { awk -v a="$1" -v b="${2:-$(ops_now)}" 'BEGIN { printf "%.3f", b - a }'; }

# ops_le A B: A <= B, as decimals.
ops_le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0) }'; }

# ops_init NAME: a scratch directory ($OPS_WORK) and the cleanup trap.
ops_init() {
    OPS_WORK=$(mktemp -d "/tmp/image-gateway-$1.XXXXXX")
    trap ops_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Stops what this script started (TERM, then KILL after 3 s), children first (last started
# first). Keeps the scratch directory when something failed or OPS_KEEP=1.
ops_cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    local i pid
    for ((i = ${#OPS_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${OPS_PIDS[i]}
        ops_ours "$pid" && kill -TERM "$pid" 2>/dev/null
    done
    for ((i = ${#OPS_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${OPS_PIDS[i]}
        local n=0
        while ops_ours "$pid" && ((n < 30)); do
            sleep 0.1
            n=$((n + 1))
        done
        ops_ours "$pid" && kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [[ -n ${OPS_WORK:-} && -d $OPS_WORK ]]; then
        if ((rc != 0 || OPS_FAILED > 0)) || [[ $OPS_KEEP == 1 ]]; then
            ops_log "logs kept in $OPS_WORK"
        else
            rm -rf "$OPS_WORK"
        fi
    fi
    exit "$rc"
}

# ops_spawn VAR LOG COMMAND...: starts COMMAND in the background (stdout and stderr to LOG),
# remembers its pid for the cleanup and stores it in VAR.
ops_spawn() {
    local var=$1 log=$2
    shift 2
    "$@" >"$log" 2>&1 &
    local _ops_pid=$!
    OPS_PIDS+=("$_ops_pid")
    printf -v "$var" '%s' "$_ops_pid"
}

# ops_ours PID: PID is alive (not a zombie) and still this script's child, so not a reused pid.
ops_ours() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    set -- $stat
    [[ $1 != Z && $2 == "$$" ]]
}

# ops_forget PID: PID was waited for; the cleanup leaves it alone.
ops_forget() {
    local i
    for i in "${!OPS_PIDS[@]}"; do
        [[ ${OPS_PIDS[i]} == "$1" ]] && unset 'OPS_PIDS[i]'
    done
    OPS_PIDS=("${OPS_PIDS[@]}")
}

# ops_ports N: N distinct free loopback ports, one a line.
ops_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
    s.close()
EOF
}

# ops_wait_http URL STATUS SECONDS: until URL answers STATUS (polled every 0.1 s).
ops_wait_http() {
    local url=$1 want=$2 tries=$(($3 * 10)) i code
    for ((i = 0; i < tries; i++)); do
        code=$(curl --noproxy '*' -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [[ $code == "$want" ]] && return 0
        sleep 0.1
    done
    return 1
}

# ops_status URL [CURL ARGS...]: the HTTP status (000 when there was no answer), 2 s at most.
ops_status() {
    local url=$1
    shift
    curl --noproxy '*' -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" || true
}

# Builds the gateway unless OPS_GATEWAY_BIN names a binary; sets OPS_BIN.
ops_build() {
    if [[ -n ${OPS_GATEWAY_BIN:-} ]]; then
        OPS_BIN=$OPS_GATEWAY_BIN
    else
        local target=${CARGO_TARGET_DIR:-$OPS_ROOT/target}
        (cd "$OPS_ROOT" && CARGO_TARGET_DIR=$target cargo build --release --quiet) || return 1
        OPS_BIN=$target/release/image-gateway
    fi
    [[ -x $OPS_BIN ]]
}

# VmRSS of PID in KiB, and its number of open file descriptors.
ops_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
ops_fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
