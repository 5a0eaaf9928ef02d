#!/usr/bin/env bash
# Counts the hub's own cost per post: server CPU µs, context switches and system
# calls per accepted post, for a closed-loop run (as fast as acked) and an
# open-loop run at a fixed offered rate, at G = 5 and 10 with 600 connections.
#
# CPU time, context switches and system-call counts are figures a busy machine
# does not move much (unlike wall-clock rates), so before/after comparisons of a
# server change can be made beside other people's builds. Prints a Markdown table
# (also in $PERPOST_DIR/table.md).
#
#   scripts/per-post.sh                      # build --release, run, print
#   PERPOST_RATE=3000 scripts/per-post.sh    # the open-loop runs' offered posts/s
#
# Knobs (environment): PERPOST_DIR (target/per-post/<time>), PERPOST_RATE (4000),
# PERPOST_DURATION (4 s window, after 1 s warm-up), PERPOST_SIZES ("5 10"),
# PERPOST_SERVER_CPU (0), PERPOST_GEN_CPU (1), PERPOST_SKIP_BUILD=1, PERPOST_ENV
# (one VAR=VALUE for the server, e.g. PEERHUB_STORE_COMMIT_INTERVAL_US=0 to compare
# a setting), PERPOST_SERVER_BIN (another peerhub binary, to compare builds).
# System calls are counted with `perf stat` on syscall tracepoints (needs tracefs);
# without it the table shows CPU and context switches only.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${PERPOST_DIR:-target/per-post/$(date +%Y%m%d-%H%M%S)}
rate=${PERPOST_RATE:-4000}
duration=${PERPOST_DURATION:-4}
sizes=${PERPOST_SIZES:-5 10}
server_cpu=${PERPOST_SERVER_CPU:-0}
gen_cpu=${PERPOST_GEN_CPU:-1}
mkdir -p "$dir/data"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [[ -z ${PERPOST_SKIP_BUILD:-} ]]; then
  cargo build --release -p peerhub-server -p peerhub-bench 2>&1 | tail -n 1 >&2
fi
bin=target/release

load() {
  local name=$1
  shift
  echo "== $(date +%T) $name" >&2
  taskset -c "$gen_cpu" "$bin/peerhub-load" --server-cpus "$server_cpu" \
    --data-parent "$dir/data" --label "$name" --out "$dir/$name.json" --syscalls \
    --warmup 1 --duration "$duration" ${PERPOST_ENV:+--server-env "$PERPOST_ENV"} \
    ${PERPOST_SERVER_BIN:+--server-bin "$PERPOST_SERVER_BIN"} "$@" 2>&1 | grep -E 'per post|note|error' >&2 ||
    echo "   run $name failed or printed nothing" >&2
}

for g in $sizes; do
  load "g$g-closed" --target hub --group-size "$g" --groups $((600 / g)) --mode ack \
    --window 4 --messages 120000
  load "g$g-rate$rate" --target hub --group-size "$g" --groups $((600 / g)) --mode rate \
    --rate "$rate"
done
"$bin/peerhub-report" --run "$dir" --per-post | tee "$dir/table.md"
rm -rf "$dir/data"
