"""The closing handshake, abnormal closures and protocol errors from the server."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import TIMEOUT_UNIT

from wsclient._async._backend import monotonic, sleep, spawn
from wsclient._async.client import WebSocketClient
from wsclient.exceptions import ConnectionDisconnected, ProtocolError
from wsclient.testing import (
    ServerSession,
    WebSocketTestServer,
    close_with,
    drop_after,
    silent,
)

from ._util import eventually, push_then_wait


async def test_client_close_runs_the_handshake(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url)
        await connection.close(4001, "done here")
        assert connection.closed
        assert connection.closed_cleanly
        assert connection.close_code == 4001
        await connection.close()  # idempotent
    (session,) = test_server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
    await eventually(lambda: session.close_code_received is not None)
    assert session.close_code_received == 4001
    assert session.close_reason_received == "done here"


async def test_server_close_code_and_reason_reach_every_receive() -> None:
    with WebSocketTestServer(close_with(4000, "bye")) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url)
            with pytest.raises(ConnectionDisconnected) as caught:
                await connection.receive_text(timeout=TIMEOUT_UNIT)
            assert (caught.value.code, caught.value.reason) == (4000, "bye")
            with pytest.raises(ConnectionDisconnected):
                await connection.receive_bytes(timeout=TIMEOUT_UNIT)
            assert connection.close_code == 4000
            assert connection.close_reason == "bye"


async def test_websockets_server_close_code(websockets_server: str) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(websockets_server + "close/4321")
        with pytest.raises(ConnectionDisconnected) as caught:
            await connection.receive()
        assert (caught.value.code, caught.value.reason) == (4321, "bye")


async def test_abnormal_closure_ends_iteration_with_an_error() -> None:
    with WebSocketTestServer(lambda session: session.drop()) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url)
            with pytest.raises(ConnectionDisconnected) as caught:
                async for _ in connection:
                    pass
            assert caught.value.code == 1006


async def test_waiting_receivers_wake_up_on_close(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url)
        outcomes: list[object] = []

        async def wait_for_text() -> None:
            try:
                await connection.receive_text()
            except ConnectionDisconnected as exc:
                outcomes.append(exc.code)

        waiters = [spawn(wait_for_text, name=f"waiter-{n}") for n in range(3)]
        (session,) = test_server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
        session.close(4002, "wake up", wait=False)
        for waiter in waiters:
            assert await waiter.join(TIMEOUT_UNIT)
        assert outcomes == [4002, 4002, 4002]


async def test_close_is_bounded_when_the_server_never_answers() -> None:
    with WebSocketTestServer(silent) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url, close_timeout=0.2)
            await connection.close()
            assert connection.closed
            assert not connection.closed_cleanly
            assert connection.close_code == 1000


def _close_and_keep_tcp_open(session: ServerSession) -> None:
    session.stop_reading()
    session.send_raw(b"\x88\x02\x03\xe8")  # Close 1000, sent as raw bytes
    session.closed.wait()


async def test_a_server_that_closes_but_keeps_tcp_open_is_cut_off_after_close_timeout() -> None:
    # The server's Close came first and nobody called close(): the wait for the TCP close
    # that must follow is still bounded by close_timeout.
    with WebSocketTestServer(_close_and_keep_tcp_open) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url, close_timeout=0.2)
            with pytest.raises(ConnectionDisconnected) as caught:
                await connection.receive_text(timeout=TIMEOUT_UNIT)
            assert caught.value.code == 1000
            await eventually(lambda: connection.closed)
            assert connection.close_code == 1000


async def test_server_protocol_error_fails_the_connection_with_1002(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url)
        (session,) = test_server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
        session.send_raw(b"\x83\x00")  # reserved opcode 0x3
        with pytest.raises(ConnectionDisconnected) as caught:
            await connection.receive_text(timeout=TIMEOUT_UNIT)
        assert caught.value.code == 1002
        assert isinstance(caught.value.__cause__, ProtocolError)
    await eventually(lambda: session.close_code_received is not None)
    assert session.close_code_received == 1002


async def test_invalid_utf8_fails_with_1007(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url)
        (session,) = test_server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
        session.send_raw(b"\x81\x02\xc3\x28")
        with pytest.raises(ConnectionDisconnected) as caught:
            await connection.receive_text(timeout=TIMEOUT_UNIT)
        assert caught.value.code == 1007
    await eventually(lambda: session.close_code_received == 1007)


async def test_message_over_max_size_fails_with_1009(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url, max_size=1000)
        await connection.send_bytes(b"x" * 1000)
        assert await connection.receive_bytes(timeout=TIMEOUT_UNIT) == b"x" * 1000
        (session,) = test_server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
        session.send_binary(b"y" * 1001)
        with pytest.raises(ConnectionDisconnected) as caught:
            await connection.receive_bytes(timeout=TIMEOUT_UNIT)
        assert caught.value.code == 1009
    await eventually(lambda: session.close_code_received == 1009)


async def test_invalid_close_arguments_are_value_errors(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url)
        with pytest.raises(ValueError):
            await connection.close(1005)
        with pytest.raises(ValueError):
            await connection.close(1000, "x" * 124)
        assert not connection.closed
        await connection.close()


async def test_concurrent_closes_all_return_once_closed(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url)
        finished: list[bool] = []

        async def close_it() -> None:
            await connection.close()
            finished.append(connection.closed)

        closers = [spawn(close_it, name=f"closer-{n}") for n in range(4)]
        for closer in closers:
            assert await closer.join(TIMEOUT_UNIT)
        assert finished == [True, True, True, True]
        assert connection.close_code == 1000


async def test_close_completes_while_the_buffer_is_full() -> None:
    with WebSocketTestServer(push_then_wait(50)) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(
                server.url, close_timeout=30, conn_opts={"text_queue_maxsize": 2}
            )
            await eventually(lambda: connection.stats.text_buffered == 2)
            await connection.close()  # the reader must get past the full buffer
            assert connection.closed_cleanly
            assert connection.stats.dropped_text > 0
            assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "m0"
            assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "m1"
            with pytest.raises(ConnectionDisconnected):
                await connection.receive_text(timeout=TIMEOUT_UNIT)


async def test_sends_after_the_peer_dropped_the_connection_raise_connection_disconnected() -> None:
    # Whether the drop is noticed by a read or by a failed write (broken pipe, reset), the
    # application sees ConnectionDisconnected, never a bare OSError.
    with WebSocketTestServer(drop_after(1)) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url, start_keepalive=False)
            await connection.send_text("one")
            assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "one"
            deadline = monotonic() + TIMEOUT_UNIT
            with pytest.raises(ConnectionDisconnected) as caught:
                while monotonic() < deadline:
                    await connection.send_text("more")
                    await sleep(0.001)
            assert caught.value.code == 1006
            await connection.close()
            assert not connection.closed_cleanly
