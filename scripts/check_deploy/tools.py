"""What the checks run on: the Python packages (a venv under target/) and programs taken from
Debian packages without installing them (nothing is started, no service is set up). Standard
library only: this runs before the venv exists."""

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUIREMENTS = os.path.join(REPO, "scripts/check-deploy-requirements.txt")
VENV = os.path.join(REPO, "target/deploy-venv")
TOOLS = os.path.join(REPO, "target/deploy-tools")


def ensure_venv():
    """Re-runs this program with the venv's Python, building the venv first when it is missing or
    was built from other requirements or another Python (a stamp records what it was built from)."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    with open(REQUIREMENTS, "rb") as f:
        want = hashlib.sha256(f.read() + sys.version.encode()).hexdigest()
    python = os.path.join(VENV, "bin/python")
    stamp = os.path.join(VENV, ".stamp")
    have = open(stamp).read().strip() if os.path.isfile(stamp) else None
    if have != want or not os.access(python, os.X_OK):
        print(f"setting up {VENV}", file=sys.stderr, flush=True)
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", REQUIREMENTS]
        subprocess.run(pip, check=True, stdout=sys.stderr)
        with open(stamp, "w") as f:
            f.write(want + "\n")
    os.execv(python, [python, *sys.argv])


def debian_program(package, program, alone=False):
    """(path, note): `program` (e.g. "usr/sbin/nginx") from the PATH, else from Debian's `package`
    fetched with `apt-get download` and unpacked under target/deploy-tools/<package> (kept for the
    next run; with `alone`, only the program is kept); (None, why not) when neither works."""
    found = shutil.which(os.path.basename(program))
    if found:
        return found, ""
    unpacked = os.path.join(TOOLS, package, program)
    if os.access(unpacked, os.X_OK):
        return unpacked, ""
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        return None, f"no {os.path.basename(program)} and no apt-get to fetch it"
    with tempfile.TemporaryDirectory() as dl:

        def fetch():
            run = subprocess.run(["apt-get", "download", package], cwd=dl, capture_output=True)
            return run.returncode == 0

        fetched = fetch()
        if not fetched and os.getuid() == 0:
            # A machine whose package lists were never fetched needs `apt-get update` first.
            fetched = subprocess.run(["apt-get", "update"], capture_output=True).returncode == 0 and fetch()
        if not fetched:
            return None, f"apt-get download {package} failed"
        target = os.path.join(TOOLS, package)
        shutil.rmtree(target, ignore_errors=True)
        os.makedirs(target)
        debs = glob.glob(os.path.join(dl, f"{package}_*.deb"))
        if alone:
            with tempfile.TemporaryDirectory() as unpack:
                subprocess.run(["dpkg-deb", "-x", debs[0], unpack], check=True)
                os.makedirs(os.path.dirname(unpacked))
                shutil.move(os.path.join(unpack, program), unpacked)
        else:
            subprocess.run(["dpkg-deb", "-x", debs[0], target], check=True)
    return unpacked, ""
