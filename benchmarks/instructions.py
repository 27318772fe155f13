"""Machine instructions per operation: a steady figure where CPU time is not.

On a shared machine, CPU time per message moves 5-15% between runs, more than most single
optimizations win. The number of user-space instructions a workload executes does not: run
under valgrind's cachegrind, the same code gives the same count to within 0.1%. This tool
runs a workload twice, with ``--count`` operations and with none, and divides the
difference by ``--count``, so start-up and connection set-up cancel out.

The kernel's share (system calls, the loopback TCP stack) is not counted: check with
``strace -c`` that a change does not add system calls, and confirm the direction of a change
with the CPU figures of ``run.py``.

Usage (``--src`` chooses which wsclient to measure, for an A/B against a copy)::

    python benchmarks/instructions.py round_trips --src src --src /tmp/old/src
    python benchmarks/instructions.py handshakes --count 300
    python benchmarks/instructions.py core_receive

Workloads: ``round_trips`` (``--connections`` connections, 10 round trips of 16 bytes each
per operation unit: the shape of ``concurrent_1000``), ``handshakes`` (connect and close),
``firehose`` (64-byte messages pushed by the server), ``core_receive`` and ``core_frame``
(the sans-I/O core alone: one 16-byte text message parsed, or framed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKLOADS = ("round_trips", "handshakes", "firehose", "core_receive", "core_frame")
NEEDS_PEER = {"round_trips", "handshakes", "firehose"}
ROUND_TRIPS_EACH = 10


async def _round_trips(port: int, count: int, connections: int) -> None:
    from wsclient import WebSocketClient

    async def exchange(connection: Any, rounds: int) -> None:
        send, receive = connection.send_text, connection.receive_text
        for _ in range(rounds):
            await send("x" * 16)
            await receive()

    async with WebSocketClient() as client:
        url = f"ws://127.0.0.1:{port}/echo"
        opened = [await client.connect(url, compression=None) for _ in range(connections)]
        # Warm-up, also in the run without operations: it cancels out.
        await asyncio.gather(*(exchange(connection, 2) for connection in opened))
        for _ in range(count // (connections * ROUND_TRIPS_EACH)):
            await asyncio.gather(*(exchange(c, ROUND_TRIPS_EACH) for c in opened))


async def _handshakes(port: int, count: int) -> None:
    from wsclient import WebSocketClient

    async with WebSocketClient() as client:
        url = f"ws://127.0.0.1:{port}/echo"
        for _ in range(20 + count):
            connection = await client.connect(url, compression=None)
            await connection.close()


async def _firehose(port: int, count: int) -> None:
    from wsclient import WebSocketClient

    total = 1000 + count
    async with WebSocketClient() as client:
        url = f"ws://127.0.0.1:{port}/firehose?n={total}&size=64"
        connection = await client.connect(url, compression=None, max_size=None)
        await connection.send_text("go")
        receive = connection.receive_bytes
        for _ in range(total):
            await receive()


def _core(workload: str, count: int) -> None:
    from wsclient.protocol import ClientConnection, parse_uri
    from wsclient.protocol.handshake import accept_key

    client = ClientConnection(parse_uri("ws://127.0.0.1/"))
    request = client.data_to_send().decode()
    key = re.search(r"Sec-WebSocket-Key: (\S+)", request, re.IGNORECASE)
    assert key is not None
    client.receive_data(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key.group(1)).encode() + b"\r\n\r\n"
    )
    if workload == "core_receive":
        read = memoryview(bytearray(b"\x81\x10" + b"x" * 16))
        for _ in range(count):
            client.receive_data(read)
            client.events_received()
            client.data_to_send()
    else:
        payload = b"x" * 16
        for _ in range(count):
            client.frame_now(1, payload)


def run_workload(workload: str, count: int, port: int, connections: int) -> None:
    """The body that runs under valgrind (``--run``)."""
    if workload == "round_trips":
        asyncio.run(_round_trips(port, count, connections))
    elif workload == "handshakes":
        asyncio.run(_handshakes(port, count))
    elif workload == "firehose":
        asyncio.run(_firehose(port, count))
    else:
        _core(workload, count)


def instructions(src: str, workload: str, count: int, port: int, connections: int) -> int:
    """User-space instructions of one run of the workload with ``count`` operations."""
    command = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--run",
        workload,
        "--count",
        str(count),
        "--port",
        str(port),
        "--connections",
        str(connections),
    ]
    environment = dict(os.environ, PYTHONPATH=str(Path(src).resolve()))
    finished = subprocess.run(command, capture_output=True, text=True, env=environment)
    found = re.search(r"I\s+refs:\s+([\d,]+)", finished.stderr)
    if finished.returncode != 0 or found is None:
        raise SystemExit(f"the {workload} run failed:\n{finished.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def _start_peer() -> tuple[subprocess.Popen[str], int]:
    peer = subprocess.Popen(
        [sys.executable, str(HERE / "server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert peer.stdout is not None
    ports = json.loads(peer.stdout.readline())
    return peer, int(ports["ws"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument(
        "--src", action="append", help="directory holding the wsclient package (repeatable)"
    )
    parser.add_argument("--count", type=int, default=None, help="operations in the timed run")
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    defaults = {"round_trips": 15_000, "handshakes": 300, "firehose": 100_000}
    count = options.count if options.count is not None else defaults.get(options.workload, 100_000)
    if options.run:
        run_workload(options.workload, count, options.port, options.connections)
        return
    if options.workload == "round_trips":
        unit = options.connections * ROUND_TRIPS_EACH
        count = max(unit, count // unit * unit)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (Debian: apt install valgrind)")
    peer, port = _start_peer() if options.workload in NEEDS_PEER else (None, 0)
    try:
        for src in options.src or [str(HERE.parent / "src")]:
            idle = instructions(src, options.workload, 0, port, options.connections)
            busy = instructions(src, options.workload, count, port, options.connections)
            print(f"{src}: {options.workload}: {(busy - idle) / count:,.0f} instructions per op")
    finally:
        if peer is not None:
            peer.terminate()
            peer.wait()


if __name__ == "__main__":
    main()
