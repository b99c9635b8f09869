#!/usr/bin/env python3
"""Memory per idle keep-alive connection of a proxy (benches/compare.sh, case `idle`).

Opens COUNT connections to 127.0.0.1:PORT; each sends one HTTP/1.1 GET, reads the whole
response and then stays open, idle. With every connection open it waits HOLD seconds and
reads VmRSS of the given PIDs again. Prints one JSON object:

  {"opened": N, "alive": N, "rss_before_kib": A, "rss_after_kib": B, "kib_per_conn": (B-A)/N}

`alive` counts connections the proxy had not closed when RSS was read (a proxy that closes
idle connections early would otherwise look cheap). Connections are closed with SO_LINGER 0
(RST), so repeated runs leave no TIME_WAIT sockets behind to exhaust local ports.
"""

import argparse
import asyncio
import json
import resource
import socket
import struct
import sys


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


async def open_one(port, path, sem, conns):
    async with sem:
        # A proxy at its connection limit leaves the connection in its accept queue unanswered.
        async with asyncio.timeout(10):
            await request_one(port, path, conns)


async def request_one(port, path, conns):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response: {head[:40]!r}")
    await reader.readexactly(length)
    conns.append((reader, writer))


async def main(args):
    pids = [int(p) for p in args.pids.split()]
    before = rss_kib(pids)
    sem = asyncio.Semaphore(args.concurrency)
    conns = []
    results = await asyncio.gather(
        *(open_one(args.port, args.path, sem, conns) for _ in range(args.count)),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        print(f"idle.py: {len(failures)} connections failed, first: {failures[0]!r}", file=sys.stderr)
    await asyncio.sleep(args.hold)
    after = rss_kib(pids)
    # A connection the proxy closed has seen EOF (or a reset) on its reader by now.
    alive = sum(1 for reader, _ in conns if not reader.at_eof() and reader.exception() is None)
    for _, writer in conns:
        sock = writer.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        writer.transport.abort()
    opened = len(conns)
    print(json.dumps({
        "opened": opened,
        "alive": alive,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_conn": (after - before) / opened if opened else None,
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--hold", type=float, default=2.0)
    parser.add_argument("--pids", required=True, help="space-separated PIDs whose VmRSS is summed")
    args = parser.parse_args()
    want = args.count + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    asyncio.run(main(args))
