"""Pings, keepalive, buffers, drops and backpressure."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from helpers import TIMEOUT_UNIT

from wsclient._async.client import WebSocketClient
from wsclient._async.connection import WebSocketConnection
from wsclient.exceptions import ConnectionDisconnected, ReadTimeout
from wsclient.testing import ServerSession, WebSocketTestServer, never_pong

from ._util import eventually, push_then_wait


async def test_ping_and_receive_pong(echo_url: str) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(echo_url)
        await connection.ping(b"hello")
        assert await connection.receive_pong(timeout=TIMEOUT_UNIT) == b"hello"
        round_trip = await connection.ping(b"timed", wait=True, timeout=TIMEOUT_UNIT)
        assert round_trip is not None and round_trip >= 0
        assert connection.latency == round_trip
        with pytest.raises(ValueError):
            await connection.ping(b"x" * 126)


async def test_keepalive_pongs_never_reach_receive_pong(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url, keepalive_interval=0.02)
        (session,) = test_server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
        await eventually(lambda: len(session.pings_received) >= 3)
        assert connection.latency is not None
        with pytest.raises(ReadTimeout):
            await connection.receive_pong(timeout=0.05)
        connection.stop_keep_alive()


async def test_server_pings_are_answered(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url, start_keepalive=False)
        (session,) = test_server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
        session.send_ping(b"are you there")
        await eventually(lambda: b"are you there" in session.pongs_received)
        await connection.close()


async def test_keepalive_detects_a_dead_peer() -> None:
    with WebSocketTestServer(never_pong) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url, keepalive_interval=0.05, ping_timeout=0.2)
            with pytest.raises(ConnectionDisconnected) as caught:
                await connection.receive_text(timeout=10 * TIMEOUT_UNIT)
            assert caught.value.code == 1011
            assert isinstance(caught.value.__cause__, TimeoutError)


async def test_drop_frames_keeps_the_freshest_and_counts_drops(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(
            test_server.url,
            conn_opts={"text_queue_maxsize": 2, "drop_frames": True},
        )
        for index in range(5):
            await connection.send_text(str(index))
        await connection.send_bytes(b"marker")
        # The binary echo comes after every text echo, so all drops have happened.
        assert await connection.receive_bytes(timeout=TIMEOUT_UNIT) == b"marker"
        assert connection.dropped_messages == 3
        assert connection.stats.dropped_text == 3
        assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "3"
        assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "4"


async def test_full_buffer_pauses_reading_and_loses_nothing(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(
            test_server.url, conn_opts={"text_queue_maxsize": 2, "binary_queue_maxsize": 2}
        )
        for index in range(50):
            await connection.send_text(str(index))
        received = [await connection.receive_text(timeout=TIMEOUT_UNIT) for _ in range(50)]
        assert received == [str(index) for index in range(50)]
        assert connection.dropped_messages == 0


def _burst(session: ServerSession) -> None:
    # Runs of each kind, all in one write, so that they arrive in one read.
    frames = []
    for index in range(120):
        payload = f"{index:03d}".encode()
        opcode = 0x81 if index % 40 >= 30 else 0x82
        frames.append(bytes((opcode, len(payload))) + payload)
    session.send_raw(b"".join(frames))
    session.closed.wait(60)


async def test_a_burst_larger_than_the_buffers_arrives_in_order() -> None:
    with WebSocketTestServer(_burst) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(
                server.url, conn_opts={"text_queue_maxsize": 3, "binary_queue_maxsize": 7}
            )
            received = []
            for _ in range(120):
                message = await connection.receive(timeout=TIMEOUT_UNIT)
                received.append(message.data)
            expected: list[str | bytes] = []
            for index in range(120):
                text = f"{index:03d}"
                expected.append(text if index % 40 >= 30 else text.encode())
            assert received == expected
            assert connection.stats.messages_in == 120
            assert connection.stats.bytes_in == 360
            assert connection.dropped_messages == 0


def _server_pushes_many(session: ServerSession) -> None:
    for index in range(200):
        session.send_text(f"push {index}")
    session.close(1000, "done")


async def test_server_push_then_close_delivers_everything() -> None:
    with WebSocketTestServer(_server_pushes_many) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url)
            received = []
            async for message in connection:
                received.append(message.data)
            assert received == [f"push {index}" for index in range(200)]
            assert connection.close_code == 1000


def _chatty_but_never_pongs(session: ServerSession) -> None:
    session.ignore_pings()
    # The wait paces the scripted peer; it is not a test waiting for something to happen.
    while not session.received_close.wait(0.01):
        try:
            session.send_text("tick")
        except ConnectionDisconnected:
            return


async def test_inbound_data_counts_as_proof_of_life() -> None:
    with WebSocketTestServer(_chatty_but_never_pongs) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url, keepalive_interval=0.05, ping_timeout=0.5)
            await eventually(lambda: connection.stats.pings_sent >= 5, 10 * TIMEOUT_UNIT)
            # Several pings went unanswered, but data kept arriving: still open.
            assert connection.close_code is None
            assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "tick"
            await connection.close()
            assert connection.close_code == 1000


async def test_a_slow_application_is_not_mistaken_for_a_dead_peer() -> None:
    with WebSocketTestServer(push_then_wait(50)) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(
                server.url,
                keepalive_interval=0.05,
                ping_timeout=0.1,
                conn_opts={"text_queue_maxsize": 1},
            )
            # The buffer is full, so reading pauses and the pongs wait behind unread data.
            await eventually(lambda: connection.stats.pings_sent >= 5, 10 * TIMEOUT_UNIT)
            assert connection.close_code is None
            received = [await connection.receive_text(timeout=TIMEOUT_UNIT) for _ in range(50)]
            assert received == [f"m{index}" for index in range(50)]
            assert connection.close_code is None


async def _connection_the_server_closed(
    client: WebSocketClient, url: str
) -> weakref.ref[WebSocketConnection]:
    connection = await client.connect(url, keepalive_interval=60.0)
    await eventually(lambda: connection.closed)
    assert connection.close_code == 1001
    return weakref.ref(connection)


async def test_a_connection_the_server_closed_is_not_kept_alive_by_its_keepalive() -> None:
    def close_at_once(session: ServerSession) -> None:
        session.close(1001, "going away")

    with WebSocketTestServer(close_at_once) as server:
        # No `with` and no close(): only the end of the connection can stop the keepalive,
        # whose next ping would otherwise hold the connection for keepalive_interval.
        client = WebSocketClient()
        reference = await _connection_the_server_closed(client, server.url)
        del client
        await eventually(lambda: gc.collect() >= 0 and reference() is None)
