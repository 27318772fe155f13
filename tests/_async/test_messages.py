"""Sending and receiving messages, against both servers."""

from __future__ import annotations

import os
import random
import traceback
from typing import Any

import pytest
from helpers import TIMEOUT_UNIT

from wsclient._async.client import WebSocketClient
from wsclient._shared import MessageType
from wsclient.exceptions import ConnectionDisconnected, ProtocolError, ReadTimeout, WebSocketError
from wsclient.protocol.connection import DIRECT_RECEIVE_MIN
from wsclient.testing import ServerSession, WebSocketTestServer, send_then_close

from ._util import eventually


async def test_text_binary_and_json_echo(echo_url: str) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(echo_url)
        await connection.send_text("héllo")
        assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "héllo"
        await connection.send_bytes(b"\x00\xff" * 1000)
        assert await connection.receive_bytes(timeout=TIMEOUT_UNIT) == b"\x00\xff" * 1000
        await connection.send_json({"a": [1, 2, None]})
        assert await connection.receive_json(timeout=TIMEOUT_UNIT) == {"a": [1, 2, None]}
        await connection.close()
        assert connection.close_code == 1000


async def test_large_messages_both_ways(echo_url: str) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB
    async with WebSocketClient() as client:
        connection = await client.connect(echo_url, max_size=4 * 1024 * 1024)
        await connection.send_bytes(payload)
        assert await connection.receive_bytes(timeout=TIMEOUT_UNIT) == payload
        text = "ü" * 300_000
        await connection.send_text(text, compress=False)
        assert await connection.receive_text(timeout=TIMEOUT_UNIT) == text


async def test_small_messages_between_large_ones_arrive_in_order() -> None:
    # After a large message is read into place, the next read is a short one (it fetches
    # the next header): small messages that follow must be parsed from it as usual.
    messages: list[str | bytes] = []
    for index, size in enumerate([1_048_579, 300_000, 2 * 1024 * 1024, 65_536 * 2]):
        messages.append(bytes([index]) * size)
        messages.extend(f"small {index}.{position}" for position in range(40))
        messages.append(bytes([index]) * 5000)
    with WebSocketTestServer(send_then_close(messages)) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url, max_size=None, compression=None)
            received = [message.data async for message in connection]
            assert received == messages


async def test_large_binary_messages_in_a_row_while_the_application_lags() -> None:
    # Large binary messages are read straight into their own buffers; with a buffer of one
    # message the reader pauses, so later ones arrive while nobody reads and are copied.
    sizes = [DIRECT_RECEIVE_MIN - 1, DIRECT_RECEIVE_MIN, 70_000, 1_048_579, 300_000, 65_536 * 3]
    messages: list[str | bytes] = []
    for index, size in enumerate(sizes):
        messages.append(bytes([index]) * size)
        messages.append(f"after {index}")
    with WebSocketTestServer(send_then_close(messages)) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(
                server.url, max_size=None, compression=None, conn_opts={"binary_queue_maxsize": 1}
            )
            received = [await connection.receive(timeout=TIMEOUT_UNIT) for _ in messages]
            assert [message.data for message in received] == messages
            assert all(type(message.data) in (bytes, str) for message in received)


async def test_typed_receives_never_take_the_other_type(echo_url: str) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(echo_url)
        await connection.send_bytes(b"one")
        await connection.send_text("two")
        await connection.send_bytes(b"three")
        assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "two"
        assert await connection.receive_bytes(timeout=TIMEOUT_UNIT) == b"one"
        assert await connection.receive_bytes(timeout=TIMEOUT_UNIT) == b"three"
        with pytest.raises(ReadTimeout):
            await connection.receive_text(timeout=0.05)


async def test_typed_receives_fail_with_wsclient_errors_alone(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url)
        (session,) = test_server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
        for receive in (connection.receive_text, connection.receive_bytes):
            with pytest.raises(ReadTimeout) as timed_out:
                await receive(timeout=0.02)
            assert timed_out.value.__cause__ is None
            assert timed_out.value.__suppress_context__
        session.send_raw(b"\x83\x00")  # reserved opcode 0x3
        for receive in (connection.receive_bytes, connection.receive_text):
            with pytest.raises(ConnectionDisconnected) as caught:
                await receive(timeout=TIMEOUT_UNIT)
            assert caught.value.code == 1002
            assert isinstance(caught.value.__cause__, ProtocolError)
            # The traceback shows the protocol error, never wsclient's internal buffering.
            shown = "".join(traceback.format_exception(caught.value))
            assert "MailboxClosed" not in shown and "ProtocolError" in shown


