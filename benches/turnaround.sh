#!/usr/bin/env bash
# How long a proxy holds each message: from the system call that read it to the one that sends
# it on, timed from the kernel's syscall tracepoints (issue #4's p50 target).
#
#   benches/turnaround.sh                               # NGINX and Strait on epoll, 3 repetitions
#   SIDES="nginx epoll relay" REPS=5 benches/turnaround.sh
#
# The p50 of a proxied request at a fixed rate is mostly what the proxy cannot change (the
# load generator, the origin, wake-ups of idle CPUs), so two runs of one proxy differ by more
# than two proxies do. This measures the part the proxy owns. Each side of SIDES (`nginx`,
# `epoll`, `relay`; benches/lib/sides.sh) runs alone on CPU 1 with one worker under
# `oha -q RATE -c CONNECTIONS` (CPU 0, with the origin of benches/lib/origin.sh); after a
# 2-second warm-up, `perf record` takes the proxy's raw_syscalls enter and exit events for
# SECONDS. For each send (write, writev, sendto, sendmsg) it pairs the last receive (recvfrom,
# read, readv) that returned on the same thread before it: the time between them is the
# message's turnaround, request or response. Also the time from a wait (epoll_wait) returning
# to the wake-up's first send. Percentiles are per repetition, then the median over
# repetitions; sides alternate within a repetition. Tracing every system call slows every side
# alike; compare sides, not absolute figures. io_uring sends and receives without a system
# call per message, so `uring` cannot be timed this way.
set -euo pipefail
cd "$(dirname "$0")/.."

SIDES=${SIDES:-"nginx epoll"}
REPS=${REPS:-3}
RATE=${RATE:-3000}
CONNECTIONS=${CONNECTIONS:-32}
SECONDS_TRACED=${SECONDS_TRACED:-3}
STRAIT=${STRAIT:-target/release/strait}
[[ " $SIDES " == *" uring "* ]] && { echo "turnaround: io_uring makes no system call per message; use epoll" >&2; exit 2; }
if [[ " $SIDES " == *" epoll "* && ! -x $STRAIT ]]; then
  cargo build --release -p strait-proxy --bin strait
fi
command -v oha >/dev/null || cargo install --locked oha
command -v perf >/dev/null && command -v nginx >/dev/null && command -v cc >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf nginx-light gcc >/dev/null
}
source benches/lib/sides.sh
start_origin 0

measure() { # $1 = side; prints "turnaround_p50 turnaround_p90 wake_p50 wake_p90" in µs
  local port pid worker load
  port=$(free_port)
  start_side "$1" "$port"
  pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  # NGINX with a master process: trace its worker.
  worker=$(pgrep -P "$pid" -f "nginx: worker" | head -1 || true)
  [[ -n $worker ]] && pid=$worker
  taskset -c 0 oha --no-tui -z $((SECONDS_TRACED + 4))s -c "$CONNECTIONS" -q "$RATE" \
    "http://127.0.0.1:$port/" >"$work/oha-$1.txt" &
  load=$!
  sleep 2
  perf record -q -o "$work/perf.data" -e raw_syscalls:sys_enter -e raw_syscalls:sys_exit \
    -p "$pid" -- sleep "$SECONDS_TRACED" 2>/dev/null
  wait "$load"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  perf script --ns -i "$work/perf.data" -F tid,time,event,trace 2>/dev/null | python3 -c '
import re, sys
WAITS = {232, 281, 441}      # epoll_wait, epoll_pwait, epoll_pwait2
RECVS = {0, 19, 45}          # read, readv, recvfrom
SENDS = {1, 20, 44, 46}      # write, writev, sendto, sendmsg
received, woke, turn, wake = {}, {}, [], []
event = re.compile(r"\s*(\d+)\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit):\s+NR (\d+)(?:.*= (-?\d+))?")
for line in sys.stdin:
    m = event.match(line)
    if not m:
        continue
    tid, at, kind, nr = int(m[1]), float(m[2]), m[3], int(m[4])
    if kind == "exit" and nr in RECVS and m[5] is not None and int(m[5]) > 0:
        received[tid] = at
    elif kind == "exit" and nr in WAITS:
        woke[tid] = at
    elif kind == "enter" and nr in SENDS:
        if tid in received:
            turn.append((at - received.pop(tid)) * 1e6)
        if tid in woke:
            wake.append((at - woke.pop(tid)) * 1e6)
if len(turn) < 100 or len(wake) < 100:
    sys.exit(f"turnaround: too few sends traced ({len(turn)}, {len(wake)})")
def pct(xs, p):
    xs = sorted(xs)
    return xs[int(p * (len(xs) - 1))]
print(" ".join(f"{x:.2f}" for x in (pct(turn, .5), pct(turn, .9), pct(wake, .5), pct(wake, .9))))
'
}

read -r -a sides <<<"$SIDES"
rows=()
for rep in $(seq "$REPS"); do
  mapfile -t order < <(rep_order "$rep" "${sides[@]}")
  for side in "${order[@]}"; do
    got=$(measure "$side")
    echo "rep $rep: $side turnaround p50/p90 and wake-to-send p50/p90 (µs): $got"
    rows+=("$side $got")
  done
done
printf '%s\n' "${rows[@]}" | python3 -c '
import statistics, sys
by = {}
for line in sys.stdin:
    side, *xs = line.split()
    by.setdefault(side, []).append(list(map(float, xs)))
print(f"medians over repetitions at {sys.argv[1]} req/s, {sys.argv[2]} connections (µs):")
for side, rows in by.items():
    m = [statistics.median(col) for col in zip(*rows)]
    print(f"  {side}: read-to-send p50 {m[0]:.1f}, p90 {m[1]:.1f}; wake-to-first-send p50 {m[2]:.1f}, p90 {m[3]:.1f}")
' "$RATE" "$CONNECTIONS"
