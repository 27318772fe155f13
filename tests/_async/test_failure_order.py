"""Failing the connection in wire order (RFC 6455 §5.2, §7.1.7; Autobahn 3.2, 4.1.3, 5.15).

A bad frame that arrives right behind a valid message (often in the same TCP segment) must
not cut the application off from that message: the application receives it and may answer
it, and the Close for the bad frame goes out after the answer, once the application asks
for more. An application that never asks still fails the connection after close_timeout,
and close() sends the failure's code, not its own.
"""

from __future__ import annotations

import pytest
from helpers import TIMEOUT_UNIT

from wsclient._async.client import WebSocketClient
from wsclient.exceptions import ConnectionDisconnected, ProtocolError
from wsclient.protocol import build_frame
from wsclient.testing import ServerSession, WebSocketTestServer

from ._util import eventually


def _wait_until_closed(session: ServerSession) -> None:
    session.closed.wait(4 * TIMEOUT_UNIT)


HELLO_THEN_RESERVED_OPCODE = build_frame(0x1, b"hello", masked=False) + b"\x83\x00"


async def test_answer_to_the_message_before_a_bad_frame_goes_out_before_the_close() -> None:
    with WebSocketTestServer(_wait_until_closed) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url, start_keepalive=False)
            (session,) = server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
            session.send_raw(HELLO_THEN_RESERVED_OPCODE)  # one write: one segment
            assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "hello"
            await connection.send_text("echo: hello")
            with pytest.raises(ConnectionDisconnected) as caught:
                await connection.receive_text(timeout=TIMEOUT_UNIT)
            assert caught.value.code == 1002
            assert isinstance(caught.value.__cause__, ProtocolError)
        message = session.receive(timeout=TIMEOUT_UNIT)
        assert message is not None and message.data == "echo: hello"
        await eventually(lambda: session.close_code_received is not None)
        assert session.close_code_received == 1002


async def test_a_waiting_receive_fails_the_connection_at_once() -> None:
    with WebSocketTestServer(_wait_until_closed) as server:
        async with WebSocketClient() as client:
            # A close_timeout far above the test's deadlines: only the waiting receive
            # can make the Close go out in time.
            connection = await client.connect(
                server.url, start_keepalive=False, close_timeout=60 * TIMEOUT_UNIT
            )
            (session,) = server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
            session.send_raw(b"\x83\x00")
            with pytest.raises(ConnectionDisconnected) as caught:
                await connection.receive(timeout=TIMEOUT_UNIT)
            assert caught.value.code == 1002
            await eventually(lambda: session.close_code_received == 1002)
            await connection.close()


async def test_the_connection_fails_after_close_timeout_without_a_receive() -> None:
    with WebSocketTestServer(_wait_until_closed) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url, start_keepalive=False, close_timeout=0.2)
            (session,) = server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
            session.send_raw(HELLO_THEN_RESERVED_OPCODE)
            await eventually(lambda: session.close_code_received is not None)
            assert session.close_code_received == 1002
            await eventually(lambda: connection.closed)
            # The message that came before the bad frame is still delivered.
            assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "hello"
            with pytest.raises(ConnectionDisconnected) as caught:
                await connection.receive_text(timeout=TIMEOUT_UNIT)
            assert caught.value.code == 1002


async def test_close_sends_the_failure_code() -> None:
    with WebSocketTestServer(_wait_until_closed) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(
                server.url, start_keepalive=False, close_timeout=60 * TIMEOUT_UNIT
            )
            (session,) = server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
            session.send_raw(HELLO_THEN_RESERVED_OPCODE)
            await eventually(lambda: connection.stats.messages_in == 1)
            await connection.close(1000, "bye")
            assert connection.closed
            assert connection.close_code == 1002
        await eventually(lambda: session.close_code_received is not None)
        assert session.close_code_received == 1002
