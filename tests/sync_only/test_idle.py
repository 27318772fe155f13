"""Idle connections hold no thread: their sockets wait in the watcher thread.

A reader that has seen nothing for a while hands its socket to one watcher thread per
process and its thread goes back to the pool; the first byte starts a reader again.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Any

import pytest
from helpers import TIMEOUT_UNIT, wait_for_condition, wsclient_threads

from wsclient._sync import _backend
from wsclient._sync import connection as sync_connection
from wsclient.exceptions import ConnectionDisconnected
from wsclient.sync import WebSocketClient, WebSocketConnection
from wsclient.testing import ServerSession, WebSocketTestServer, echo

# Long enough for the reader to go idle, the watcher to take over and pooled threads to end.
IDLE_WAIT = _backend._IDLE_AFTER + _backend._WORKER_LINGER + TIMEOUT_UNIT


def watched(connection: WebSocketConnection) -> bool:
    """Whether the connection's socket waits in the watcher (no reader running)."""
    return (
        connection._stream._when_readable is not None
        and connection._reader is not None
        and (connection._reader.done())
    )


def reader_threads() -> list[threading.Thread]:
    return [thread for thread in wsclient_threads() if thread.name == "wsclient-reader"]


def wait_until_idle(*connections: WebSocketConnection) -> None:
    wait_for_condition(lambda: all(watched(c) for c in connections), IDLE_WAIT)


class WhenTold:
    """A test-server handler that does ``action(session)`` once ``go`` is set."""

    def __init__(self, action: Callable[[ServerSession], None], keep_open: bool = True) -> None:
        self.go = threading.Event()
        self.sessions: list[ServerSession] = []
        self._action = action
        self._keep_open = keep_open

    def __call__(self, session: ServerSession) -> None:
        self.sessions.append(session)
        self.go.wait(10 * TIMEOUT_UNIT)
        self._action(session)
        if self._keep_open:
            session.closed.wait(10 * TIMEOUT_UNIT)


def test_idle_connections_hold_no_reader_thread(test_server: Any) -> None:
    with WebSocketClient() as client:
        connections = [client.connect(test_server.url, start_keepalive=False) for _ in range(3)]
        for index, connection in enumerate(connections):
            connection.send_text(f"hello {index}")
            assert connection.receive_text(timeout=TIMEOUT_UNIT) == f"hello {index}"
        wait_until_idle(*connections)
        wait_for_condition(lambda: not reader_threads(), IDLE_WAIT)
        # (Pooled threads and a keepalive thread left by earlier tests may linger a while.)
        assert "wsclient-watcher" in {thread.name for thread in wsclient_threads()}
        # Each comes back to life for what arrives, as often as needed.
        for round_number in range(2):
            for index, connection in enumerate(connections):
                connection.send_text(f"again {round_number} {index}")
                assert connection.receive_text(timeout=TIMEOUT_UNIT) == (
                    f"again {round_number} {index}"
                )
            wait_until_idle(*connections)
        for connection in connections:
            connection.close()
            assert connection.closed_cleanly
    # With nothing left to watch, the watcher thread ends too.
    wait_for_condition(lambda: not wsclient_threads(), IDLE_WAIT)


def test_messages_pushed_to_an_idle_connection_arrive_in_order() -> None:
    def push(session: ServerSession) -> None:
        for index in range(80):
            session.send_text(f"m{index}")
        session.send_binary(b"\x00" * 300_000)

    push_later = WhenTold(push)
    with WebSocketTestServer(push_later) as server, WebSocketClient() as client:
        connection = client.connect(server.url, start_keepalive=False)
        wait_until_idle(connection)
        push_later.go.set()
        # Nobody receives meanwhile: the reader started by the watcher buffers them all.
        wait_for_condition(lambda: connection.stats.binary_buffered == 1, TIMEOUT_UNIT)
        assert [connection.receive_text(timeout=0) for _ in range(80)] == [
            f"m{index}" for index in range(80)
        ]
        assert connection.receive_bytes(timeout=0) == b"\x00" * 300_000
        connection.close()


def test_a_receive_waiting_on_an_idle_connection_gets_the_message() -> None:
    send_later = WhenTold(lambda session: session.send_text("late"))
    with WebSocketTestServer(send_later) as server, WebSocketClient() as client:
        connection = client.connect(server.url, start_keepalive=False)
        wait_until_idle(connection)
        received: list[str] = []
        receiver = threading.Thread(
            target=lambda: received.append(connection.receive_text(timeout=5 * TIMEOUT_UNIT))
        )
        receiver.start()
        send_later.go.set()
        receiver.join(5 * TIMEOUT_UNIT)
        assert received == ["late"]
        connection.close()


