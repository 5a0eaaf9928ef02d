#!/usr/bin/env bash
# A local peerhub cluster on loopback (issue 18; design in docs/CLUSTER.md).
#
# Three nats-server processes (the version pinned in scripts/nats/requirements.txt,
# installed by scripts/nats/install.sh) with JetStream and routes between them, and
# two peerhub nodes (PEERHUB_NODES=3 for three) with cluster.nats_urls set to the
# three servers. Each process has its own loopback ports and its own folder in
# target/cluster/<name>/ (data, configuration, output, log). The peerhub binary is
# built with cargo if needed (PEERHUB_BIN=path uses another). The nodes never see
# PEERHUB_NODES or PEERHUB_BIN (peerhub refuses PEERHUB_* variables it does not know).
#
#   bash scripts/cluster.sh start            # start everything not running
#   bash scripts/cluster.sh status           # which run, their ports and PIDs
#   bash scripts/cluster.sh kill peerhub-1   # kill -9 one process (a crash)
#   bash scripts/cluster.sh stop nats-2      # stop one process gracefully (SIGTERM)
#   bash scripts/cluster.sh start nats-2     # start it again on its own data
#   bash scripts/cluster.sh stop             # stop all (peerhub nodes first)
#   bash scripts/cluster.sh wipe             # stop all and delete target/cluster
#   bash scripts/cluster.sh check            # peerhub cluster check against NATS
#
# Names: NATS servers nats-1 nats-2 nats-3; peerhub nodes peerhub-1 peerhub-2
# (peerhub-3), whose cluster.node_name is n1, n2 (n3).
# Ports (127.0.0.1 only), with NATS_PORT_BASE=4222 and NODE_PORT_BASE=7071:
#   nats-1: client 4222, routes 6222, monitoring 8222 (nats-2: 4223 ..., nats-3: 4224 ...)
#   peerhub-1: http://127.0.0.1:7071/  peerhub-2: 7072  peerhub-3: 7073
# NATS clients connect with nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224.
# Health: curl -s http://127.0.0.1:8222/healthz (NATS), http://127.0.0.1:7071/healthz (peerhub).
# LEASE_TTL_MS (default 10000) sets the nodes' cluster.lease_ttl_ms: how long a
# killed node's groups wait for another node. A node's configuration is written at
# its first start (target/cluster/peerhub-N/peerhub.toml) and kept after that.
# CLUSTER_DIR moves target/cluster (scripts/perf-cluster.sh uses its own).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${CLUSTER_DIR:-$root/target/cluster}"
base="${NATS_PORT_BASE:-4222}"
web_base="${NODE_PORT_BASE:-7071}"
node_count="${PEERHUB_NODES:-2}"
case "$node_count" in
  2|3) ;;
  *) echo "PEERHUB_NODES must be 2 or 3 (got '$node_count')" >&2; exit 2 ;;
esac
nats_names=(nats-1 nats-2 nats-3)
peerhub_names=()
for i in $(seq "$node_count"); do peerhub_names+=("peerhub-$i"); done

# The number in a name (nats-2 -> 2), or an error for a name that is neither kind.
number_of() {
  case "$1" in
    nats-1|nats-2|nats-3|peerhub-1|peerhub-2|peerhub-3) echo "${1##*-}" ;;
    *) echo "unknown name '$1' (nats-1..3, peerhub-1..3)" >&2; exit 2 ;;
  esac
}
is_nats() { case "$1" in nats-*) return 0 ;; *) return 1 ;; esac; }
client_port() { echo $((base + $(number_of "$1") - 1)); }
route_port() { echo $((base + 2000 + $(number_of "$1") - 1)); }
monitor_port() { echo $((base + 4000 + $(number_of "$1") - 1)); }
web_port() { echo $((web_base + $(number_of "$1") - 1)); }
nats_urls() {
  local urls=()
  for name in "${nats_names[@]}"; do urls+=("nats://127.0.0.1:$(client_port "$name")"); done
  (IFS=,; echo "${urls[*]}")
}

pid_of() {
  local file="$dir/$1/pid"
  if [ -f "$file" ] && kill -0 "$(cat "$file")" 2>/dev/null; then cat "$file"; fi
}

write_nats_config() {
  local name=$1 routes=""
  for other in "${nats_names[@]}"; do
    routes+="nats-route://127.0.0.1:$(route_port "$other"), "
  done
  mkdir -p "$dir/$name"
  cat > "$dir/$name/nats.conf" <<CONF
server_name: $name
listen: 127.0.0.1:$(client_port "$name")
http: 127.0.0.1:$(monitor_port "$name")
jetstream {
  store_dir: "$dir/$name/data"
  max_memory_store: 256MB
  max_file_store: 4GB
  # fsync every write before it counts towards the PubAck (default: every 2 min),
  # the equivalent of peerhub's flush before an ack; see docs/CLUSTER.md.
  sync_interval: always
}
cluster {
  name: peerhub-local
  listen: 127.0.0.1:$(route_port "$name")
  routes: [${routes%, }]
}
CONF
}

# Every node's page origin, as cluster.client_urls lists them (so a page moves to
# another local node when its own is killed).
client_urls() {
  local urls=() node
  for node in "${peerhub_names[@]}"; do urls+=("\"http://127.0.0.1:$(web_port "$node")\""); done
  (IFS=,; echo "${urls[*]}" | sed 's/,/, /g')
}

write_peerhub_config() {
  local name=$1 number urls
  number="$(number_of "$name")"
  urls="$(nats_urls)"
  mkdir -p "$dir/$name"
  cat > "$dir/$name/peerhub.toml" <<CONF
# Written by scripts/cluster.sh: peerhub node n$number of the local cluster.
listen = "127.0.0.1:$(web_port "$name")"
data = "$dir/$name/data"

[cluster]
nats_urls = ["${urls//,/\", \"}"]
node_name = "n$number"
client_urls = [$(client_urls)]
lease_ttl_ms = ${LEASE_TTL_MS:-10000}
CONF
}

