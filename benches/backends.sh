#!/usr/bin/env bash
# CPU per request of Strait on io_uring against epoll, in alternating pairs (issue #4).
#
#   benches/backends.sh                     # 5 pairs of 150,000 HTTP/1.1 requests
#   PAIRS=9 REQUESTS=300000 benches/backends.sh
#
# compare.sh runs each proxy for a fixed time and divides; with CPU time moving by 10-30 %
# between minutes on this shared machine, its uring and epoll medians overlap. Here each
# repetition starts `strait run --workers 1 --io uring` and then `--io epoll` (CPU 1), sends
# each the same fixed number of requests with `h2load --h1 -c32` (CPU 0, with the NGINX origin
# of benches/lib/origin.sh) after a 20,000-request warm-up, and reads utime and stime from
# /proc. Each pair runs within seconds, so drift hits both sides alike; the figure to read is
# the median of the per-pair differences. Prints one line per run and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-5}
REQUESTS=${REQUESTS:-150000}
STRAIT=${STRAIT:-target/release/strait}
[[ -x $STRAIT ]] || cargo build --release -p strait-proxy --bin strait
command -v h2load >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client nginx-light >/dev/null
}
source benches/lib/origin.sh
source benches/lib/strait.sh
start_origin 0
ticks=$(getconf CLK_TCK)

run() { # $1 = io backend; prints "user_us sys_us" per request
  local port pid before after
  port=$(free_port)
  strait_config "$work/strait.yaml" "$port"
  taskset -c 1 "$STRAIT" run --config "$work/strait.yaml" --workers 1 --io "$1" --no-watch \
    --admin 127.0.0.1:0 2>"$work/strait.log" &
  pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  taskset -c 0 h2load --h1 -t1 -c32 -n 20000 "http://127.0.0.1:$port/" >/dev/null
  before=$(awk '{print $14, $15}' "/proc/$pid/stat")
  local out
  out=$(taskset -c 0 h2load --h1 -t1 -c32 -n "$REQUESTS" "http://127.0.0.1:$port/")
  after=$(awk '{print $14, $15}' "/proc/$pid/stat")
  grep -q "requests: $REQUESTS total, $REQUESTS started, $REQUESTS done, $REQUESTS succeeded" <<<"$out" || {
    echo "backends: not every request succeeded on $1: $(grep '^requests:' <<<"$out")" >&2; exit 1
  }
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 -c "b='$before'.split(); a='$after'.split(); f=1e6/$ticks/$REQUESTS
print(round((int(a[0])-int(b[0]))*f, 2), round((int(a[1])-int(b[1]))*f, 2))"
}

results=()
for pair in $(seq "$PAIRS"); do
  read -r uu us < <(run uring)
  read -r eu es < <(run epoll)
  echo "pair $pair: uring $(python3 -c "print(round($uu+$us,2))") µs/request (user $uu, sys $us); epoll $(python3 -c "print(round($eu+$es,2))") (user $eu, sys $es)"
  results+=("$uu $us $eu $es")
done
printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = [list(map(float, line.split())) for line in sys.stdin if line.strip()]
u = [r[0] + r[1] for r in rows]; e = [r[2] + r[3] for r in rows]
d = [a - b for a, b in zip(u, e)]
print(f"median CPU µs/request: uring {statistics.median(u):.2f}, epoll {statistics.median(e):.2f}; "
      f"uring - epoll per pair: median {statistics.median(d):+.2f} ({min(d):+.2f} to {max(d):+.2f}), "
      f"ratio of medians x{statistics.median(u) / statistics.median(e):.3f}; "
      f"sys: uring {statistics.median([r[1] for r in rows]):.2f}, epoll {statistics.median([r[3] for r in rows]):.2f}")
'
