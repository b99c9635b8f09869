# Sourced by backends.sh, latency.sh and paired.sh: one side of a paired run, started in the
# background on CPU 1 with one worker. Sources the origin, Strait and NGINX helpers it uses.
#
#   start_side SIDE PORT [h2]    # $! is its pid
#
# SIDE: `uring` | `epoll` (Strait with that `--io`, the binary $STRAIT), `uring:PATH` |
# `epoll:PATH` (the Strait binary at PATH), `nginx`, or `relay` (benches/lib/relay.c: bytes
# relayed between each client connection and an upstream connection of its own, no HTTP
# work: the kernel's share of a proxied HTTP/1.1 request; HTTP/1.1 only). Its files are
# named after PORT, so that two sides can run at once. With `h2`, NGINX listens with HTTP/2
# prior knowledge (Strait serves both on one port).
source benches/lib/origin.sh
source benches/lib/strait.sh
source benches/lib/nginx.sh

start_side() {
  local io=${1%%:*} bin=$STRAIT
  [[ $1 == *:* ]] && bin=${1#*:}
  case $1 in
    uring | epoll | uring:* | epoll:*)
      [[ -x $bin ]] || { echo "no Strait binary at $bin" >&2; exit 2; }
      strait_config "$work/strait-$2.yaml" "$2"
      taskset -c 1 "$bin" run --config "$work/strait-$2.yaml" --workers 1 --io "$io" --no-watch \
        --admin 127.0.0.1:0 2>"$work/strait-$2.log" &
      ;;
    nginx)
      nginx_proxy_config "$work/nginx-$2" "$2" ${3:-}
      taskset -c 1 nginx -c "$work/nginx-$2/nginx.conf" -p "$work/nginx-$2" 2>"$work/nginx-$2.log" &
      ;;
    relay)
      [[ -x $work/relay ]] || cc -O2 -Wall -o "$work/relay" benches/lib/relay.c
      taskset -c 1 "$work/relay" "$2" "$ORIGIN_PORT" 2>"$work/relay-$2.log" &
      ;;
    *) echo "unknown side $1 (uring, epoll, uring:PATH, epoll:PATH, nginx, relay)" >&2; exit 2 ;;
  esac
}

# The sides of repetition REP in the order they run: as given on odd repetitions, reversed on
# even ones (the side run first in a repetition tends to measure slower, whichever it is).
#
#   mapfile -t order < <(rep_order "$rep" "${sides[@]}")
rep_order() {
  local rep=$1 i
  shift
  if ((rep % 2 == 0)); then
    for ((i = $#; i >= 1; i--)); do printf '%s\n' "${!i}"; done
  else
    printf '%s\n' "$@"
  fi
}
