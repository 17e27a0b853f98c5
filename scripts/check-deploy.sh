#!/usr/bin/env bash
# The deployment checks are the Python program scripts/check_deploy (its __main__.py says what
# it checks and which environment it reads); this name stays for scripts/test.sh and habit.
exec "${PYTHON:-python3}" "$(dirname "${BASH_SOURCE[0]}")/check_deploy" "$@"
