#!/usr/bin/env bash
# Config reload cost (issue #5). Strait, one worker pinned to PROXY_CPU, serves a config with
# 10,000 routes and 1,000 clusters in front of an NGINX origin pinned to LOAD_CPU with the load
# generator. Two figures:
#   swap   time for `PUT /config` of the other version of that config to return (validate,
#          compile, swap; measured by the client, and the server's own `elapsed_ms` log), and
#          the first request after it (the worker rebuilds its view of the new snapshot);
#          SWAPS swaps, alternating between the two versions.
#   latency  p50/p99 at a fixed open-loop rate (oha, RATE req/s, DURATION s) with no reload
#          ("none") and with one `PUT /config` per second ("1/s"), interleaved, REPS times.
# Prints a markdown table and appends it to benches/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
DURATION=${DURATION:-15}
RATE=${RATE:-2000}
CONNECTIONS=${CONNECTIONS:-16}
SWAPS=${SWAPS:-10}
ROUTES=${ROUTES:-10000}
CLUSTERS=${CLUSTERS:-1000}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need curl; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light curl >/dev/null
fi
if ! need oha; then
  echo "installing oha (cargo install oha --locked; a few minutes, once)" >&2
  cargo install oha --locked -q >/dev/null
fi
cargo build --release --locked -p strait-proxy >/dev/null
STRAIT=target/release/strait

# shellcheck source=lib/origin.sh
source benches/lib/origin.sh
start_origin "$LOAD_CPU"

PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
# Two versions of a large config: version b moves 100 routes to other clusters and changes the
# connect timeout of 100 clusters (so they are rebuilt, keeping their pools).
python3 - "$work" "$PROXY_PORT" "$ORIGIN_PORT" "$ROUTES" "$CLUSTERS" <<'PY'
import sys
work, port, origin, routes, clusters = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
for version in ("a", "b"):
    out = [f"listeners:\n  - name: main\n    address: 127.0.0.1:{port}\n    virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n"]
    for i in range(routes):
        target = (i + (1 if version == "b" and i % 100 == 0 else 0)) % clusters
        out.append(f"          - match: {{ prefix: /r{i}/ }}\n            cluster: c{target}\n")
    out.append("          - match: { prefix: / }\n            cluster: c0\nclusters:\n")
    for c in range(clusters):
        timeout = "2s" if version == "b" and c % 10 == 0 else "1s"
        out.append(f"  - name: c{c}\n    connect_timeout: {timeout}\n    endpoints: [\"127.0.0.1:{origin}\"]\n")
    open(f"{work}/{version}.yaml", "w").write("".join(out))
PY
"$STRAIT" validate "$work/a.yaml" >/dev/null
"$STRAIT" validate "$work/b.yaml" >/dev/null
size_kib=$(( $(stat -c %s "$work/a.yaml") / 1024 ))

start_proxy() {
  taskset -c "$PROXY_CPU" "$STRAIT" run --workers 1 --no-watch --admin "127.0.0.1:$ADMIN_PORT" \
    --config "$work/a.yaml" > /dev/null 2> "$work/strait.log" &
  PROXY_PID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -sf -o /dev/null "http://127.0.0.1:$PROXY_PORT/r5000/" || { echo "proxy does not answer" >&2; cat "$work/strait.log" >&2; exit 1; }
}
stop_proxy() { kill "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true; }

put() { # $1 = file; prints the client-side seconds
  local out
  out=$(curl -s -o "$work/put.out" -w '%{http_code} %{time_total}' -X PUT --data-binary "@$1" \
    "http://127.0.0.1:$ADMIN_PORT/config")
  [ "${out%% *}" = 200 ] || { echo "PUT /config answered $out: $(cat "$work/put.out")" >&2; exit 1; }
  echo "${out#* }"
}

start_proxy
: > "$work/swap.tsv"
for i in $(seq "$SWAPS"); do
  file=$work/b.yaml; ((i % 2 == 0)) && file=$work/a.yaml
  put_s=$(put "$file")
  first_s=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PROXY_PORT/r5000/")
  printf '%s\t%s\n' "$put_s" "$first_s" >> "$work/swap.tsv"
done
# The server's own measure of validate + compile + swap, from its log.
grep -o 'elapsed_ms=[0-9]*' "$work/strait.log" | cut -d= -f2 > "$work/elapsed.txt" || true
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$PROXY_PID/status" 2>/dev/null || echo 0)
stop_proxy

latency() { # $1 = none | swaps; prints p50_ms p99_ms achieved_rps failures
  start_proxy
  oha -z 3s -c "$CONNECTIONS" -q "$RATE" --no-tui "http://127.0.0.1:$PROXY_PORT/r5000/" >/dev/null
  local swapper=""
  if [ "$1" = swaps ]; then
    ( n=0; while true; do
        n=$((n + 1)); f=$work/b.yaml; ((n % 2 == 0)) && f=$work/a.yaml
        curl -s -o /dev/null -X PUT --data-binary "@$f" "http://127.0.0.1:$ADMIN_PORT/config"
        sleep 1
      done ) &
    swapper=$!
  fi
  oha -z "${DURATION}s" -c "$CONNECTIONS" -q "$RATE" --latency-correction --no-tui \
    --output-format json "http://127.0.0.1:$PROXY_PORT/r5000/" > "$work/oha.json"
  [ -n "$swapper" ] && { kill "$swapper"; wait "$swapper" 2>/dev/null || true; }
  local applied
  applied=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -F' ' '/strait_config_reloads_total\{result="applied"\}/ {print $2}')
  stop_proxy
  python3 - "$work/oha.json" "$applied" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
errors = {k: v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k}
bad = sum(v for k, v in codes.items() if k != "200") + sum(errors.values())
print(p["p50"] * 1e3, p["p99"] * 1e3, d["summary"]["requestsPerSec"], bad, sys.argv[2] or 0)
PY
}

