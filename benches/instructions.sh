#!/usr/bin/env bash
# User-space instructions per request of a proxy, counted by callgrind (issue #4).
#
#   benches/instructions.sh                          # strait on io_uring and epoll, NGINX
#   PROXIES="strait-epoll" CASES=h1 benches/instructions.sh
#   HEADERS="x-tenant:blue x-client:cli/1.2" CASES=h2c benches/instructions.sh   # extra fields
#
# CPU time on this shared 2-core machine moves by 20-30 % from one run to the next; the number
# of instructions the proxy executes does not. Each proxy runs under valgrind's callgrind with
# one worker behind the NGINX origin of benches/lib/origin.sh; WARM requests are sent and the
# counters zeroed, then REQUESTS more are sent and the counters dumped. The figure is the
# instructions executed in user space in that window divided by REQUESTS (the kernel's share is
# not counted: see the perf profiles in RESULTS.md for it). Prints one line per proxy and case.
# KEEP=dir keeps each window's callgrind file there (read it with callgrind_annotate).
set -euo pipefail
cd "$(dirname "$0")/.."

PROXIES=${PROXIES:-"strait-uring strait-epoll nginx"}
CASES=${CASES:-"h1 h2c"}
WARM=${WARM:-1000}
REQUESTS=${REQUESTS:-4000}
CONNECTIONS=${CONNECTIONS:-32}
STRAIT=${STRAIT:-target/release/strait}
say() { echo "instructions: $*" >&2; }

command -v valgrind >/dev/null && command -v h2load >/dev/null && command -v nginx >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind nghttp2-client nginx-light >/dev/null
}
if [[ " $PROXIES " == *" strait"* && ! -x $STRAIT ]]; then
  cargo build --release -p strait-proxy --bin strait
fi

source benches/lib/origin.sh
source benches/lib/strait.sh
source benches/lib/nginx.sh
start_origin 0

wait_port() {
  for _ in $(seq 300); do
    local http=--http1.1
    [[ $CASE == h2c ]] && http=--http2-prior-knowledge
    curl -s "$http" -o /dev/null "http://127.0.0.1:$1/" && return 0
    sleep 0.1
  done
  say "nothing answers on port $1"; exit 1
}

start() { # $1 = proxy; sets PORT and PID (the valgrind process)
  PORT=$(free_port)
  local grind=(valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" --dump-instr=no)
  case $1 in
    strait-uring | strait-epoll)
      strait_config "$work/strait.yaml" "$PORT"
      taskset -c 1 "${grind[@]}" "$STRAIT" run --config "$work/strait.yaml" --workers 1 \
        --io "${1#strait-}" --no-watch ${STRAIT_FLAGS:-} 2>"$work/proxy.log" &
      ;;
    nginx)
      local h2=""
      [[ $CASE == h2c ]] && h2=h2
      nginx_proxy_config "$work/nginx" "$PORT" $h2
      taskset -c 1 "${grind[@]}" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" 2>"$work/proxy.log" &
      ;;
    *) say "unknown proxy $1"; exit 2 ;;
  esac
  PID=$!
  wait_port "$PORT"
}

load() { # $1 = requests
  if [[ -n ${RATE:-} ]]; then
    # Open loop at RATE requests a second: the proxy parks between requests, as in production.
    local codes
    codes=$(taskset -c 0 oha --no-tui -n "$1" -c "$CONNECTIONS" -q "$RATE" --output-format json \
      "http://127.0.0.1:$PORT/" | python3 -c 'import json, sys; print(json.load(sys.stdin).get("statusCodeDistribution"))')
    [[ $codes == "{'200': $1}" ]] || { say "not every request succeeded: $codes"; exit 1; }
    return
  fi
  local args=(-t1 -c"$CONNECTIONS" -n"$1")
  for field in ${HEADERS:-}; do args+=(-H "$field"); done
  if [[ $CASE == h1 ]]; then args+=(--h1); else args+=(-m10); fi
  local out
  out=$(taskset -c 0 h2load "${args[@]}" "http://127.0.0.1:$PORT/")
  grep -q "requests: $1 total, $1 started, $1 done, $1 succeeded" <<<"$out" || {
    say "not every request succeeded: $(grep '^requests:' <<<"$out")"; exit 1
  }
}

for proxy in $PROXIES; do
  for CASE in $CASES; do
    start "$proxy"
    load "$WARM"
    rm -f "$work"/cg.*
    callgrind_control -z "$PID" >/dev/null 2>&1
    load "$REQUESTS"
    callgrind_control -d "$PID" >/dev/null 2>&1
    kill "$PID"; wait "$PID" 2>/dev/null || true
    # The first dump (cg.PID.1) holds exactly the window, every thread together.
    [[ -n ${KEEP:-} ]] && mkdir -p "$KEEP" && cp "$work"/cg.*.1 "$KEEP/$proxy-$CASE.callgrind"
    ir=$(awk '/^summary:/ {s += $2} END {print s + 0}' "$work"/cg.*.1)
    echo "$proxy $CASE: $((ir / REQUESTS)) instructions/request ($REQUESTS requests, -c$CONNECTIONS)"
  done
done