peerhub_bin() {
  if [ -n "${PEERHUB_BIN:-}" ]; then echo "$PEERHUB_BIN"; return; fi
  # cargo does nothing when the binary is up to date.
  cargo build -q --manifest-path "$root/Cargo.toml" -p peerhub-server --bin peerhub >&2
  echo "$root/target/debug/peerhub"
}

start_nats() {
  local name=$1 bin
  if [ -n "$(pid_of "$name")" ]; then echo "$name already running (pid $(pid_of "$name"))"; return; fi
  bin="$(bash "$root/scripts/nats/install.sh")"
  write_nats_config "$name"
  "$bin" -c "$dir/$name/nats.conf" >>"$dir/$name/nats.log" 2>&1 </dev/null &
  echo $! > "$dir/$name/pid"
  echo "$name started (pid $!, nats://127.0.0.1:$(client_port "$name"), log $dir/$name/nats.log)"
}

# Starts one peerhub node and waits for its `ready`; prints its URL and the
# first-admin line (the link itself, or that one exists). The node's stdout (with
# the link: a secret) is in out.txt, owner-only; its logs in peerhub.log.
start_peerhub() {
  local name=$1 bin pid
  if [ -n "$(pid_of "$name")" ]; then echo "$name already running (pid $(pid_of "$name"))"; return; fi
  bin="$2"
  # Written once: a node started again keeps its settings (wipe to start over).
  [ -f "$dir/$name/peerhub.toml" ] || write_peerhub_config "$name"
  (umask 077; : > "$dir/$name/out.txt")
  env -u PEERHUB_NODES -u PEERHUB_BIN "$bin" --config "$dir/$name/peerhub.toml" >"$dir/$name/out.txt" 2>>"$dir/$name/peerhub.log" </dev/null &
  pid=$!
  echo "$pid" > "$dir/$name/pid"
  for _ in $(seq 150); do
    grep -qx ready "$dir/$name/out.txt" && break
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited before it was ready; its last log lines ($dir/$name/peerhub.log):" >&2
      tail -n 5 "$dir/$name/peerhub.log" >&2
      rm -f "$dir/$name/pid"
      exit 1
    fi
    sleep 0.2
  done
  grep -qx ready "$dir/$name/out.txt" || { echo "$name not ready after 30 s (see $dir/$name/peerhub.log)" >&2; exit 1; }
  echo "$name started (pid $pid, node n$(number_of "$name"), http://127.0.0.1:$(web_port "$name")/, log $dir/$name/peerhub.log)"
  grep '^first admin' "$dir/$name/out.txt" | sed "s/^/  /" || true
}

stop_one() {
  local name=$1 signal=$2 pid
  pid="$(pid_of "$name")"
  if [ -z "$pid" ]; then echo "$name is not running"; return; fi
  kill "-$signal" "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$dir/$name/pid"
  echo "$name stopped ($signal)"
}

wait_nats_ready() {
  for name in "${nats_names[@]}"; do
    [ -n "$(pid_of "$name")" ] || continue
    for _ in $(seq 100); do
      if curl -fsS "http://127.0.0.1:$(monitor_port "$name")/healthz" >/dev/null 2>&1; then
        break
      fi
      sleep 0.2
    done
  done
}

cmd="${1:-status}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  case "$cmd" in
    # Nodes stop before the NATS servers they need.
    stop) targets=("${peerhub_names[@]}" "${nats_names[@]}") ;;
    *) targets=("${nats_names[@]}" "${peerhub_names[@]}") ;;
  esac
fi
for name in "${targets[@]}"; do number_of "$name" >/dev/null; done
case "$cmd" in
  start)
    mkdir -p "$dir"
    bin=""
    for name in "${targets[@]}"; do
      if is_nats "$name"; then start_nats "$name"; fi
    done
    wait_nats_ready
    for name in "${targets[@]}"; do
      if ! is_nats "$name"; then
        [ -n "$bin" ] || bin="$(peerhub_bin)"
        start_peerhub "$name" "$bin"
      fi
    done
    echo "NATS: $(nats_urls)"
    ;;
  stop) for name in "${targets[@]}"; do stop_one "$name" TERM; done ;;
  kill)
    [ $# -gt 0 ] || { echo "kill which? (nats-1..3, peerhub-1..3)" >&2; exit 2; }
    for name in "${targets[@]}"; do stop_one "$name" KILL; done
    ;;
  status)
    for name in "${nats_names[@]}" peerhub-1 peerhub-2 peerhub-3; do
      pid="$(pid_of "$name")"
      if [ -n "$pid" ] && is_nats "$name"; then
        echo "$name running (pid $pid) client $(client_port "$name") routes $(route_port "$name") monitoring $(monitor_port "$name")"
      elif [ -n "$pid" ]; then
        echo "$name running (pid $pid) node n$(number_of "$name") http://127.0.0.1:$(web_port "$name")/"
      elif is_nats "$name" || [ -d "$dir/$name" ]; then
        echo "$name stopped"
      fi
    done
    ;;
  wipe)
    for name in peerhub-1 peerhub-2 peerhub-3 "${nats_names[@]}"; do stop_one "$name" TERM; done
    rm -rf "$dir"
    ;;
  check)
    # Every stream and bucket made, each server's version and JetStream checked.
    env -u PEERHUB_NODES -u PEERHUB_BIN PEERHUB_CLUSTER_NATS_URLS="$(nats_urls)" "$(peerhub_bin)" cluster check
    ;;
  *) sed -n '2,31p' "$0"; exit 2 ;;
esac