async def test_receive_returns_any_type_in_arrival_order(echo_url: str) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(echo_url)
        for index in range(6):
            if index % 2:
                await connection.send_bytes(bytes([index]))
            else:
                await connection.send_text(str(index))
        # A typed receive takes its type's oldest; receive() then keeps arrival order.
        assert await connection.receive_bytes(timeout=TIMEOUT_UNIT) == b"\x01"
        received = [await connection.receive(timeout=TIMEOUT_UNIT) for _ in range(5)]
        assert [message.data for message in received] == ["0", "2", b"\x03", "4", b"\x05"]
        assert [message.type for message in received] == [
            MessageType.TEXT,
            MessageType.TEXT,
            MessageType.BINARY,
            MessageType.TEXT,
            MessageType.BINARY,
        ]


@pytest.mark.parametrize(
    ("bad", "error"), [(float("nan"), ValueError), ("5", TypeError), (True, TypeError)]
)
async def test_a_timeout_that_is_not_a_duration_is_refused_at_once(
    echo_url: str, bad: Any, error: type[Exception]
) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(echo_url)
        calls = [
            lambda: connection.receive_text(timeout=bad),
            lambda: connection.receive_bytes(timeout=bad),
            lambda: connection.receive(timeout=bad),
            lambda: connection.receive_pong(timeout=bad),
            lambda: connection.receive_json(timeout=bad),
            lambda: connection.send_text("lost?", timeout=bad),
            lambda: connection.send_bytes(b"lost?", timeout=bad),
            lambda: connection.send_fragments(["lost", "?"], timeout=bad),
            lambda: connection.ping(b"lost?", wait=True, timeout=bad),
        ]
        for call in calls:
            with pytest.raises(error, match="timeout"):
                await call()
        with pytest.raises(error, match="keepalive interval"):
            connection.start_keep_alive(bad)
        for option in ("open_timeout", "close_timeout", "ping_timeout", "keepalive_interval"):
            with pytest.raises(error, match=option):
                await client.connect(echo_url, **{option: bad})
        # Nothing was sent or taken: the next message through is the first one.
        await connection.send_text("first")
        assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "first"
        assert connection.stats.messages_out == 1
        assert connection.stats.pings_sent == 0


async def test_receive_timeout_is_a_timeout_error_and_keeps_the_connection(
    echo_url: str,
) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(echo_url)
        with pytest.raises(TimeoutError) as caught:
            await connection.receive_text(timeout=0.05)
        assert isinstance(caught.value, ReadTimeout)
        assert isinstance(caught.value, WebSocketError)
        await connection.send_text("still open")
        assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "still open"


async def test_iteration_yields_messages_and_ends_on_normal_close(echo_url: str) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(echo_url)
        await connection.send_text("a")
        await connection.send_bytes(b"b")
        seen = []
        async for message in connection:
            seen.append(message.data)
            if len(seen) == 2:
                await connection.close()
        assert seen == ["a", b"b"]


async def test_fragmented_send_is_one_message(echo_url: str) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(echo_url)
        await connection.send_fragments(["frag", "men", "ted"])
        assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "fragmented"
        await connection.send_fragments([b"\x01", b"\x02"])
        assert await connection.receive_bytes(timeout=TIMEOUT_UNIT) == b"\x01\x02"
        with pytest.raises(TypeError):
            await connection.send_fragments(["text", b"bytes"])


async def test_max_frame_size_splits_outgoing_messages(echo_url: str) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(echo_url, max_frame_size=1000, compression=None)
        await connection.send_bytes(b"x" * 10_000)
        assert await connection.receive_bytes(timeout=TIMEOUT_UNIT) == b"x" * 10_000


