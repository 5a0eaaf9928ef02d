#!/usr/bin/env bash
# The cluster's figures (issue 18; docs/PERFORMANCE.md, "The cluster"): for 1, 2
# and 3 peerhub nodes on a three-server NATS cluster (R3), the closed-loop maximum
# (deliveries/s) and then the latency at half of it (p50/p99), G = 10, members of
# every group spread over the nodes; the one-node default (sled, no NATS) beside
# them with the same load. Every run starts on a fresh NATS cluster (one
# first-admin link per cluster, fresh group ids).
#
#   scripts/perf-cluster.sh                 # about 5 minutes here
#   PERF_QUICK=1 scripts/perf-cluster.sh    # shorter windows
#
# Knobs: PERF_RUN_DIR (target/perf/cluster-<time>), PERF_NODES ("1 2 3"),
# NATS_PORT_BASE (5422: clear of scripts/cluster.sh's default 4222). The NATS
# servers' folders are in the run's folder, not target/cluster.
# Pinning: on two cores the nodes, the three nats-servers and the generator
# share them; each node is pinned to core i mod 2 and the generator is not
# pinned. What two cores can and cannot show is in docs/PERFORMANCE.md.
set -euo pipefail
cd "$(dirname "$0")/.."

run_dir=${PERF_RUN_DIR:-target/perf/cluster-$(date +%Y%m%d-%H%M%S)}
nodes_list=${PERF_NODES:-1 2 3}
export NATS_PORT_BASE=${NATS_PORT_BASE:-5422}
if [[ -n ${PERF_QUICK:-} ]]; then warmup=0.5 duration=2; else warmup=1 duration=4; fi
mkdir -p "$run_dir/data"
log=$run_dir/perf.log
: >"$log"
say() { echo "== $(date +%T) $*" | tee -a "$log" >&2; }

say "build (release)"
cargo build --release -p peerhub-server --bin peerhub -p peerhub-bench --bin peerhub-load 2>&1 |
  tail -n 2 | tee -a "$log" >&2
bin=target/release
urls=$(for i in 0 1 2; do printf 'nats://127.0.0.1:%d,' $((NATS_PORT_BASE + i)); done)
urls=${urls%,}
cpus=$(nproc)

export CLUSTER_DIR=$PWD/$run_dir/nats
# The three nats-servers alone (the load generator starts the peerhub nodes).
fresh_nats() {
  bash scripts/cluster.sh wipe >>"$log" 2>&1 || true
  for name in nats-1 nats-2 nats-3; do bash scripts/cluster.sh start "$name" >>"$log" 2>&1; done
}
trap 'bash scripts/cluster.sh wipe >>"$log" 2>&1 || true' EXIT

# CPU seconds the three nats-servers have used so far (0 when none runs).
nats_cpu_s() {
  local ticks=0 pid
  for pid in $(cat "$CLUSTER_DIR"/nats-*/pid 2>/dev/null); do
    [[ -r /proc/$pid/stat ]] || continue
    ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }'
}

# One load run: NAME, then peerhub-load's arguments.
load() {
  local name=$1 before after
  shift
  echo "$name: $*" >>"$run_dir/commands.txt"
  before=$(nats_cpu_s)
  "$bin/peerhub-load" --data-parent "$run_dir/data" --label "$name" \
    --out "$run_dir/$name.json" "$@" >"$run_dir/last.out" 2>&1 || say "run $name failed (see $log)"
  after=$(nats_cpu_s)
  echo "[$name] note: the nats-servers used $(awk -v a="$after" -v b="$before" \
    'BEGIN { printf "%.1f", a - b }') CPU s over the run" >>"$run_dir/last.out"
  cat "$run_dir/last.out" >>"$log"
  grep -E '^\[[^]]*\] (hub G=|note)' "$run_dir/last.out" >&2 || true
}
shape=(--target hub --group-size 10 --groups 30 --warmup "$warmup" --duration "$duration")

say "one node, the default (sled, no NATS)"
load single-max "${shape[@]}" --server-cpus 0 --window 4 --messages 200000
load single-half "${shape[@]}" --server-cpus 0 --mode rate --rate-from "$run_dir/single-max.json" \
  --rate-fraction 0.5

for n in $nodes_list; do
  node_cpus=$(for ((i = 0; i < n; i++)); do printf '%d;' $((i % cpus)); done)
  node_cpus=${node_cpus%;}
  say "$n node(s) on NATS: closed-loop maximum"
  fresh_nats
  load "cluster$n-max" "${shape[@]}" --nats-urls "$urls" --nodes "$n" --node-cpus "$node_cpus" \
    --window 4 --messages 200000
  say "$n node(s) on NATS: half of that, open loop"
  fresh_nats
  load "cluster$n-half" "${shape[@]}" --nats-urls "$urls" --nodes "$n" --node-cpus "$node_cpus" \
    --mode rate --rate-from "$run_dir/cluster$n-max.json" --rate-fraction 0.5
done
say "done: $run_dir"
