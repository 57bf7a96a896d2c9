#!/usr/bin/env bash
# Re-resolves the lock files from pyproject.toml's ranges. The only way versions change:
#   scripts/lock.sh                      keep every pinned version that still fits, add what is new
#   scripts/lock.sh --upgrade            move everything to the newest release that fits
#   scripts/lock.sh --upgrade-package X  move X alone
# requirements/base.lock is what `huddle serve` needs; requirements/dev.lock adds the test, lint
# and benchmark tools on the same versions. Both carry hashes, and setuptools (the build backend,
# installed from the lock so that the editable install does not fetch a newer one).
# tests/unit/test_lock.py fails when pyproject.toml and the locks disagree.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.8
uv=${UV:-}
if [ -z "$uv" ]; then
  tools=.venv-tools
  [ -x "$tools/bin/uv" ] && "$tools/bin/uv" --version | grep -q " $UV_VERSION" || {
    python3 -m venv "$tools"
    "$tools/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
  }
  uv="$tools/bin/uv"
fi
compile=("$uv" pip compile --quiet --generate-hashes --python-version 3.11
  --python-platform x86_64-unknown-linux-gnu --no-header --annotation-style line "$@")
"${compile[@]}" pyproject.toml requirements/build.in -o requirements/base.lock
"${compile[@]}" pyproject.toml requirements/build.in --extra dev --extra bench \
  -c requirements/base.lock -o requirements/dev.lock
echo "lock: requirements/base.lock, requirements/dev.lock" >&2
