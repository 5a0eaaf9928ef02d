#!/usr/bin/env bash
# WebSocket conformance: the Autobahn|Testsuite fuzzing client (cases 1 to 10)
# against the real peerhub binary's echo endpoint (--conformance-echo), its
# results compared with tests/autobahn/expected.json. Exits non-zero if any case
# FAILED, is missing, or behaves otherwise than expected.json says.
#
#   bash tests/autobahn/run.sh                    check a run
#   bash tests/autobahn/run.sh --update-expected  rewrite expected.json from a run
#
# Needs Python 2.7 (the fuzzing client runs on nothing newer): pyenv's 2.7.18, or
# the interpreter named by $AUTOBAHN_PYTHON2. The client and its dependencies,
# pinned in requirements.txt, are installed with pip into target/autobahn-py
# (`cargo clean` removes it); reports go to target/autobahn/reports.
set -euo pipefail
cd "$(dirname "$0")/../.."

HERE=tests/autobahn
TOOLS=target/autobahn-py
WORK=target/autobahn
UPDATE=
case "${1:-}" in
  "") ;;
  --update-expected) UPDATE=--update ;;
  *)
    echo "usage: $0 [--update-expected]" >&2
    exit 2
    ;;
esac

PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}
PY2=${AUTOBAHN_PYTHON2:-$PYENV_ROOT/versions/2.7.18/bin/python2.7}
if ! "$PY2" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
  echo "autobahn: no Python 2.7 at $PY2 (set AUTOBAHN_PYTHON2)" >&2
  exit 1
fi
# -E: no PYTHON* variables from the environment; -s: no user site-packages.
PY2=("$PY2" -E -s)

# The fuzzing client, installed again whenever requirements.txt changes.
want=$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$TOOLS/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "autobahn: installing the fuzzing client into $TOOLS"
  rm -rf "$TOOLS" "$TOOLS.partial"
  "${PY2[@]}" -m pip install --quiet \
    --disable-pip-version-check --no-warn-script-location \
    --no-deps --target "$TOOLS.partial" -r "$HERE/requirements.txt"
  echo "$want" >"$TOOLS.partial/.requirements.sha256"
  mv "$TOOLS.partial" "$TOOLS"
fi

# scripts/test.sh sets AUTOBAHN_PEERHUB_BUILT: its `cargo test --workspace` has
# just built target/debug/peerhub (with the features the workspace's tests give
# the dependencies, which this build would otherwise compile again without).
if [ -z "${AUTOBAHN_PEERHUB_BUILT:-}" ]; then
  cargo build --locked --quiet -p peerhub-server --bin peerhub
fi

rm -rf "$WORK"
mkdir -p "$WORK"
DATA=$(mktemp -d)
SERVER=
cleanup() {
  if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
  fi
  rm -rf "$DATA"
}
trap cleanup EXIT

# The server as a user starts it, plus the hidden echo endpoint; no PEERHUB_*
# setting from the environment (the run is on loopback, which the per-address
# rate limits leave alone unless --limit-loopback is given).
unset $(compgen -e | grep '^PEERHUB_' || true)
RUST_LOG=${RUST_LOG:-info} target/debug/peerhub --conformance-echo \
  --listen 127.0.0.1:0 --data "$DATA" >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 300); do
  if grep -qx ready "$WORK/server.out"; then break; fi
  if ! kill -0 "$SERVER" 2>/dev/null; then break; fi
  sleep 0.1
done
if ! grep -qx ready "$WORK/server.out"; then
  echo "autobahn: peerhub did not start; it printed:" >&2
  cat "$WORK/server.out" "$WORK/server.log" >&2
  exit 1
fi
BASE=$(sed -n 's#^peerhub listening on http://\([^/]*\)/$#\1#p' "$WORK/server.out")
URL="ws://$BASE/conformance/echo"

python3 "$HERE/compare.py" spec "$HERE/fuzzingclient.json" "$URL" "$PWD/$WORK/reports" \
  "$WORK/fuzzingclient.json"
echo "autobahn: fuzzing client (cases 1 to 10) against $URL"
started=$SECONDS
# wstest's own launcher would need the pinned packages on PYTHONPATH, which -E
# ignores; this puts them first on sys.path (site.addsitedir reads their .pth
# files, which zope.interface's namespace package needs) and runs it.
# shellcheck disable=SC2016
if ! timeout 1200 "${PY2[@]}" -c '
import site, sys
tools = sys.argv.pop(1)
sys.path.insert(0, tools)
site.addsitedir(tools)
sys.argv[0] = "wstest"
from autobahntestsuite.wstest import run
run()
' "$TOOLS" -m fuzzingclient -s "$WORK/fuzzingclient.json" >"$WORK/wstest.log" 2>&1; then
  echo "autobahn: the fuzzing client failed; the end of $WORK/wstest.log:" >&2
  tail -n 30 "$WORK/wstest.log" >&2
  exit 1
fi
echo "autobahn: fuzzing client took $((SECONDS - started)) s; reports in $WORK/reports"

if ! kill -0 "$SERVER" 2>/dev/null; then
  echo "autobahn: peerhub died during the run; its log:" >&2
  tail -n 30 "$WORK/server.log" >&2
  exit 1
fi
kill -TERM "$SERVER"
status=0
wait "$SERVER" || status=$?
SERVER=
if [ "$status" -ne 0 ]; then
  echo "autobahn: peerhub exited with status $status at shutdown; its log:" >&2
  tail -n 30 "$WORK/server.log" >&2
  exit 1
fi

python3 "$HERE/compare.py" check "$WORK/reports/index.json" "$HERE/expected.json" $UPDATE
