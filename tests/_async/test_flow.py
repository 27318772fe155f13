"""Flow control: streaming, write limits and send timeouts, ping floods, counters."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import pytest
from helpers import TIMEOUT_UNIT

from wsclient._async.client import WebSocketClient
from wsclient.exceptions import ConnectionDisconnected, ReadTimeout, WriteTimeout
from wsclient.testing import ServerSession, WebSocketTestServer

from ._util import eventually

BIG_MESSAGE = 64 * 1024 * 1024
PIECE = 1024


def _send_64_mib_in_1_kib_fragments(session: ServerSession) -> None:
    piece = b"\xab" * PIECE
    session.send_binary(piece, fin=False, compress=False)
    for _ in range(BIG_MESSAGE // PIECE - 2):
        session.send_continuation(piece, fin=False)
    session.send_continuation(piece, fin=True)
    session.send_text("after", compress=False)
    session.closed.wait(60)


@pytest.mark.timeout(120)
async def test_a_64_mib_message_streams_without_being_held_whole() -> None:
    with WebSocketTestServer(_send_64_mib_in_1_kib_fragments) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(
                server.url,
                max_size=None,
                conn_opts={"stream_fragments": True, "binary_queue_maxsize": 16},
            )
            total = 0
            largest_backlog = 0
            async for piece in connection.receive_fragments(timeout=TIMEOUT_UNIT):
                assert isinstance(piece, bytes)
                assert set(piece) <= {0xAB}
                total += len(piece)
                largest_backlog = max(largest_backlog, connection.stats.binary_buffered)
            assert total == BIG_MESSAGE
            assert largest_backlog <= 16
            assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "after"


def _send_fragmented_text(session: ServerSession) -> None:
    session.send_text("é", fin=False)
    session.send_continuation("tö", fin=False)
    session.send_continuation("ü", fin=True)
    session.send_binary(b"bin")
    session.closed.wait(60)


async def test_streaming_connections_still_return_whole_messages() -> None:
    with WebSocketTestServer(_send_fragmented_text) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url, conn_opts={"stream_fragments": True})
            assert await connection.receive_bytes(timeout=TIMEOUT_UNIT) == b"bin"
            assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "étöü"


async def test_receive_fragments_needs_streaming(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url)
        with pytest.raises(ValueError, match="stream_fragments"):
            async for _ in connection.receive_fragments():
                pass


def _stop_reading(session: ServerSession) -> None:
    session.stop_reading()
    session.closed.wait(60)


async def test_large_messages_queued_behind_a_stalled_peer_arrive_intact() -> None:
    # Large frames are built in a buffer that is reused for the next large message: what
    # the transport still holds must never be overwritten.
    with WebSocketTestServer(_stop_reading) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(
                server.url, compression=None, start_keepalive=False, max_size=None
            )
            payloads = [os.urandom(size) for size in [300_000, 70_000, 900_000] * 8]
            timeouts = 0
            for payload in payloads:
                try:
                    await connection.send_bytes(payload, timeout=0.01)
                except WriteTimeout:
                    timeouts += 1  # the message stays queued, whole
            assert timeouts > 0, "the peer's buffers never filled up"
            # Counted as sent: each of them goes out.
            assert connection.stats.messages_out == len(payloads)
            assert connection.stats.bytes_out == sum(map(len, payloads))
            (session,) = server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
            session.resume_reading()
            # Wait without blocking: the client is still flushing what it queued.
            await eventually(lambda: session.messages_received == len(payloads), 10 * TIMEOUT_UNIT)
            for payload in payloads:
                message = session.receive(timeout=TIMEOUT_UNIT)
                assert message is not None and message.data == payload


async def test_send_to_a_peer_that_stopped_reading_times_out() -> None:
    with WebSocketTestServer(_stop_reading) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(
                server.url, compression=None, start_keepalive=False, close_timeout=0.5
            )
            attempts = 0
            with pytest.raises(WriteTimeout) as caught:
                for _ in range(10_000):  # far more than the socket buffers hold
                    attempts += 1
                    await connection.send_bytes(b"x" * 65536, timeout=0.3)
            assert isinstance(caught.value, TimeoutError)
            # The message whose send timed out is queued, and counted.
            assert connection.stats.messages_out == attempts
            (session,) = server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
            session.resume_reading()
            # Queued data goes out once the peer reads again; the connection stays usable.
            await connection.send_text("resumed", timeout=10 * TIMEOUT_UNIT)
            await eventually(lambda: session.messages_received > 0, 10 * TIMEOUT_UNIT)


def _flood_pings(session: ServerSession) -> None:
    for index in range(2000):
        session.send_ping(index.to_bytes(2, "big"))
    session.closed.wait(60)


async def test_a_ping_flood_gets_every_pong() -> None:
    with WebSocketTestServer(_flood_pings) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url, start_keepalive=False)
            (session,) = server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
            await eventually(lambda: len(session.pongs_received) == 2000, 4 * TIMEOUT_UNIT)
            assert session.pongs_received == [i.to_bytes(2, "big") for i in range(2000)]
            # The pong goes out before the reader counts the ping: wait for the count too.
            await eventually(lambda: connection.stats.pings_received == 2000)


async def test_large_message_is_sent_in_frames_and_arrives_whole(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(
            test_server.url, max_frame_size=4096, max_size=None, compression=None
        )
        payload = bytes(range(256)) * 4096  # 1 MiB: 256 frames
        await connection.send_bytes(payload)
        round_trip = await connection.ping(b"between", wait=True, timeout=TIMEOUT_UNIT)
        assert round_trip is not None
        assert await connection.receive_bytes(timeout=TIMEOUT_UNIT) == payload


async def test_counters_and_compression_ratio(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url)
        await connection.send_text("a" * 10_000)
        await connection.send_bytes(b"tiny")
        assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "a" * 10_000
        stats = connection.stats
        assert stats.messages_out == 2
        assert stats.bytes_out == 10_004
        assert stats.binary_buffered in (0, 1)
        await connection.receive_bytes(timeout=TIMEOUT_UNIT)
        stats = connection.stats
        assert stats.messages_in == 2
        assert stats.bytes_in == 10_004
        assert stats.compression_ratio_out is not None and stats.compression_ratio_out > 10
        assert stats.compression_ratio_in is not None and stats.compression_ratio_in > 10


async def test_frames_are_logged_at_debug(
    test_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="wsclient"):
        async with WebSocketClient() as client:
            connection = await client.connect(test_server.url)
            await connection.send_text("logged")
            await connection.receive_text(timeout=TIMEOUT_UNIT)
            await connection.close()
    messages = [record.getMessage() for record in caplog.records if record.name == "wsclient"]
    for start in ("connected to", "> TEXT", "< TEXT", "> CLOSE", "connection closed"):
        assert any(message.startswith(start) for message in messages), (start, messages)


async def test_whether_frames_are_logged_is_decided_when_the_connection_opens(
    test_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Documented (docs/errors.md): asking the logger on every message would cost about as
    # much as parsing it, so a connection opened before DEBUG was on logs nothing at DEBUG,
    # neither its frames nor its closing.
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url)
        with caplog.at_level(logging.DEBUG, logger="wsclient"):
            await connection.send_text("not logged")
            await connection.receive_text(timeout=TIMEOUT_UNIT)
            await connection.close()
            assert connection.closed
    messages = [record.getMessage() for record in caplog.records if record.name == "wsclient"]
    assert messages == []


async def test_invalid_flow_options(test_server: Any) -> None:
    async with WebSocketClient() as client:
        with pytest.raises(ValueError):
            await client.connect(test_server.url, write_limit=(10, 20))
        with pytest.raises(ValueError):
            await client.connect(test_server.url, max_frame_size=0)
        with pytest.raises(ReadTimeout):
            connection = await client.connect(test_server.url)
            await connection.receive(timeout=0.01)


async def test_a_timeout_between_frames_still_queues_the_whole_message() -> None:
    with WebSocketTestServer(_stop_reading) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(
                server.url,
                compression=None,
                start_keepalive=False,
                max_frame_size=65536,
                max_size=None,
            )
            payload = bytes(range(256)) * 65536  # 16 MiB: more than the socket buffers hold
            with pytest.raises(WriteTimeout):
                await connection.send_bytes(payload, timeout=0.3)
            (session,) = server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
            session.resume_reading()
            await connection.send_text("next", timeout=10 * TIMEOUT_UNIT)
            # Wait without blocking: the client may still be flushing the tail.
            await eventually(lambda: session.messages_received == 2, 10 * TIMEOUT_UNIT)
            first = session.receive(timeout=TIMEOUT_UNIT)
            second = session.receive(timeout=TIMEOUT_UNIT)
            assert first is not None and first.data == payload
            assert second is not None and second.data == "next"


async def test_an_error_inside_send_fragments_closes_with_1011(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url)
        with pytest.raises(TypeError):
            await connection.send_fragments(["one", "two", b"three"])
        with pytest.raises(ConnectionDisconnected) as caught:
            await connection.receive_text(timeout=TIMEOUT_UNIT)
        assert caught.value.code == 1011
        assert isinstance(caught.value.__cause__, TypeError)
    (session,) = test_server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
    await eventually(lambda: session.close_code_received == 1011)


async def test_a_receive_that_times_out_within_a_large_message_loses_nothing() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: read into place, not through the buffer
    first_part = 300_000
    rest_may_go = threading.Event()

    def send_in_two_parts(session: ServerSession) -> None:
        header = b"\x82\x7f" + len(payload).to_bytes(8, "big")
        session.send_raw(header + payload[:first_part])
        rest_may_go.wait(10 * TIMEOUT_UNIT)
        session.send_raw(payload[first_part:])
        session.closed.wait(10 * TIMEOUT_UNIT)

    with WebSocketTestServer(send_in_two_parts) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url, max_size=None)
            # The receive reads what came of the message, then times out waiting for more.
            with pytest.raises(ReadTimeout):
                await connection.receive_bytes(timeout=0.3)
            rest_may_go.set()
            assert await connection.receive_bytes(timeout=TIMEOUT_UNIT) == payload
            await connection.send_text("still in step")
            (session,) = server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
            message = session.receive(timeout=TIMEOUT_UNIT)
            assert message is not None and message.data == "still in step"
