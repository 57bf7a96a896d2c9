#!/usr/bin/env bash
# Prepares a fresh Debian/Ubuntu machine for Huddle: the system packages it needs, a virtual
# environment in .venv, and Huddle installed into it (editable).
#   scripts/setup.sh            what `huddle serve` needs
#   scripts/setup.sh --dev      plus the test and lint tools, and Chromium for the browser tests
#   scripts/setup.sh --bench    plus the SFU benchmark's baseline (Janus) and profiler (py-spy)
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
bench=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --bench) bench=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
# redis-server: the embedded Redis; libopus0: opuslib loads the system libopus.
packages=(redis-server libopus0)
if [ "$dev" = 1 ]; then
  # tests/browser drives Debian's Chromium through Playwright (Playwright's own browser download
  # does not work here) inside a network namespace of its own (ip netns, from iproute2).
  packages+=(chromium iproute2)
fi
if [ "$bench" = 1 ]; then
  # benchmarks/sfu_load.py runs Janus 1.1.2 as a baseline inside a network namespace of its own.
  packages+=(janus iproute2)
fi
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  packages+=(python3-venv)
fi
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
if [ "$dev" = 1 ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
else
  .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi
if [ "$bench" = 1 ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check py-spy
fi
echo "setup: ready (.venv)" >&2