: > "$work/latency.tsv"
for rep in $(seq "$REPS"); do
  for variant in none swaps; do
    read -r p50 p99 rps bad applied <<<"$(latency "$variant")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$variant" "$p50" "$p99" "$rps" "$bad" "$applied" >> "$work/latency.tsv"
    echo "rep $rep $variant: p50 ${p50} ms p99 ${p99} ms at ${rps} req/s, $bad failed, $applied reloads" >&2
  done
done

commit=$(git rev-parse --short HEAD)
table=$(python3 - "$work" "$ROUTES" "$CLUSTERS" "$size_kib" "$rss_kib" "$RATE" "$DURATION" "$REPS" <<'PY'
import statistics as st, sys
work, routes, clusters, size_kib, rss_kib, rate, duration, reps = sys.argv[1:9]
swaps = [tuple(map(float, l.split())) for l in open(f"{work}/swap.tsv") if l.strip()]
elapsed = [float(x) for x in open(f"{work}/elapsed.txt") if x.strip()]
lat = {}
for line in open(f"{work}/latency.tsv"):
    v, p50, p99, rps, bad, applied = line.split()
    lat.setdefault(v, []).append((float(p50), float(p99), float(rps), int(float(bad)), int(float(applied))))
def span(xs, fmt="{:.1f}"):
    return f"{fmt.format(st.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"
out = []
out.append(f"Config: {routes} routes, {clusters} clusters ({size_kib} KiB of YAML); RSS after the swaps {int(rss_kib)//1024} MiB.\n")
out.append("| figure | median (min–max) |")
out.append("|---|---|")
out.append(f"| `PUT /config` round trip, ms ({len(swaps)} swaps) | {span([s[0]*1e3 for s in swaps])} |")
if elapsed:
    out.append(f"| validate + compile + swap in the proxy (`elapsed_ms`), ms | {span(elapsed)} |")
out.append(f"| first request after a swap (worker rebuilds its view), ms | {span([s[1]*1e3 for s in swaps], '{:.2f}')} |")
out.append("")
out.append(f"Latency at {rate} req/s open loop (oha, {duration} s, latency-corrected), {reps} interleaved repetitions:\n")
out.append("| reloads | p50 ms | p99 ms | achieved req/s | failed | reloads applied |")
out.append("|---|---|---|---|---|---|")
for v, label in (("none", "none"), ("swaps", "one per second")):
    rows = lat.get(v, [])
    if not rows:
        continue
    out.append(f"| {label} | {span([r[0] for r in rows], '{:.3f}')} | {span([r[1] for r in rows], '{:.3f}')} | {st.median([r[2] for r in rows]):.0f} | {sum(r[3] for r in rows)} | {sum(r[4] for r in rows)} |")
if lat.get("none") and lat.get("swaps"):
    n50 = st.median([r[0] for r in lat["none"]]); s50 = st.median([r[0] for r in lat["swaps"]])
    n99 = st.median([r[1] for r in lat["none"]]); s99 = st.median([r[1] for r in lat["swaps"]])
    out.append(f"\nWith one swap per second vs none: p50 x{s50/n50:.2f}, p99 x{s99/n99:.2f}.")
print("\n".join(out))
PY
)
echo "$table"
{
  echo
  echo "## Config reload ($(date -u +%Y-%m-%d), commit $commit)"
  echo
  echo "Command: \`REPS=$REPS DURATION=$DURATION RATE=$RATE SWAPS=$SWAPS benches/reload.sh\`; Strait one worker on CPU $PROXY_CPU, NGINX origin and oha on CPU $LOAD_CPU."
  echo
  echo "$table"
} >> benches/RESULTS.md
