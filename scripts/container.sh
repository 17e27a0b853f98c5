#!/usr/bin/env bash
# Builds deploy/Dockerfile offline and runs the image: what an operator gets from `docker build`,
# on a machine that can reach no container registry.
#
#   scripts/container.sh
#
# 1. podman, buildah and runc from Debian's packages, installed when missing.
# 2. A local base image standing in for distroless cc (RUNTIME_IMAGE): `podman import` of a
#    root file system holding the release binary's shared libraries (from ldd), /etc/passwd and
#    /etc/group with `nonroot` (65532), CA certificates and /tmp.
# 3. The image, `--pull=never`, its `prebuilt` target: the host's release binary instead of the
#    `cargo` stage on the rust image, which cannot be pulled here (and is never touched).
# 4. Its size (reported; a failure only above CONTAINER_MAX_MB, default 60; the aim is 30) and
#    its file system: the binary, CA certificates, nonroot in /etc/passwd, no shell.
# 5. Running it (runc with cgroupfs: crun fails on these machines; host network on a free
#    loopback port; --read-only; --user 65532): /healthz, /readyz, an image created, uploaded,
#    listed by Nova's /v2.1/images/detail and downloaded intact; `check` on a mounted config
#    (valid, and a misspelt key refused); no shell to exec; SIGTERM by `podman stop`:
#    docs/operations.md "Shutdown" (/readyz 503 at once, /healthz 200 and requests served for
#    the drain delay, then new connections refused while a download in flight finishes, exit 0
#    before drain + grace, well before podman's SIGKILL).
# When containers cannot run here (podman missing and not installable, or runc refusing to start
# the base image), step 5 says why and its checks are reported skipped; the build still happens
# when podman is there.
#
# One line per check, then `container: N passed, M failed, K skipped`; exits non-zero on a
# failure. Environment: CONTAINER_GATEWAY_BIN=path uses that release binary (default: build
# target/release/image-gateway with `cargo build --release --locked`); CONTAINER_MAX_MB;
# OPS_KEEP=1 keeps the scratch directory.
set -euo pipefail

