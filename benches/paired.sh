#!/usr/bin/env bash
# CPU per request and latency of two proxies measured at the same time, on the same CPU, at a
# fixed open-loop rate each (issue #4).
#
#   benches/paired.sh                                   # NGINX and Strait on io_uring, 5 pairs
#   SIDES="nginx epoll" RATE=10000 CONNECTIONS=64 benches/paired.sh
#   SIDES="uring epoll" benches/paired.sh               # the two backends
#   SIDES="uring uring:/tmp/strait-new" benches/paired.sh   # two builds of Strait (A/B)
#
# backends.sh and latency.sh run their sides one after the other, seconds apart; on this shared
# machine CPU time per request still moves by 5-10 % between runs, more than a change worth
# making. Here the two sides of SIDES run *together*: both on CPU 1 with one worker each
# (`uring`, `epoll`: `strait run --workers 1 --io ...`, from $STRAIT or from the path after a
# colon; `nginx`: benches/lib/nginx.sh; see benches/lib/sides.sh), each under its own `oha -q RATE -c CONNECTIONS
# --latency-correction` for DURATION seconds (CPU 0, with the origin of benches/lib/origin.sh)
# after a 2-second warm-up, so that whatever else the machine does hits both alike. Each
# pair reports CPU time per request (the sum of the processes' threads' run time from
# /proc/PID/task/*/schedstat, in nanoseconds, over the measured run) and oha's p50 and p90;
# the figures to read are the medians over the pairs of the ratios second side / first side.
# Two copies of the same binary measure within 1 % of each other this way. Both sides share
# the CPU and its caches, so absolute figures sit above those of a proxy running alone; use the
# ratios. Prints one line per pair and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-5}
RATE=${RATE:-3000}
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-8}
SIDES=${SIDES:-"nginx uring"}
STRAIT=${STRAIT:-target/release/strait}
read -r -a sides <<<"$SIDES"
if ((${#sides[@]} != 2)); then
  echo "paired: SIDES names two sides, not '$SIDES'" >&2
  exit 2
fi
[[ " $SIDES " == *" uring "* || " $SIDES " == *" epoll "* ]] && [[ ! -x $STRAIT ]] &&
  cargo build --release -p strait-proxy --bin strait
command -v nginx >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
}
command -v oha >/dev/null || cargo install oha --locked -q
source benches/lib/sides.sh
start_origin 0

# Nanoseconds every thread of process $1 has run.
run_ns() {
  local total=0 line
  for stat in /proc/"$1"/task/*/schedstat; do
    read -r line _ <"$stat" || continue
    total=$((total + line))
  done
  echo "$total"
}

results=$work/pairs.txt
: >"$results"
for pair in $(seq "$PAIRS"); do
  ports=() pids=()
  for i in 0 1; do
    ports[i]=$(free_port)
    start_side "${sides[i]}" "${ports[i]}"
    pids[i]=$!
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  done
  load() { # $1 = seconds, $2 = extra oha arguments; one oha per side, together
    local jobs=()
    for i in 0 1; do
      # shellcheck disable=SC2086
      taskset -c 0 oha --no-tui -z "$1s" -c "$CONNECTIONS" -q "$RATE" $2 \
        "http://127.0.0.1:${ports[i]}/" >"$work/oha-$i.json" &
      jobs+=($!)
    done
    wait "${jobs[@]}"
  }
  load 2 ""
  before=("$(run_ns "${pids[0]}")" "$(run_ns "${pids[1]}")")
  load "$DURATION" "--latency-correction --output-format json"
  after=("$(run_ns "${pids[0]}")" "$(run_ns "${pids[1]}")")
  kill "${pids[@]}"
  wait "${pids[@]}" 2>/dev/null || true
  python3 - "$work" "$pair" "${before[@]}" "${after[@]}" >>"$results" <<'PY'
import json, sys
work, pair = sys.argv[1], sys.argv[2]
before, after = list(map(int, sys.argv[3:5])), list(map(int, sys.argv[5:7]))
row = [pair]
for i in (0, 1):
    d = json.load(open(f"{work}/oha-{i}.json"))
    codes = d.get("statusCodeDistribution", {})
    if any(k != "200" for k in codes) or not codes:
        sys.exit(f"paired: side {i} answered {codes or 'nothing'}")
    p = d["latencyPercentiles"]
    row += [f"{(after[i] - before[i]) / 1e3 / sum(codes.values()):.2f}",
            f"{p['p50'] * 1e3:.4f}", f"{p['p90'] * 1e3:.4f}"]
print(" ".join(row))
PY
  read -r _ c0 p0 q0 c1 p1 q1 < <(tail -1 "$results")
  echo "pair $pair: ${sides[0]} $c0 µs/request, p50 $p0 ms, p90 $q0 ms; ${sides[1]} $c1 µs/request, p50 $p1 ms, p90 $q1 ms"
done
python3 - "$results" "${sides[@]}" "$RATE" "$CONNECTIONS" <<'PY'
import statistics as st, sys
rows = [list(map(float, l.split()[1:])) for l in open(sys.argv[1])]
a, b, rate, conns = sys.argv[2:6]
med = lambda xs: st.median(xs)
print(f"{rate} req/s each, {conns} connections, medians over {len(rows)} pairs:")
for name, off in ((a, 0), (b, 3)):
    print(f"  {name}: CPU {med([r[off] for r in rows]):.2f} µs/request, "
          f"p50 {med([r[off + 1] for r in rows]):.3f} ms, p90 {med([r[off + 2] for r in rows]):.3f} ms")
for label, off in (("CPU", 0), ("p50", 1), ("p90", 2)):
    q = [r[3 + off] / r[off] for r in rows]
    print(f"  {b} / {a} {label}: x{med(q):.3f} (x{min(q):.3f} to x{max(q):.3f})")
PY
