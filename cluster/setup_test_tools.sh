#!/usr/bin/env bash
# Tools the test suite drives besides Python packages, installed idempotently:
#   chromium  headless browser for the serving playground test (Debian's `chromium` package)
# Usage: bash cluster/setup_test_tools.sh
set -euo pipefail

have_chromium() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }

if have_chromium; then
  echo "[setup-test-tools] chromium: $(command -v chromium || command -v chromium-browser)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[setup-test-tools] chromium is missing and apt-get is unavailable: install Chromium and put it on PATH" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "[setup-test-tools] need root or sudo to apt-get install chromium" >&2; exit 1; }
  SUDO="sudo"
fi
echo "[setup-test-tools] installing chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
have_chromium || { echo "[setup-test-tools] chromium still not on PATH after apt-get" >&2; exit 1; }
echo "[setup-test-tools] chromium: $(command -v chromium || command -v chromium-browser)"
