#!/usr/bin/env python3
"""Memory per idle HTTP/2 (h2c) connection of a proxy.

Opens COUNT connections to 127.0.0.1:PORT; each sends the client preface, an empty SETTINGS
and one GET on stream 1, reads frames until stream 1 has ended, and then stays open, idle.
With every connection open it waits HOLD seconds and reads VmRSS of the given PIDs again.
Prints one JSON object:

  {"opened": N, "alive": N, "rss_before_kib": A, "rss_after_kib": B, "kib_per_conn": (B-A)/N}

usage: idle_h2.py --port PORT --count N --pids "PID..." [--hold S] [--path /]

Request heads are literal HPACK fields (no Huffman), so no h2 package is needed.
"""

import argparse
import asyncio
import json
import socket
import struct

from idle import rss_kib  # benches/lib/idle.py, beside this file

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


async def open_one(port, path, conns):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    block = (
        literal(b":method", b"GET")
        + literal(b":scheme", b"http")
        + literal(b":authority", b"bench")
        + literal(b":path", path.encode())
    )
    writer.write(PREFACE + frame(4, 0, 0, b"") + frame(1, 0x5, 1, block))
    await writer.drain()
    async with asyncio.timeout(10):
        while True:
            head = await reader.readexactly(9)
            length = int.from_bytes(head[:3], "big")
            kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            await reader.readexactly(length)
            if kind == 4 and not flags & 1:
                writer.write(frame(4, 1, 0, b""))  # SETTINGS ack
            if stream == 1 and kind in (0, 1) and flags & 1:
                break  # END_STREAM on stream 1
            if kind == 3 and stream == 1 or kind == 7:
                raise RuntimeError(f"stream reset or GOAWAY (frame type {kind})")
    conns.append((reader, writer))


async def main(args):
    pids = [int(p) for p in args.pids.split()]
    before = rss_kib(pids)
    conns = []
    for start in range(0, args.count, 100):
        batch = [open_one(args.port, args.path, conns) for _ in range(min(100, args.count - start))]
        await asyncio.gather(*batch, return_exceptions=True)
    await asyncio.sleep(args.hold)
    after = rss_kib(pids)
    alive = sum(1 for reader, _ in conns if not reader.at_eof())
    for _, writer in conns:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
    per = (after - before) / max(len(conns), 1)
    print(json.dumps({"opened": len(conns), "alive": alive, "rss_before_kib": before,
                      "rss_after_kib": after, "kib_per_conn": round(per, 2)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--pids", required=True)
    parser.add_argument("--hold", type=float, default=1.0)
    parser.add_argument("--path", default="/")
    asyncio.run(main(parser.parse_args()))
