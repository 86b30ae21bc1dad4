#!/usr/bin/env bash
# System services the tests talk to: PostgreSQL (already installed on these machines).
# Idempotent; run as root.
set -euo pipefail
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
fi
