#!/usr/bin/env bash
# A three-master Redis Cluster of the caller's own, for e2e-cluster.sh and bench-cluster.sh.
# Sourced, not run.
#
#   start_redis_cluster DIR   three redis-server processes with cluster-enabled on free ports
#                             (files under DIR), joined with `redis-cli --cluster create`; sets
#                             $cluster_seeds (two of the masters, FLASHSALE_REDIS_CLUSTER's form),
#                             $cluster_urls (all three) and $cluster_pids
#   stop_redis_cluster        stops those processes, by process id

cluster_pids=()
cluster_seeds=""
cluster_urls=""

# A free port whose cluster bus port (10,000 above it) is free too, below 55,536 (the ephemeral
# ports the OS hands out often lie above, where the bus port would not exist).
cluster_port() {
  python3 -c '
import random, socket
while True:
    port = random.randint(20000, 50000)
    try:
        for p in (port, port + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", p)); s.close()
    except OSError:
        continue
    print(port)
    break'
}

start_redis_cluster() {
  local dir=$1 nodes=() port
  for i in 1 2 3; do
    port=$(cluster_port)
    mkdir -p "$dir/redis-$i"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/redis-$i" --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout 2000 --appendonly no --save "" \
      --maxmemory-policy noeviction >"$dir/redis-$i.log" 2>&1 &
    cluster_pids+=("$!")
    nodes+=("127.0.0.1:$port")
  done
  for node in "${nodes[@]}"; do
    for _ in $(seq 1 100); do redis-cli -p "${node##*:}" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$dir/create.log"
  for _ in $(seq 1 100); do
    redis-cli -p "${nodes[0]##*:}" cluster info 2>/dev/null | grep -q cluster_state:ok && break
    sleep 0.1
  done
  cluster_seeds="redis://${nodes[0]},redis://${nodes[1]}"
  cluster_urls="$cluster_seeds,redis://${nodes[2]}"
}

stop_redis_cluster() {
  local pid
  for pid in "${cluster_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${cluster_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  cluster_pids=()
}
