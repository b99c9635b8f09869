# Sourced by backends.sh and latency.sh: one side of a paired run, started in the background on
# CPU 1 with one worker. Sources the origin, Strait and NGINX helpers it uses.
#
#   start_side SIDE PORT [h2]    # SIDE: uring | epoll (Strait, $STRAIT) | nginx; $! is its pid
#
# With `h2`, NGINX listens with HTTP/2 prior knowledge (Strait serves both on one port).
source benches/lib/origin.sh
source benches/lib/strait.sh
source benches/lib/nginx.sh

start_side() {
  case $1 in
    uring | epoll)
      strait_config "$work/strait.yaml" "$2"
      taskset -c 1 "$STRAIT" run --config "$work/strait.yaml" --workers 1 --io "$1" --no-watch \
        --admin 127.0.0.1:0 2>"$work/strait.log" &
      ;;
    nginx)
      nginx_proxy_config "$work/nginx" "$2" ${3:-}
      taskset -c 1 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" 2>"$work/nginx.log" &
      ;;
    *) echo "unknown side $1 (uring, epoll, nginx)" >&2; exit 2 ;;
  esac
}
