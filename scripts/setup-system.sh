#!/usr/bin/env bash
# System packages and services the project and its tests use. Idempotent; run as root
# (as on the CI and developer machines). On a cluster you need none of this: PostgreSQL
# and Slurm are already there.
#   - PostgreSQL (15 on Debian 12): the multi-worker study storage; the tests connect as
#     user postgres over TCP at 127.0.0.1:5432 without a password.
#   - slurm-wlm + munge: the tests start a real single-node Slurm cluster (Debian 12 ships
#     Slurm 22.05; the generated scripts are written for 20.11 and later, see README).
#   - chromium + chromium-driver: the dashboard and report are tested in a headless browser.
set -euo pipefail
need=()
command -v slurmctld >/dev/null 2>&1 || need+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || need+=(munge)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fresh_postgres=0
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  need+=(postgresql)
  fresh_postgres=1
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup-system: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
version="$(ls /etc/postgresql | sort -V | tail -1)"
if [ "$fresh_postgres" -eq 1 ]; then
  # Only a server installed here is opened to password-less local TCP connections (the tests'
  # databases are throwaway); an existing server's authentication is left as it is.
  sed -i '1i host all postgres 127.0.0.1/32 trust' "/etc/postgresql/$version/main/pg_hba.conf"
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
echo "setup-system: PostgreSQL $version at 127.0.0.1:5432, $(slurmctld -V), $(chromium --version 2>/dev/null | head -1)"
