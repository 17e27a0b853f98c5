"""The one place a check's outcome is counted and printed."""

import json


class Report:
    """Counts and prints one line per check; `summary()` is the closing line, `write_json()` the
    record scripts/test.sh adds up."""

    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def ok(self, name, detail=""):
        self.passed += 1
        print(f"ok    {name}" + (f": {detail}" if detail else ""), flush=True)

    def fail(self, name, detail):
        self.failed += 1
        detail = " | ".join(line.strip() for line in str(detail).splitlines() if line.strip())
        print(f"FAIL  {name}: {detail[:600]}", flush=True)

    def skip(self, name, detail):
        self.skipped += 1
        print(f"skip  {name}: {detail}", flush=True)

    def check(self, name, fn, *args):
        """Runs fn(*args); it returns a detail string (pass) or raises AssertionError (fail).
        Returns whether it passed."""
        try:
            detail = fn(*args) or ""
        except AssertionError as e:
            self.fail(name, str(e) or "assertion failed")
            return False
        except Exception as e:  # a missing file or key is a failure of that check, not a crash
            self.fail(name, f"{type(e).__name__}: {e}")
            return False
        self.ok(name, detail)
        return True

    def summary(self):
        line = f"deploy: {self.passed} passed, {self.failed} failed"
        return line + (f", {self.skipped} skipped" if self.skipped else "")

    def write_json(self, path):
        """The counts as a scripts/test.sh result record."""
        with open(path, "w") as f:
            json.dump({"passed": self.passed, "failed": self.failed, "skipped": self.skipped}, f)
