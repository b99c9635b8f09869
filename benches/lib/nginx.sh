# Sourced by backends.sh and instructions.sh: NGINX as the proxy under test, one process.
#
#   source benches/lib/nginx.sh
#   nginx_proxy_config DIR PORT [h2]   # writes DIR/nginx.conf; run: nginx -c DIR/nginx.conf -p DIR
#
# compare.sh writes its own: NGINX as deployed (a master and one worker, both counted in its
# RSS figures), HTTP/1.1 and h2c on two ports, file limits raised for 10,000 idle connections.
# The proxying settings (upstream keep-alive, NGINX_KEEPALIVE, HTTP/1.1 upstream, no access
# log) are the same in both; keep them so.

# Writes DIR/nginx.conf: one worker in the foreground (no master, so that the pid started is
# the process that works), access log off, upstream keep-alive to $ORIGIN_PORT, listening on
# 127.0.0.1:PORT; with a third argument `h2`, HTTP/2 with prior knowledge on that port (NGINX
# 1.22 speaks h2c only on a port of its own). NGINX_KEEPALIVE (default 64) is its `keepalive`:
# the idle upstream connections it keeps; more than that many in flight are closed after their
# response and opened again.
nginx_proxy_config() {
  local h2=""
  [[ ${3:-} == h2 ]] && h2=" http2"
  mkdir -p "$1"
  cat > "$1/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive ${NGINX_KEEPALIVE:-64}; }
  server {
    listen 127.0.0.1:$2$h2;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
}