def test_pings_to_an_idle_connection_are_answered() -> None:
    ping_later = WhenTold(lambda session: session.send_ping(b"are you there"))
    with WebSocketTestServer(ping_later) as server, WebSocketClient() as client:
        connection = client.connect(server.url, start_keepalive=False)
        wait_until_idle(connection)
        ping_later.go.set()
        pongs = ping_later.sessions[0].pongs_received
        wait_for_condition(lambda: pongs == [b"are you there"], TIMEOUT_UNIT)
        # Answered by a reader the watcher started, which goes idle again afterwards.
        wait_until_idle(connection)
        connection.close()


def test_keepalive_pings_of_an_idle_connection_get_their_pongs(test_server: Any) -> None:
    with WebSocketClient() as client:
        connection = client.connect(
            test_server.url, keepalive_interval=_backend._IDLE_AFTER * 2, ping_timeout=TIMEOUT_UNIT
        )
        wait_for_condition(lambda: connection.stats.pongs_received >= 3, IDLE_WAIT * 3)
        assert not connection.closed
        assert connection.latency is not None
        connection.close()
        assert connection.closed_cleanly


def test_keepalive_finds_a_dead_peer_of_an_idle_connection() -> None:
    sessions: list[ServerSession] = []

    def play_dead_when_told(session: ServerSession) -> None:
        sessions.append(session)
        session.closed.wait(10 * TIMEOUT_UNIT)

    with WebSocketTestServer(play_dead_when_told) as server, WebSocketClient() as client:
        connection = client.connect(server.url, start_keepalive=False, ping_timeout=0.2)
        wait_until_idle(connection)
        sessions[0].stop_reading()
        connection.start_keep_alive(0.05)
        # The ping goes unanswered: the connection fails with 1011 though no reader ran.
        wait_for_condition(lambda: connection.closed, 4 * TIMEOUT_UNIT)
        assert connection.close_code == 1011
    wait_for_condition(lambda: not reader_threads(), IDLE_WAIT)


@pytest.mark.parametrize(
    ("end", "close_code"),
    [
        (lambda session: session.close(1001, "going away"), 1001),
        (lambda session: session.drop(), 1006),
    ],
    ids=["server-closes", "connection-dropped"],
)
def test_the_end_of_an_idle_connection_is_seen(
    end: Callable[[ServerSession], None], close_code: int
) -> None:
    end_later = WhenTold(end, keep_open=False)
    with WebSocketTestServer(end_later) as server, WebSocketClient() as client:
        connection = client.connect(server.url, start_keepalive=False)
        wait_until_idle(connection)
        end_later.go.set()
        wait_for_condition(lambda: connection.closed, TIMEOUT_UNIT)
        assert connection.close_code == close_code
        assert connection.closed_cleanly is (close_code == 1001)
        assert connection._stream._when_readable is None


def test_closing_an_idle_connection_is_clean(test_server: Any) -> None:
    with WebSocketClient() as client:
        connection = client.connect(test_server.url, start_keepalive=False)
        wait_until_idle(connection)
        connection.close(1000, "done")
        assert connection.closed
        assert connection.closed_cleanly
        assert connection.close_code == 1000


def test_an_idle_tls_connection_wakes_up_for_what_arrives(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    with (
        WebSocketTestServer(echo, ssl_context=server_ssl_context) as server,
        WebSocketClient() as client,
    ):
        connection = client.connect(server.url, ssl=client_ssl_context, start_keepalive=False)
        for size in (10, 70_000, 2_000_000):
            wait_until_idle(connection)
            connection.send_bytes(b"x" * size)
            assert connection.receive_bytes(timeout=TIMEOUT_UNIT) == b"x" * size
        connection.close()
        assert connection.closed_cleanly


@pytest.mark.parametrize("count", [50])
def test_many_idle_connections_share_the_watcher(test_server: Any, count: int) -> None:
    with WebSocketClient() as client:
        connections = [client.connect(test_server.url, start_keepalive=False) for _ in range(count)]
        wait_until_idle(*connections)
        for index, connection in enumerate(connections):
            connection.send_text(str(index))
        for index, connection in enumerate(connections):
            assert connection.receive_text(timeout=TIMEOUT_UNIT) == str(index)
        wait_until_idle(*connections)
        assert len([t for t in wsclient_threads() if t.name == "wsclient-watcher"]) == 1
        for connection in connections:
            connection.close()


def test_an_idle_connection_that_cannot_get_a_thread_back_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    send_later = WhenTold(lambda session: session.send_text("late"))

    def no_thread(*args: object, **kwargs: object) -> None:
        raise RuntimeError("can't start new thread")

    with WebSocketTestServer(send_later) as server, WebSocketClient() as client:
        connection = client.connect(server.url, start_keepalive=False)
        wait_until_idle(connection)
        monkeypatch.setattr(sync_connection, "_spawn", no_thread)
        send_later.go.set()
        # Nobody could read again: the connection ends instead of leaving this waiting.
        with pytest.raises(ConnectionDisconnected):
            connection.receive_text(timeout=5 * TIMEOUT_UNIT)
        assert connection.closed
        assert connection.close_code == 1006
