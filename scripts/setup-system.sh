#!/usr/bin/env bash
# System packages and services the project and its tests use. Idempotent; run as root
# (as on the CI and developer machines). On a cluster you need none of this: PostgreSQL
# and Slurm are already there.
#   - PostgreSQL 15 (preinstalled here): the multi-worker study storage.
#   - slurm-wlm + munge: the tests start a real single-node Slurm cluster.
#   - chromium + chromium-driver: the dashboard and report are tested in a headless browser.
set -euo pipefail
need=()
command -v slurmctld >/dev/null 2>&1 || need+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || need+=(munge)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
fi
