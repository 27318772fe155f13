"""The asyncio stream's reads into a caller's buffer (large messages are read into place)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from helpers import TIMEOUT_UNIT

from wsclient._async._backend import AsyncStream, open_stream


async def _serve_once(payload: bytes) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _wait_until(predicate: object) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + TIMEOUT_UNIT
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_bytes_that_arrived_before_read_into_are_copied_in_order() -> None:
    payload = os.urandom(300_000)
    server, port = await _serve_once(payload)
    async with server:
        stream = await open_stream("127.0.0.1", port, timeout=TIMEOUT_UNIT)
        # Everything arrives, and the end of the stream, while nobody reads.
        await _wait_until(lambda: stream._protocol.eof)
        received = bytearray()
        target = memoryview(bytearray(70_000))
        while True:
            count = await stream.read_into(target, timeout=TIMEOUT_UNIT)
            if not count:
                break
            received += target[:count]
        assert received == payload
        assert stream.at_eof
        stream.close()


async def test_read_into_waits_and_fills_only_the_target() -> None:
    payload = os.urandom(50_000)
    server, port = await _serve_once(payload)
    async with server:
        stream = await open_stream("127.0.0.1", port, timeout=TIMEOUT_UNIT)
        target = memoryview(bytearray(1000))
        count = await stream.read_into(target, timeout=TIMEOUT_UNIT)
        assert 0 < count <= 1000
        assert bytes(target[:count]) == payload[:count]
        # The rest stays for the next reads, whichever kind.
        rest = bytearray()
        while data := await stream.read(timeout=TIMEOUT_UNIT):
            rest += data
        assert bytes(target[:count]) + rest == payload
        stream.close()


async def test_read_into_times_out() -> None:
    handled = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()
        await writer.wait_closed()
        handled.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        stream = await open_stream("127.0.0.1", port, timeout=TIMEOUT_UNIT)
        try:
            await stream.read_into(memoryview(bytearray(10)), timeout=0.01)
        except TimeoutError:
            pass
        else:
            raise AssertionError("read_into did not time out")
        # A late arrival after the timeout goes to the buffered chunks, not the old target.
        assert stream._protocol.read_target is None
        stream.close()
        await asyncio.wait_for(handled.wait(), TIMEOUT_UNIT)


@asynccontextmanager
async def _stream_to_an_echo_server() -> AsyncIterator[tuple[AsyncStream, list[bytes]]]:
    """A stream to a one-connection echo server, and what its transport was asked to write:
    a spy on the real transport's write (the bytes still go to the socket) shows which
    writes went out at once and which were held back and sent together."""
    finished = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()
            await writer.wait_closed()
        finally:
            finished.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        stream = await open_stream(
            "127.0.0.1", server.sockets[0].getsockname()[1], timeout=TIMEOUT_UNIT
        )
        recording = _RecordingTransport(stream._transport)
        stream._transport = recording  # type: ignore[assignment]
        yield stream, recording.written
        stream.close()
        await asyncio.wait_for(finished.wait(), TIMEOUT_UNIT)


class _RecordingTransport:
    """A transport that records each write it passes on."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.written: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def _read_exactly(stream: AsyncStream, size: int) -> bytes:
    received = b""
    while len(received) < size:
        data = await stream.read(timeout=TIMEOUT_UNIT)
        assert data, "the echo server closed early"
        received += data
    return received


async def test_writes_after_a_direct_one_are_held_until_the_loop_iteration_ends() -> None:
    async with _stream_to_an_echo_server() as (stream, written):
        stream.write_nowait(b"first")
        stream.write_nowait(b"second")
        stream.write_nowait(b"third")
        assert written == [b"first"]
        assert stream.write_buffer_size() >= len(b"secondthird")
        # The held writes go out in one piece in a callback scheduled before this
        # task's wake-up (the loop runs callbacks in the order they were scheduled).
        await asyncio.sleep(0)
        assert written == [b"first", b"secondthird"]
        assert await _read_exactly(stream, 16) == b"firstsecondthird"


async def test_a_write_that_answers_what_was_read_goes_out_at_once() -> None:
    async with _stream_to_an_echo_server() as (stream, written):
        for round_number in range(3):
            request = b"request %d" % round_number
            stream.write_nowait(request)
            assert written[-1] == request
            assert await _read_exactly(stream, len(request)) == request
        assert len(written) == 3


async def test_a_large_write_sends_the_held_ones_before_it() -> None:
    async with _stream_to_an_echo_server() as (stream, written):
        large = os.urandom(200_000)
        stream.write_nowait(b"a")
        stream.write_nowait(b"b")
        stream.write_nowait(large)
        assert written == [b"a", b"b", large]
        assert await _read_exactly(stream, 2 + len(large)) == b"ab" + large
