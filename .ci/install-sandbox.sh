#!/usr/bin/env bash
# Installs what the HLE python tool's sandbox needs (bubblewrap; setpriv and prlimit come with util-linux),
# and, as root, the ordinary account `harness-test` that the suite runs the sandbox as (tests/test_hle_sandbox.py),
# with a system Python that account can run (the venv's interpreter may sit under root's private home).
# Idempotent: does nothing when all of it is already there.
set -euo pipefail
if ! { command -v bwrap && command -v setpriv && command -v prlimit; } >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq bubblewrap util-linux >/dev/null
fi
if [ "$(id -u)" = 0 ]; then
    if [ ! -x /usr/bin/python3 ]; then
        apt-get update -qq
        apt-get install -y -qq python3-minimal >/dev/null
    fi
    if ! id -u harness-test >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin harness-test
    fi
fi
