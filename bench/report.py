#!/usr/bin/env python3
"""Helpers for bench/run.sh: parse load-generator output, keep results, print the table.

  report.py wrk FILE                 -> JSON {requests, rps, p50_us, p99_us, errors}
  report.py oha FILE                 -> JSON {requests, rps, p50_us, p99_us, errors}
  report.py add RESULTS KEY JSON...  -> merge JSON objects into row KEY of RESULTS (JSON lines)
  report.py get RESULTS KEY FIELD    -> print one field of one row
  report.py table RESULTS META       -> markdown report on stdout
Standard library only.
"""
import json
import os
import re
import sys

UNIT_US = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0, "m": 60_000_000.0}


def wrk(path):
    text = open(path).read()
    out = {"errors": 0}
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else 0.0
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s*{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if m:
            out[key] = float(m.group(1)) * UNIT_US[m.group(2)]
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["errors"] += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["errors"] += sum(int(x) for x in m.groups())
    return out


def oha(path):
    d = json.load(open(path))
    s = d.get("summary", {})
    pct = d.get("latencyPercentiles", {})
    codes = d.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
    bad = sum(v for k, v in codes.items() if not str(k).startswith("2"))
    # oha cancels the requests still in flight when -z runs out: not errors of the server.
    errs = sum(v for k, v in d.get("errorDistribution", {}).items() if "aborted due to deadline" not in k)
    return {
        "requests": ok + bad,
        "rps": s.get("requestsPerSec", 0.0),
        "p50_us": (pct.get("p50") or 0) * 1e6,
        "p99_us": (pct.get("p99") or 0) * 1e6,
        "errors": bad + errs,
    }


def load(results):
    rows = {}
    if os.path.exists(results):
        for line in open(results):
            if line.strip():
                r = json.loads(line)
                rows.setdefault(r["key"], {}).update(r)
    return rows


def save(results, rows):
    with open(results, "w") as f:
        for r in rows.values():
            f.write(json.dumps(r) + "\n")


def add(results, key, objs):
    rows = load(results)
    row = rows.setdefault(key, {"key": key})
    for o in objs:
        row.update(json.loads(o))
    save(results, rows)


# ---------------------------------------------------------------------------------------
def fmt(v, kind):
    if v is None:
        return "n/a"
    if kind == "rps":
        return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"
    if kind == "us":
        if v >= 10_000:
            return f"{v / 1000:,.0f} ms"
        if v >= 1000:
            return f"{v / 1000:.2f} ms"
        return f"{v:.0f} µs"
    if kind == "mib":
        return f"{v / 1024:.1f}"
    if kind == "x":
        return f"{v:.2f}×" if v < 10 else f"{v:,.0f}×"
    return str(v)


def ratio(rows, a, b, field="cpu_us_per_req"):
    x, y = rows.get(a, {}).get(field), rows.get(b, {}).get(field)
    if not x or not y:
        return None
    return x / y


def table(results, meta_path):
    rows = load(results)
    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    out = []
    w = out.append
    w("# image-gateway benchmark")
    w("")
    w(f"Run {meta.get('date', '?')} on {meta.get('machine', '?')}; gateway `{meta.get('gateway', '?')}`, "
      f"{meta.get('nginx', 'nginx')}, {meta.get('loadgen', 'wrk')}.")
    w(f"Proxy under test pinned to CPU {meta.get('proxy_cpu')}; load generator and static upstream on CPU "
      f"{meta.get('load_cpu')}. Closed loop: `wrk -t1 -c{meta.get('connections')}` for {meta.get('duration')} s "
      f"after {meta.get('warmup')} s warm-up. Latency: {meta.get('latency_method', '?')}. "
      f"CPU/req = utime+stime of the proxy process(es) over the closed-loop run ÷ requests; proxy CPU = "
      f"the same as a share of one core (under 100%: the proxy was not the bottleneck, the load-generator "
      f"core was). "
      f"Peak RSS = VmHWM of a proxy process started for that row alone. "
      f"Other load = CPU used by processes outside this benchmark during the closed-loop run, in % of one "
      f"core (the machine is shared; a run above {meta.get('clean_pct', 10)}% is repeated and the cleanest kept).")
    w("")
    w("## Throughput, latency, CPU and memory")
    w("")
    w("| row | what | body | req/s | proxy CPU | fixed rate | p50 | p99 | CPU/req | peak RSS MiB | errors | other load |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|")
    order = sorted(rows.values(), key=lambda r: r.get("order", 999))
    for r in order:
        if r.get("kind") in ("stream", "burst"):
            continue
        rate = r.get("lat_rate")
        other = r.get("other_pct")
        util = r.get("proxy_util_pct")
        w("| {id} | {label} | {body} | {rps} | {util} | {rate} | {p50} | {p99} | {cpu} | {hwm} | {err} | {other} |".format(
            other=("n/a" if other is None else f"{other:.0f}%") + (f" ({r['runs']} runs)" if r.get("runs", 1) > 1 else ""),
            util="n/a" if util is None else f"{util:.0f}%",
            id=r.get("id", r["key"]), label=r.get("label", ""), body=r.get("body", ""),
            rps=fmt(r.get("rps"), "rps"),
            rate=(f"{rate:,.0f}/s" if rate and rate >= 10 else (f"{rate}/s" if rate else r.get("lat_note", "n/a"))),
            p50=fmt(r.get("lat_p50_us"), "us"), p99=fmt(r.get("lat_p99_us"), "us"),
            cpu=fmt(r.get("cpu_us_per_req"), "us"), hwm=fmt(r.get("hwm_kib"), "mib"),
            err=r.get("errors", 0) + r.get("lat_errors", 0)))
    w("")
    w("## Ratios against the targets")
    w("")
    w("| ratio (CPU per request) | value | target | met |")
    w("|---|---|---|---|")

    def line(name, value, target, ok):
        met = "n/a" if value is None else ("yes" if ok(value) else "**no**")
        w(f"| {name} | {fmt(value, 'x')} | {target} | {met} |")

    line("translate 25 (d25) ÷ nginx proxy_pass of the same 25-image Glance list (b25)",
         ratio(rows, "d25", "b25"), "≤ 2×", lambda v: v <= 2)
    line("translate 1000 (d1000) ÷ nginx proxy_pass of the 1000-image Glance list (b1000)",
         ratio(rows, "d1000", "b1000"), "≤ 3× (aim)", lambda v: v <= 3)
    line("passthrough one image (c1) ÷ nginx (b1)", ratio(rows, "c1", "b1"), "≤ 1.2×", lambda v: v <= 1.2)
    line("passthrough 25-image list (c25) ÷ nginx (b25)", ratio(rows, "c25", "b25"), "≤ 1.2×", lambda v: v <= 1.2)
    line("passthrough 1000-image list (c1000) ÷ nginx (b1000)", ratio(rows, "c1000", "b1000"), "≤ 1.2×",
         lambda v: v <= 1.2)
    line("Nova 25 (e25) ÷ gateway 25, same real Glance (g25)", ratio(rows, "e25", "g25"), "≥ 50×",
         lambda v: v >= 50)
    line("Nova 25 (f25) ÷ gateway 25, both in front of the static upstream (d25)", ratio(rows, "f25", "d25"), "≥ 50×",
         lambda v: v >= 50)
    line("Nova 1000 (e1000) ÷ gateway 1000, same real Glance (g1000)", ratio(rows, "e1000", "g1000"), "≥ 50×",
         lambda v: v >= 50)
    w("")
    bursts = [r for r in order if r.get("kind") == "burst"]
    if bursts:
        w("## A burst: clients asking for the 1000-image detail list at once")
        w("")
        w("Each client asks again as soon as it has its answer, or after the `Retry-After` of a 503. "
          "Latencies are the client's (request to last byte), apart for answers and refusals. "
          "RSS idle: after 5 requests and 10 s of rest; peak: VmHWM; after: 10 s after the burst.")
        w("")
        w("| gateway | clients × s | 200: count, p50, p99 | 503 with Retry-After: count, p50, p99 | other answers or failures | idle RSS | peak RSS (target < 200 MiB) | RSS 10 s after | after ÷ idle (target ≤ 1.2) | CPU s |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for r in bursts:
            st = r.get("statuses", {})
            ok, busy = st.get("200", {}), st.get("503", {})
            other = sum(v.get("count", 0) for k, v in st.items() if k not in ("200", "503"))
            other += sum(r.get("errors", {}).values()) + busy.get("count", 0) - r.get("retry_after_503", 0)

            def trio(s):
                return f"{s.get('count', 0):,}, {fmt(s.get('p50_us'), 'us')}, {fmt(s.get('p99_us'), 'us')}" if s else "0"
            idle, peak, after = r.get("idle_kib", 0), r.get("hwm_kib", 0), r.get("after_kib", 0)
            w(f"| {r.get('label')} | {r.get('clients')} × {r.get('seconds'):.0f} | {trio(ok)} | {trio(busy)} | {other} "
              f"| {idle / 1024:.1f} MiB | {peak / 1024:.1f} MiB | {after / 1024:.1f} MiB | {after / max(idle, 1):.2f} "
              f"| {r.get('cpu_s', 0):.1f} |")
        w("")
    streams = [r for r in order if r.get("kind") == "stream"]
    if streams:
        w("## Streaming 1 GiB through the image mount and the Glance v1 mount")
        w("")
        w("| transfer | upstream | bytes | seconds | MiB/s | gateway VmRSS before | peak | growth | target < 32 MiB | CPU s |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for r in streams:
            growth = r.get("growth_kib")
            w("| {label} | {up} | {b:,} | {t:.1f} | {mbps:.0f} | {pre:.1f} MiB | {peak:.1f} MiB | {g} | {met} | {cpu} |".format(
                label=r.get("label"), up=r.get("upstream"), b=int(r.get("bytes", 0)), t=r.get("seconds", 0),
                mbps=(r.get("bytes", 0) / 1048576) / max(r.get("seconds", 1e-9), 1e-9),
                pre=r.get("rss_before_kib", 0) / 1024, peak=r.get("rss_peak_kib", 0) / 1024,
                g=f"{growth / 1024:.1f} MiB" if growth is not None else "n/a",
                met="n/a" if growth is None else ("yes" if growth < 32 * 1024 else "**no**"),
                cpu=f"{r.get('cpu_s', 0):.2f}"))
        w("")
    notes = meta.get("notes", [])
    if notes:
        w("## Notes")
        w("")
        for n in notes:
            w(f"- {n}")
        w("")
    w(f"Total run time: {meta.get('elapsed', '?')} s.")
    print("\n".join(out))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "wrk":
        print(json.dumps(wrk(sys.argv[2])))
    elif cmd == "oha":
        print(json.dumps(oha(sys.argv[2])))
    elif cmd == "add":
        add(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif cmd == "get":
        v = load(sys.argv[2]).get(sys.argv[3], {}).get(sys.argv[4])
        print("" if v is None else v)
    elif cmd == "table":
        table(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
