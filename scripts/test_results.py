"""Adds up the result records of a scripts/test.sh run: one line per record, then the total.

Usage: python3 scripts/test_results.py RESULTS_DIR

RESULTS_DIR/expected lists `STEP RECORD` for every runner a step started. A record is either
RECORD.json ({"passed": N, "failed": N, "skipped": N}, written by the runner itself) or
RECORD.libtest/, libtest's --logfile output (one `ok NAME` / `failed NAME` / `ignored NAME` line
per test, a file per test binary). Exits non-zero when a test failed or a record is missing: a
runner that crashed before reporting is not a run with nothing failed.
"""

import json
import os
import sys


def libtest_counts(directory):
    """Counts libtest's log lines; None when no binary wrote a log (the build failed)."""
    logs = sorted(os.listdir(directory))
    if not logs:
        return None
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for name in logs:
        with open(os.path.join(directory, name)) as f:
            for line in f:
                outcome = line.split(" ", 1)[0]
                if outcome == "ok":
                    counts["passed"] += 1
                elif outcome.startswith("failed"):
                    counts["failed"] += 1
                elif outcome.startswith("ignored"):
                    counts["skipped"] += 1
    return counts


def read_record(results, record):
    libtest = os.path.join(results, record + ".libtest")
    if os.path.isdir(libtest):
        return libtest_counts(libtest)
    try:
        with open(os.path.join(results, record + ".json")) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return {k: int(data.get(k, 0)) for k in ("passed", "failed", "skipped")}


def main(results):
    with open(os.path.join(results, "expected")) as f:
        expected = [line.split() for line in f if line.strip()]
    total = {"passed": 0, "failed": 0, "skipped": 0}
    missing = []
    print()
    for step, record in expected:
        counts = read_record(results, record)
        label = record if record == step else f"{step}/{record}"
        if counts is None:
            missing.append(label)
            print(f"  {label:<16} no result record (the runner stopped before reporting)")
            continue
        for k in total:
            total[k] += counts[k]
        print(f"  {label:<16} {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    print(f"tests: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped"
          + (f"; no record from {', '.join(missing)}" if missing else ""))
    return 1 if total["failed"] or missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
