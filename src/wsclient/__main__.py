"""The command line: ``wsclient [URL] [options]``, also ``python -m wsclient``.

It talks to a WebSocket server: each input line is sent as a message and each message
received is printed on its own line. Without a URL it starts the built-in echo server
(:class:`wsclient.testing.WebSocketTestServer`) in the same process and talks to it.
The user guide is ``docs/cli.md``.

Theory of operation
-------------------
It runs on the sync flavor. A reader thread (``wsclient-cli-reader``) prints the incoming
messages while the main thread reads input lines and sends them:

* Interactive (stdin is a terminal): a ``> `` prompt with line editing and history
  (``readline``); received messages print as ``< message`` above the prompt. Ctrl-D or
  Ctrl-C closes the connection cleanly.
* Non-interactive (stdin is a pipe or a file): every line is sent as it is read; at the end
  of the input the main thread waits, at most ``--wait`` seconds, until as many messages
  arrived as lines were sent (with ``--count N``: until N arrived), then closes.

When the reader has to end the session (``--count`` reached, the server closed), the main
thread may be blocked reading stdin: the reader sends it a signal (SIGUSR1, whose handler
raises only while the main thread waits for input), which interrupts the read. Whichever
thread ends the session first records its outcome (exit code and message); the main thread
then closes the connection, joins the reader and reports that outcome on stderr, as one
line (with the traceback only under ``--debug``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import io
import json
import logging
import math
import os
import signal
import ssl
import sys
import threading
import traceback
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from ._shared import Message
from ._version import __version__
from .exceptions import (
    ConnectError,
    ConnectionDisconnected,
    ConnectTimeout,
    HandshakeError,
    InvalidStatus,
    ProtocolError,
)
from .sync import WebSocketClient, WebSocketConnection

__all__ = [
    "EXIT_CLOSED",
    "EXIT_CONNECT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "main",
]

EXIT_OK = 0
"""The session ended normally."""
EXIT_CONNECT = 1
"""The connection or the upgrade handshake failed."""
EXIT_USAGE = 2
"""Invalid options or input."""
EXIT_CLOSED = 3
"""The server closed the connection abnormally or broke the protocol."""
EXIT_TIMEOUT = 4
"""Opening the connection timed out, or the server stopped answering pings."""
EXIT_INTERRUPTED = 130
"""Interrupted with Ctrl-C."""

DEFAULT_WAIT = 2.0
PROMPT = "> "
HISTORY_VARIABLE = "WSCLIENT_HISTORY"
HISTORY_FILE = ".wsclient_history"
HISTORY_LENGTH = 1000
_NORMAL_CLOSE_CODES = (1000, 1001)
_SECURE_SCHEMES = ("wss", "https")  # the library takes http(s):// as ws(s)://
_BODY_EXCERPT = 200
# Sent by the reader thread to interrupt the main thread's blocking read of stdin.
_WAKE_SIGNAL: signal.Signals | None = getattr(signal, "SIGUSR1", None)
_WAKE_REPEAT = 0.05

EPILOG = """\
exit codes:
  0    the session ended normally: end of input, --count reached, Ctrl-D, or the
       server closed the connection with code 1000 or 1001
  1    the connection or the handshake failed: connection refused, DNS or TLS error,
       the server refused the upgrade (an HTTP status other than 101)
  2    usage error: invalid option, URL, header or CA file; in non-interactive mode
       also an input line that is not valid --binary data (such lines are not sent)
  3    the server closed the connection abnormally (a close code other than 1000 and
       1001, or no Close frame at all) or broke the protocol
  4    timeout: opening the connection took longer than --timeout, or the server
       stopped answering keepalive pings
  130  interrupted (Ctrl-C)

Without a URL, wsclient starts the built-in echo server and talks to it. When stdin is
not a terminal, each line is sent as it is read; at the end of the input wsclient waits
(at most --wait seconds) until as many messages arrived as lines were sent, then closes.

examples:
  wsclient                                        # the built-in echo server
  wsclient wss://example.com/socket -H "Authorization: Bearer TOKEN"
  printf 'a\\nb\\n' | wsclient ws://localhost:8765/ --timestamp
  wsclient ws://localhost:8765/feed --count 10 < /dev/null
"""


class _Wakeup(Exception):
    """Raised in the main thread, while it waits for input, to end the session."""


class _Failure(Exception):
    """The session cannot start: report ``message`` and exit with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Outcome:
    code: int
    message: str | None = None
    error: BaseException | None = None


