"""Checks the deployment artefacts in deploy/ offline, without a cluster or a container engine:

  (a) every manifest in deploy/kubernetes against the Kubernetes 1.32 JSON schemas, strict
      (unknown fields are errors); the Prometheus Operator's objects (CRDs, absent from those
      schemas) by their shape instead; the kustomization's resource list; `kubectl kustomize`
      if present;
  (b) that the Dockerfile, the manifests, the ConfigMaps and the nginx example agree with each
      other (port, probe paths, config and mappings paths, drain and grace periods, ...), and,
      when a built image-gateway binary is there, that the binary accepts the ConfigMaps'
      configuration and mapping files with the Deployment's environment; self-tests show
      that broken copies of the Dockerfile fail its check (scripts/container.sh builds and
      runs the image itself);
  (c) the nginx example with `nginx -t`;
  (d) the monitoring: deploy/prometheus's alert rules with `promtool check rules` and its rule
      tests with `promtool test rules`, the Grafana dashboard's shape and every PromQL
      expression in it, the PrometheusRule manifest against the rules file, and every metric
      and label the rules and the dashboard name against what the built binary's /metrics
      serves; then self-tests showing that broken copies of them fail those checks.

nginx and promtool are the installed ones, or Debian's binaries fetched with `apt-get download`
into target/deploy-tools (nothing is installed or started). Python packages
(scripts/check-deploy-requirements.txt) go to target/deploy-venv, installed once and again only
when that file changes.

One line per check, then `deploy: N passed, M failed` (`, K skipped` when some could not run);
exits non-zero when any check failed. Environment:
  IG_TEST_RESULT      a file to write the counts to as JSON (scripts/test.sh adds those up)
  CHECK_DEPLOY_ROOT   the tree to check (default: this repository); for trying broken copies
  IMAGE_GATEWAY_BIN   the binary for the configuration and metrics checks (default:
                      target/release or target/debug image-gateway of this repository, when built)

Run it as `python3 scripts/check_deploy` (or scripts/check-deploy.sh).
"""

import os
import sys

from tools import REPO, debian_program, ensure_venv

ensure_venv()  # the imports below live in target/deploy-venv

import consistency  # noqa: E402
import manifests  # noqa: E402
import monitoring  # noqa: E402
from report import Report  # noqa: E402
from tree import Tree  # noqa: E402


def gateway_binary():
    given = os.environ.get("IMAGE_GATEWAY_BIN")
    if given:
        return given
    for candidate in ("target/release/image-gateway", "target/debug/image-gateway"):
        path = os.path.join(REPO, candidate)
        if os.access(path, os.X_OK):
            return path
    return None


def main():
    root = os.path.realpath(os.environ.get("CHECK_DEPLOY_ROOT") or REPO)
    nginx, nginx_note = debian_program("nginx", "usr/sbin/nginx")
    promtool, promtool_note = debian_program("prometheus", "usr/bin/promtool", alone=True)
    gateway = gateway_binary()
    report = Report()
    tree = Tree(root)
    manifests.run(report, tree)
    consistency.run(report, tree, gateway, nginx, nginx_note)
    monitoring.run(report, tree, gateway, promtool, promtool_note)
    print(report.summary())
    if os.environ.get("IG_TEST_RESULT"):
        report.write_json(os.environ["IG_TEST_RESULT"])
    return 1 if report.failed else 0


sys.exit(main())
