#!/usr/bin/env python3
"""hook_sink.py - a webhook endpoint for benchmarks: takes ringpost's event
posts (HTTP/1.1, keep-alive), answers 200 at once, and counts requests and
events. Prints "port=N" when it listens; on SIGTERM writes
{"requests", "events", "bytes"} as JSON to --out and exits.

  hook_sink.py --out FILE [--port N]

Counting events: each is one JSON object with an "event" member; the body
is not parsed (a count of '"event":' is exact for ringpost's bodies and
costs the sink little, so it measures ringpost, not the receiver).
"""
import argparse
import asyncio
import json
import signal
import sys

counts = {"requests": 0, "events": 0, "bytes": 0}


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    n = int(line[15:])
            body = await reader.readexactly(n)
            counts["requests"] += 1
            counts["events"] += body.count(b'"event":')
            counts["bytes"] += n
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args(argv)
    server = await asyncio.start_server(serve, "127.0.0.1", a.port, limit=1 << 22)
    print(f"port={server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()
    with open(a.out, "w") as f:
        json.dump(counts, f)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
