# Shared helpers for glance.sh / nova.sh / keystone.sh; sourced, not executed.
# Callers have set -euo pipefail.

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${OPENSTACK_VENV:-$repo/target/openstack-venv}"
# Seconds to wait for a service to answer after start, and for its port to be freed on stop.
start_timeout="${OPENSTACK_START_TIMEOUT:-90}"
stop_timeout="${OPENSTACK_STOP_TIMEOUT:-30}"

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# Absolute path of an existing-or-new directory (config files must hold absolute paths).
abs_dir() { mkdir -p "$1" && (cd "$1" && pwd); }

need_venv() {
  for tool in "$@"; do
    [ -x "$venv/bin/$tool" ] || die "$venv/bin/$tool missing: run $here/install.sh first"
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# True if PID is alive and is a uWSGI process (guards against a stale pidfile whose pid
# has been reused by something else).
is_our_uwsgi() { pid_alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q uwsgi; }

# start_uwsgi NAME STATE PORT LOG MODULE [extra uwsgi args...] (env vars are inherited)
# uWSGI runs in its own session (setsid, no fork: pid == process group id), so stop can
# signal the master and all its workers through the group without touching anything else.
start_uwsgi() {
  local name="$1" state="$2" port="$3" log="$4" module="$5"; shift 5
  local pidfile="$state/$name.pid"
  if [ -f "$pidfile" ] && pid_alive "$(cat "$pidfile")"; then
    die "$name already running (pid $(cat "$pidfile")); stop it first"
  fi
  port_open "$port" && die "port 127.0.0.1:$port is already in use"
  # Without job control the background child is not a process-group leader, so setsid
  # calls setsid() in place and execs uWSGI: $! is then the master's pid and group id.
  set +m
  # uWSGI's HTTP router (--http) owns the client connections, keep-alive included, and hands
  # each request to the one worker thread: requests run one at a time (with sqlite, two
  # concurrent write transactions fail with "database is locked", which Glance answers 500),
  # yet an idle pooled connection never holds the worker. (--http-socket was seen to reset
  # pooled keep-alive connections; --http11-socket lets an idle one block a thread.)
  setsid "$venv/bin/uwsgi" \
    --http "127.0.0.1:$port" --http-keepalive \
    --module "$module" \
    --master --processes 1 --threads "${OPENSTACK_THREADS:-1}" --enable-threads --lazy-apps \
    --die-on-term --need-app \
    --buffer-size 65535 \
    "$@" \
    </dev/null >>"$log" 2>&1 &
  echo $! >"$pidfile"
  echo "$port" >"$state/$name.port"
}

# wait_ready NAME STATE PATH: poll http://127.0.0.1:PORT/PATH until it answers 2xx/3xx.
wait_ready() {
  local name="$1" state="$2" path="$3" log="$4"
  local port pid t0 code
  port="$(cat "$state/$name.port")"; pid="$(cat "$state/$name.pid")"; t0=$(date +%s)
  while :; do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port$path" || true)"
    case "$code" in 2??|3??) break ;; esac
    if ! pid_alive "$pid"; then
      echo "$name exited during start-up; last log lines ($log):" >&2
      tail -n 40 "$log" >&2; rm -f "$state/$name.pid"; exit 1
    fi
    if [ $(( $(date +%s) - t0 )) -ge "$start_timeout" ]; then
      echo "$name did not answer on $path within ${start_timeout}s; last log lines ($log):" >&2
      tail -n 40 "$log" >&2
      stop_uwsgi "$name" "$state" || true
      exit 1
    fi
    sleep 0.3
  done
  echo "$name ready on http://127.0.0.1:$port (pid $pid) after $(( $(date +%s) - t0 )) s"
}

# stop_uwsgi NAME STATE: TERM the process group, KILL it after a grace period, then wait
# for the port to be free. Idempotent.
stop_uwsgi() {
  local name="$1" state="$2" pidfile="$2/$1.pid" pid port t0
  port="$(cat "$state/$name.port" 2>/dev/null || true)"
  if [ -f "$pidfile" ]; then
    pid="$(cat "$pidfile")"
    if is_our_uwsgi "$pid"; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      t0=$(date +%s)
      while pid_alive "$pid" && [ $(( $(date +%s) - t0 )) -lt "$stop_timeout" ]; do sleep 0.2; done
      if pid_alive "$pid"; then
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      fi
      # Workers of the group may outlive the master by a moment.
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  fi
  if [ -n "$port" ]; then
    t0=$(date +%s)
    while port_open "$port"; do
      [ $(( $(date +%s) - t0 )) -ge "$stop_timeout" ] && die "port $port still in use after ${stop_timeout}s"
      sleep 0.2
    done
  fi
  echo "$name stopped"
}
