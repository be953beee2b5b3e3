"""A TCP relay on 127.0.0.1 that holds every byte for a fixed time in each direction: a far relay, on loopback.

Run: .venv/bin/python bench/delay_relay.py --listen 2626 --to 2525 [--delay 0.005]
Prints "listening on 127.0.0.1:<port>" once ready. bench/send.py starts it between mailer and
smtp-sink so that a round trip costs 2 × delay (10 ms by default), as it does to a relay in
another data centre. Each chunk read is written out `delay` seconds after it arrived, in
order, so bandwidth is not limited: only latency is added.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys


async def carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer, each chunk `delay` seconds after it was read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not chunk:
                if not writer.is_closing():
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.write_eof()
                return
            if writer.is_closing():
                return
            writer.write(chunk)
            await writer.drain()

    delivering = asyncio.create_task(deliver())
    try:
        while chunk := await reader.read(256 * 1024):
            queue.put_nowait((loop.time() + delay, chunk))
    except OSError:
        pass
    queue.put_nowait((loop.time() + delay, b""))
    with contextlib.suppress(OSError):
        await delivering


async def serve(listen: int, target: int, delay: float) -> None:
    async def connection(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(carry(client_reader, server_writer, delay), carry(server_reader, client_writer, delay))
        for writer in (client_writer, server_writer):
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", listen)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--to", type=int, required=True, help="port on 127.0.0.1 to relay to")
    parser.add_argument("--delay", type=float, default=0.005, help="seconds added in each direction")
    args = parser.parse_args()
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.listen, args.to, args.delay))
    sys.exit(0)


if __name__ == "__main__":
    main()
