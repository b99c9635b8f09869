#!/usr/bin/env bash
# Control plane at scale (issue #6): strait-cp with STREAMS simulated ADS clients (one process,
# control-plane/examples/ads_load.rs) and CLUSTERS x PER_CLUSTER TCP health-checked endpoints.
# One endpoint stops listening; the figure is the time from the first stream receiving that
# health change to every stream having received and ACKed it, and strait-cp's CPU and memory.
# strait-cp runs on CP_CPU, the simulated clients on LOAD_CPU. Appends to benches/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
STREAMS=${STREAMS:-1000}
CLUSTERS=${CLUSTERS:-100}
PER_CLUSTER=${PER_CLUSTER:-100}
CP_CPU=${CP_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}

ulimit -n "$(ulimit -Hn)"
cargo build --release --locked -p strait-control-plane --bin strait-cp --example ads_load >/dev/null
CP=target/release/strait-cp
LOAD=target/release/examples/ads_load

runs=()
for rep in $(seq "$REPS"); do
  line=$(taskset -c "$LOAD_CPU" "$LOAD" "$CP" "$STREAMS" "$CLUSTERS" "$PER_CLUSTER" "$CP_CPU")
  echo "rep $rep: $line" >&2
  runs+=("$line")
done

commit=$(git rev-parse --short HEAD)
table=$(printf '%s\n' "${runs[@]}" | python3 -c '
import json, statistics as st, sys
runs = [json.loads(l) for l in sys.stdin if l.strip()]
def row(key, label, fmt="{:.1f}"):
    xs = [r[key] for r in runs]
    return f"| {label} | {fmt.format(st.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))}) |"
first = runs[0]
streams, endpoints = first["streams"], first["endpoints"]
print(f"{streams} ADS streams, {endpoints} endpoints (TCP health checks every 5 s), {len(runs)} runs, median (min–max):\n")
print("| figure | value |")
print("|---|---|")
print(row("push_to_all_acks_ms", "health change: first stream has it → every stream ACKed it, ms (target < 1000)"))
print(row("change_to_all_acks_ms", "endpoint stops listening → every stream ACKed (includes detection by the next check), ms"))
print(row("initial_sync_s", "initial sync of every stream (CDS + EDS), s", "{:.2f}"))
print(row("cp_cpu_s_during_push", "strait-cp CPU time from the change to the last ACK, s", "{:.2f}"))
print(row("cp_rss_mib", "strait-cp RSS, MiB (target < 200)"))
print(row("cp_peak_rss_mib", "strait-cp peak RSS, MiB"))
')
echo "$table"
{
  echo
  echo "## Control plane at scale ($(date -u +%Y-%m-%d), commit $commit)"
  echo
  echo "Command: \`REPS=$REPS STREAMS=$STREAMS CLUSTERS=$CLUSTERS PER_CLUSTER=$PER_CLUSTER benches/xds.sh\`; strait-cp on CPU $CP_CPU, the simulated clients on CPU $LOAD_CPU."
  echo
  echo "$table"
} >> benches/RESULTS.md
