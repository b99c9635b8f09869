#!/usr/bin/env bash
# Latency at a fixed open-loop rate in alternating repetitions: Strait on io_uring and on epoll
# against NGINX (issue #4's p50 target).
#
#   benches/latency.sh                                  # 8 repetitions at 3,000 req/s
#   REPS=12 RATE=5000 benches/latency.sh
#   SIDES="uring epoll" benches/latency.sh              # the two backends only
#
# compare.sh measures p50 in three repetitions minutes apart; NGINX's own p50 moves by 20 %
# between them here, more than the differences to read. Here each repetition starts every side
# of SIDES in turn on CPU 1 with one worker (`uring`, `epoll`: `strait run --workers 1 --io
# ...`; `nginx`: the NGINX proxy of benches/lib/nginx.sh), in reverse order on even
# repetitions, and runs `oha -c32 -q RATE --latency-correction` for DURATION seconds after a
# 2-second warm-up (CPU 0, with the origin of benches/lib/origin.sh, which answers 1 KiB from
# memory). It records oha's p10, p50 and p90 and the proxy's CPU time per request at that rate
# (utime + stime from /proc over the measured run). Prints one line per repetition, then the
# medians and the median of the per-repetition ratios against the first side.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-8}
RATE=${RATE:-3000}
DURATION=${DURATION:-6}
SIDES=${SIDES:-"nginx uring epoll"}
STRAIT=${STRAIT:-target/release/strait}
[[ -x $STRAIT ]] || cargo build --release -p strait-proxy --bin strait
command -v nginx >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
}
command -v oha >/dev/null || cargo install oha --locked -q
source benches/lib/sides.sh
start_origin 0
ticks=$(getconf CLK_TCK)

run() { # $1 = side; prints "p10 p50 p90 cpu_us" (ms, ms, ms, µs per request)
  local port pid before after json=$work/oha.json
  port=$(free_port)
  start_side "$1" "$port"
  pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  local url="http://127.0.0.1:$port/"
  taskset -c 0 oha --no-tui -z 2s -c 32 -q "$RATE" "$url" >/dev/null
  before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  taskset -c 0 oha --no-tui -z "${DURATION}s" -c 32 -q "$RATE" --latency-correction \
    --output-format json "$url" >"$json"
  after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$json" "$before" "$after" "$ticks" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["latencyPercentiles"]
if p.get("p50") is None:
    sys.exit(f"latency: oha measured no successful request: {d.get('errorDistribution')}")
codes = d.get("statusCodeDistribution", {})
if any(k != "200" for k in codes):
    sys.exit(f"latency: responses other than 200: {codes}")
answered = sum(codes.values())
cpu = (int(sys.argv[3]) - int(sys.argv[2])) * 1e6 / int(sys.argv[4]) / answered
print(f"{p['p10'] * 1e3:.4f} {p['p50'] * 1e3:.4f} {p['p90'] * 1e3:.4f} {cpu:.1f}")
PY
}

read -r -a sides <<<"$SIDES"
results=()
for rep in $(seq "$REPS"); do
  mapfile -t order < <(rep_order "$rep" "${sides[@]}")
  line="rep $rep:"
  for side in "${order[@]}"; do
    read -r p10 p50 p90 cpu < <(run "$side")
    results+=("$rep $side $p10 $p50 $p90 $cpu")
    line+=" $side p50 $p50 ms (p10 $p10, p90 $p90), $cpu µs/request;"
  done
  echo "${line%;}"
done
printf '%s\n' "${results[@]}" | SIDES="$SIDES" RATE="$RATE" python3 -c '
import collections, os, statistics, sys
names = os.environ["SIDES"].split()
rows = collections.defaultdict(dict)
for line in sys.stdin:
    rep, side, *v = line.split()
    rows[rep][side] = list(map(float, v))
rate = os.environ["RATE"]
print(f"{rate} req/s, medians over {len(rows)} repetitions:")
for n in names:
    cols = list(zip(*(r[n] for r in rows.values())))
    p10, p50, p90, cpu = (statistics.median(c) for c in cols)
    print(f"  {n}: p50 {p50:.3f} ms (p10 {p10:.3f}, p90 {p90:.3f}), CPU {cpu:.1f} µs/request")
ref = names[0]
for n in names[1:]:
    q = [r[n][1] / r[ref][1] for r in rows.values()]
    c = [r[n][3] / r[ref][3] for r in rows.values()]
    print(f"  {n} / {ref} per repetition: "
          f"p50 median x{statistics.median(q):.3f} (x{min(q):.3f} to x{max(q):.3f}), "
          f"CPU median x{statistics.median(c):.3f} (x{min(c):.3f} to x{max(c):.3f})")
'
