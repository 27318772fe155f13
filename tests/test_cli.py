"""The command line (``python -m wsclient``), driven as a subprocess with stdin piped.

Every run has a bounded subprocess timeout. Tests that must see the CLI end a session on
its own (``--count``, a server close) keep stdin open, so that only the CLI can end it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import TIMEOUT_UNIT, default_sigint, wait_for_condition

from wsclient import __version__
from wsclient.__main__ import (
    EXIT_CLOSED,
    EXIT_CONNECT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    main,
)
from wsclient.exceptions import ConnectionDisconnected
from wsclient.protocol import BinaryMessage, TextMessage
from wsclient.testing import (
    ServerSession,
    WebSocketTestServer,
    close_with,
    drop_after,
    never_pong,
    send_then_close,
)

# A run starts an interpreter, connects and closes: well within this, even when loaded.
RUN_TIMEOUT = 4 * TIMEOUT_UNIT
CLI = [sys.executable, "-m", "wsclient"]
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and ptys")


def _env(tmp_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["WSCLIENT_HISTORY"] = ""  # never touch the user's history file
    env["PYTHONIOENCODING"] = "utf-8"
    if tmp_path is not None:
        env["HOME"] = str(tmp_path)
    return env


def run_cli(*args: str, input: str = "") -> subprocess.CompletedProcess[str]:
    """Run the CLI with ``input`` on stdin (closed at its end) and capture the output."""
    return subprocess.run(
        [*CLI, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=_env(),
    )


@contextmanager
def open_cli(*args: str) -> Iterator[subprocess.Popen[str]]:
    """Start the CLI with a stdin pipe that stays open until the test closes it."""
    process = subprocess.Popen(
        [*CLI, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=default_sigint,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(RUN_TIMEOUT)
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Wait for the CLI to exit on its own (stdin still open); return code and output."""
    code = process.wait(RUN_TIMEOUT)  # the output is small: no pipe can fill up
    assert process.stdout is not None and process.stderr is not None
    return code, process.stdout.read(), process.stderr.read()


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _recording_echo(received: list[TextMessage | BinaryMessage]) -> Any:
    def handler(session: ServerSession) -> None:
        try:
            while (message := session.receive(timeout=None)) is not None:
                received.append(message)
                session.send(message.data)
        except ConnectionDisconnected:
            return

    return handler


