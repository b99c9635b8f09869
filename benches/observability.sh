#!/usr/bin/env bash
# CPU cost of metrics and access logs (issue #3): Strait with one worker, pinned to one CPU,
# proxying HTTP/1.1 keep-alive requests (1 KiB responses) to an NGINX origin pinned to the other
# CPU with the load generator (wrk). Variants, interleaved, REPS times each:
#   off     --no-metrics, no access log
#   metrics metrics on (the default), no access log
#   json    metrics on, JSON access log to a file
# CPU per request = (utime + stime of the strait process over the run) / requests served.
# Prints a markdown table and appends it to benches/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
cargo build --release --locked -p strait-proxy >/dev/null
STRAIT=target/release/strait

# shellcheck source=lib/origin.sh
source benches/lib/origin.sh
start_origin "$LOAD_CPU"

PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
config() { # $1 = extra top-level YAML
  cat <<CONF
listeners:
  - name: bench
    address: 127.0.0.1:$PROXY_PORT
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: origin
            match: { prefix: / }
            cluster: origin
clusters:
  - name: origin
    endpoints: ["127.0.0.1:$ORIGIN_PORT"]
$1
CONF
}
config "" > "$work/plain.yaml"
config "access_log: { output: $work/access.log, format: json }" > "$work/json.yaml"

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run_variant() { # $1 = name; prints "name requests cpu_us_per_request"
  local name=$1 cfg=$work/plain.yaml flags=()
  case $name in
    off) flags=(--no-metrics) ;;
    json) cfg=$work/json.yaml; : > "$work/access.log" ;;
  esac
  taskset -c "$PROXY_CPU" "$STRAIT" run --config "$cfg" --workers 1 --admin "127.0.0.1:$ADMIN_PORT" \
    "${flags[@]}" 2>"$work/strait.log" &
  local pid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null 2>&1 && break
    sleep 0.05
  done
  # Warm up pools and caches.
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$PROXY_PORT/" >/dev/null
  local before after out requests
  before=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$PROXY_PORT/")
  after=$(cpu_ticks "$pid")
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  kill -TERM "$pid"; wait "$pid" || true
  python3 -c "print('$name', $requests, ($after-$before)/$ticks*1e6/$requests)"
}

results=()
for rep in $(seq "$REPS"); do
  for variant in off metrics json; do
    line=$(run_variant "$variant")
    echo "rep $rep: $line" >&2
    results+=("$line")
  done
done

table=$(printf '%s\n' "${results[@]}" | python3 -c '
import sys, statistics
rows = {}
for line in sys.stdin:
    name, reqs, us = line.split()
    rows.setdefault(name, []).append((float(reqs), float(us)))
base = statistics.median(u for _, u in rows["off"])
print("| variant | req/s (median) | CPU µs/request (median) | spread (min–max) | vs metrics off |")
print("|---|---|---|---|---|")
for name in ("off", "metrics", "json"):
    us = [u for _, u in rows[name]]
    rps = statistics.median(r for r, _ in rows[name]) / float(sys.argv[1])
    med = statistics.median(us)
    print(f"| {name} | {rps:,.0f} | {med:.2f} | {min(us):.2f}–{max(us):.2f} | {med / base:.3f} |")
' "$DURATION")

commit=$(git describe --always --dirty --abbrev=7)
{
  echo
  echo "## Observability overhead — $(date -u +%Y-%m-%d) — commit $commit"
  echo
  echo "Command: \`REPS=$REPS DURATION=$DURATION CONNECTIONS=$CONNECTIONS benches/observability.sh\`"
  echo "(strait --workers 1 on CPU $PROXY_CPU; NGINX origin and wrk -t1 -c$CONNECTIONS on CPU $LOAD_CPU; HTTP/1.1 keep-alive, 1 KiB responses; $REPS interleaved repetitions.)"
  echo
  echo "$table"
} | tee -a benches/RESULTS.md