# shellcheck source=tests/ops/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../tests/ops/lib.sh"
ops_init container
W=$OPS_WORK
REPO=$OPS_ROOT
MAX_MB=${CONTAINER_MAX_MB:-60}
BASE=localhost/image-gateway-base:local
IMAGE=localhost/image-gateway:local
NAME=image-gateway-check-$$
DRAIN_DELAY=2
GRACE=5
# runc, as containers-and-clients-here.md found: crun and the default rlimits fail here.
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)
RUN=("${PODMAN[@]}" run --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
SKIPPED=0

skip() {
    SKIPPED=$((SKIPPED + 1))
    printf 'skip  %s\n' "$*"
}
finish() {
    echo "container: $OPS_PASSED passed, $OPS_FAILED failed, $SKIPPED skipped"
    ((OPS_FAILED == 0))
}
# For ops_check, which runs one command: not COMMAND...; both COMMAND... -- COMMAND...
# shellcheck disable=SC2317  # (called through ops_check)
not() { ! "$@"; }
# shellcheck disable=SC2317
both() {
    local first=()
    while [[ $1 != -- ]]; do first+=("$1"); shift; done
    shift
    "${first[@]}" && "$@"
}
# logged LOG COMMAND...: COMMAND with its output in LOG (for ops_check, whose line stays visible).
# shellcheck disable=SC2317
logged() {
    local log=$1
    shift
    "$@" >"$log" 2>&1
}
phase_start=$(ops_now)
# phase NAME: logs how long the phase that just ended took.
phase() {
    ops_log "time: $1 $(ops_elapsed "$phase_start") s"
    phase_start=$(ops_now)
}
# The container this script runs is removed on any exit, before lib.sh's cleanup.
trap 'rc=$?; "${PODMAN[@]}" rm -f -t 0 "$NAME" >/dev/null 2>&1; (exit $rc); ops_cleanup' EXIT

# --- 1. tools ----------------------------------------------------------------------------
missing=()
for p in podman buildah runc; do command -v "$p" >/dev/null || missing+=("$p"); done
if ((${#missing[@]})); then
    ops_log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >"$W/apt.log" 2>&1 ||
        { apt-get update -q >>"$W/apt.log" 2>&1 && apt-get install -y -q "${missing[@]}" >>"$W/apt.log" 2>&1; } ||
        ops_log "apt-get install ${missing[*]} failed (see $W/apt.log)"
fi
phase "apt"
if ! command -v podman >/dev/null; then
    skip "build and run: podman is missing and apt-get could not install it (see $W/apt.log)"
    finish
    exit
fi

# --- 2. the release binary and the base image --------------------------------------------
if [[ -n ${CONTAINER_GATEWAY_BIN:-} ]]; then
    BIN=$CONTAINER_GATEWAY_BIN
else
    ops_log "building the release binary"
    (cd "$REPO" && CARGO_TARGET_DIR=$REPO/target cargo build --release --locked --quiet) ||
        { ops_fail "cargo build --release --locked"; finish; exit 1; }
    BIN=$REPO/target/release/image-gateway
    phase "cargo build --release"
fi
[[ -x $BIN ]] || { ops_fail "the release binary exists ($BIN)"; finish; exit 1; }
# The build context is the repository: the binary goes under its target/ (never committed).
STAGED=target/container/image-gateway
mkdir -p "$REPO/target/container"
cp "$BIN" "$REPO/$STAGED"

# make_base ROOT: distroless cc's promises (the binary's libraries, nonroot, CA certificates,
# a sticky /tmp) in ROOT, imported as $BASE.
make_base() {
    local root=$1 lib
    mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
    for lib in $libs; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib" || return
    done
    printf '%s\n' root:x:0:0:root:/root:/sbin/nologin nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin \
        nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin >"$root/etc/passwd"
    printf '%s\n' root:x:0: nobody:x:65534: nonroot:x:65532: >"$root/etc/group"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/" &&
        chmod 1777 "$root/tmp" &&
        chown 65532:65532 "$root/home/nonroot" &&
        tar --numeric-owner -C "$root" -cf "$root.tar" . &&
        "${PODMAN[@]}" import -q "$root.tar" "$BASE"
}
libs=$(ldd "$BIN" | grep -o '/[^ ]*' || true)
what="base image $BASE imported ($(wc -w <<<"$libs") libraries from ldd, passwd, CA certificates)"
if ! logged "$W/base.log" make_base "$W/rootfs"; then
    ops_fail "$what (see $W/base.log)"
    finish
    exit 1
fi
ops_pass "$what"
phase "base image"

# --- 3. the image --------------------------------------------------------------------------
if ! "${PODMAN[@]}" build --pull=never -f "$REPO/deploy/Dockerfile" -t "$IMAGE" \
    --target prebuilt --build-arg PREBUILT_BINARY="$STAGED" --build-arg RUNTIME_IMAGE="$BASE" \
    "$REPO" >"$W/build.log" 2>&1; then
    ops_fail "podman build --pull=never --target prebuilt (see $W/build.log)"
    tail -5 "$W/build.log" >&2
    finish
    exit 1
fi
ops_pass "podman build --pull=never --target prebuilt, RUNTIME_IMAGE=$BASE"
rust_image=$(sed -n 's/^ARG RUST_IMAGE=//p' "$REPO/deploy/Dockerfile")
ops_check "the unused cargo stage is skipped (the build never asks for $rust_image)" \
    not grep -qF -- "$rust_image" "$W/build.log"
phase "podman build"

bytes=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')
ops_log "image size: $mb MB (aim: under 30 MB)"
ops_check "image size $mb MB is under $MAX_MB MB (aim: 30)" ops_le "$mb" "$MAX_MB"

# The file system as a container of it sees it, without running anything.
"${PODMAN[@]}" create --name "$NAME" "$IMAGE" >/dev/null
"${PODMAN[@]}" export "$NAME" >"$W/image.tar"
"${PODMAN[@]}" rm "$NAME" >/dev/null
tar -tf "$W/image.tar" | sed 's|^\./||' >"$W/files"
tar -xf "$W/image.tar" -C "$W" etc/passwd
ops_check "the binary is /usr/local/bin/image-gateway" grep -qx usr/local/bin/image-gateway "$W/files"
ops_check "CA certificates at /etc/ssl/certs/ca-certificates.crt" grep -qx etc/ssl/certs/ca-certificates.crt "$W/files"
ops_check "/etc/passwd names nonroot as uid and gid 65532" grep -q '^nonroot:x:65532:65532:' "$W/etc/passwd"
ops_check "the image's user is nonroot" test "$("${PODMAN[@]}" image inspect --format '{{.Config.User}}' "$IMAGE")" = nonroot
ops_check "no shell in the file system (sh, bash, dash, busybox)" \
    not grep -qE '^(usr/)?s?bin/(sh|bash|dash|busybox)$' "$W/files"

# --- 5. running it -----------------------------------------------------------------------
# Can this machine run a container at all? The base image's dynamic loader, as uid 65532,
# needs nothing from the Dockerfile, so its failure is the machine's, not the image's.
loader=$(grep -m1 '/ld-linux' <<<"$libs" || echo /lib64/ld-linux-x86-64.so.2)
if ! "${RUN[@]}" --rm --network none --user 65532 --entrypoint "$loader" "$BASE" --version \
    >"$W/runtime-probe.log" 2>&1; then
    skip "running the image: this machine cannot run a container: $(tail -1 "$W/runtime-probe.log")"
    finish
    exit
fi

mount_config() { printf -- '--volume=%s:/etc/image-gateway/config/gateway.toml:ro' "$1"; }
cat >"$W/gateway.toml" <<EOF
[shutdown]
drain_delay_secs = $DRAIN_DELAY
grace_period_secs = $GRACE
EOF
printf '[shutdown]\ndrain_delay_sec = 2\n' >"$W/misspelt.toml"
# Without --user: the image's USER nonroot has to resolve through its /etc/passwd.
ops_check "check with a mounted config exits 0 (as the image's user, read-only root)" \
    logged "$W/check.log" "${RUN[@]}" --rm --network none --read-only "$(mount_config "$W/gateway.toml")" "$IMAGE" \
    check --config /etc/image-gateway/config/gateway.toml
if "${RUN[@]}" --rm --network none --read-only "$(mount_config "$W/misspelt.toml")" "$IMAGE" \
    check --config /etc/image-gateway/config/gateway.toml >"$W/check-misspelt.log" 2>&1; then
    ops_fail "check refuses a mounted config with a misspelt key (it exited 0)"
else
    ops_check "check refuses a mounted config with a misspelt key, naming it" grep -q drain_delay_sec "$W/check-misspelt.log"
fi
"${RUN[@]}" --rm --network none --entrypoint /bin/sh "$IMAGE" -c true >"$W/sh.log" 2>&1 && rc=0 || rc=$?
# 127 with "no such file": the shell is missing, not the runtime failing for another reason.
grep -q "no such file or directory" "$W/sh.log" || rc="$rc, without \"no such file\""
ops_check "no shell to run: --entrypoint /bin/sh fails, not found (podman exit $rc)" test "$rc" = 127

port=$(ops_ports 1)
GW=http://127.0.0.1:$port
"${RUN[@]}" -d --name "$NAME" --network host --user 65532 --read-only \
    -e IMAGE_GATEWAY_LISTEN="127.0.0.1:$port" "$(mount_config "$W/gateway.toml")" "$IMAGE" >/dev/null
if ! ops_wait_http "$GW/readyz" 200 20; then
    ops_fail "the container serves /readyz 200 on port $port"
    "${PODMAN[@]}" logs "$NAME" 2>&1 | tail -5 >&2
    finish
    exit 1
fi
pid=$("${PODMAN[@]}" inspect --format '{{.State.Pid}}' "$NAME")
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
read_only=$("${PODMAN[@]}" inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$NAME")
ops_check "the gateway runs as uid 65532 ($uid) on a read-only root file system ($read_only)" \
    test "$uid:$read_only" = 65532:true
ops_check "/healthz 200" test "$(ops_status "$GW/healthz")" = 200
ops_check "/readyz 200" test "$(ops_status "$GW/readyz")" = 200

# An image in the embedded store (one project: config/gateway.toml's embedded_identity).
new_image() {
    curl --noproxy '*' -sf --max-time 5 -X POST "$GW/image/v2/images" -H 'Content-Type: application/json' \
        -d "{\"name\": \"$1\", \"disk_format\": \"raw\", \"container_format\": \"bare\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}
upload() { # upload ID FILE [CURL ARGS...]: prints the status
    local id=$1 file=$2
    shift 2
    curl --noproxy '*' -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
        -T "$file" "$@" "$GW/image/v2/images/$id/file" || true
}
head -c 65536 /dev/urandom >"$W/small.img"
id=$(new_image container-probe) || id=""
ops_check "an image created in the embedded store" test -n "$id"
ops_check "its bytes uploaded (204)" test "$(upload "$id" "$W/small.img" --max-time 10)" = 204
curl --noproxy '*' -s --max-time 5 -o "$W/detail.json" -w '%{http_code}' "$GW/v2.1/images/detail" >"$W/detail.status" || true
ops_check "GET /v2.1/images/detail 200, JSON listing the image ACTIVE" python3 - "$W/detail.status" "$W/detail.json" "$id" <<'EOF'
import json, sys
status, body, want = open(sys.argv[1]).read(), json.load(open(sys.argv[2])), sys.argv[3]
assert status == "200", status
assert [i["status"] for i in body["images"] if i["id"] == want] == ["ACTIVE"], body
EOF
curl --noproxy '*' -sf --max-time 5 -o "$W/small.back" "$GW/image/v2/images/$id/file" || true
ops_check "the image downloads intact" cmp -s "$W/small.img" "$W/small.back"

# --- SIGTERM drain -------------------------------------------------------------------------
# A download read at 4 MiB/s (4 s for 16 MiB) through a 64 KiB receive buffer, so that the
# gateway is still sending when the drain delay (2 s) ends, is in flight when podman sends
# SIGTERM: it has to finish within the grace period (5 s).
head -c $((16 << 20)) /dev/urandom >"$W/big.img"
big=$(new_image container-drain) || big=""
ops_check "a 16 MiB image uploaded" test "$(upload "$big" "$W/big.img" --max-time 30)" = 204
cat >"$W/slow_get.py" <<'EOF'
import socket, sys, time
port, path, out, started = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.connect(("127.0.0.1", port))
s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
with open(out, "wb") as f:
    t0 = time.monotonic()
    n = 0
    while chunk := s.recv(65536):
        if n == 0:
            open(started, "w").close()
        f.write(chunk)
        n += len(chunk)
        time.sleep(max(0.0, t0 + n / (4 << 20) - time.monotonic()))
EOF
rm -f "$W/started"
python3 "$W/slow_get.py" "$port" "/image/v2/images/$big/file" "$W/big.http" "$W/started" &
download_pid=$!
OPS_PIDS+=("$download_pid")
for _ in $(seq 50); do [[ -e $W/started ]] && break; sleep 0.1; done # 5 s at most
timeout=$((DRAIN_DELAY + GRACE + 5))
t_stop=$(ops_now)
"${PODMAN[@]}" stop -t "$timeout" "$NAME" >"$W/stop.log" 2>&1 &
stop_pid=$!
OPS_PIDS+=("$stop_pid")
ready_503=$(ops_wait_http "$GW/readyz" 503 2 && ops_elapsed "$t_stop" || echo never)
ops_check "/readyz 503 within 1 s of SIGTERM (after $ready_503 s)" ops_le "${ready_503/never/99}" 1
ops_check "/healthz still 200 during the drain delay" test "$(ops_status "$GW/healthz")" = 200
ops_check "requests still served during the drain delay (images/detail 200)" \
    test "$(ops_status "$GW/v2.1/images/detail")" = 200
refused=never
while kill -0 "$download_pid" 2>/dev/null; do # the listener closes while the download still runs
    if [[ $(ops_status "$GW/healthz") == 000 ]]; then
        refused=$(ops_elapsed "$t_stop")
        break
    fi
    sleep 0.1
done
ops_check "new connections refused after the drain delay, while the download runs (after $refused s)" \
    ops_le "$DRAIN_DELAY" "${refused/never/-1}"
wait "$download_pid" || true
t_download=$(ops_elapsed "$t_stop")
# The answer as sent: status line, headers, then exactly the image's bytes.
ops_check "the download in flight finished intact ($t_download s after SIGTERM)" python3 - "$W/big.http" "$W/big.img" <<'EOF'
import sys
raw, want = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
head, _, body = raw.partition(b"\r\n\r\n")
assert head.startswith(b"HTTP/1.1 200 "), head[:40]
assert body == want, f"{len(body)} of {len(want)} bytes"
EOF
wait "$stop_pid" || true
t_exit=$(ops_elapsed "$t_stop")
code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$NAME" 2>/dev/null || echo unknown)
# Before drain + grace: the gateway ended by itself, neither at its grace deadline nor killed.
ops_check "the container exited 0 (got $code) by itself in $t_exit s (podman stop -t $timeout)" \
    both test "$code" = 0 -- ops_le "$t_exit" "$((DRAIN_DELAY + GRACE))"
phase "run checks"
finish
