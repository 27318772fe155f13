"""Runs one scenario with one client in this process and prints one JSON line.

The runner (``run.py``) starts this once per client, scenario and round. Run it by hand to
profile one case (``--profile out.prof`` wraps the timed section in cProfile)::

    python benchmarks/clients.py --client wsclient-async --scenario rt_text16 \\
        --ws-port 8765 --raw-port 8766 --raw-firehose-port 8767

Client CPU time is user+sys from ``resource.getrusage(RUSAGE_SELF)`` (every thread of this
process) around the timed section only; the server's CPU over the same section comes from
``/proc/<pid>/task/*/schedstat``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import json
import os
import resource
import socket
import sys
import time
import traceback
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from scenarios import (
    CLIENT_BY_NAME,
    IDLE_SETTLE_SECONDS,
    PIPELINE_DEPTH,
    ROUND_TRIPS_EACH,
    SCENARIO_BY_NAME,
    Scenario,
    json_documents,
)

HOST = "127.0.0.1"
_T = TypeVar("_T")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# Measurement ----------------------------------------------------------------------------------


def _server_cpu_seconds(pid: int | None) -> float | None:
    """CPU time of every thread of ``pid`` so far (ns precision, from schedstat)."""
    if pid is None:
        return None
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as file:
                total += int(file.read().split()[0])
    except OSError:
        return None
    return total / 1e9


def _rss_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * _PAGE_SIZE


def _cpu_seconds() -> tuple[float, int]:
    """User+sys CPU seconds of every thread, and context switches (voluntary+involuntary)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw + usage.ru_nivcsw


