#!/usr/bin/env bash
# Installs what the HLE python tool's sandbox needs (bubblewrap; setpriv and prlimit come with util-linux).
# Idempotent: does nothing when the tools are already there.
set -euo pipefail
if command -v bwrap >/dev/null && command -v setpriv >/dev/null && command -v prlimit >/dev/null; then
    exit 0
fi
apt-get update -qq
apt-get install -y -qq bubblewrap util-linux >/dev/null
