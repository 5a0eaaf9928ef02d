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

echo "== tests"
# --workspace builds the peerhub binary too (the server crate has integration
# tests), which the process tests in tests/ start and kill.
cargo test --workspace --locked
