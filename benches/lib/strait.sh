# Sourced by the benchmark scripts: the Strait config they all benchmark.
#
#   source benches/lib/strait.sh
#   strait_config FILE PORT      # one listener on 127.0.0.1:PORT proxying everything to $ORIGIN_PORT

# Writes to $1 a Strait config with one listener on 127.0.0.1:$2 that sends every request to
# the origin (set ORIGIN_PORT first), with timeouts long enough for any benchmark.
strait_config() {
  cat > "$1" <<CONF
listeners:
  - name: bench
    address: 127.0.0.1:$2
    protocol: http
    limits: { header_read_timeout: 120s, idle_timeout: 300s }
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: / }
            cluster: origin
clusters:
  - name: origin
    endpoints: ["127.0.0.1:$ORIGIN_PORT"]
CONF
}
