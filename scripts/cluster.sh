#!/usr/bin/env bash
# A local peerhub cluster on loopback (issue 18; design in docs/CLUSTER.md).
#
# Today it runs the NATS part: three nats-server processes (the version pinned in
# scripts/nats/requirements.txt, installed by scripts/nats/install.sh) with
# JetStream, routes between them, each on its own loopback ports, data and logs in
# target/cluster/<name>/. peerhub nodes join once cluster mode is wired (see the
# TODO below).
#
#   bash scripts/cluster.sh start          # start n1 n2 n3 (those not running)
#   bash scripts/cluster.sh status         # which run, their ports and PIDs
#   bash scripts/cluster.sh kill n2        # kill -9 one server (a crash)
#   bash scripts/cluster.sh stop n2        # stop one server gracefully (SIGTERM)
#   bash scripts/cluster.sh start n2       # start it again on its own data
#   bash scripts/cluster.sh stop           # stop all
#   bash scripts/cluster.sh wipe           # stop all and delete target/cluster
#   bash scripts/cluster.sh check          # peerhub cluster check against them
#
# Ports (127.0.0.1 only), with NATS_PORT_BASE=4222 by default:
#   n1: client 4222, routes 6222, monitoring 8222
#   n2: client 4223, routes 6223, monitoring 8223
#   n3: client 4224, routes 6224, monitoring 8224
# Clients connect with nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224.
# Health: curl -s http://127.0.0.1:8222/healthz ; JetStream: .../jsz
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/target/cluster"
base="${NATS_PORT_BASE:-4222}"
names=(n1 n2 n3)

index_of() {
  case "$1" in
    n1) echo 0 ;; n2) echo 1 ;; n3) echo 2 ;;
    *) echo "unknown server '$1' (n1, n2 or n3)" >&2; exit 2 ;;
  esac
}
client_port() { echo $((base + $(index_of "$1"))); }
route_port() { echo $((base + 2000 + $(index_of "$1"))); }
monitor_port() { echo $((base + 4000 + $(index_of "$1"))); }

pid_of() {
  local file="$dir/$1/pid"
  if [ -f "$file" ] && kill -0 "$(cat "$file")" 2>/dev/null; then cat "$file"; fi
}

write_config() {
  local name=$1 routes=""
  for other in "${names[@]}"; do
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

start_one() {
  local name=$1 bin
  if [ -n "$(pid_of "$name")" ]; then echo "$name already running (pid $(pid_of "$name"))"; return; fi
  bin="$(bash "$root/scripts/nats/install.sh")"
  write_config "$name"
  "$bin" -c "$dir/$name/nats.conf" >>"$dir/$name/nats.log" 2>&1 </dev/null &
  echo $! > "$dir/$name/pid"
  echo "$name started (pid $!, nats://127.0.0.1:$(client_port "$name"), log $dir/$name/nats.log)"
}

stop_one() {
  local name=$1 signal=$2 pid
  pid="$(pid_of "$name")"
  if [ -z "$pid" ]; then echo "$name is not running"; return; fi
  kill "-$signal" "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$dir/$name/pid"
  echo "$name stopped ($signal)"
}

wait_ready() {
  for name in "${names[@]}"; do
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
[ ${#targets[@]} -gt 0 ] || targets=("${names[@]}")
case "$cmd" in
  start)
    for name in "${targets[@]}"; do start_one "$name"; done
    wait_ready
    # TODO(issue 18): start two or three peerhub nodes here once cluster mode is
    # wired: each with its own data folder target/cluster/peerhub-<i>, listening on
    # 127.0.0.1:707<i>, and cluster.nats_urls set to the three client URLs above
    # (see docs/CLUSTER.md, "Starting it").
    echo "NATS: nats://127.0.0.1:$(client_port n1),nats://127.0.0.1:$(client_port n2),nats://127.0.0.1:$(client_port n3)"
    ;;
  stop) for name in "${targets[@]}"; do stop_one "$name" TERM; done ;;
  kill)
    [ $# -gt 0 ] || { echo "kill which server? (n1, n2 or n3)" >&2; exit 2; }
    for name in "${targets[@]}"; do stop_one "$name" KILL; done
    ;;
  status)
    for name in "${names[@]}"; do
      pid="$(pid_of "$name")"
      if [ -n "$pid" ]; then
        echo "$name running (pid $pid) client $(client_port "$name") routes $(route_port "$name") monitoring $(monitor_port "$name")"
      else
        echo "$name stopped"
      fi
    done
    ;;
  wipe)
    for name in "${names[@]}"; do stop_one "$name" TERM; done
    rm -rf "$dir"
    ;;
  check)
    # Every stream and bucket made, each server's version and JetStream checked.
    urls="nats://127.0.0.1:$(client_port n1),nats://127.0.0.1:$(client_port n2),nats://127.0.0.1:$(client_port n3)"
    PEERHUB_CLUSTER_NATS_URLS="$urls" cargo run -q --manifest-path "$root/Cargo.toml" \
      -p peerhub-server --bin peerhub -- cluster check
    ;;
  *) sed -n '2,27p' "$0"; exit 2 ;;
esac
