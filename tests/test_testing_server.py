"""Tests of wsclient.testing, the built-in test server, with the independent ``websockets``
package's sync client as the peer."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from helpers import TIMEOUT_UNIT, default_sigint, wait_for_condition
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from wsclient.protocol import OP_BINARY, OP_TEXT, BinaryMessage, Request, TextMessage, build_frame
from wsclient.testing import (
    ServerSession,
    WebSocketTestServer,
    close_with,
    drop_after,
    echo,
    never_pong,
    path_router,
    send_then_close,
    silent,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def client(url: str, **kwargs: Any) -> ClientConnection:
    """A websockets sync client with short timeouts and no proxy from the environment."""
    options: dict[str, Any] = {
        "proxy": None,
        "open_timeout": TIMEOUT_UNIT,
        "close_timeout": TIMEOUT_UNIT,
        "ping_interval": None,
    }
    options.update(kwargs)
    connection: ClientConnection = connect(url, **options)
    return connection


def expect_closed(ws: ClientConnection) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=TIMEOUT_UNIT)
    return info.value


@pytest.fixture
def server() -> Iterator[WebSocketTestServer]:
    with WebSocketTestServer() as server:
        yield server
    assert server.errors == []


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


# Echo and messages --------------------------------------------------------------------------


def test_echo_text_and_binary(server: WebSocketTestServer) -> None:
    assert server.url == f"ws://127.0.0.1:{server.port}/"
    with client(server.url) as ws:
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT_UNIT) == "hello"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=TIMEOUT_UNIT) == b"\x00\x01\xff"
        ws.send(["frag", "mented"])  # a fragmented message is reassembled by the core
        assert ws.recv(timeout=TIMEOUT_UNIT) == "fragmented"
    (session,) = server.wait_for_sessions(1)
    assert session.messages_received == 3
    assert session.deflate_enabled  # websockets offers permessage-deflate by default


def test_client_close_completes_handshake() -> None:
    def wait_closed(session: ServerSession) -> None:
        session.closed.wait()  # leave the messages in the session's queue

    with WebSocketTestServer(wait_closed) as server, client(server.url) as ws:
        ws.send("x")
        ws.close(4002, "done")
        assert ws.close_code == 4002  # the server echoed the client's code
    (session,) = server.wait_for_sessions(1)
    assert session.closed.wait(TIMEOUT_UNIT)
    assert session.received_close.is_set()
    assert session.close_code_received == 4002
    assert session.close_reason_received == "done"
    assert session.receive() is not None  # the message received before the close
    assert session.receive() is None
    assert session.receive() is None  # every later call too


def test_handler_receives_and_sends_in_order() -> None:
    def handler(session: ServerSession) -> None:
        first = session.receive()
        assert isinstance(first, TextMessage)
        session.send_text("a", fin=False)
        session.send_continuation("b", fin=False)
        session.send_continuation(b"c", fin=True)
        session.send_binary(b"bin", compress=False)
        session.close(1000)

    with WebSocketTestServer(handler) as server:
        with client(server.url) as ws:
            ws.send("go")
            assert ws.recv(timeout=TIMEOUT_UNIT) == "abc"
            assert ws.recv(timeout=TIMEOUT_UNIT) == b"bin"
            assert expect_closed(ws).rcvd is not None
    assert server.errors == []


def test_session_driven_from_the_test_thread(server: WebSocketTestServer) -> None:
    with client(server.url) as ws:
        (session,) = server.wait_for_sessions(1)
        assert session.path == "/"
        session.send_binary(b"from the test")
        assert ws.recv(timeout=TIMEOUT_UNIT) == b"from the test"
        session.close(1001, "going away")
        closed = expect_closed(ws)
        assert closed.rcvd is not None
        assert (closed.rcvd.code, closed.rcvd.reason) == (1001, "going away")
    assert session.closed.is_set()
    assert session.close_code_sent == 1001
    assert session.close_code_received == 1001


def test_receive_times_out(server: WebSocketTestServer) -> None:
    with client(server.url):
        (session,) = server.wait_for_sessions(1)
        with pytest.raises(TimeoutError):
            session.receive(timeout=0.01)


def test_send_raw_writes_bytes_as_is(server: WebSocketTestServer) -> None:
    with client(server.url, compression=None) as ws:
        (session,) = server.wait_for_sessions(1)
        session.send_raw(build_frame(OP_TEXT, b"raw frame", masked=False))
        assert ws.recv(timeout=TIMEOUT_UNIT) == "raw frame"
        # A reserved opcode: the client fails the connection with 1002.
        session.send_raw(b"\x83\x00")
        closed = expect_closed(ws)
        assert closed.sent is not None and closed.sent.code == 1002
    assert session.closed.wait(TIMEOUT_UNIT)


# Handshake ---------------------------------------------------------------------------------


def test_records_request_path_and_headers(server: WebSocketTestServer) -> None:
    url = server.url_for("/some/path?q=1")
    with client(url, additional_headers={"X-Test": "yes"}, user_agent_header="probe/1"):
        pass
    (request,) = server.wait_for_requests(1)
    assert request.path == "/some/path?q=1"
    assert request.headers.get("x-test") == "yes"
    assert request.headers.get("User-Agent") == "probe/1"
    (session,) = server.wait_for_sessions(1)
    assert session.request is request
    assert session.path == "/some/path?q=1"


@pytest.mark.parametrize(
    ("offered", "selected"),
    [
        (["superchat", "chat"], "superchat"),
        (["chat", "superchat"], "chat"),
        (["other", "chat"], "chat"),
        (["other"], None),
    ],
)
def test_subprotocol_selection(offered: list[str], selected: str | None) -> None:
    with WebSocketTestServer(subprotocols=["chat", "superchat"]) as server:
        with client(server.url, subprotocols=offered) as ws:
            assert ws.subprotocol == selected
            (session,) = server.wait_for_sessions(1)
            assert session.subprotocol == selected


def test_reject_answers_with_the_status() -> None:
    refusal = (403, "Forbidden", b"go away")
    with WebSocketTestServer(reject=refusal, response_headers=[("X-Why", "test")]) as server:
        with pytest.raises(InvalidStatus) as info:
            client(server.url, additional_headers={"Authorization": "Bearer x"})
        response = info.value.response
        assert response.status_code == 403
        assert response.reason_phrase == "Forbidden"
        assert response.body == b"go away"
        assert response.headers["X-Why"] == "test"
        (request,) = server.wait_for_requests(1)
        assert request.headers.get("Authorization") == "Bearer x"
        assert server.sessions == []


def test_reject_by_callable() -> None:
    def check(request: Request) -> tuple[int, str, bytes] | None:
        authorized = request.headers.get("Authorization") == "ok"
        return None if authorized else (401, "Unauthorized", b"")

    with WebSocketTestServer(reject=check) as server:
        with pytest.raises(InvalidStatus) as info:
            client(server.url)
        assert info.value.response.status_code == 401
        with client(server.url, additional_headers={"Authorization": "ok"}) as ws:
            ws.send("in")
            assert ws.recv(timeout=TIMEOUT_UNIT) == "in"
        assert len(server.wait_for_requests(2)) == 2


def test_invalid_request_gets_400(server: WebSocketTestServer) -> None:
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT_UNIT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # no Upgrade
        response = b""
        while chunk := sock.recv(4096):
            response += chunk
    assert response.startswith(b"HTTP/1.1 400 ")
    wait_for_condition(lambda: server.handshake_failures, message="failure recorded")
    assert server.sessions == []


def test_compression_can_be_disabled() -> None:
    with WebSocketTestServer(compression=False) as server:
        with client(server.url) as ws:
            ws.send("x" * 1000)
            assert ws.recv(timeout=TIMEOUT_UNIT) == "x" * 1000
        (session,) = server.wait_for_sessions(1)
        assert not session.deflate_enabled


def test_deflate_settings() -> None:
    with pytest.raises(TypeError, match="unknown deflate_settings"):
        WebSocketTestServer(deflate_settings={"window": 9})
    settings = {"server_max_window_bits": 10, "server_no_context_takeover": True}
    with WebSocketTestServer(deflate_settings=settings) as server:
        with client(server.url) as ws:
            ws.send("y" * 1000)
            assert ws.recv(timeout=TIMEOUT_UNIT) == "y" * 1000
        (session,) = server.wait_for_sessions(1)
        assert session.deflate is not None
        assert session.deflate.compress_bits == 10
        assert session.deflate.compress_no_context_takeover


def test_max_size_fails_with_1009() -> None:
    with WebSocketTestServer(max_size=10) as server:
        with client(server.url) as ws:
            ws.send(b"x" * 11)
            closed = expect_closed(ws)
            assert closed.rcvd is not None and closed.rcvd.code == 1009
        (session,) = server.wait_for_sessions(1)
        assert session.protocol_error is not None


# TLS ---------------------------------------------------------------------------------------


def test_tls_with_trusted_ca(ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with WebSocketTestServer(ssl_context=server_context) as server:
        assert server.url.startswith("wss://127.0.0.1:")
        with client(server.url, ssl=client_context) as ws:
            ws.send("secure")
            assert ws.recv(timeout=TIMEOUT_UNIT) == "secure"
        # An untrusted CA fails on the client; the server records its side and keeps serving.
        with pytest.raises(ssl.SSLCertVerificationError):
            client(server.url, ssl=ssl.create_default_context())
        wait_for_condition(lambda: server.handshake_failures, message="TLS failure recorded")
        with client(server.url, ssl=client_context) as ws:
            ws.send("again")
            assert ws.recv(timeout=TIMEOUT_UNIT) == "again"
            server.stop()  # cuts the TLS connection
            assert expect_closed(ws).rcvd is None
        assert server.errors == []
    assert not [t for t in threading.enumerate() if t.name.startswith("wsclient-testserver")]


def test_handshake_timeout() -> None:
    with WebSocketTestServer(handshake_timeout=0.05) as server:
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n")  # and nothing more
            assert sock.recv(4096) == b""  # the server gave up and closed
        wait_for_condition(lambda: server.handshake_failures, message="failure recorded")
        assert isinstance(server.handshake_failures[0], TimeoutError)


# Pings -------------------------------------------------------------------------------------


def test_ping_is_answered(server: WebSocketTestServer) -> None:
    with client(server.url) as ws:
        assert ws.ping(b"abc").wait(TIMEOUT_UNIT)
        (session,) = server.wait_for_sessions(1)
        assert session.pings_received == [b"abc"]


def test_server_ping_gets_pong(server: WebSocketTestServer) -> None:
    with client(server.url):
        (session,) = server.wait_for_sessions(1)
        session.send_ping(b"hi")
        wait_for_condition(lambda: session.pongs_received == [b"hi"], message="pong")


def test_never_pong_ignores_pings() -> None:
    with WebSocketTestServer(never_pong) as server:
        with client(server.url) as ws:
            pong = ws.ping(b"anyone?")
            ws.send("after the ping")
            # The echo comes after the server read the ping: a pong would have come first.
            assert ws.recv(timeout=TIMEOUT_UNIT) == "after the ping"
            assert not pong.is_set()
            (session,) = server.wait_for_sessions(1)
            assert session.pings_received == [b"anyone?"]
            session.ignore_pings(False)
            assert ws.ping(b"now").wait(TIMEOUT_UNIT)


# Scripted behaviours -----------------------------------------------------------------------


def test_close_with_code_seen_by_client() -> None:
    with WebSocketTestServer(close_with(4001, "bye")) as server:
        with client(server.url) as ws:
            closed = expect_closed(ws)
            assert closed.rcvd is not None
            assert (closed.rcvd.code, closed.rcvd.reason) == (4001, "bye")
        (session,) = server.wait_for_sessions(1)
        assert session.closed.wait(TIMEOUT_UNIT)
        assert session.close_code_received == 4001  # the client echoed it: clean closure
    with pytest.raises(ValueError):
        close_with(1005)


def test_send_then_close() -> None:
    with WebSocketTestServer(send_then_close(["one", b"two"], 4003, "end")) as server:
        with client(server.url) as ws:
            assert ws.recv(timeout=TIMEOUT_UNIT) == "one"
            assert ws.recv(timeout=TIMEOUT_UNIT) == b"two"
            closed = expect_closed(ws)
            assert closed.rcvd is not None and closed.rcvd.code == 4003


def test_drop_after_messages() -> None:
    with WebSocketTestServer(drop_after(1)) as server:
        with client(server.url) as ws:
            ws.send("only one")
            assert ws.recv(timeout=TIMEOUT_UNIT) == "only one"
            closed = expect_closed(ws)
            assert closed.rcvd is None  # no Close frame: the TCP connection just ended
        (session,) = server.wait_for_sessions(1)
        assert session.closed.wait(TIMEOUT_UNIT)


def test_handler_error_closes_with_1011() -> None:
    def broken(session: ServerSession) -> None:
        raise RuntimeError("boom")

    with WebSocketTestServer(broken) as server:
        with client(server.url) as ws:
            closed = expect_closed(ws)
            assert closed.rcvd is not None and closed.rcvd.code == 1011
        (session,) = server.wait_for_sessions(1)
        wait_for_condition(lambda: server.errors, message="error recorded")
        assert isinstance(session.handler_error, RuntimeError)


def test_stop_reading_and_resume(server: WebSocketTestServer) -> None:
    with client(server.url) as ws:
        (session,) = server.wait_for_sessions(1)
        ws.send("first")
        assert ws.recv(timeout=TIMEOUT_UNIT) == "first"
        session.stop_reading()
        ws.send("held")
        session.resume_reading()
        assert ws.recv(timeout=TIMEOUT_UNIT) == "held"


UPGRADE_REQUEST = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def test_stop_reading_makes_client_sends_block() -> None:
    # silent stops reading before the first byte (in its prepare step), then waits.
    with WebSocketTestServer(silent) as server:
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(UPGRADE_REQUEST)
            response = b""
            while not response.endswith(b"\r\n\r\n"):
                response += sock.recv(1)
            assert response.startswith(b"HTTP/1.1 101 ")
            (session,) = server.wait_for_sessions(1)
            frame = bytes(build_frame(OP_BINARY, b"z" * 65536, masked=True))
            sock.setblocking(False)
            sent, rest = 0, b""
            for _ in range(100_000):  # bounded: stops when the socket buffers are full
                try:
                    written = sock.send(frame)
                except BlockingIOError:
                    break
                sent += 1
                if written < len(frame):
                    rest = frame[written:]
                    break
            else:
                pytest.fail("the client's sends never blocked")
            session.resume_reading()
            sock.setblocking(True)
            sock.sendall(rest)
            wait_for_condition(
                lambda: session.messages_received == sent, message="every message read"
            )


def test_large_messages_and_many_clients(server: WebSocketTestServer) -> None:
    big = bytes(range(256)) * 2048  # 512 KiB

    def talk(index: int) -> None:
        with client(server.url) as ws:
            for number in range(20):
                ws.send(f"{index}-{number}")
                assert ws.recv(timeout=TIMEOUT_UNIT) == f"{index}-{number}"
            ws.send(big)
            assert ws.recv(timeout=TIMEOUT_UNIT) == big

    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            talk(index)
        except BaseException as exc:  # reported in the test thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_UNIT * 4)
    assert failures == []
    assert len(server.wait_for_sessions(5)) == 5


def test_path_router() -> None:
    routes = {"/close": close_with(4000, "routed"), "/drop": drop_after(0)}
    with WebSocketTestServer(path_router(routes)) as server:
        with client(server.url_for("/close?x=1")) as ws:
            closed = expect_closed(ws)
            assert closed.rcvd is not None and closed.rcvd.code == 4000
        with client(server.url_for("/drop")) as ws:
            assert expect_closed(ws).rcvd is None
        with client(server.url_for("/anything/else")) as ws:
            ws.send("echoed")
            assert ws.recv(timeout=TIMEOUT_UNIT) == "echoed"
    with WebSocketTestServer(path_router({"/silent": silent}, default=None)) as server:
        with client(server.url_for("/missing")) as ws:
            closed = expect_closed(ws)
            assert closed.rcvd is not None and closed.rcvd.code == 1008
        with client(server.url_for("/silent")) as ws:
            pong = ws.ping(b"?")
            (_, session) = server.wait_for_sessions(2)
            server.stop()  # prepare() stopped reading before anything was read
            expect_closed(ws)
            assert not pong.is_set()
            assert session.pings_received == []


# Life cycle --------------------------------------------------------------------------------


def test_wait_for_sessions_times_out(server: WebSocketTestServer) -> None:
    with pytest.raises(TimeoutError):
        server.wait_for_sessions(1, timeout=0.01)
    with pytest.raises(TimeoutError):
        server.wait_for_requests(1, timeout=0.01)


def test_url_needs_start() -> None:
    server = WebSocketTestServer()
    with pytest.raises(RuntimeError):
        server.url  # noqa: B018
    server.stop()  # never started: nothing to do


def test_stop_leaves_no_threads() -> None:
    before = set(threading.enumerate())
    blocked = threading.Event()

    def waits_forever(session: ServerSession) -> None:
        blocked.set()
        assert session.receive(timeout=None) is None  # stop() wakes it

    server = WebSocketTestServer(path_router({"/silent": silent, "/wait": waits_forever}))
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)  # also if an assertion fails
        server.start()
        echo_client = stack.enter_context(client(server.url))
        stack.enter_context(client(server.url_for("/silent")))
        stack.enter_context(client(server.url_for("/wait")))
        # A connection that never sends its request, and one mid-request.
        stack.enter_context(socket.create_connection((server.host, server.port)))
        partial = stack.enter_context(socket.create_connection((server.host, server.port)))
        partial.sendall(b"GET / HTTP/1.1\r\n")
        echo_client.send("x")
        assert echo_client.recv(timeout=TIMEOUT_UNIT) == "x"
        assert blocked.wait(TIMEOUT_UNIT)
        server.wait_for_sessions(3)
        server.stop()
        server.stop()  # idempotent
        assert all(session.closed.is_set() for session in server.sessions)
        assert server.errors == []
        assert server.handshake_failures == []  # connections cut by stop() are not failures
    # The server's threads are joined by stop(); the clients' threads end once they closed.
    assert not [t for t in threading.enumerate() if t.name.startswith("wsclient-testserver")]
    wait_for_condition(
        lambda: set(threading.enumerate()) <= before, message="every new thread ended"
    )


def test_stop_unblocks_a_handler_blocked_in_send() -> None:
    started = threading.Event()

    def flood(session: ServerSession) -> None:
        started.set()
        while True:
            session.send_binary(b"x" * 65536)  # the client never reads: this blocks

    server = WebSocketTestServer(flood, compression=False)
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        server.start()
        sock = stack.enter_context(socket.create_connection((server.host, server.port)))
        sock.sendall(UPGRADE_REQUEST)
        assert started.wait(TIMEOUT_UNIT)
        server.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("wsclient-testserver")]
    assert server.errors == []


def test_stop_warns_about_a_handler_it_cannot_interrupt() -> None:
    release = threading.Event()

    def stuck(session: ServerSession) -> None:
        release.wait()  # nothing the server can wake

    server = WebSocketTestServer(stuck)
    try:
        server.start()
        with client(server.url):
            server.wait_for_sessions(1)
            with pytest.warns(RuntimeWarning, match="wsclient-testserver-conn"):
                server.stop(timeout=0.05)
    finally:
        release.set()
    wait_for_condition(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("wsclient-testserver")],
        message="the handler's thread ended once released",
    )


def test_main_serves_echo_until_interrupted() -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    with subprocess.Popen(
        [sys.executable, "-m", "wsclient.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=default_sigint,
    ) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assert url.startswith("ws://127.0.0.1:")
            with client(url) as ws:
                ws.send("cli")
                assert ws.recv(timeout=TIMEOUT_UNIT) == "cli"
            process.send_signal(signal.SIGINT)
            assert process.wait(TIMEOUT_UNIT) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_ready_made_handlers_are_documented() -> None:
    for handler in (echo, silent, never_pong, path_router, close_with, drop_after):
        assert handler.__doc__
    assert isinstance(BinaryMessage(b""), BinaryMessage)
