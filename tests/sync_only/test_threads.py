"""Behaviour only the thread-based flavor has: concurrency from threads, no event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from helpers import TIMEOUT_UNIT, wait_for_condition, wsclient_threads

from wsclient._sync._backend import SyncStream
from wsclient.exceptions import ConnectionDisconnected
from wsclient.sync import WebSocketClient
from wsclient.testing import ServerSession, WebSocketTestServer


def test_closing_leaves_no_thread_behind(test_server: Any) -> None:
    with WebSocketClient() as client:
        connections = [client.connect(test_server.url, keepalive_interval=0.05) for _ in range(3)]
        # A reader per connection; one keepalive thread serves them all. (Idle pooled
        # threads and the idle connections' watcher left by earlier tests may still be
        # around for a moment.)
        names = sorted(
            thread.name
            for thread in wsclient_threads()
            if thread.name not in ("wsclient-idle", "wsclient-watcher")
        )
        assert names == ["wsclient-keepalive"] + ["wsclient-reader"] * 3
        wait_for_condition(
            lambda: all(connection.stats.pings_sent >= 2 for connection in connections),
            TIMEOUT_UNIT,
        )
        for connection in connections:
            connection.close()
    wait_for_condition(lambda: not wsclient_threads(), TIMEOUT_UNIT)


def test_a_connection_the_server_closed_leaves_no_thread_behind() -> None:
    def close_at_once(session: ServerSession) -> None:
        session.close(1001, "going away")

    with WebSocketTestServer(close_at_once) as server:
        client = WebSocketClient()
        connection = client.connect(server.url)
        wait_for_condition(lambda: connection.closed, TIMEOUT_UNIT)
        # Nobody called close(): the end of the connection stopped its keepalive.
        wait_for_condition(lambda: not wsclient_threads(), TIMEOUT_UNIT)
        assert connection.close_code == 1001


def test_sends_from_many_threads_never_interleave(test_server: Any) -> None:
    with WebSocketClient() as client:
        connection = client.connect(test_server.url, max_frame_size=512)

        def send_many(tag: str) -> None:
            for index in range(50):
                connection.send_text(f"{tag}{index}:" + tag * 3000)

        threads = [threading.Thread(target=send_many, args=(tag,)) for tag in "abcd"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT_UNIT * 4)
        received = [connection.receive_text(timeout=TIMEOUT_UNIT) for _ in range(200)]
        for message in received:
            tag = message[0]
            assert message.endswith(":" + tag * 3000)
        for tag in "abcd":
            indexes = [int(m[1:].split(":")[0]) for m in received if m[0] == tag]
            assert indexes == list(range(50))


def test_receives_from_many_threads_get_distinct_messages(test_server: Any) -> None:
    with WebSocketClient() as client:
        connection = client.connect(test_server.url)
        results: list[str] = []
        lock = threading.Lock()

        def receive_some() -> None:
            for _ in range(25):
                message = connection.receive_text(timeout=TIMEOUT_UNIT)
                with lock:
                    results.append(message)

        threads = [threading.Thread(target=receive_some) for _ in range(4)]
        for thread in threads:
            thread.start()
        for index in range(100):
            connection.send_text(str(index))
        for thread in threads:
            thread.join(TIMEOUT_UNIT * 2)
        assert sorted(results, key=int) == [str(index) for index in range(100)]


def test_works_inside_a_running_event_loop(test_server: Any) -> None:
    async def notebook_cell() -> str:
        with WebSocketClient() as client:
            connection = client.connect(test_server.url)
            connection.send_text("from a notebook")
            return connection.receive_text(timeout=TIMEOUT_UNIT)

    assert asyncio.run(notebook_cell()) == "from a notebook"


def _stop_reading_and_never_pong(session: ServerSession) -> None:
    session.ignore_pings()
    session.stop_reading()
    session.closed.wait(60)


def test_dead_peer_detected_while_a_send_is_blocked() -> None:
    with WebSocketTestServer(_stop_reading_and_never_pong) as server:
        with WebSocketClient() as client:
            connection = client.connect(server.url, keepalive_interval=0.1, ping_timeout=0.3)
            with pytest.raises(ConnectionDisconnected) as caught:
                for _ in range(10_000):  # far more than the socket buffers hold
                    connection.send_bytes(b"x" * 65536, compress=False)
            assert caught.value.code == 1011
    wait_for_condition(lambda: not wsclient_threads(), TIMEOUT_UNIT)


def _thread_cpu_time(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def _reader_thread() -> threading.Thread:
    (reader,) = [thread for thread in wsclient_threads() if thread.name == "wsclient-reader"]
    return reader


def test_a_receiving_thread_reads_for_itself(test_server: Any) -> None:
    # A request-response loop: the receiving thread reads the socket itself instead of
    # sleeping until the reader thread wakes it, so the reader thread stays idle.
    with WebSocketClient() as client:
        connection = client.connect(test_server.url, start_keepalive=False)
        reader = _reader_thread()
        for _ in range(20):
            connection.send_text("warm up")
            assert connection.receive_text(timeout=TIMEOUT_UNIT) == "warm up"
        reader_before = _thread_cpu_time(reader)
        main_before = time.thread_time()
        for index in range(500):
            connection.send_text(f"m{index}")
            assert connection.receive_text(timeout=TIMEOUT_UNIT) == f"m{index}"
        reader_cpu = _thread_cpu_time(reader) - reader_before
        main_cpu = time.thread_time() - main_before
        # Before this change the reader thread parsed every message: more CPU than main.
        assert reader_cpu < main_cpu / 5, (reader_cpu, main_cpu)
        connection.close()


def test_a_receiving_thread_reads_large_messages_into_place_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The bytes of a large message are read straight into the message by the thread that
    # waits for it: handing that work to the reader thread would only add two wake-ups.
    payload = bytes(range(256)) * 4096

    def echo_in_one_frame(session: ServerSession) -> None:
        while (message := session.receive(timeout=10 * TIMEOUT_UNIT)) is not None:
            data = message.data
            assert isinstance(data, bytes)
            session.send_raw(b"\x82\x7f" + len(data).to_bytes(8, "big") + data)

    with WebSocketTestServer(echo_in_one_frame) as server, WebSocketClient() as client:
        connection = client.connect(server.url, start_keepalive=False, max_size=None)
        stream = connection._stream
        read_into = SyncStream.read_into
        readers: list[str] = []

        def recording_read_into(
            self: SyncStream, target: memoryview, timeout: float | None = None
        ) -> int:
            if self is stream:
                readers.append(threading.current_thread().name)
            return read_into(self, target, timeout)

        # On the class: a stream has slots, not a __dict__.
        monkeypatch.setattr(SyncStream, "read_into", recording_read_into)
        for _ in range(3):
            # Warm up: the first reads after the connect are the reader thread's.
            connection.send_bytes(payload)
            assert connection.receive_bytes(timeout=TIMEOUT_UNIT) == payload
        readers.clear()
        for _ in range(5):
            connection.send_bytes(payload)
            assert connection.receive_bytes(timeout=TIMEOUT_UNIT) == payload
        # All of them, normally; the reader thread takes over when the receiver has not
        # read for 20 ms, which a loaded machine can make happen now and then.
        mine = readers.count(threading.current_thread().name)
        assert readers and mine > len(readers) / 2, readers
        connection.close()


def test_pings_are_answered_once_the_application_stops_receiving(test_server: Any) -> None:
    with WebSocketClient() as client:
        connection = client.connect(test_server.url, start_keepalive=False)
        for _ in range(20):
            connection.send_text("x")
            assert connection.receive_text(timeout=TIMEOUT_UNIT) == "x"
        (session,) = test_server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
        # Nobody receives now: the reader thread must take the reading back.
        session.send_ping(b"still there?")
        wait_for_condition(lambda: b"still there?" in session.pongs_received, TIMEOUT_UNIT)
        connection.send_text("after")
        assert connection.receive_text(timeout=TIMEOUT_UNIT) == "after"
        connection.close()


def test_close_from_another_thread_wakes_a_receive_that_reads_for_itself(
    test_server: Any,
) -> None:
    with WebSocketClient() as client:
        connection = client.connect(test_server.url, start_keepalive=False)
        connection.send_text("x")
        assert connection.receive_text(timeout=TIMEOUT_UNIT) == "x"
        outcome: list[object] = []

        def receive() -> None:
            try:
                connection.receive_text(timeout=10 * TIMEOUT_UNIT)
            except ConnectionDisconnected as exc:
                outcome.append(exc.code)

        receiver = threading.Thread(target=receive)
        receiver.start()
        # Wait until that receive is reading the socket itself.
        stream = connection._stream
        wait_for_condition(lambda: stream._read_role.locked(), TIMEOUT_UNIT)
        connection.close(4001, "from elsewhere")
        receiver.join(TIMEOUT_UNIT)
        assert not receiver.is_alive()
        assert outcome == [4001]
    wait_for_condition(lambda: not wsclient_threads(), TIMEOUT_UNIT)