class Meter:
    """Wall, client CPU and server CPU around the timed section (optionally profiled)."""

    def __init__(
        self, server_pid: int | None, profile_path: str | None, profile_timer: str = "wall"
    ) -> None:
        self.server_pid = server_pid
        self.profile_path = profile_path
        self.profile_timer = profile_timer
        self.profiler: Any = None
        self.extra: dict[str, Any] = {}

    def start(self) -> None:
        if self.profile_path:
            import cProfile

            # Wall time by default: process_time costs a system call per profiled call and
            # swamps the profile. With wall time, run the peer on another CPU, or the peer's
            # time is charged to whatever client call it preempted.
            timer = time.process_time if self.profile_timer == "cpu" else time.perf_counter
            self.profiler = cProfile.Profile(timer)
        self.server0 = _server_cpu_seconds(self.server_pid)
        self.cpu0, self.switches0 = _cpu_seconds()
        if self.profiler is not None:
            self.profiler.enable()
        self.wall0 = time.perf_counter()

    def stop(self) -> None:
        self.wall1 = time.perf_counter()
        if self.profiler is not None:
            self.profiler.disable()
        self.cpu1, self.switches1 = _cpu_seconds()
        self.server1 = _server_cpu_seconds(self.server_pid)
        if self.profiler is not None:
            self.profiler.dump_stats(self.profile_path)

    def result(self, count: int, size: int, latencies: list[int] | None = None) -> dict[str, Any]:
        wall = self.wall1 - self.wall0
        cpu = self.cpu1 - self.cpu0
        out: dict[str, Any] = {
            "count": count,
            "wall_s": wall,
            "cpu_s": cpu,
            "cpu_us_per_op": cpu / count * 1e6,
            "wall_us_per_op": wall / count * 1e6,
            "ops_per_s": count / wall,
            "mb_per_s": count * size / wall / 1e6 if size else None,
            "client_cpu_share": cpu / wall,
            "switches_per_op": (self.switches1 - self.switches0) / count,
        }
        if self.server0 is not None and self.server1 is not None:
            server = self.server1 - self.server0
            out["server_cpu_s"] = server
            out["server_cpu_us_per_op"] = server / count * 1e6
            out["server_cpu_share"] = server / wall
        if latencies:
            ordered = sorted(latencies)
            out["p50_us"] = ordered[len(ordered) // 2] / 1e3
            out["p99_us"] = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1e3
        out.update(self.extra)
        return out


class Conn:
    """The five operations a scenario needs, bound to one library's connection.

    Where the library's own methods fit, they are used as they are (bound methods), so the
    benchmark adds no wrapper call. A send may return ``None`` (picows sends without
    waiting) or something to wait for.
    """

    __slots__ = ("send_text", "recv_text", "send_bytes", "recv_bytes", "close", "deflate_ok")

    def __init__(
        self,
        send_text: Callable[..., Any],
        recv_text: Callable[..., Any],
        send_bytes: Callable[..., Any],
        recv_bytes: Callable[..., Any],
        close: Callable[..., Any],
        deflate_ok: bool = False,
    ) -> None:
        self.send_text = send_text
        self.recv_text = recv_text
        self.send_bytes = send_bytes
        self.recv_bytes = recv_bytes
        self.close = close
        self.deflate_ok = deflate_ok


def _has_deflate(headers: Any) -> bool:
    if hasattr(headers, "items"):
        headers = headers.items()
    return any(
        name.lower() == "sec-websocket-extensions" and "permessage-deflate" in value
        for name, value in headers
    )


# Async adapters -------------------------------------------------------------------------------


class AsyncAdapter:
    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def open(self, url: str, deflate: bool = False) -> Conn:
        raise NotImplementedError


class WsclientAsync(AsyncAdapter):
    async def start(self) -> None:
        from wsclient import WebSocketClient

        self.client = WebSocketClient()

    async def open(self, url: str, deflate: bool = False) -> Conn:
        conn = await self.client.connect(
            url, compression="deflate" if deflate else None, max_size=None
        )
        return Conn(
            conn.send_text,
            conn.receive_text,
            conn.send_bytes,
            conn.receive_bytes,
            conn.close,
            deflate and _has_deflate(conn.response_headers),
        )


class WebsocketsAsync(AsyncAdapter):
    async def open(self, url: str, deflate: bool = False) -> Conn:
        from websockets.asyncio.client import connect

        ws = await connect(url, compression="deflate" if deflate else None, max_size=None)
        assert ws.response is not None
        return Conn(
            ws.send,
            ws.recv,
            ws.send,
            ws.recv,
            ws.close,
            deflate and _has_deflate(ws.response.headers),
        )


class Aiohttp(AsyncAdapter):
    async def start(self) -> None:
        import aiohttp

        # limit=0: every WebSocket holds its connection, and the default caps them at 100.
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def stop(self) -> None:
        await self.session.close()

    async def open(self, url: str, deflate: bool = False) -> Conn:
        ws = await self.session.ws_connect(url, compress=15 if deflate else 0, max_msg_size=0)
        return Conn(
            ws.send_str,
            ws.receive_str,
            ws.send_bytes,
            ws.receive_bytes,
            ws.close,
            deflate and ws.compress > 0,
        )


class Aiosonic(AsyncAdapter):
    async def start(self) -> None:
        from aiosonic.web_socket_client import WebSocketClient

        self.client = WebSocketClient()

    async def open(self, url: str, deflate: bool = False) -> Conn:
        conn = await self.client.connect(url, max_msg_size=None)
        return Conn(
            conn.send_text, conn.receive_text, conn.send_bytes, conn.receive_bytes, conn.close
        )


class Picows(AsyncAdapter):
    """picows delivers frames to a callback; a small queue turns them into awaitable receives."""

    async def start(self) -> None:
        from picows import WSCloseCode, WSListener, WSMsgType, ws_connect

        text, binary, continuation, close = (
            WSMsgType.TEXT,
            WSMsgType.BINARY,
            WSMsgType.CONTINUATION,
            WSMsgType.CLOSE,
        )

        class Listener(WSListener):  # type: ignore[misc]
            def __init__(self) -> None:
                self.queue: deque[Any] = deque()
                self.waiter: asyncio.Future[None] | None = None
                self.parts: list[bytes] | None = None
                self.text = False
                self.transport: Any = None

            def on_ws_connected(self, transport: Any) -> None:
                self.transport = transport

            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                msg_type = frame.msg_type
                if frame.fin and self.parts is None:
                    if msg_type == text:
                        self._put(frame.get_payload_as_utf8_text())
                    elif msg_type == binary:
                        self._put(frame.get_payload_as_bytes())
                    elif msg_type == close:
                        transport.send_close(frame.get_close_code(), frame.get_close_message())
                        transport.disconnect()
                elif msg_type == text or msg_type == binary:
                    self.text = msg_type == text
                    self.parts = [frame.get_payload_as_bytes()]
                elif msg_type == continuation and self.parts is not None:
                    self.parts.append(frame.get_payload_as_bytes())
                    if frame.fin:
                        data = b"".join(self.parts)
                        self.parts = None
                        self._put(data.decode() if self.text else data)

            def on_ws_disconnected(self, transport: Any) -> None:
                self._wake()

            def _put(self, item: Any) -> None:
                self.queue.append(item)
                self._wake()

            def _wake(self) -> None:
                waiter = self.waiter
                if waiter is not None:
                    self.waiter = None
                    if not waiter.done():
                        waiter.set_result(None)

            async def recv(self) -> Any:
                queue = self.queue
                if not queue:
                    if self.transport.is_disconnected:
                        raise ConnectionError("disconnected")
                    waiter = self.waiter = asyncio.get_running_loop().create_future()
                    await waiter
                    if not queue:
                        raise ConnectionError("disconnected")
                return queue.popleft()

            def send_text(self, message: str) -> None:
                self.transport.send(text, message)

            def send_bytes(self, message: bytes) -> None:
                self.transport.send(binary, message)

            async def close(self) -> None:
                self.transport.send_close(WSCloseCode.OK)
                await self.transport.wait_disconnected()

        self.listener_class = Listener
        self.ws_connect = ws_connect

    async def open(self, url: str, deflate: bool = False) -> Conn:
        _, listener = await self.ws_connect(
            self.listener_class, url, max_frame_size=64 * 1024 * 1024
        )
        return Conn(
            listener.send_text, listener.recv, listener.send_bytes, listener.recv, listener.close
        )


ASYNC_ADAPTERS: dict[str, type[AsyncAdapter]] = {
    "wsclient-async": WsclientAsync,
    "websockets-async": WebsocketsAsync,
    "aiohttp": Aiohttp,
    "aiosonic": Aiosonic,
    "picows": Picows,
}


# Sync adapters --------------------------------------------------------------------------------


class SyncAdapter:
    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def open(self, url: str, deflate: bool = False) -> Conn:
        raise NotImplementedError


class WsclientSync(SyncAdapter):
    def start(self) -> None:
        from wsclient.sync import WebSocketClient

        self.client = WebSocketClient()

    def open(self, url: str, deflate: bool = False) -> Conn:
        conn = self.client.connect(url, compression="deflate" if deflate else None, max_size=None)
        return Conn(
            conn.send_text,
            conn.receive_text,
            conn.send_bytes,
            conn.receive_bytes,
            conn.close,
            deflate and _has_deflate(conn.response_headers),
        )


class WebsocketsSync(SyncAdapter):
    def open(self, url: str, deflate: bool = False) -> Conn:
        from websockets.sync.client import connect

        # Entered as websockets asks (never exited: close() ends the connection).
        ws = connect(url, compression="deflate" if deflate else None, max_size=None).__enter__()
        assert ws.response is not None
        return Conn(
            ws.send,
            ws.recv,
            ws.send,
            ws.recv,
            ws.close,
            deflate and _has_deflate(ws.response.headers),
        )


class WebsocketClient(SyncAdapter):
    def open(self, url: str, deflate: bool = False) -> Conn:
        import websocket

        ws = websocket.create_connection(url)
        return Conn(ws.send, ws.recv, ws.send_binary, ws.recv, ws.close)


SYNC_ADAPTERS: dict[str, type[SyncAdapter]] = {
    "wsclient-sync": WsclientSync,
    "websockets-sync": WebsocketsSync,
    "websocket-client": WebsocketClient,
}


# Async scenarios ------------------------------------------------------------------------------


class Context:
    """What a scenario gets: where to connect, how many operations, the meter."""

    def __init__(self, args: argparse.Namespace, scenario: Scenario, meter: Meter) -> None:
        self.scenario = scenario
        self.count = args.count or (scenario.quick if args.quick else scenario.full)
        self.meter = meter
        self.ws = f"ws://{HOST}:{args.ws_port}"
        self.ws_port = args.ws_port
        self.raw_port = args.raw_port
        self.raw_firehose_port = args.raw_firehose_port

    def firehose_url(self, count: int) -> str:
        return f"{self.ws}/firehose?n={count}&size={self.scenario.size}"


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


# Connections opened at once by the many-connection scenarios (a listen backlog is finite).
_OPEN_AT_ONCE = 100


async def _a_many(make: Callable[[], Awaitable[_T]], count: int) -> list[_T]:
    """``count`` results of ``make()``, at most ``_OPEN_AT_ONCE`` of them running at once."""
    limit = asyncio.Semaphore(_OPEN_AT_ONCE)

    async def one() -> _T:
        async with limit:
            return await make()

    return await asyncio.gather(*(one() for _ in range(count)))


def _rss_kib_per(rss_before: int, count: int) -> float:
    """Resident memory added since ``rss_before``, per connection, after a collection."""
    gc.collect()
    return (_rss_bytes() - rss_before) / count / 1024


async def _a_round_trips(conn: Conn, message: str, count: int, latencies: list[int] | None) -> str:
    send, recv = conn.send_text, conn.recv_text
    clock = time.perf_counter_ns
    received = ""
    for index in range(count):
        started = clock()
        pending = send(message)
        if pending is not None:
            await pending
        received = await recv()
        if latencies is not None:
            latencies[index] = clock() - started
    return received


async def _a_echo_bytes(conn: Conn, payload: bytes, count: int, depth: int) -> bytes:
    send, recv = conn.send_bytes, conn.recv_bytes
    received = b""
    for _ in range(count // depth):
        for _ in range(depth):
            pending = send(payload)
            if pending is not None:
                await pending
        for _ in range(depth):
            received = await recv()
    return received


async def _a_json(conn: Conn, documents: list[Any], count: int) -> Any:
    send, recv = conn.send_text, conn.recv_text
    dumps, loads = json.dumps, json.loads
    received = None
    mask = len(documents) - 1
    for index in range(count):
        pending = send(dumps(documents[index & mask]))
        if pending is not None:
            await pending
        received = loads(await recv())
    return received


async def run_async(adapter: AsyncAdapter, ctx: Context) -> dict[str, Any]:
    await adapter.start()
    try:
        return await _run_async_scenario(adapter, ctx)
    finally:
        await adapter.stop()


async def _run_async_scenario(adapter: AsyncAdapter, ctx: Context) -> dict[str, Any]:
    scenario, count, meter = ctx.scenario, ctx.count, ctx.meter
    name = scenario.name
    echo_url = f"{ctx.ws}/echo"
    if name == "rt_text16":
        conn = await adapter.open(echo_url)
        message = "x" * 16
        await _a_round_trips(conn, message, min(count // 10, 1000), None)
        latencies = [0] * count
        meter.start()
        received = await _a_round_trips(conn, message, count, latencies)
        meter.stop()
        _check(received == message, "echo mismatch")
        await conn.close()
        return meter.result(count, scenario.size, latencies)
    if name in ("pipelined_1k", "large_1m"):
        depth = PIPELINE_DEPTH if name == "pipelined_1k" else 1
        conn = await adapter.open(echo_url)
        payload = os.urandom(scenario.size)
        await _a_echo_bytes(conn, payload, max(depth, min(count // 10, depth * 10)), depth)
        meter.start()
        received = await _a_echo_bytes(conn, payload, count, depth)
        meter.stop()
        _check(received == payload, "echo mismatch")
        await conn.close()
        return meter.result(count, scenario.size)
    if name in ("firehose_64", "firehose_16k"):
        warmup = max(count // 10, 100)
        for rounds, timed in ((warmup, False), (count, True)):
            conn = await adapter.open(ctx.firehose_url(rounds))
            recv = conn.recv_bytes
            if timed:
                meter.start()
            pending = conn.send_text("go")
            if pending is not None:
                await pending
            data = b""
            for _ in range(rounds):
                data = await recv()
            if timed:
                meter.stop()
            _check(len(data) == scenario.size, "wrong message size")
            await conn.close()
        return meter.result(count, scenario.size)
    if name == "concurrent_1000":
        message = "x" * 16
        first = await adapter.open(echo_url)
        await _a_round_trips(first, message, 10, None)
        gc.collect()
        rss_before = _rss_bytes()
        conns = await _a_many(lambda: adapter.open(echo_url), count)
        meter.extra["rss_per_conn_kib"] = _rss_kib_per(rss_before, count)
        meter.start()
        results = await asyncio.gather(
            *(_a_round_trips(conn, message, ROUND_TRIPS_EACH, None) for conn in conns)
        )
        meter.stop()
        _check(all(received == message for received in results), "echo mismatch")
        await asyncio.gather(*(conn.close() for conn in conns))
        await first.close()
        return meter.result(count * ROUND_TRIPS_EACH, scenario.size)
    if name == "idle_1000":
        message = "x" * 16
        first = await adapter.open(echo_url)
        await _a_round_trips(first, message, 10, None)
        gc.collect()
        rss_before = _rss_bytes()

        async def open_and_use() -> Conn:
            conn = await adapter.open(echo_url)
            _check(await _a_round_trips(conn, message, 1, None) == message, "echo mismatch")
            return conn

        meter.start()
        conns = await _a_many(open_and_use, count)
        meter.stop()
        await asyncio.sleep(IDLE_SETTLE_SECONDS)
        meter.extra["rss_per_conn_kib"] = _rss_kib_per(rss_before, count)
        await asyncio.gather(*(conn.close() for conn in conns))
        await first.close()
        return meter.result(count, scenario.size)
    if name == "handshakes":
        for _ in range(min(20, count)):
            conn = await adapter.open(echo_url)
            await conn.close()
        meter.start()
        for _ in range(count):
            conn = await adapter.open(echo_url)
            await conn.close()
        meter.stop()
        return meter.result(count, 0)
    if name in ("json_2k", "json_2k_deflate"):
        deflate = name == "json_2k_deflate"
        conn = await adapter.open(f"{ctx.ws}/deflate" if deflate else echo_url, deflate=deflate)
        if deflate:
            _check(conn.deflate_ok, "permessage-deflate was not negotiated")
        documents = json_documents()
        await _a_json(conn, documents, min(count // 10, 500))
        meter.start()
        received = await _a_json(conn, documents, count)
        meter.stop()
        _check(received == documents[(count - 1) & (len(documents) - 1)], "echo mismatch")
        await conn.close()
        return meter.result(count, scenario.size)
    raise ValueError(f"unknown scenario {name}")


# Sync scenarios -------------------------------------------------------------------------------


def _s_round_trips(conn: Conn, message: str, count: int, latencies: list[int] | None) -> str:
    send, recv = conn.send_text, conn.recv_text
    clock = time.perf_counter_ns
    received = ""
    for index in range(count):
        started = clock()
        send(message)
        received = recv()
        if latencies is not None:
            latencies[index] = clock() - started
    return received


def _s_echo_bytes(conn: Conn, payload: bytes, count: int, depth: int) -> bytes:
    send, recv = conn.send_bytes, conn.recv_bytes
    received = b""
    for _ in range(count // depth):
        for _ in range(depth):
            send(payload)
        for _ in range(depth):
            received = recv()
    return received


def _s_json(conn: Conn, documents: list[Any], count: int) -> Any:
    send, recv = conn.send_text, conn.recv_text
    dumps, loads = json.dumps, json.loads
    received = None
    mask = len(documents) - 1
    for index in range(count):
        send(dumps(documents[index & mask]))
        received = loads(recv())
    return received


def run_sync(adapter: SyncAdapter, ctx: Context) -> dict[str, Any]:
    adapter.start()
    try:
        return _run_sync_scenario(adapter, ctx)
    finally:
        adapter.stop()


def _run_sync_scenario(adapter: SyncAdapter, ctx: Context) -> dict[str, Any]:
    scenario, count, meter = ctx.scenario, ctx.count, ctx.meter
    name = scenario.name
    echo_url = f"{ctx.ws}/echo"
    if name == "rt_text16":
        conn = adapter.open(echo_url)
        message = "x" * 16
        _s_round_trips(conn, message, min(count // 10, 1000), None)
        latencies = [0] * count
        meter.start()
        received = _s_round_trips(conn, message, count, latencies)
        meter.stop()
        _check(received == message, "echo mismatch")
        conn.close()
        return meter.result(count, scenario.size, latencies)
    if name in ("pipelined_1k", "large_1m"):
        depth = PIPELINE_DEPTH if name == "pipelined_1k" else 1
        conn = adapter.open(echo_url)
        payload = os.urandom(scenario.size)
        _s_echo_bytes(conn, payload, max(depth, min(count // 10, depth * 10)), depth)
        meter.start()
        received = _s_echo_bytes(conn, payload, count, depth)
        meter.stop()
        _check(received == payload, "echo mismatch")
        conn.close()
        return meter.result(count, scenario.size)
    if name in ("firehose_64", "firehose_16k"):
        warmup = max(count // 10, 100)
        for rounds, timed in ((warmup, False), (count, True)):
            conn = adapter.open(ctx.firehose_url(rounds))
            recv = conn.recv_bytes
            if timed:
                meter.start()
            conn.send_text("go")
            data = b""
            for _ in range(rounds):
                data = recv()
            if timed:
                meter.stop()
            _check(len(data) == scenario.size, "wrong message size")
            conn.close()
        return meter.result(count, scenario.size)
    if name == "idle_1000":
        message = "x" * 16
        first = adapter.open(echo_url)
        _s_round_trips(first, message, 10, None)
        gc.collect()
        rss_before = _rss_bytes()
        conns = []
        meter.start()
        for _ in range(count):
            conn = adapter.open(echo_url)
            _check(_s_round_trips(conn, message, 1, None) == message, "echo mismatch")
            conns.append(conn)
        meter.stop()
        time.sleep(IDLE_SETTLE_SECONDS)
        meter.extra["rss_per_conn_kib"] = _rss_kib_per(rss_before, count)
        for conn in conns:
            conn.close()
        first.close()
        return meter.result(count, scenario.size)
    if name == "handshakes":
        for _ in range(min(20, count)):
            adapter.open(echo_url).close()
        meter.start()
        for _ in range(count):
            conn = adapter.open(echo_url)
            conn.close()
        meter.stop()
        return meter.result(count, 0)
    if name in ("json_2k", "json_2k_deflate"):
        deflate = name == "json_2k_deflate"
        conn = adapter.open(f"{ctx.ws}/deflate" if deflate else echo_url, deflate=deflate)
        if deflate:
            _check(conn.deflate_ok, "permessage-deflate was not negotiated")
        documents = json_documents()
        _s_json(conn, documents, min(count // 10, 500))
        meter.start()
        received = _s_json(conn, documents, count)
        meter.stop()
        _check(received == documents[(count - 1) & (len(documents) - 1)], "echo mismatch")
        conn.close()
        return meter.result(count, scenario.size)
    raise ValueError(f"unknown scenario {name} for a sync client")


# Raw TCP baselines ----------------------------------------------------------------------------
# The same payloads and the same request/response pattern, without any framing: the ceiling a
# Python client on this machine can approach. Each receive returns a fresh bytes object of the
# expected length, as a client handing messages to an application must.

_raw_receive_buffer = memoryview(bytearray(256 * 1024))

# The handshake and deflate scenarios of the baselines do what any WebSocket client must,
# with nothing more: an upgrade request and a check of the 101 response and its accept key,
# then a Close frame each way and the server's end of the TCP connection; for deflate, zlib
# with the settings of wsclient and websockets (level 6, memLevel 5, 15-bit window) on the
# raw echo, the sync flush tail removed and put back as RFC 7692 says. No header parsing,
# no timeouts, no validation beyond that: a floor, not a client.
_RAW_CLOSE_FRAME = bytes((0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8))  # code 1000, zero mask key
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SYNC_FLUSH_TAIL = b"\x00\x00\xff\xff"


def _raw_upgrade_request(port: int) -> tuple[bytes, bytes]:
    """An upgrade request for /echo, and the Sec-WebSocket-Accept value it must get back."""
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
    request = (
        b"GET /echo HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ) % (HOST.encode(), port, key)
    return request, accept


def _check_upgrade(head: bytes, accept: bytes) -> None:
    _check(head.startswith(b"HTTP/1.1 101") and accept in head, "upgrade refused")


def _check_close_frame(frame: bytes) -> None:
    _check(frame[:2] == b"\x88\x02", "no Close frame from the server")


_RawDeflate = tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]


def _raw_deflate() -> _RawDeflate:
    """compress and decompress functions for one connection (context takeover on)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15, 5)
    decompressor = zlib.decompressobj(-15)
    sync_flush = zlib.Z_SYNC_FLUSH

    def compress(data: bytes) -> bytes:
        return (compressor.compress(data) + compressor.flush(sync_flush))[:-4]

    def decompress(data: bytes) -> bytes:
        return decompressor.decompress(data + _SYNC_FLUSH_TAIL)

    return compress, decompress


class _RawProtocol(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.head = b""
        self.position = 0
        self.buffered = 0
        self.needed = 0
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return _raw_receive_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.chunks.append(bytes(_raw_receive_buffer[:nbytes]))
        self.buffered += nbytes
        waiter = self.waiter
        if waiter is not None and self.buffered >= self.needed:
            self.waiter = None
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError("connection lost"))

    async def receive(self, size: int) -> bytes:
        if self.buffered < size:
            self.needed = size
            waiter = self.waiter = asyncio.get_running_loop().create_future()
            await waiter
        self.buffered -= size
        head, position = self.head, self.position
        available = len(head) - position
        if available >= size:
            self.position = position + size
            return head[position : position + size]
        parts = [head[position:]] if available else []
        needed = size - available
        chunks = self.chunks
        while True:
            chunk = chunks.popleft()
            if len(chunk) >= needed:
                parts.append(chunk[:needed])
                self.head, self.position = chunk, needed
                break
            parts.append(chunk)
            needed -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


async def _raw_open(port: int) -> _RawProtocol:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(_RawProtocol, HOST, port)
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return protocol


async def _raw_close(protocol: _RawProtocol) -> None:
    assert protocol.transport is not None
    protocol.transport.close()
    await protocol.lost


async def _ra_round_trips(
    protocol: _RawProtocol, message: str, count: int, latencies: list[int] | None
) -> str:
    send, receive = protocol.send, protocol.receive
    size = len(message.encode())
    clock = time.perf_counter_ns
    received = ""
    for index in range(count):
        started = clock()
        send(message.encode())
        received = (await receive(size)).decode()
        if latencies is not None:
            latencies[index] = clock() - started
    return received


async def _ra_echo_bytes(protocol: _RawProtocol, payload: bytes, count: int, depth: int) -> bytes:
    send, receive = protocol.send, protocol.receive
    size = len(payload)
    received = b""
    for _ in range(count // depth):
        for _ in range(depth):
            send(payload)
        for _ in range(depth):
            received = await receive(size)
    return received


async def _ra_json(
    protocol: _RawProtocol, documents: list[Any], count: int, deflate: _RawDeflate | None
) -> Any:
    send, receive = protocol.send, protocol.receive
    dumps, loads = json.dumps, json.loads
    compress, decompress = deflate or (None, None)
    received = None
    mask = len(documents) - 1
    for index in range(count):
        encoded = dumps(documents[index & mask]).encode()
        if compress is not None:
            encoded = compress(encoded)
        send(encoded)
        data = await receive(len(encoded))
        received = loads((data if decompress is None else decompress(data)).decode())
    return received


async def _ra_handshake(port: int) -> None:
    protocol = await _raw_open(port)
    request, accept = _raw_upgrade_request(port)
    protocol.send(request)
    head = b""
    while b"\r\n\r\n" not in head:
        head += await protocol.receive(1)
        if protocol.buffered:
            head += await protocol.receive(protocol.buffered)
    _check_upgrade(head, accept)
    protocol.send(_RAW_CLOSE_FRAME)
    _check_close_frame(await protocol.receive(4))
    await protocol.lost  # the server closes the TCP connection first


async def run_raw_async(ctx: Context) -> dict[str, Any]:
    scenario, count, meter = ctx.scenario, ctx.count, ctx.meter
    name = scenario.name
    if name == "rt_text16":
        protocol = await _raw_open(ctx.raw_port)
        message = "x" * 16
        await _ra_round_trips(protocol, message, min(count // 10, 1000), None)
        latencies = [0] * count
        meter.start()
        received = await _ra_round_trips(protocol, message, count, latencies)
        meter.stop()
        _check(received == message, "echo mismatch")
        await _raw_close(protocol)
        return meter.result(count, scenario.size, latencies)
    if name in ("pipelined_1k", "large_1m"):
        depth = PIPELINE_DEPTH if name == "pipelined_1k" else 1
        protocol = await _raw_open(ctx.raw_port)
        payload = os.urandom(scenario.size)
        await _ra_echo_bytes(protocol, payload, max(depth, min(count // 10, depth * 10)), depth)
        meter.start()
        received = await _ra_echo_bytes(protocol, payload, count, depth)
        meter.stop()
        _check(received == payload, "echo mismatch")
        await _raw_close(protocol)
        return meter.result(count, scenario.size)
    if name in ("firehose_64", "firehose_16k"):
        size = scenario.size
        for rounds, timed in ((max(count // 10, 100), False), (count, True)):
            protocol = await _raw_open(ctx.raw_firehose_port)
            receive = protocol.receive
            if timed:
                meter.start()
            protocol.send(f"{rounds} {size}\n".encode())
            data = b""
            for _ in range(rounds):
                data = await receive(size)
            if timed:
                meter.stop()
            _check(len(data) == size, "wrong message size")
            await _raw_close(protocol)
        return meter.result(count, size)
    if name == "concurrent_1000":
        message = "x" * 16
        first = await _raw_open(ctx.raw_port)
        await _ra_round_trips(first, message, 10, None)
        gc.collect()
        rss_before = _rss_bytes()
        protocols = await _a_many(lambda: _raw_open(ctx.raw_port), count)
        meter.extra["rss_per_conn_kib"] = _rss_kib_per(rss_before, count)
        meter.start()
        results = await asyncio.gather(
            *(_ra_round_trips(protocol, message, ROUND_TRIPS_EACH, None) for protocol in protocols)
        )
        meter.stop()
        _check(all(received == message for received in results), "echo mismatch")
        await asyncio.gather(*(_raw_close(protocol) for protocol in protocols))
        await _raw_close(first)
        return meter.result(count * ROUND_TRIPS_EACH, scenario.size)
    if name == "idle_1000":
        message = "x" * 16
        first = await _raw_open(ctx.raw_port)
        await _ra_round_trips(first, message, 10, None)
        gc.collect()
        rss_before = _rss_bytes()

        async def open_and_use() -> _RawProtocol:
            protocol = await _raw_open(ctx.raw_port)
            received = await _ra_round_trips(protocol, message, 1, None)
            _check(received == message, "echo mismatch")
            return protocol

        meter.start()
        protocols = await _a_many(open_and_use, count)
        meter.stop()
        await asyncio.sleep(IDLE_SETTLE_SECONDS)
        meter.extra["rss_per_conn_kib"] = _rss_kib_per(rss_before, count)
        await asyncio.gather(*(_raw_close(protocol) for protocol in protocols))
        await _raw_close(first)
        return meter.result(count, scenario.size)
    if name == "handshakes":
        for _ in range(min(20, count)):
            await _ra_handshake(ctx.ws_port)
        meter.start()
        for _ in range(count):
            await _ra_handshake(ctx.ws_port)
        meter.stop()
        return meter.result(count, 0)
    if name in ("json_2k", "json_2k_deflate"):
        protocol = await _raw_open(ctx.raw_port)
        documents = json_documents()
        deflate = _raw_deflate() if name == "json_2k_deflate" else None
        await _ra_json(protocol, documents, min(count // 10, 500), deflate)
        meter.start()
        received = await _ra_json(protocol, documents, count, deflate)
        meter.stop()
        _check(received == documents[(count - 1) & (len(documents) - 1)], "echo mismatch")
        await _raw_close(protocol)
        return meter.result(count, scenario.size)
    raise ValueError(f"unknown scenario {name} for raw-asyncio")


# Receive buffers of the blocking-socket baseline, lent while they hold unread bytes: an
# idle socket holds none, and a connect does not pay for zero-filling 2 MiB.
_raw_free_views: list[memoryview] = []


class _RawSocket:
    """A blocking socket with a buffered reader (one recv serves many small messages)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.view: memoryview | None = None
        self.start = 0
        self.end = 0
        self.send = self.sock.sendall

    def receive(self, size: int) -> bytes:
        start, end, view = self.start, self.end, self.view
        if view is None:
            view = self.view = (
                _raw_free_views.pop() if _raw_free_views else memoryview(bytearray(2 * 1024 * 1024))
            )
        if end - start < size:
            if start:
                view[: end - start] = view[start:end]
                end -= start
                start = 0
            recv_into = self.sock.recv_into
            while end < size:
                got = recv_into(view[end:])
                if not got:
                    raise ConnectionError("connection closed")
                end += got
            self.end = end
        data = bytes(view[start : start + size])
        if start + size == self.end:
            self.start = self.end = 0
            _raw_free_views.append(view)
            self.view = None
        else:
            self.start = start + size
        return data

    def close(self) -> None:
        self.sock.close()


def _rs_round_trips(raw: _RawSocket, message: str, count: int, latencies: list[int] | None) -> str:
    send, receive = raw.send, raw.receive
    size = len(message.encode())
    clock = time.perf_counter_ns
    received = ""
    for index in range(count):
        started = clock()
        send(message.encode())
        received = receive(size).decode()
        if latencies is not None:
            latencies[index] = clock() - started
    return received


def _rs_echo_bytes(raw: _RawSocket, payload: bytes, count: int, depth: int) -> bytes:
    send, receive = raw.send, raw.receive
    size = len(payload)
    received = b""
    for _ in range(count // depth):
        for _ in range(depth):
            send(payload)
        for _ in range(depth):
            received = receive(size)
    return received


def _rs_json(raw: _RawSocket, documents: list[Any], count: int, deflate: _RawDeflate | None) -> Any:
    send, receive = raw.send, raw.receive
    dumps, loads = json.dumps, json.loads
    compress, decompress = deflate or (None, None)
    received = None
    mask = len(documents) - 1
    for index in range(count):
        encoded = dumps(documents[index & mask]).encode()
        if compress is not None:
            encoded = compress(encoded)
        send(encoded)
        data = receive(len(encoded))
        received = loads((data if decompress is None else decompress(data)).decode())
    return received


def _rs_handshake(port: int) -> None:
    raw = _RawSocket(port)
    request, accept = _raw_upgrade_request(port)
    raw.send(request)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = raw.sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed")
        head += chunk
    _check_upgrade(head, accept)
    raw.send(_RAW_CLOSE_FRAME)
    _check_close_frame(raw.receive(4))
    _check(raw.sock.recv(1) == b"", "the server did not close the TCP connection")
    raw.close()


def run_raw_sync(ctx: Context) -> dict[str, Any]:
    scenario, count, meter = ctx.scenario, ctx.count, ctx.meter
    name = scenario.name
    if name == "rt_text16":
        raw = _RawSocket(ctx.raw_port)
        message = "x" * 16
        _rs_round_trips(raw, message, min(count // 10, 1000), None)
        latencies = [0] * count
        meter.start()
        received = _rs_round_trips(raw, message, count, latencies)
        meter.stop()
        _check(received == message, "echo mismatch")
        raw.close()
        return meter.result(count, scenario.size, latencies)
    if name in ("pipelined_1k", "large_1m"):
        depth = PIPELINE_DEPTH if name == "pipelined_1k" else 1
        raw = _RawSocket(ctx.raw_port)
        payload = os.urandom(scenario.size)
        _rs_echo_bytes(raw, payload, max(depth, min(count // 10, depth * 10)), depth)
        meter.start()
        received = _rs_echo_bytes(raw, payload, count, depth)
        meter.stop()
        _check(received == payload, "echo mismatch")
        raw.close()
        return meter.result(count, scenario.size)
    if name in ("firehose_64", "firehose_16k"):
        size = scenario.size
        for rounds, timed in ((max(count // 10, 100), False), (count, True)):
            raw = _RawSocket(ctx.raw_firehose_port)
            receive = raw.receive
            if timed:
                meter.start()
            raw.send(f"{rounds} {size}\n".encode())
            data = b""
            for _ in range(rounds):
                data = receive(size)
            if timed:
                meter.stop()
            _check(len(data) == size, "wrong message size")
            raw.close()
        return meter.result(count, size)
    if name == "idle_1000":
        message = "x" * 16
        first = _RawSocket(ctx.raw_port)
        _rs_round_trips(first, message, 10, None)
        gc.collect()
        rss_before = _rss_bytes()
        raws = []
        meter.start()
        for _ in range(count):
            raw = _RawSocket(ctx.raw_port)
            _check(_rs_round_trips(raw, message, 1, None) == message, "echo mismatch")
            raws.append(raw)
        meter.stop()
        time.sleep(IDLE_SETTLE_SECONDS)
        meter.extra["rss_per_conn_kib"] = _rss_kib_per(rss_before, count)
        for raw in raws:
            raw.close()
        first.close()
        return meter.result(count, scenario.size)
    if name == "handshakes":
        for _ in range(min(20, count)):
            _rs_handshake(ctx.ws_port)
        meter.start()
        for _ in range(count):
            _rs_handshake(ctx.ws_port)
        meter.stop()
        return meter.result(count, 0)
    if name in ("json_2k", "json_2k_deflate"):
        raw = _RawSocket(ctx.raw_port)
        documents = json_documents()
        deflate = _raw_deflate() if name == "json_2k_deflate" else None
        _rs_json(raw, documents, min(count // 10, 500), deflate)
        meter.start()
        received = _rs_json(raw, documents, count, deflate)
        meter.stop()
        _check(received == documents[(count - 1) & (len(documents) - 1)], "echo mismatch")
        raw.close()
        return meter.result(count, scenario.size)
    raise ValueError(f"unknown scenario {name} for raw-socket")


# Entry point ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    client = CLIENT_BY_NAME[args.client]
    scenario = SCENARIO_BY_NAME[args.scenario]
    reason = client.reason_unsupported(scenario)
    if reason is not None:
        return {"na": reason}
    ctx = Context(args, scenario, Meter(args.server_pid, args.profile, args.profile_timer))
    if client.name == "raw-asyncio":
        return asyncio.run(run_raw_async(ctx))
    if client.name == "raw-socket":
        return run_raw_sync(ctx)
    if client.name in ASYNC_ADAPTERS:
        return asyncio.run(run_async(ASYNC_ADAPTERS[client.name](), ctx))
    return run_sync(SYNC_ADAPTERS[client.name](), ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one benchmark scenario with one client.")
    parser.add_argument("--client", required=True, choices=sorted(CLIENT_BY_NAME))
    parser.add_argument("--scenario", required=True, choices=sorted(SCENARIO_BY_NAME))
    parser.add_argument("--quick", action="store_true", help="use the quick counts")
    parser.add_argument("--count", type=int, default=0, help="override the count")
    parser.add_argument("--ws-port", type=int, required=True)
    parser.add_argument("--raw-port", type=int, required=True)
    parser.add_argument("--raw-firehose-port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, default=None)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    parser.add_argument("--profile", default=None, help="cProfile the timed section to here")
    parser.add_argument(
        "--profile-timer",
        choices=("wall", "cpu"),
        default="wall",
        help="clock of the profile (cpu: process time; slow, distorts short calls)",
    )
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    try:
        result = run(args)
    except Exception as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
