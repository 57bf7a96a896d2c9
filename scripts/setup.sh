#!/usr/bin/env bash
# Prepares a fresh Debian/Ubuntu machine for Huddle: the system packages it needs, a virtual
# environment in .venv, and Huddle installed into it (editable).
#   scripts/setup.sh            what `huddle serve` needs
#   scripts/setup.sh --dev      plus the test and lint tools, and Chromium for the browser tests
#   scripts/setup.sh --bench    plus the SFU benchmark's baseline (Janus) and profiler (py-spy)
# Python packages are installed from requirements/*.lock (scripts/lock.sh updates them).
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
  # fonts-wqy-zenhei: CJK glyphs, so the Chinese UI renders in the browser tests' screenshots.
  # coturn: the TURN server the TURN tests start (its turnserver binary; the package's own
  # service stays off unless enabled in /etc/default/coturn).
  # postgresql: the chat history store's contract tests start a server of their own (its
  # cluster is not started here: nothing runs at boot on these machines).
  # ejabberd: the chat benchmark's XMPP peer (chat_load --ejabberd), which its smoke tests
  # start as an Erlang VM of their own (the package's service is not started here).
  packages+=(chromium iproute2 fonts-wqy-zenhei coturn postgresql ejabberd)
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
  apt_log=$(mktemp)
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    echo "setup: apt-get failed" >&2
    exit 1
  fi
  rm -f "$apt_log"
fi

# Python packages come from the lock files alone (exact versions with hashes; scripts/lock.sh
# re-resolves them), then Huddle itself is installed editable with the locked setuptools.
lock=requirements/base.lock
if [ "$dev" = 1 ] || [ "$bench" = 1 ]; then
  lock=requirements/dev.lock
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
quiet() {
  # Quiet unless something fails: then everything the step printed is shown.
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: failed: $*" >&2
    exit 1
  fi
}
[ -x .venv/bin/python ] || quiet "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check --no-input)
quiet "${pip[@]}" --require-hashes -r "$lock"
quiet "${pip[@]}" --no-deps --no-build-isolation -e .
quiet .venv/bin/python -m pip check
echo "setup: ready (.venv, $lock)" >&2
