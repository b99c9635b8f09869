#!/usr/bin/env bash
# Memory per idle HTTP/2 (h2c) connection: Strait on io_uring and on epoll, and NGINX, each with
# one worker proxying to the NGINX origin (benches/lib/origin.sh) in its own process.
#
#   benches/idle_h2.sh                       # 2,000 connections each, RSS read 3 s after
#   COUNT=5000 HOLD=10 SIDES="epoll nginx" STRAIT=/path/to/strait benches/idle_h2.sh
#
# Each connection sends the preface and one GET, reads the response and stays open
# (benches/lib/idle_h2.py, which prints the RSS before and after and the KiB per connection).
# A quiet Strait connection frees its buffers after two passes of the idle sweep (≤ 0.75 s).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib/origin.sh
source benches/lib/nginx.sh
source benches/lib/strait.sh
STRAIT=${STRAIT:-target/release/strait}
[[ -x $STRAIT ]] || cargo build --release -p strait-proxy --bin strait
start_origin 0
for side in ${SIDES:-uring epoll nginx}; do
  port=$(free_port)
  if [[ $side == nginx ]]; then
    nginx_proxy_config "$work/proxy" "$port" h2
    nginx -c "$work/proxy/nginx.conf" -p "$work/proxy" &
    pid=$!
  else
    strait_config "$work/strait.yaml" "$port"
    taskset -c 1 "$STRAIT" run --config "$work/strait.yaml" --workers 1 --io "$side" --no-watch \
      --admin 127.0.0.1:0 2>/dev/null &
    pid=$!
  fi
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  printf '%s: ' "$side"
  python3 benches/lib/idle_h2.py --port "$port" --count "${COUNT:-2000}" --pids "$pid" \
    --hold "${HOLD:-3}"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
done
