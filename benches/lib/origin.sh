# Sourced by the benchmark scripts: a work directory and the NGINX origin they proxy to.
#
#   source benches/lib/origin.sh
#   start_origin "$LOAD_CPU"     # sets ORIGIN_PORT; NGINX answers 1 KiB on / from memory
#
# Sets `work` (removed on exit, with every background job killed) and `free_port`.

work=$(mktemp -d)
# NGINX's workers run as nobody: they must be able to read what the scripts put here.
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.3; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The origin: NGINX answering 1 KiB from memory (as compare.sh's origin does), one worker,
# pinned to CPU $1 (with the load generator), keep-alive without limit.
start_origin() {
  ORIGIN_PORT=$(free_port)
  local body
  body=$(head -c 1024 /dev/zero | tr '\0' 'x')
  cat > "$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$ORIGIN_PORT;
    location / { default_type text/plain; return 200 "$body"; }
  }
}
CONF
  taskset -c "$1" nginx -c "$work/nginx.conf" -p "$work" &
  local size=""
  for _ in $(seq 50); do
    size=$(curl -s -o /dev/null -w '%{size_download} %{http_code}' "http://127.0.0.1:$ORIGIN_PORT/" || true)
    [ "$size" = "1024 200" ] && return 0
    sleep 0.1
  done
  echo "origin answers '$size', not 1 KiB with 200" >&2
  exit 1
}
