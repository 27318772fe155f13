"""The asyncio backend's own TCP transport (plain TCP on selector loops), on real sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from helpers import TIMEOUT_UNIT

from wsclient._async._backend import AsyncStream, _SocketTransport, open_stream

# More than the loopback socket buffers take with the peer not reading, however tuned.
_LARGE = 16 * 1024 * 1024


@asynccontextmanager
async def _peer() -> AsyncIterator[tuple[int, asyncio.Future[socket.socket]]]:
    """A listening socket on 127.0.0.1 (small receive buffer) and its first accepted peer."""
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    accepted: asyncio.Future[socket.socket] = loop.create_future()

    async def accept() -> None:
        peer, _ = await loop.sock_accept(listener)
        accepted.set_result(peer)

    accepting = asyncio.create_task(accept())
    try:
        yield listener.getsockname()[1], accepted
    finally:
        accepting.cancel()
        listener.close()
        if accepted.done():
            accepted.result().close()


async def _receive_all(peer: socket.socket) -> bytes:
    """Everything the peer gets until the end of the stream (or a reset)."""
    loop = asyncio.get_running_loop()
    received = bytearray()
    try:
        while data := await asyncio.wait_for(loop.sock_recv(peer, 1024 * 1024), TIMEOUT_UNIT):
            received += data
    except ConnectionResetError:
        pass
    return bytes(received)


async def _wait_until(predicate: Any) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT_UNIT
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _open(port: int) -> AsyncStream:
    return await open_stream("127.0.0.1", port, timeout=TIMEOUT_UNIT)


async def test_plain_tcp_on_a_selector_loop_gets_the_socket_transport() -> None:
    async with _peer() as (port, accepted):
        stream = await _open(port)
        assert isinstance(stream._transport, _SocketTransport)
        peer = await asyncio.wait_for(accepted, TIMEOUT_UNIT)
        assert stream.get_extra_info("peername") == ("127.0.0.1", port)
        assert stream.get_extra_info("sockname") == peer.getpeername()
        sock = stream.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        stream.close()
        assert await stream.wait_closed(TIMEOUT_UNIT)


async def test_a_host_name_is_resolved() -> None:
    async with _peer() as (port, accepted):
        stream = await open_stream("localhost", port, timeout=TIMEOUT_UNIT)
        await asyncio.wait_for(accepted, TIMEOUT_UNIT)
        stream.close()


async def test_each_address_is_tried_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = _closed_port()
    async with _peer() as (port, accepted):
        loop = asyncio.get_running_loop()

        async def two_addresses(host: str, wanted_port: int, **kwargs: Any) -> list[Any]:
            stream_kind = (socket.AF_INET, socket.SOCK_STREAM, 6, "")
            return [(*stream_kind, ("127.0.0.1", refused)), (*stream_kind, ("127.0.0.1", port))]

        monkeypatch.setattr(loop, "getaddrinfo", two_addresses)
        stream = await open_stream("two.example", port, timeout=TIMEOUT_UNIT)
        await asyncio.wait_for(accepted, TIMEOUT_UNIT)
        assert stream.get_extra_info("peername") == ("127.0.0.1", port)
        stream.close()


async def test_a_refused_connection_is_an_os_error() -> None:
    with pytest.raises(ConnectionRefusedError):
        await _open(_closed_port())


async def test_close_sends_everything_buffered_before_the_end() -> None:
    payload = os.urandom(_LARGE)
    async with _peer() as (port, accepted):
        stream = await _open(port)
        peer = await asyncio.wait_for(accepted, TIMEOUT_UNIT)
        stream.write_nowait(payload)
        # The peer reads nothing yet: most of it waits in the transport's buffer.
        assert stream.must_drain()
        assert stream.write_buffer_size() > 0
        stream.close()
        assert await _receive_all(peer) == payload
        assert await stream.wait_closed(TIMEOUT_UNIT)


async def test_drain_waits_until_the_peer_reads() -> None:
    async with _peer() as (port, accepted):
        stream = await _open(port)
        peer = await asyncio.wait_for(accepted, TIMEOUT_UNIT)
        stream.write_nowait(os.urandom(_LARGE))
        with pytest.raises(TimeoutError):
            await stream.drain(timeout=0.05)
        reading = asyncio.create_task(_receive_all(peer))
        await stream.drain(timeout=TIMEOUT_UNIT)
        assert not stream.must_drain()
        stream.close()
        assert len(await reading) == _LARGE


async def test_abort_drops_buffered_output_and_ends_the_stream() -> None:
    async with _peer() as (port, accepted):
        stream = await _open(port)
        peer = await asyncio.wait_for(accepted, TIMEOUT_UNIT)
        stream.write_nowait(os.urandom(_LARGE))
        assert stream.write_buffer_size() > 0
        stream.abort()
        assert await stream.wait_closed(TIMEOUT_UNIT)
        assert stream.write_buffer_size() == 0
        assert len(await _receive_all(peer)) < _LARGE


async def test_reading_pauses_while_a_lot_is_unread_and_resumes() -> None:
    payload = os.urandom(_LARGE)
    async with _peer() as (port, accepted):
        stream = await _open(port)
        peer = await asyncio.wait_for(accepted, TIMEOUT_UNIT)
        loop = asyncio.get_running_loop()
        sending = asyncio.create_task(loop.sock_sendall(peer, payload))
        await _wait_until(lambda: stream._protocol.reading_paused)
        assert not stream._transport.is_reading()
        received = bytearray()
        while len(received) < len(payload):
            received += await stream.read(timeout=TIMEOUT_UNIT)
        await asyncio.wait_for(sending, TIMEOUT_UNIT)
        assert received == payload
        assert stream._transport.is_reading()
        stream.close()


async def test_a_reset_from_the_peer_ends_reads_with_an_error() -> None:
    async with _peer() as (port, accepted):
        stream = await _open(port)
        peer = await asyncio.wait_for(accepted, TIMEOUT_UNIT)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        with pytest.raises(ConnectionResetError):
            await stream.read(timeout=TIMEOUT_UNIT)
        assert await stream.wait_closed(TIMEOUT_UNIT)


async def test_the_end_of_the_stream_reads_as_empty_and_closes() -> None:
    async with _peer() as (port, accepted):
        stream = await _open(port)
        peer = await asyncio.wait_for(accepted, TIMEOUT_UNIT)
        await asyncio.get_running_loop().sock_sendall(peer, b"last words")
        peer.shutdown(socket.SHUT_WR)
        received = b""
        while data := await stream.read(timeout=TIMEOUT_UNIT):
            received += data
        assert received == b"last words"
        assert stream.at_eof
        assert await stream.wait_closed(TIMEOUT_UNIT)


@asynccontextmanager
async def _full_accept_queue() -> AsyncIterator[tuple[socket.socket, int]]:
    """A listener whose accept queue is full: the kernel drops new SYNs for now."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers: list[socket.socket] = []
        try:
            for _ in range(2):
                filler = socket.socket()
                fillers.append(filler)
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            yield listener, port
        finally:
            for filler in fillers:
                filler.close()


async def test_a_connect_not_answered_at_once_is_bounded_by_the_timeout() -> None:
    async with _full_accept_queue() as (_, port):
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await open_stream("127.0.0.1", port, timeout=0.2)
        assert asyncio.get_running_loop().time() - started >= 0.15


async def test_a_connect_answered_later_completes() -> None:
    async with _full_accept_queue() as (listener, port):
        connecting = asyncio.create_task(open_stream("127.0.0.1", port, timeout=TIMEOUT_UNIT))
        await asyncio.sleep(0)
        assert not connecting.done()
        # Room in the accept queue: the kernel's next SYN (about a second later) gets in.
        listener.accept()[0].close()
        stream = await asyncio.wait_for(connecting, TIMEOUT_UNIT + 2)
        assert stream.get_extra_info("peername") == ("127.0.0.1", port)
        stream.close()