@pytest.mark.parametrize(
    ("max_frame_size", "length", "expected"),
    [
        (1000, 10_500, [1000] * 10 + [500]),
        (None, 3_000_000, [3_000_000]),
        # The default: 1 MiB frames, one per write.
        (..., 3 * 1024 * 1024 + 5, [1024 * 1024] * 3 + [5]),
        # Smaller frames are written four at a time.
        (256 * 1024, 3 * 1024 * 1024 + 5, [256 * 1024] * 12 + [5]),
        (300_000, 1_000_000, [300_000] * 3 + [100_000]),
    ],
)
async def test_frames_on_the_wire(
    websockets_server: str, max_frame_size: int | None, length: int, expected: list[int]
) -> None:
    options = {} if max_frame_size is ... else {"max_frame_size": max_frame_size}
    async with WebSocketClient() as client:
        connection = await client.connect(websockets_server + "frames", compression=None, **options)
        payload = os.urandom(length)
        await connection.send_bytes(payload)
        await connection.send_text("é" * (length // 2) + "a" * (length % 2))
        assert await connection.receive_json(timeout=TIMEOUT_UNIT) == expected
        assert sum(await connection.receive_json(timeout=TIMEOUT_UNIT)) == length
        # Each fragment is a frame of its own, split further only above max_frame_size.
        await connection.send_fragments([b"ab", payload[:2000], b"c"])
        fragment_frames = await connection.receive_json(timeout=TIMEOUT_UNIT)
        if max_frame_size == 1000:
            assert fragment_frames == [2, 1000, 1000, 1]
        else:
            assert fragment_frames == [2, 2000, 1]


@pytest.mark.parametrize("max_frame_size", [None, 1000])
async def test_compressed_messages_of_every_size_through_websockets(
    websockets_server: str, max_frame_size: int | None
) -> None:
    # A whole message is compressed and framed on the short way unless, compressed, it
    # might not fit in one frame; those take the queue and are split after compression.
    # Both ways meet websockets' inflater, and its compressed answers come back through
    # the frame parser's tight loop (or, large or fragmented, the full parser).
    rng = random.Random(7)
    async with WebSocketClient() as client:
        connection = await client.connect(
            websockets_server + "echo", max_frame_size=max_frame_size, max_size=None
        )
        for size in [0, 1, 127, 700, 999, 1000, 5000, 70_000]:
            text = "".join(rng.choices("abcdefgh é", k=size))
            binary = rng.randbytes(size)
            await connection.send_text(text)
            await connection.send_bytes(binary)
            await connection.send_text(text, compress=False)
            assert await connection.receive_text(timeout=TIMEOUT_UNIT) == text
            assert await connection.receive_bytes(timeout=TIMEOUT_UNIT) == binary
            assert await connection.receive_text(timeout=TIMEOUT_UNIT) == text
        stats = connection.stats
        assert stats.compression_ratio_out is not None and stats.compression_ratio_out > 1
        assert stats.compression_ratio_in is not None and stats.compression_ratio_in > 1


async def test_fragmented_message_from_the_server_is_reassembled(
    websockets_server: str,
) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(websockets_server + "fragments")
        assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "fragmented"


async def test_send_type_errors(echo_url: str) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(echo_url)
        with pytest.raises(TypeError):
            await connection.send_text(b"bytes")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await connection.send_bytes("text")  # type: ignore[arg-type]


async def test_messages_buffered_before_close_are_delivered_then_disconnected(
    echo_url: str,
) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(echo_url)
        await connection.send_text("first")
        await connection.send_bytes(b"second")
        await eventually(lambda: connection.stats.messages_in == 2)
        await connection.close()
        assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "first"
        assert await connection.receive_bytes(timeout=TIMEOUT_UNIT) == b"second"
        with pytest.raises(ConnectionDisconnected) as caught:
            await connection.receive_text(timeout=TIMEOUT_UNIT)
        assert caught.value.code == 1000
        with pytest.raises(ConnectionDisconnected):
            await connection.send_text("after close")


async def test_back_to_back_sends_arrive_in_order_and_intact(echo_url: str) -> None:
    # Sends with nothing in between: small writes that a stream may hold back and send
    # together, around writes too large to be held back.
    sizes = [1, 125, 126, 1000, 65_535, 65_536, 70_000, 10, 300_000, 5, 4096, 20]
    messages: list[str | bytes] = []
    for round_number in range(3):
        for index, size in enumerate(sizes):
            messages.append(bytes([index, round_number]) * (size // 2 + 1))
            messages.append(f"{round_number}.{index}")
    async with WebSocketClient() as client:
        connection = await client.connect(echo_url, max_size=None, compression=None)
        for message in messages:
            if isinstance(message, bytes):
                await connection.send_bytes(message)
            else:
                await connection.send_text(message)
        received = [(await connection.receive(timeout=TIMEOUT_UNIT)).data for _ in messages]
        assert received == messages
        await connection.close()
        assert connection.closed_cleanly


async def test_messages_sent_right_before_close_reach_the_server_before_the_close() -> None:
    received: list[str] = []

    def record(session: ServerSession) -> None:
        while (message := session.receive(timeout=5 * TIMEOUT_UNIT)) is not None:
            assert isinstance(message.data, str)
            received.append(message.data)

    with WebSocketTestServer(record) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url)
            for index in range(200):
                await connection.send_text(f"m{index}")
            await connection.close()
            assert connection.closed_cleanly
            sessions = server.wait_for_sessions(1)
    assert sessions[0].close_code_received == 1000
    assert received == [f"m{index}" for index in range(200)]
