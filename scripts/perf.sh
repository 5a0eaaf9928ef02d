#!/usr/bin/env bash
# Runs peerhub's whole performance comparison and writes docs/PERFORMANCE.md.
#
# One run measures the baselines (V, S, F, and W(G) with the bare broadcast
# server), the hub's figures with the same load generator, the criterion hot-path
# benches and CPU profiles, then renders every ratio into docs/PERFORMANCE.md.
# Every goal is a ratio within this one run: the machine is shared and noisy.
#
#   scripts/perf.sh                 # the full run (about 13 minutes here)
#   PERF_QUICK=1 scripts/perf.sh    # shorter windows, fewer messages
#
# Knobs (environment): PERF_SERVER_CPU (0), PERF_GEN_CPU (1), PERF_RUN_DIR
# (target/perf/<time>), PERF_REPEAT (2: the throughput pairs run this many times,
# interleaved, and the report keeps each one's best), PERF_DISK_MESSAGES
# (1000000), PERF_IDLE_CONNECTIONS (10000), PERF_SKIP_BENCH=1 (no criterion),
# PERF_OUT (docs/PERFORMANCE.md), PERF_SWEEP_STEPS (the open-loop sweep's
# offered rates as fractions of the hub's best closed-loop rate at that G).
#
# All traffic stays on 127.0.0.0/8; every run is bounded by its own
# --max-runtime, and the server processes are children of the generator
# (killed with it).
set -euo pipefail
cd "$(dirname "$0")/.."

started_epoch=$(date +%s)
run_dir=${PERF_RUN_DIR:-target/perf/$(date +%Y%m%d-%H%M%S)}
server_cpu=${PERF_SERVER_CPU:-0}
gen_cpu=${PERF_GEN_CPU:-1}
out=${PERF_OUT:-docs/PERFORMANCE.md}
quick=${PERF_QUICK:-}
disk_messages=${PERF_DISK_MESSAGES:-1000000}
idle_connections=${PERF_IDLE_CONNECTIONS:-10000}
if [[ -n $quick ]]; then
  warmup=0.5 duration=2 stall_at=2 stall_for=8 disk_messages=${PERF_DISK_MESSAGES:-100000}
  idle_connections=${PERF_IDLE_CONNECTIONS:-2000} bench_time=0.5 repeat=${PERF_REPEAT:-1}
else
  warmup=1 duration=4 stall_at=3 stall_for=10 bench_time=1 repeat=${PERF_REPEAT:-2}
fi
mkdir -p "$run_dir/data"
data=$run_dir/data
log=$run_dir/perf.log
: >"$log"
: >"$run_dir/commands.txt"

say() { echo "== $(date +%T) $*" | tee -a "$log" >&2; }

# 10,000 connections need 10,000+ descriptors in the generator and in the server.
if ! ulimit -n 65536 2>/dev/null; then
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
nofile=$(ulimit -n)
if ((nofile < idle_connections + 256)); then
  say "open files limit is $nofile (cannot raise it here): idle test uses fewer connections"
  idle_connections=$(((nofile - 256) / 10 * 10))
fi
# Ephemeral ports: past ~28,000 connections use more source addresses.
sources=()
if ((idle_connections > 25000)); then sources=(--source-ips 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4); fi

say "build (release)"
build_started=$(date +%s)
cargo build --release -p peerhub-server -p peerhub-bench 2>&1 | tail -n 3 | tee -a "$log" >&2
bench_exe=
if [[ -z ${PERF_SKIP_BENCH:-} ]]; then
  # Built now and run later from its path, so that edits made meanwhile by others
  # cannot trigger a rebuild in the middle of the run.
  bench_exe=$(cargo bench -p peerhub-bench --bench hot_path --no-run 2>&1 |
    tee -a "$log" | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n 1)
fi
build_s=$(($(date +%s) - build_started))
bin=target/release

# Runs a command: recorded in commands.txt, output in the log, summary lines shown.
run() {
  echo "$*" >>"$run_dir/commands.txt"
  local status=0
  "$@" >"$run_dir/last.out" 2>&1 || status=$?
  cat "$run_dir/last.out" >>"$log"
  grep -E '^\[[^]]*\] (hub|bare) G=|^\[[^]]*\] (idle|stall|disk|note)|^[VSF] |^   |^peerhub-' \
    "$run_dir/last.out" >&2 || true
  return "$status"
}
load() {
  local name=$1
  shift
  run taskset -c "$gen_cpu" "$bin/peerhub-load" --server-cpus "$server_cpu" \
    --data-parent "$data" --label "$name" --out "$run_dir/$name.json" "$@" ||
    say "run $name failed (see $log)"
}

load_before=$(cut -d' ' -f1 /proc/loadavg)