# Options ----------------------------------------------------------------------------------


def _number(minimum: float, *, strict: bool, allow_inf: bool = False) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if math.isnan(value) or (math.isinf(value) and not allow_inf):
            raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
        if value < minimum or (strict and value == minimum):
            relation = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"must be {relation} {minimum:g}: {text!r}")
        return value

    return convert


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE, got {text!r}")
    return name, value.strip()


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsclient",
        description=(
            "Talk to a WebSocket server: send each input line as a message and print\n"
            "each message received."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "url",
        nargs="?",
        metavar="URL",
        help="ws:// or wss:// URL; without one, talk to the built-in echo server",
    )
    connection = parser.add_argument_group("connection")
    connection.add_argument(
        "-H",
        "--header",
        action="append",
        type=_header,
        default=[],
        metavar="NAME:VALUE",
        help="extra request header (repeatable)",
    )
    connection.add_argument(
        "--subprotocol",
        action="append",
        default=[],
        metavar="NAME",
        help="subprotocol to offer, in order of preference (repeatable)",
    )
    connection.add_argument("--origin", metavar="ORIGIN", help="value of the Origin header")
    connection.add_argument(
        "--compression",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="offer permessage-deflate compression (default: on)",
    )
    connection.add_argument(
        "--ping-interval",
        type=_number(0, strict=False),
        default=30.0,
        metavar="SECONDS",
        help="seconds between keepalive pings; 0 turns them off (default: 30)",
    )
    connection.add_argument(
        "--ping-timeout",
        type=_number(0, strict=False),
        default=20.0,
        metavar="SECONDS",
        help="close the connection (exit code 4) when a keepalive ping gets no pong within "
        "this time; 0 waits forever (default: 20)",
    )
    connection.add_argument(
        "--timeout",
        type=_number(0, strict=True),
        default=10.0,
        metavar="SECONDS",
        help="limit for opening the connection (TCP, TLS and handshake) and for the "
        "closing handshake (default: 10)",
    )
    tls = parser.add_argument_group("TLS (wss:// URLs)")
    tls.add_argument(
        "--no-verify",
        action="store_true",
        help="do not verify the server's certificate and host name",
    )
    tls.add_argument(
        "--ca-file",
        metavar="PATH",
        help="trust the CA certificates in this PEM file (instead of the system's)",
    )
    data = parser.add_argument_group("input and output")
    data.add_argument(
        "--binary",
        choices=("hex", "base64"),
        help="send each input line, decoded from this encoding, as a binary message, and "
        "print binary messages in this encoding (default: text input; binary messages "
        "print as '<binary N bytes> HEX')",
    )
    data.add_argument(
        "--json",
        action="store_true",
        help="pretty-print text messages that are JSON (others print as they are)",
    )
    data.add_argument(
        "--timestamp",
        action="store_true",
        help="prefix each message received with the local time it was printed",
    )
    data.add_argument(
        "--count",
        type=_count,
        metavar="N",
        help="exit after N messages received",
    )
    data.add_argument(
        "--wait",
        type=_number(0, strict=False, allow_inf=True),
        metavar="SECONDS",
        help="non-interactive mode: at the end of the input, wait at most this long for "
        "replies before closing: until as many messages arrived as lines were sent, or "
        "with --count until N arrived (default: 2; with --count: no limit; 'inf': no "
        "limit)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="log the library's DEBUG messages and print tracebacks with errors",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


# Helpers ----------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _report(message: str, *, error: bool) -> None:
    prefix = "wsclient: error: " if error else "wsclient: "
    try:
        sys.stderr.write(prefix + _one_line(message) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _host_and_port(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() in _SECURE_SCHEMES else 80)
        host = parts.hostname or "?"
    except ValueError:
        return url
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _refusal_message(exc: InvalidStatus) -> str:
    message = str(exc)
    body = _one_line(exc.body[: _BODY_EXCERPT * 2].decode("utf-8", "replace"))
    if body:
        if len(body) > _BODY_EXCERPT:
            body = body[:_BODY_EXCERPT] + "..."
        message += f": {body}"
    return message


def _connect_error_message(exc: ConnectError, url: str) -> str:
    cause = exc.__cause__
    where = _host_and_port(url)
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = cause.verify_message or cause.reason or str(cause)
        return (
            f"TLS certificate verification failed for {where}: {detail} "
            "(--ca-file trusts another CA, --no-verify skips the check)"
        )
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake with {where} failed: {cause.reason or cause}"
    if isinstance(cause, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused"
    return str(exc)


def _configure_stdout() -> None:
    # A message the terminal's encoding cannot show must not kill the reader.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (OSError, ValueError):
                pass


@contextmanager
def _logging(debug: bool) -> Iterator[None]:
    logger = logging.getLogger("wsclient")
    handler: logging.Handler
    previous_level = logger.level
    if debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")
        )
        logger.setLevel(logging.DEBUG)
    else:
        # Errors are reported once, by the CLI; keep the library's warnings (a protocol
        # error, a dead peer) from reaching stderr a second time through logging's last
        # resort handler.
        handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


# The session ------------------------------------------------------------------------------


class _Console:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.interactive = sys.stdin.isatty()
        self._conn: WebSocketConnection | None = None
        self._output_lock = threading.Lock()
        self._state = threading.Condition()
        self._sent = 0
        self._received = 0
        self._stop = threading.Event()
        self._outcome: _Outcome | None = None
        self._closing = False
        self._waiting_for_input = False
        self._left_input = threading.Event()
        self._bad_input = False
        self._main_thread = threading.get_ident()
        self._wake_installed = False
        self._readline_buffer: Callable[[], str] | None = None

    # Running ----------------------------------------------------------------------------

    def run(self) -> int:
        args = self.args
        server = None
        try:
            url: str = args.url
            if url is None and args.ca_file is not None:
                raise _Failure(EXIT_USAGE, "--ca-file needs a wss:// URL")
            if url is None:
                from .testing import WebSocketTestServer

                server = WebSocketTestServer(subprotocols=args.subprotocol).start()
                url = server.url
                _report(f"no URL given: talking to the built-in echo server at {url}", error=False)
            # Not a context manager: _session closes the connection, and after a second
            # Ctrl-C nothing should wait for a close again.
            client = WebSocketClient()
            try:
                connection = self._connect(client, url)
            except _Failure as failure:
                if args.debug and failure.__cause__ is not None:
                    traceback.print_exception(failure.__cause__)
                _report(failure.message, error=True)
                return failure.code
            return self._session(connection, url)
        finally:
            if server is not None:
                server.stop()

    def _ssl_context(self, url: str) -> ssl.SSLContext | None:
        args = self.args
        if args.ca_file is None:
            return None
        if urllib.parse.urlsplit(url).scheme.lower() not in _SECURE_SCHEMES:
            raise _Failure(EXIT_USAGE, "--ca-file needs a wss:// URL")
        try:
            context = ssl.create_default_context(cafile=args.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise _Failure(EXIT_USAGE, f"cannot load the CA file {args.ca_file}: {exc}") from exc
        if args.no_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self, client: WebSocketClient, url: str) -> WebSocketConnection:
        args = self.args
        context = self._ssl_context(url)
        try:
            return client.connect(
                url,
                verify=not args.no_verify,
                ssl=context,
                headers=args.header or None,
                subprotocols=args.subprotocol or None,
                start_keepalive=args.ping_interval > 0,
                keepalive_interval=args.ping_interval or 30.0,
                ping_timeout=args.ping_timeout or None,
                open_timeout=args.timeout,
                close_timeout=args.timeout,
                compression="deflate" if args.compression else None,
                origin=args.origin,
            )
        except ConnectTimeout as exc:
            raise _Failure(EXIT_TIMEOUT, str(exc)) from exc
        except InvalidStatus as exc:
            raise _Failure(EXIT_CONNECT, _refusal_message(exc)) from exc
        except HandshakeError as exc:
            raise _Failure(EXIT_CONNECT, f"handshake failed: {exc}") from exc
        except ConnectError as exc:
            raise _Failure(EXIT_CONNECT, _connect_error_message(exc, url)) from exc
        except ValueError as exc:
            raise _Failure(EXIT_USAGE, str(exc)) from exc

    def _session(self, connection: WebSocketConnection, url: str) -> int:
        self._conn = connection
        save_history = self._setup_readline() if self.interactive else None
        if self.interactive:
            selected = connection.subprotocol
            chosen = f" (subprotocol {selected})" if selected else ""
            _report(f"connected to {url}{chosen}; Ctrl-D or Ctrl-C to quit", error=False)
        reader = threading.Thread(target=self._read_loop, name="wsclient-cli-reader", daemon=True)
        try:
            with self._wake_handler():
                reader.start()
                try:
                    self._input_loop()
                    if not self.interactive:
                        self._wait_for_replies()
                except _Wakeup:
                    pass
                except KeyboardInterrupt:
                    self._set_outcome(_Outcome(EXIT_INTERRUPTED))
                with self._state:
                    self._closing = True
                connection.close()
                reader.join(self.args.timeout + 1.0)
        finally:
            if save_history is not None:
                save_history()
        outcome = self._outcome or _Outcome(EXIT_OK)
        if outcome.message is not None:
            if self.args.debug and outcome.error is not None:
                traceback.print_exception(outcome.error)
            _report(outcome.message, error=outcome.code != EXIT_OK)
        if outcome.code == EXIT_OK and self._bad_input and not self.interactive:
            return EXIT_USAGE
        return outcome.code

    def _set_outcome(self, outcome: _Outcome) -> None:
        with self._state:
            if self._outcome is None:
                self._outcome = outcome

    # Input ------------------------------------------------------------------------------

    def _setup_readline(self) -> Callable[[], None] | None:
        try:
            import readline
        except ImportError:  # Windows: plain input()
            return None
        if sys.stdout.isatty():
            self._readline_buffer = readline.get_line_buffer
        path = os.environ.get(HISTORY_VARIABLE)
        if path is None:
            path = os.path.join(os.path.expanduser("~"), HISTORY_FILE)
        if not path:  # set but empty: no history file
            return None
        try:
            readline.read_history_file(path)
        except (OSError, ValueError):
            pass
        readline.set_history_length(HISTORY_LENGTH)

        def save() -> None:
            try:
                readline.write_history_file(path)
            except (OSError, ValueError):
                pass

        return save

    @contextmanager
    def _wake_handler(self) -> Iterator[None]:
        if _WAKE_SIGNAL is None or threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_wake(signum: int, frame: FrameType | None) -> None:
            if self._waiting_for_input:
                raise _Wakeup

        previous = signal.signal(_WAKE_SIGNAL, on_wake)
        self._wake_installed = True
        try:
            yield
        finally:
            self._wake_installed = False
            signal.signal(_WAKE_SIGNAL, previous)

    def _wake_main_thread(self) -> None:
        # Called by the reader after setting _stop. The main thread sets
        # _waiting_for_input before it checks _stop, so either it sees _stop or we see
        # _waiting_for_input. A signal that lands just before the main thread blocks in
        # read() or select() interrupts nothing (its handler then runs only once input
        # arrives), so repeat it until the main thread has left the read.
        if self._wake_installed and _WAKE_SIGNAL is not None:
            while self._waiting_for_input:
                try:
                    signal.pthread_kill(self._main_thread, _WAKE_SIGNAL)
                except (OSError, ValueError):
                    return
                if self._left_input.wait(_WAKE_REPEAT):
                    return
        elif self._waiting_for_input and self._main_thread == threading.main_thread().ident:
            import _thread

            _thread.interrupt_main()  # no signal to spare: wakes at the next line of input

    def _read_line(self) -> str | None:
        """Return the next input line without its line ending; ``None`` to stop."""
        self._left_input.clear()
        self._waiting_for_input = True
        try:
            if self._stop.is_set():
                return None
            if not self.interactive:
                line = sys.stdin.readline()
                return line.rstrip("\r\n") if line else None
            try:
                return input(PROMPT)
            except (EOFError, _Wakeup, KeyboardInterrupt) as exc:
                self._end_prompt_line()
                if isinstance(exc, KeyboardInterrupt):
                    raise
                return None
        except _Wakeup:
            return None
        finally:
            self._waiting_for_input = False
            self._left_input.set()

    def _end_prompt_line(self) -> None:
        with self._output_lock:
            try:
                sys.stdout.write("\n")
                sys.stdout.flush()
            except (OSError, ValueError):
                pass

    def _encode(self, line: str) -> str | bytes | None:
        encoding = self.args.binary
        if encoding is None:
            return line
        try:
            if encoding == "hex":
                return bytes.fromhex(line)
            return base64.b64decode(line.strip(), validate=True)
        except (ValueError, binascii.Error) as exc:
            self._bad_input = True
            _report(f"not valid {encoding}, not sent: {line[:60]!r} ({exc})", error=True)
            return None

    def _input_loop(self) -> None:
        connection = self._conn
        assert connection is not None
        while not self._stop.is_set():
            line = self._read_line()
            if line is None:
                return
            if not line.strip():
                continue
            payload = self._encode(line)
            if payload is None:
                continue
            try:
                if isinstance(payload, str):
                    connection.send_text(payload)
                else:
                    connection.send_bytes(payload)
            except ConnectionDisconnected:
                return  # the reader reports why, once it has printed what arrived before
            with self._state:
                self._sent += 1

    def _wait_for_replies(self) -> None:
        args = self.args
        wait: float | None = args.wait
        if wait is None:
            wait = math.inf if args.count is not None else DEFAULT_WAIT
        timeout = None if math.isinf(wait) else wait
        with self._state:
            target = args.count if args.count is not None else self._sent
            self._state.wait_for(lambda: self._stop.is_set() or self._received >= target, timeout)

    # Output -----------------------------------------------------------------------------

    def _read_loop(self) -> None:
        connection = self._conn
        assert connection is not None
        count = self.args.count
        try:
            while True:
                try:
                    message = connection.receive()
                except ConnectionDisconnected as exc:
                    self._end(self._disconnected(exc))
                    return
                self._emit(self._format(message))
                with self._state:
                    self._received += 1
                    received = self._received
                    self._state.notify_all()
                if count is not None and received >= count:
                    self._end(_Outcome(EXIT_OK))
                    return
        except OSError:
            # stdout was closed (`| head -1`, a closed terminal): stop quietly, and keep
            # the interpreter from complaining when it flushes stdout at exit.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            self._end(_Outcome(EXIT_OK))
        except Exception as exc:  # a bug: report it rather than hang
            self._end(_Outcome(EXIT_CLOSED, f"internal error: {exc!r}", exc))

    def _end(self, outcome: _Outcome) -> None:
        self._set_outcome(outcome)
        self._stop.set()
        with self._state:
            self._state.notify_all()
        self._wake_main_thread()

    def _disconnected(self, exc: ConnectionDisconnected) -> _Outcome:
        with self._state:
            if self._closing:
                return _Outcome(EXIT_OK)
        code, reason = exc.code, exc.reason
        detail = f"code {code}" + (f", reason {reason!r}" if reason else "")
        cause = exc.__cause__
        if isinstance(cause, ProtocolError):
            return _Outcome(
                EXIT_CLOSED,
                f"protocol error: {cause} (connection closed with code {cause.close_code})",
                exc,
            )
        if isinstance(cause, TimeoutError):
            return _Outcome(
                EXIT_TIMEOUT, f"the server stopped answering keepalive pings: {cause}", exc
            )
        if code in _NORMAL_CLOSE_CODES:
            return _Outcome(EXIT_OK, f"connection closed by the server ({detail})")
        if code == 1006:
            because = f": {cause}" if cause is not None else ""
            return _Outcome(
                EXIT_CLOSED,
                f"connection lost without a Close frame (code 1006){because}",
                exc,
            )
        return _Outcome(EXIT_CLOSED, f"connection closed by the server ({detail})", exc)

    def _format(self, message: Message) -> str:
        args = self.args
        data = message.data
        if isinstance(data, str):
            text = data
            if args.json:
                try:
                    text = json.dumps(json.loads(data), indent=2, ensure_ascii=False)
                except ValueError:
                    pass
        elif args.binary == "hex":
            text = data.hex()
        elif args.binary == "base64":
            text = base64.b64encode(data).decode("ascii")
        else:
            text = f"<binary {len(data)} bytes> {data.hex()}".rstrip()
        if self.interactive:
            text = "< " + text
        if args.timestamp:
            now = datetime.datetime.now().isoformat(timespec="milliseconds")
            text = f"[{now}] {text}"
        return text

    def _emit(self, text: str) -> None:
        with self._output_lock:
            if self._readline_buffer is not None and self._waiting_for_input:
                # Print above the prompt, then redraw the prompt and what was typed.
                sys.stdout.write(f"\r\x1b[K{text}\n{PROMPT}{self._readline_buffer()}")
            else:
                sys.stdout.write(text + "\n")
            sys.stdout.flush()


def _exit_status(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit code (see ``wsclient --help``).
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return _exit_status(exc.code)
    _configure_stdout()
    with _logging(args.debug):
        try:
            return _Console(args).run()
        except KeyboardInterrupt:  # during connect, or a second Ctrl-C while closing
            return EXIT_INTERRUPTED
        except _Failure as failure:
            _report(failure.message, error=True)
            return failure.code


if __name__ == "__main__":
    sys.exit(main())
