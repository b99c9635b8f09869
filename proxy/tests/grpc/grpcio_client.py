"""A gRPC client not written here (Python grpcio, gRPC's C core) calling the echo service of
strait-testkit through the proxy at ADDR: every call kind, metadata and trailers both ways, a
failing call, 1 MiB messages (flow control) and 64 calls at once on one connection. Prints
`ok` when every reply is right; exits non-zero with the reason otherwise.

usage: grpcio_client.py ADDR
"""

import concurrent.futures
import sys

import grpc

SERVICE = "/strait.test.Echo/"


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"grpcio interop: {what}")


def main() -> None:
    addr = sys.argv[1]
    with grpc.insecure_channel(addr) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        metadata = (("x-echo", "hello"),)

        unary = channel.unary_unary(SERVICE + "Unary")
        reply, call = unary.with_call(b"ping", metadata=metadata, timeout=10)
        check(reply == b"ping", f"unary reply {reply!r}")
        check(dict(call.initial_metadata()).get("x-echo") == "hello", "unary x-echo header")
        check(
            dict(call.trailing_metadata()).get("x-echo-trailer") == "hello",
            f"unary trailer {call.trailing_metadata()!r}",
        )

        try:
            unary(b"fail", timeout=10)
            check(False, "the failing call succeeded")
        except grpc.RpcError as err:
            check(err.code() == grpc.StatusCode.FAILED_PRECONDITION, f"status {err.code()}")
            check(err.details() == "told to fail", f"details {err.details()!r}")

        big = bytes(range(256)) * 4096  # 1 MiB
        reply = unary(big, timeout=20)
        check(reply == big, "1 MiB echo differs")

        server_stream = channel.unary_stream(SERVICE + "ServerStream")
        replies = list(server_stream(bytes([5]) + b"x", timeout=10))
        check(replies == [bytes([5]) + b"x"] * 5, f"server stream {replies!r}")

        client_stream = channel.stream_unary(SERVICE + "ClientStream")
        reply = client_stream(iter([b"a", b"b", b"c"]), timeout=10)
        check(reply == b"abc", f"client stream {reply!r}")

        bidi = channel.stream_stream(SERVICE + "Bidi")
        replies = list(bidi(iter([b"one", big, b"three"]), timeout=20))
        check(replies == [b"one", big, b"three"], "bidi replies differ")

        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            calls = [unary.future(b"call %d" % i, timeout=20) for i in range(64)]
            replies = [c.result() for c in calls]
        check(replies == [b"call %d" % i for i in range(64)], "concurrent replies differ")
    print("ok")


if __name__ == "__main__":
    main()