say "baselines V, S, F on CPU $server_cpu"
run taskset -c "$server_cpu" "$bin/peerhub-baseline" --dir "$data" --out "$run_dir/baseline.json"
# A number from a JSON result ("" if the file or the field is missing).
field() { { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p" "$2" 2>/dev/null || true; } | head -n 1; }
# Pre-signed pools: enough for the window at V (no hub run, whatever its G, can
# verify faster on one core), twice that for two cores. V per CPU-second too, in
# case a neighbour slowed the wall-clock V down.
V=$(field verify_per_s "$run_dir/baseline.json")
V_cpu=$(field verify_per_cpu_s "$run_dir/baseline.json")
pool=$(awk -v v="${V:-30000}" -v c="${V_cpu:-0}" -v t="$warmup" -v d="$duration" \
  'BEGIN { if (c > v) v = c; printf "%d", v * (t + d) * 1.3 + 2000 }')
pool_fanout=$pool
say "W(G) (bare broadcast server) and the hub, G = 1, 5, 10, 30; $repeat time(s), interleaved"
for ((r = 1; r <= repeat; r++)); do
  suffix=$([[ $r == 1 ]] && echo "" || echo ".r$r")
  load "bare-g1$suffix" --target bare --group-size 1 --groups 64 --window 16 \
    --messages 600000 --warmup "$warmup" --duration "$duration"
  load "hub-g1$suffix" --target hub --group-size 1 --groups 64 --window 16 \
    --messages "$pool" --warmup "$warmup" --duration "$duration"
  for g in 5 10 30; do
    load "bare-g$g$suffix" --target bare --group-size "$g" --groups $((300 / g)) --window 4 \
      --messages 600000 --warmup "$warmup" --duration "$duration"
    load "hub-g$g$suffix" --target hub --group-size "$g" --groups $((300 / g)) --window 4 \
      --messages "$pool_fanout" --warmup "$warmup" --duration "$duration"
  done
done

say "the hub on both cores"
run taskset -c 0,1 "$bin/peerhub-load" --server-cpus 0,1 --data-parent "$data" \
  --label hub-g1-2cores --out "$run_dir/hub-g1-2cores.json" --target hub \
  --group-size 1 --groups 64 --window 16 --messages $((pool * 2)) \
  --warmup "$warmup" --duration "$duration" || say "run hub-g1-2cores failed"

say "latency at 50 % and 80 % of the hub's G = 10 maximum"
for pct in 50 80; do
  load "hub-g10-rate$pct" --target hub --group-size 10 --groups 30 --mode rate \
    --rate-from "$run_dir/hub-g10.json" --rate-from "$run_dir/hub-g10.r2.json" \
    --rate-from "$run_dir/hub-g10.r3.json" --rate-fraction "0.$pct" \
    --warmup "$warmup" --duration "$duration"
done

say "open-loop rate sweep: 600 connections, G = 5, 10, 30, fixed offered rates past saturation"
# Steps: fractions of the hub's best closed-loop rate at that G (300 connections),
# past it, so the highest passing step (>= 99 % delivered, p99 <= 250 ms, no
# errors) is found; then 50 % and 80 % of that step. Each step is a fresh server.
if [[ -n $quick ]]; then
  sweep_steps=${PERF_SWEEP_STEPS:-0.5 0.8 1.0 1.2}
else
  sweep_steps=${PERF_SWEEP_STEPS:-0.4 0.6 0.8 0.9 1.0 1.1 1.25 1.4}
fi
for g in 5 10 30; do
  best=0
  for f in "$run_dir/hub-g$g.json" "$run_dir"/hub-g$g.r*.json; do
    r=$(field accepted_per_s "$f")
    best=$(awk -v a="$best" -v b="${r:-0}" 'BEGIN { print (b > a) ? b : a }')
  done
  if [[ $best == 0 ]]; then best=${V:-10000}; fi
  for step in $sweep_steps; do
    rate=$(awk -v b="$best" -v s="$step" 'BEGIN { printf "%d", int(b * s / 100) * 100 }')
    load "sweep-g$g-$rate" --target hub --group-size "$g" --groups $((600 / g)) --mode rate \
      --rate "$rate" --warmup "$warmup" --duration "$duration"
  done
  saturation=$("$bin/peerhub-report" --run "$run_dir" --saturation "$g" || echo 0)
  if [[ ${saturation:-0} != 0 ]]; then
    for pct in 50 80; do
      load "sweep-g$g-at$pct" --target hub --group-size "$g" --groups $((600 / g)) --mode rate \
        --rate "$(awk -v s="$saturation" -v p="$pct" 'BEGIN { printf "%d", s * p / 100 }')" \
        --warmup "$warmup" --duration "$duration"
    done
  else
    say "G = $g: no sweep step passed; no 50 % / 80 % runs"
  fi
done

say "memory: $idle_connections idle joined connections"
for target in hub bare; do
  load "$target-idle" --target "$target" --mode idle --group-size 10 \
    --groups $((idle_connections / 10)) --read-buffer 4096 --connect-concurrency 256 \
    "${sources[@]}"
done

say "a member that stops reading"
# Its pool: the hub's best G = 10 rate so far over the whole (longer) window.
g10_rate=0
for f in "$run_dir"/hub-g10.json "$run_dir"/hub-g10.r*.json; do
  r=$(field accepted_per_s "$f")
  g10_rate=$(awk -v a="$g10_rate" -v b="${r:-0}" 'BEGIN { print (b > a) ? b : a }')
done
pool_stall=$(awk -v r="$g10_rate" -v v="${V:-30000}" -v t="$warmup" -v d=$((stall_at + stall_for)) \
  'BEGIN { if (r <= 0) r = v; printf "%d", r * (t + d) * 1.3 + 2000 }')
load hub-stall --target hub --group-size 10 --groups 3 --window 8 \
  --messages "$pool_stall" --warmup "$warmup" --duration $((stall_at + stall_for)) \
  --stall-at "$stall_at" --stall-for "$stall_for"

say "profiles"
load profile-g1 --target hub --group-size 1 --groups 64 --window 16 \
  --messages "$pool" --warmup "$warmup" --duration "$duration" --profile "$run_dir/profile-g1.data"
load profile-g10 --target hub --group-size 10 --groups 30 --window 4 \
  --messages "$pool_fanout" --warmup "$warmup" --duration "$duration" --profile "$run_dir/profile-g10.data"

say "what-if runs, each right after its control (evidence for the next server change; no goal uses them)"
# The hub's socket send buffer (SEND_BUFFER_BYTES) halved, on the bare server,
# which has the hub's transport: what the kernel then holds for a member that
# stops reading, and whether fan-out loses anything.
load whatif-bare-stall-control --target bare --group-size 10 --groups 3 --window 8 \
  --messages 600000 --warmup "$warmup" --duration $((stall_at + stall_for)) \
  --stall-at "$stall_at" --stall-for "$stall_for"
load whatif-bare-stall-sndbuf64k --target bare --group-size 10 --groups 3 --window 8 \
  --messages 600000 --warmup "$warmup" --duration $((stall_at + stall_for)) \
  --stall-at "$stall_at" --stall-for "$stall_for" --server-arg=--sndbuf=65536
load whatif-bare-g10-control --target bare --group-size 10 --groups 30 --window 4 \
  --messages 600000 --warmup "$warmup" --duration "$duration"
load whatif-bare-g10-sndbuf64k --target bare --group-size 10 --groups 30 --window 4 \
  --messages 600000 --warmup "$warmup" --duration "$duration" --server-arg=--sndbuf=65536

say "disk after $disk_messages messages (server and generator on both cores)"
run taskset -c 0,1 "$bin/peerhub-load" --server-cpus 0,1 --data-parent "$data" \
  --label hub-disk --out "$run_dir/hub-disk.json" --target hub --group-size 1 \
  --groups 64 --window 16 --messages "$disk_messages" --warmup 0 --duration 240 \
  --max-runtime 400 --disk || say "run hub-disk failed"

if [[ -n $bench_exe ]]; then
  say "criterion micro-benchmarks on CPU $server_cpu"
  rm -rf target/criterion
  run env CARGO_TARGET_DIR="$PWD/target" taskset -c "$server_cpu" "$bench_exe" --bench \
    --warm-up-time 0.5 --measurement-time "$bench_time" --noplot
fi

finished_epoch=$(date +%s)
{
  echo "started=$(date -d "@$started_epoch" '+%Y-%m-%d %H:%M:%S %Z')"
  echo "finished=$(date -d "@$finished_epoch" '+%Y-%m-%d %H:%M:%S %Z')"
  echo "total_s=$((finished_epoch - started_epoch))"
  echo "build_s=$build_s"
  echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  echo "cores=$(nproc)"
  echo "memory=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "filesystem=$(df -T "$data" | awk 'NR == 2 { print $2 " on " $1 }')"
  echo "rustc=$(rustc --version)"
  # Others may be editing the tree: say where the uncommitted changes are.
  dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | awk '{ print $NF }' |
    cut -d/ -f1 | sort -u | paste -sd, - | sed 's/,/, /g')
  echo "commit=$(git rev-parse --short HEAD)${dirty:+ (with uncommitted changes in: $dirty)}"
  echo "build=cargo --release (debug = 1 line tables), one build for the hub and every tool"
  echo "nofile=$nofile"
  echo "tcp_wmem_max=$(awk '{ printf "%.0f KiB", $3 / 1024 }' /proc/sys/net/ipv4/tcp_wmem)"
  echo "allocator=jemalloc (tikv-jemallocator) in peerhub, peerhub-bare, peerhub-baseline and the benches"
  echo "load=$load_before / $(cut -d' ' -f1 /proc/loadavg)"
  echo "server_cpu=$server_cpu"
  echo "generator_cpu=$gen_cpu"
  echo "quick=${quick:-no}"
  echo "repeat=$repeat"
} >"$run_dir/meta.txt"

say "report"
"$bin/peerhub-report" --run "$run_dir" --out "$out" 2>&1 | tee -a "$log" >&2
rm -rf "$data"
say "done in $((finished_epoch - started_epoch)) s: $out (results in $run_dir)"
