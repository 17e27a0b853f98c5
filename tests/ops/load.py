#!/usr/bin/env python3
"""A small bounded HTTP load generator for tests/ops/drain.sh, used when wrk is not there.

CONNS threads, each on its own keep-alive connection, cycle through the drain test's mix of
GETs (Nova detail, Nova show, Alliance list) for SECS seconds. A non-2xx answer or a
connection error is a failure; the connection is then opened anew. Prints one line:

    LOAD requests=N failed=F non2xx=X conn_errors=C p50_ms=.. p99_ms=.. max_ms=..

followed by up to 10 `failure: ...` lines (time since start, request, what went wrong).
Standard library only.
"""

import argparse
import http.client
import threading
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secs", type=float, default=20)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--ids", required=True, help="file of image ids, one a line")
    ap.add_argument("--project", required=True)
    ap.add_argument("--ns", default="ops")
    a = ap.parse_args()

    ids = [line.strip() for line in open(a.ids) if line.strip()]
    nova = {"X-Project-Id": a.project, "X-Roles": "member,reader"}
    alliance = {"X-Target-Ns": a.ns, "X-Environment-Id": a.project}
    plan = []
    for image in ids:
        plan += [("/v2.1/images/detail", nova), (f"/v2.1/images/{image}", nova), ("/images", alliance)]

    start = time.monotonic()
    deadline = start + a.secs
    lock = threading.Lock()
    latencies, failures = [], []
    counts = {"requests": 0, "non2xx": 0, "conn_errors": 0}

    def worker(n):
        conn = None
        i = n
        mine, bad, errs, lat, notes = 0, 0, 0, [], []
        while time.monotonic() < deadline:
            path, headers = plan[i % len(plan)]
            i += 1
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
                conn.request("GET", path, headers=headers)
                r = conn.getresponse()
                r.read()
                ok = 200 <= r.status < 300
                if not ok:
                    bad += 1
                    notes.append(f"{t0 - start:.3f}s GET {path}: status {r.status}")
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                errs += 1
                notes.append(f"{t0 - start:.3f}s GET {path}: {type(e).__name__}: {e}")
                if conn is not None:
                    conn.close()
                conn = None
            mine += 1
            lat.append(time.monotonic() - t0)
        if conn is not None:
            conn.close()
        with lock:
            counts["requests"] += mine
            counts["non2xx"] += bad
            counts["conn_errors"] += errs
            latencies.extend(lat)
            failures.extend(notes)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(a.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.secs + 30)

    latencies.sort()

    def pct(p):
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1e3

    failed = counts["non2xx"] + counts["conn_errors"]
    print(
        f"LOAD requests={counts['requests']} failed={failed} non2xx={counts['non2xx']} "
        f"conn_errors={counts['conn_errors']} p50_ms={pct(50):.1f} p99_ms={pct(99):.1f} "
        f"max_ms={(latencies[-1] * 1e3 if latencies else 0):.1f}"
    )
    for note in sorted(failures)[:10]:
        print(f"failure: {note}")


if __name__ == "__main__":
    main()