def _assert_one_line_error(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("wsclient: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# Echo --------------------------------------------------------------------------------------


def test_without_url_talks_to_the_built_in_echo_server() -> None:
    result = run_cli(input="a\nb\n")
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout == "a\nb\n"
    assert "built-in echo server at ws://127.0.0.1:" in result.stderr


def test_many_lines_all_echoed_before_the_close() -> None:
    lines = [f"line {i}" for i in range(200)]
    result = run_cli(input="".join(line + "\n" for line in lines))
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.splitlines() == lines


def test_url_echoes_lines_and_closes_cleanly() -> None:
    with WebSocketTestServer() as server:
        result = run_cli(server.url, input="hello\r\n\n  \nworld\n")
        assert result.returncode == EXIT_OK, result.stderr
        # Blank lines are not sent; a CRLF line ending is not part of the message.
        assert result.stdout == "hello\nworld\n"
        assert result.stderr == ""
        (session,) = server.wait_for_sessions(1)
        assert session.received_close.wait(TIMEOUT_UNIT)
        assert session.close_code_received == 1000


def test_unicode_round_trip() -> None:
    with WebSocketTestServer() as server:
        result = run_cli(server.url, input="héllo ☃ 🎉\n")
        assert result.returncode == EXIT_OK, result.stderr
        assert result.stdout == "héllo ☃ 🎉\n"


def test_wait_zero_closes_at_once_without_waiting_for_replies() -> None:
    def slow_echo(session: ServerSession) -> None:
        # Reply only once the client's Close has arrived: too late for the client.
        message = session.receive(timeout=None)
        session.received_close.wait(TIMEOUT_UNIT)
        if message is not None:
            try:
                session.send(message.data)
            except ConnectionDisconnected:
                pass

    with WebSocketTestServer(slow_echo) as server:
        result = run_cli(server.url, "--wait", "0", input="a\n")
        assert result.returncode == EXIT_OK, result.stderr
        assert result.stdout == ""


# Options -----------------------------------------------------------------------------------


def test_count_exits_after_n_messages_received() -> None:
    def talkative(session: ServerSession) -> None:
        for i in range(5):
            session.send(f"m{i}")
        session.closed.wait()

    with WebSocketTestServer(talkative) as server, open_cli(server.url, "--count", "2") as cli:
        code, out, err = finish(cli)  # stdin is still open: --count alone ends the session
        assert code == EXIT_OK, err
        assert out == "m0\nm1\n"
        (session,) = server.wait_for_sessions(1)
        assert session.received_close.wait(TIMEOUT_UNIT)
        assert session.close_code_received == 1000


def test_count_at_end_of_input_waits_for_the_messages() -> None:
    with WebSocketTestServer() as server:
        result = run_cli(server.url, "--count", "2", input="a\nb\nc\n")
        assert result.returncode == EXIT_OK, result.stderr
        assert result.stdout == "a\nb\n"


def test_json_pretty_prints_json_and_leaves_other_text_alone() -> None:
    document = {"name": "wsclient", "list": [1, 2], "nested": {"ok": True}}
    with WebSocketTestServer() as server:
        result = run_cli(server.url, "--json", input=json.dumps(document) + "\nnot json\n")
        assert result.returncode == EXIT_OK, result.stderr
        expected = json.dumps(document, indent=2) + "\nnot json\n"
        assert result.stdout == expected


def test_binary_hex_sends_binary_and_prints_hex() -> None:
    received: list[TextMessage | BinaryMessage] = []
    with WebSocketTestServer(_recording_echo(received)) as server:
        result = run_cli(server.url, "--binary", "hex", input="0102ff\n00 10 20\n")
        assert result.returncode == EXIT_OK, result.stderr
        assert result.stdout == "0102ff\n001020\n"
    assert received == [BinaryMessage(b"\x01\x02\xff"), BinaryMessage(b"\x00\x10\x20")]


def test_binary_base64_sends_binary_and_prints_base64() -> None:
    payload = bytes(range(256))
    encoded = base64.b64encode(payload).decode()
    received: list[TextMessage | BinaryMessage] = []
    with WebSocketTestServer(_recording_echo(received)) as server:
        result = run_cli(server.url, "--binary", "base64", input=encoded + "\n")
        assert result.returncode == EXIT_OK, result.stderr
        assert result.stdout == encoded + "\n"
    assert received == [BinaryMessage(payload)]


def test_invalid_binary_input_is_reported_skipped_and_exits_2() -> None:
    with WebSocketTestServer() as server:
        result = run_cli(server.url, "--binary", "hex", input="zz\n0a0b\n")
        assert result.returncode == EXIT_USAGE
        assert result.stdout == "0a0b\n"
        _assert_one_line_error(result.stderr, "not valid hex", "'zz'")


def test_binary_messages_print_as_hex_with_their_size_by_default() -> None:
    handler = send_then_close([b"\x01\x02\xff", "text", b""])
    with WebSocketTestServer(handler) as server, open_cli(server.url) as cli:
        code, out, err = finish(cli)
        assert code == EXIT_OK, err
        assert out == "<binary 3 bytes> 0102ff\ntext\n<binary 0 bytes>\n"
        assert err == "wsclient: connection closed by the server (code 1000)\n"


def test_timestamp_prefixes_each_message() -> None:
    with WebSocketTestServer() as server:
        result = run_cli(server.url, "--timestamp", input="a\nb\n")
        assert result.returncode == EXIT_OK, result.stderr
        stamp = r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\] "
        assert re.fullmatch(f"{stamp}a\n{stamp}b\n", result.stdout), result.stdout


def test_headers_and_origin_reach_the_server() -> None:
    with WebSocketTestServer() as server:
        result = run_cli(
            server.url,
            "-H",
            "X-Token: secret value",
            "--header",
            "X-Empty:",
            "-H",
            "X-Token:second",
            "--origin",
            "https://example.com",
            input="a\n",
        )
        assert result.returncode == EXIT_OK, result.stderr
        (request,) = server.wait_for_requests(1)
        assert request.headers.get_all("X-Token") == ["secret value", "second"]
        assert request.headers.get("X-Empty") == ""
        assert request.headers.get("Origin") == "https://example.com"


def test_subprotocol_offers_in_order_and_the_server_selects() -> None:
    with WebSocketTestServer(subprotocols=["chat", "v2.chat"]) as server:
        args = ["--subprotocol", "v2.chat", "--subprotocol", "chat"]
        result = run_cli(server.url, *args, input="a\n")
        assert result.returncode == EXIT_OK, result.stderr
        (session,) = server.wait_for_sessions(1)
        assert session.subprotocol == "v2.chat"
        assert session.headers.get("Sec-WebSocket-Protocol") == "v2.chat, chat"


@pytest.mark.parametrize(("option", "enabled"), [([], True), (["--no-compression"], False)])
def test_compression_option(option: list[str], enabled: bool) -> None:
    with WebSocketTestServer() as server:
        result = run_cli(server.url, *option, input="a" * 1000 + "\n")
        assert result.returncode == EXIT_OK, result.stderr
        assert result.stdout == "a" * 1000 + "\n"
        (session,) = server.wait_for_sessions(1)
        assert session.deflate_enabled is enabled


def test_ping_interval_sends_keepalive_pings() -> None:
    with WebSocketTestServer() as server, open_cli(server.url, "--ping-interval", "0.05") as cli:
        (session,) = server.wait_for_sessions(1, timeout=RUN_TIMEOUT)
        wait_for_condition(lambda: len(session.pings_received) >= 2, RUN_TIMEOUT)
        assert cli.stdin is not None
        cli.stdin.close()
        code, _, err = finish(cli)
        assert code == EXIT_OK, err


def test_dead_server_is_detected_by_keepalive_and_exits_4() -> None:
    args = ["--ping-interval", "0.05", "--ping-timeout", "0.2"]
    with WebSocketTestServer(never_pong) as server, open_cli(server.url, *args) as cli:
        code, _, err = finish(cli)  # stdin open: only the keepalive can end the session
        assert code == EXIT_TIMEOUT
        _assert_one_line_error(err, "stopped answering keepalive pings")


# Errors ------------------------------------------------------------------------------------


def test_refused_handshake_is_one_line_with_the_status_and_exit_1() -> None:
    with WebSocketTestServer(reject=(403, "Forbidden", b"no")) as server:
        result = run_cli(server.url, input="a\n")
        assert result.returncode == EXIT_CONNECT
        assert result.stdout == ""
        _assert_one_line_error(result.stderr, "HTTP 403 Forbidden", ": no")


def test_debug_adds_the_traceback() -> None:
    with WebSocketTestServer(reject=(403, "Forbidden", b"no")) as server:
        result = run_cli(server.url, "--debug", input="a\n")
        assert result.returncode == EXIT_CONNECT
        assert "Traceback (most recent call last)" in result.stderr
        assert "InvalidStatus" in result.stderr
        assert result.stderr.splitlines()[-1].startswith("wsclient: error: ")


def test_debug_logs_the_library_at_debug_level() -> None:
    with WebSocketTestServer() as server:
        result = run_cli(server.url, "--debug", input="a\n")
        assert result.returncode == EXIT_OK, result.stderr
        assert "DEBUG wsclient" in result.stderr
        assert "connected to" in result.stderr


def test_connection_refused_exits_1() -> None:
    result = run_cli(f"ws://127.0.0.1:{_unused_port()}/", input="a\n")
    assert result.returncode == EXIT_CONNECT
    _assert_one_line_error(result.stderr, "connection refused")


def test_handshake_timeout_exits_4() -> None:
    # The kernel completes TCP connects to a listening socket nobody accepts from: the
    # handshake response never comes.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        result = run_cli(f"ws://127.0.0.1:{port}/", "--timeout", "0.2", input="a\n")
    assert result.returncode == EXIT_TIMEOUT
    _assert_one_line_error(result.stderr, "timed out")


def test_server_close_with_4000_exits_3_with_code_and_reason() -> None:
    handler = close_with(4000, "bye now")
    with WebSocketTestServer(handler) as server, open_cli(server.url) as cli:
        code, out, err = finish(cli)  # stdin open: the server's close alone ends it
        assert code == EXIT_CLOSED
        assert out == ""
        _assert_one_line_error(err, "code 4000", "bye now")


def test_server_normal_close_exits_0_with_a_note() -> None:
    with WebSocketTestServer(send_then_close(["last words"], 1000, "done")) as server:
        with open_cli(server.url) as cli:
            code, out, err = finish(cli)
    assert code == EXIT_OK
    assert out == "last words\n"
    assert err == "wsclient: connection closed by the server (code 1000, reason 'done')\n"


def test_dropped_connection_exits_3() -> None:
    with WebSocketTestServer(drop_after(1)) as server, open_cli(server.url) as cli:
        assert cli.stdin is not None
        cli.stdin.write("a\n")
        cli.stdin.flush()
        code, out, err = finish(cli)
        assert code == EXIT_CLOSED
        assert out == "a\n"
        _assert_one_line_error(err, "1006")


def test_protocol_error_exits_3() -> None:
    def invalid(session: ServerSession) -> None:
        session.send_raw(b"\x83\x00")  # opcode 3 is reserved
        session.closed.wait()

    with WebSocketTestServer(invalid) as server, open_cli(server.url) as cli:
        code, _, err = finish(cli)
        assert code == EXIT_CLOSED
        _assert_one_line_error(err, "protocol error", "1002")


@pytest.mark.parametrize(
    "args",
    [
        ["-H", "no colon"],
        ["--header", ":value"],
        ["--count", "0"],
        ["--ping-interval", "-1"],
        ["--timeout", "0"],
        ["--binary", "octal"],
        ["--wait", "nan"],
        ["not-a-url"],
        ["-H", "Bad Name: x", "ws://127.0.0.1:1/"],
        ["--ca-file", "/nonexistent/ca.pem", "wss://127.0.0.1:1/"],
        ["--ca-file", "/nonexistent/ca.pem", "ws://127.0.0.1:1/"],
        ["--ca-file", "/nonexistent/ca.pem"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == EXIT_USAGE
    assert "Traceback" not in result.stderr
    assert "error" in result.stderr.splitlines()[-1]


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == EXIT_OK
    assert result.stdout == f"wsclient {__version__}\n"


def test_help_documents_the_exit_codes() -> None:
    result = run_cli("--help")
    assert result.returncode == EXIT_OK
    assert "exit codes:" in result.stdout
    for code in (EXIT_OK, EXIT_CONNECT, EXIT_USAGE, EXIT_CLOSED, EXIT_TIMEOUT, EXIT_INTERRUPTED):
        assert re.search(rf"^  {code}\s+\S", result.stdout, re.MULTILINE), code


def test_main_returns_the_exit_code_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == EXIT_OK
    assert capsys.readouterr().out == f"wsclient {__version__}\n"
    assert main(["--count", "zero"]) == EXIT_USAGE


# TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def ca_file(tls_ca: Any, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


def test_tls_with_ca_file(server_ssl_context: Any, ca_file: str) -> None:
    with WebSocketTestServer(ssl_context=server_ssl_context) as server:
        assert server.url.startswith("wss://")
        result = run_cli(server.url, "--ca-file", ca_file, input="secure\n")
        assert result.returncode == EXIT_OK, result.stderr
        assert result.stdout == "secure\n"


def test_tls_unknown_ca_is_a_one_line_error(server_ssl_context: Any) -> None:
    with WebSocketTestServer(ssl_context=server_ssl_context) as server:
        result = run_cli(server.url, input="secure\n")
        assert result.returncode == EXIT_CONNECT
        _assert_one_line_error(result.stderr, "TLS certificate verification failed")


def test_tls_no_verify(server_ssl_context: Any) -> None:
    with WebSocketTestServer(ssl_context=server_ssl_context) as server:
        result = run_cli(server.url, "--no-verify", input="secure\n")
        assert result.returncode == EXIT_OK, result.stderr
        assert result.stdout == "secure\n"


def test_tls_wrong_host_fails_with_ca_file_and_passes_with_no_verify(
    tls_ca: Any, ca_file: str
) -> None:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("other.example").configure_cert(context)
    with WebSocketTestServer(ssl_context=context) as server:
        result = run_cli(server.url, "--ca-file", ca_file, input="x\n")
        assert result.returncode == EXIT_CONNECT
        _assert_one_line_error(result.stderr, "TLS certificate verification failed")
        result = run_cli(server.url, "--ca-file", ca_file, "--no-verify", input="x\n")
        assert result.returncode == EXIT_OK, result.stderr
        assert result.stdout == "x\n"


# Signals and terminals ---------------------------------------------------------------------


@posix_only
def test_ctrl_c_closes_cleanly_and_exits_130() -> None:
    with WebSocketTestServer() as server, open_cli(server.url) as cli:
        assert cli.stdin is not None
        cli.stdin.write("hello\n")
        cli.stdin.flush()
        (session,) = server.wait_for_sessions(1, timeout=RUN_TIMEOUT)
        # The server has the message: the CLI is past connecting, in its input loop.
        wait_for_condition(lambda: session.messages_received >= 1, RUN_TIMEOUT)
        cli.send_signal(signal.SIGINT)
        code, _, err = finish(cli)
        assert code == EXIT_INTERRUPTED
        assert "Traceback" not in err
        assert session.received_close.wait(TIMEOUT_UNIT)
        assert session.close_code_received == 1000


class _Terminal:
    """The CLI on a pseudo-terminal: stdin is a TTY, so it runs interactively."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        import pty

        master, replica = pty.openpty()
        self.master = master
        self.output = b""
        self.process = subprocess.Popen(
            [*CLI, *args], stdin=replica, stdout=replica, stderr=replica, env=env
        )
        os.close(replica)
        self._selector = selectors.DefaultSelector()
        self._selector.register(master, selectors.EVENT_READ)

    def expect(self, data: bytes) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT
        while data not in self.output:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{data!r} not in {self.output!r}"
            if self._selector.select(remaining):
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: the CLI exited and closed the terminal
                    chunk = b""
                assert chunk, f"{data!r} not in {self.output!r}"
                self.output += chunk

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(RUN_TIMEOUT)
        self._selector.close()
        os.close(self.master)


@posix_only
def test_interactive_console_with_history_and_ctrl_d(tmp_path: Path) -> None:
    history = tmp_path / "history"
    env = _env(tmp_path)
    env["WSCLIENT_HISTORY"] = str(history)
    with WebSocketTestServer() as server:
        terminal = _Terminal([server.url], env)
        try:
            terminal.expect(b"> ")
            terminal.type(b"hello\r")
            terminal.expect(b"< hello")
            terminal.type(b"\x04")  # Ctrl-D
            assert terminal.process.wait(RUN_TIMEOUT) == EXIT_OK
        finally:
            terminal.close()
        (session,) = server.wait_for_sessions(1)
        assert session.received_close.wait(TIMEOUT_UNIT)
        assert session.close_code_received == 1000
    assert b"connected to ws://127.0.0.1:" in terminal.output
    assert "hello" in history.read_text().splitlines()


@posix_only
def test_interactive_count_ends_the_session_while_typing(tmp_path: Path) -> None:
    with WebSocketTestServer() as server:
        terminal = _Terminal([server.url, "--count", "1"], _env(tmp_path))
        try:
            terminal.expect(b"> ")
            terminal.type(b"one\r")
            terminal.expect(b"< one")
            terminal.type(b"half-typed")  # the prompt is waiting for more
            assert terminal.process.wait(RUN_TIMEOUT) == EXIT_OK
        finally:
            terminal.close()
        (session,) = server.wait_for_sessions(1)
        assert session.received_close.wait(TIMEOUT_UNIT)
        assert session.close_code_received == 1000
