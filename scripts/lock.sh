#!/usr/bin/env bash
# Regenerate constraints.txt, the exact versions `make demo`, `make test` and CI install
# (scripts/install.sh), from pyproject.toml's open ranges plus constraints.in's torch pin, with
# pip-tools' pip-compile in a throwaway venv (never the project's own .venv). Run it after
# changing a dependency in pyproject.toml, and commit both files.
#   - --strip-extras: pip refuses extras in a constraints file (psycopg[binary] -> psycopg).
#   - --no-emit-index-url / --no-emit-find-links: the machine's pip configuration (local
#     mirrors, the folder holding the CPU torch wheel) stays out of the file.
#   - torch resolves to the CPU build (2.13.0+cpu), whose dependencies hold no nvidia-* or
#     triton package; a CUDA cluster installs its own torch and does not use this file.
# Resolved for CPython 3.11 on Linux x86_64, the machines CI and the developers use.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/lock-venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet pip-tools==7.7.0
"$venv/bin/pip-compile" --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
    --extra test --output-file constraints.txt pyproject.toml constraints.in
rm -rf "$(dirname "$venv")"
if grep -qiE '^(nvidia-|triton)' constraints.txt; then
  echo "lock: constraints.txt pulls a CUDA package; it must resolve torch to the CPU build" >&2
  exit 1
fi
echo "lock: wrote constraints.txt ($(grep -c '==' constraints.txt) pins)"
