#!/usr/bin/env bash
# The one install path of `make demo`, `make test` and CI (.ci/run). Idempotent: a second run
# with unchanged pyproject.toml and constraints.txt does nothing.
#   bash scripts/install.sh          # .venv with the package and its pinned dependencies
#   bash scripts/install.sh --test   # also the test extras, and the system services the tests
#                                    # use (scripts/setup-system.sh: PostgreSQL, Slurm, Chromium; root)
# Every dependency comes at the version constraints.txt pins (pip-compile's lock of
# pyproject.toml's ranges, scripts/lock.sh), torch included: 2.13.0, its CPU build, so no
# CUDA packages are pulled. On a CUDA cluster install your CUDA torch into the venv and use
# `pip install -e .` without the constraints instead (see README, "Set up").
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
if [ "${1:-}" = "--test" ]; then
  extras="[test]"
  bash scripts/setup-system.sh
elif [ $# -gt 0 ]; then
  echo "install: unknown option $1 (expected --test or nothing)" >&2
  exit 2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
# The stamp names what was installed: the dependency files' hash, and -test with the test
# extras (which cover the plain install too).
base=".venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
stamp="$base${extras:+-test}"
if [ -e "$stamp" ] || [ -e "$base-test" ]; then
  echo "install: .venv is up to date ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
  exit 0
fi
.venv/bin/python -m pip install --quiet --constraint constraints.txt --editable ".${extras}"
rm -f .venv/.installed-*
touch "$stamp"
echo "install: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
