#!/usr/bin/env bash
# The control plane on loopback, start to finish: strait-cp, a strait proxy following it over
# xDS, and two backends that register themselves through the registration API and are health
# checked. It sends requests through the proxy, shows what strait-cp knows, stops one backend
# and shows the traffic move to the other, then cleans up.
#
#   examples/mesh.sh          # builds the release binaries first (a few minutes the first time)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p strait-proxy -p strait-control-plane >/dev/null
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # $1 = url; up to 20 s
  for _ in $(seq 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; return 1
}

PROXY=$(port); XDS=$(port); REGISTRY=$(port); CP_ADMIN=$(port); PROXY_ADMIN=$(port)
A=$(port); B=$(port)
for name in a b; do mkdir -p "$work/$name"; echo "backend-$name" > "$work/$name/index.html"; done
python3 -m http.server --bind 127.0.0.1 "$A" --directory "$work/a" >/dev/null 2>&1 & pids+=($!)
python3 -m http.server --bind 127.0.0.1 "$B" --directory "$work/b" >/dev/null 2>&1 & pids+=($!)

cat > "$work/control-plane.yaml" <<YAML
listeners:
  - name: public
    address: 127.0.0.1:$PROXY
    virtual_hosts:
      - name: web
        domains: ["*"]
        routes:
          - match: { prefix: /healthz }
            direct_response: { status: 200, body: "ok from the proxy" }
          - match: { prefix: / }
            cluster: web
clusters:
  - name: web
    discovery: { registry: web }
    health_check: { protocol: http, path: /, interval: 1s, timeout: 500ms, unhealthy_threshold: 2 }
xds: { address: 127.0.0.1:$XDS }
registry: { address: 127.0.0.1:$REGISTRY }
YAML
echo "strait-cp: xDS on 127.0.0.1:$XDS, registry on 127.0.0.1:$REGISTRY, admin on 127.0.0.1:$CP_ADMIN"
STRAIT_LOG=warn "$bin/strait-cp" run --config "$work/control-plane.yaml" --admin "127.0.0.1:$CP_ADMIN" & pids+=($!)
wait_for "http://127.0.0.1:$CP_ADMIN/ready"

for backend in "$A" "$B"; do
  curl -sf -X PUT "http://127.0.0.1:$REGISTRY/v1/services/web/endpoints/127.0.0.1:$backend" \
    -H 'content-type: application/json' -d '{"ttl": "1h"}' >/dev/null
done
echo "registered backend-a (127.0.0.1:$A) and backend-b (127.0.0.1:$B) as service web"

echo "strait: following strait-cp as node demo-proxy, listening on 127.0.0.1:$PROXY"
STRAIT_LOG=warn "$bin/strait" run --xds "127.0.0.1:$XDS" --node-id demo-proxy --workers 1 \
  --admin "127.0.0.1:$PROXY_ADMIN" & pids+=($!)
wait_for "http://127.0.0.1:$PROXY/healthz"
for _ in $(seq 50); do  # until both backends passed their first health check
  [ "$(for _ in 1 2 3 4; do curl -s "http://127.0.0.1:$PROXY/"; done | sort -u | wc -l)" = 2 ] && break
  sleep 0.2
done

echo; echo "8 requests through the proxy:"
for _ in $(seq 8); do curl -s "http://127.0.0.1:$PROXY/"; done | sort | uniq -c
echo; echo "what strait-cp knows about the proxy (GET /nodes, versions sent and ACKed):"
curl -s "http://127.0.0.1:$CP_ADMIN/nodes" | python3 -c '
import json, sys
for node, status in json.load(sys.stdin)["nodes"].items():
    for kind, t in sorted(status["types"].items()):
        print("  %s %-22s sent %s acked %s nack %s" % (node, kind.rsplit(".", 1)[-1], t["sent"], t["acked"], t["nack"]))
'

echo; echo "stopping backend-b; its health checks fail and strait-cp takes it out"
kill "${pids[1]}"
for _ in $(seq 50); do
  [ "$(for _ in 1 2 3 4; do curl -s "http://127.0.0.1:$PROXY/"; done | sort -u)" = backend-a ] && break
  sleep 0.2
done
echo "8 requests through the proxy:"
for _ in $(seq 8); do curl -s "http://127.0.0.1:$PROXY/"; done | sort | uniq -c
