"""A gRPC client not written here: Python grpcio resolving `xds:///TARGET` through its own xDS
resolver (bootstrap file in GRPC_XDS_BOOTSTRAP), calling the echo service N times and printing,
as JSON, how many calls each backend (its `x-upstream` response metadata) answered.

usage: xds_client.py TARGET CALLS
"""

import collections
import json
import sys

import grpc


def main() -> None:
    target, calls = sys.argv[1], int(sys.argv[2])
    seen = collections.Counter()
    with grpc.insecure_channel(f"xds:///{target}") as channel:
        # Raw bytes both ways: no serializer, as the echo service uses no protobuf.
        unary = channel.unary_unary("/strait.test.Echo/Unary")
        for i in range(calls):
            reply, call = unary.with_call(b"ping %d" % i, timeout=20, wait_for_ready=True)
            if reply != b"ping %d" % i:
                raise SystemExit(f"echo mismatch: {reply!r}")
            backend = dict(call.initial_metadata()).get("x-upstream", "?")
            seen[backend] += 1
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
