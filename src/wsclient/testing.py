"""A loopback WebSocket server for tests, built on the protocol core's server role.

:class:`WebSocketTestServer` listens on 127.0.0.1 (by default on a free port), accepts
WebSocket connections and runs a *handler* for each one in its own thread. It uses blocking
sockets and threads only, so the same server serves the tests of both flavors (asyncio and
blocking) and needs nothing outside the standard library::

    from wsclient.sync import WebSocketClient
    from wsclient.testing import WebSocketTestServer

    with WebSocketTestServer() as server:  # echoes every message back
        with WebSocketClient() as client:
            conn = client.connect(server.url)
            conn.send_text("hello")
            assert conn.receive_text(timeout=5) == "hello"

A handler is any callable that takes a :class:`ServerSession`. It can receive and send
messages, answer or ignore pings, send arbitrary (even invalid) bytes, stop reading, close
with any code or drop the TCP connection, which is how tests script a misbehaving server.
Ready-made handlers: :func:`echo` (the default), :func:`close_with`,
:func:`send_then_close`, :func:`silent`, :func:`never_pong`, :func:`drop_after`, and
:func:`path_router` to serve a different behaviour on each URL path of one server.

The server never needs the test's event loop, so asyncio tests use it as is. Its waiting
calls block the calling thread, though: from a coroutine, call only those that wait for the
server itself (``wait_for_sessions`` once ``connect`` returned, ``receive`` once the
client's send returned), and close with ``close(wait=False)`` (the client's Close can only
come while the event loop runs).

Theory of operation
-------------------
One thread (``wsclient-testserver``) accepts connections. Each connection gets a thread
(``wsclient-testserver-conn``) that does the TLS handshake (when the server has an SSL
context), reads the upgrade request with a deadline, answers it, and then runs the handler.
Once the connection is open, a reader thread (``wsclient-testserver-reader``) feeds every
byte read to the core's :class:`~wsclient.protocol.ServerConnection` under the session's
lock; the core answers pings and Close frames itself, and complete messages go into a queue
that :meth:`ServerSession.receive` reads. Bytes to write are queued, in the order the core
produced them, under that same lock and written with ``sendall`` by whichever thread holds
the write lock, so a thread blocked in a write never keeps the reader from reading.

When the close handshake is complete (either side started it), when the protocol is
violated, or when the client closes TCP, the reader shuts the socket down and sets
:attr:`ServerSession.closed`; :meth:`ServerSession.receive` then returns ``None``. When the
handler returns, the session is closed with 1000 if it is still open (1011 if the handler
raised). :meth:`WebSocketTestServer.stop` shuts every socket down, which wakes every thread,
and joins them all: no thread is left behind.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import logging
import queue
import selectors
import socket
import ssl
import struct
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Final

from .exceptions import ConnectionDisconnected, HandshakeError, ProtocolError, ReadTimeout
from .protocol import (
    OP_PONG,
    BinaryMessage,
    CloseReceived,
    Event,
    Headers,
    PerMessageDeflate,
    PingReceived,
    PongReceived,
    Request,
    RequestReceived,
    ServerConnection,
    State,
    TextMessage,
)
from .protocol.deflate import negotiate_server
from .protocol.frames import build_close_payload
from .protocol.handshake import ServerHandshake

__all__ = [
    "Handler",
    "ClientMessage",
    "Refusal",
    "ServerSession",
    "WebSocketTestServer",
    "close_with",
    "drop_after",
    "echo",
    "never_pong",
    "path_router",
    "send_then_close",
    "silent",
]

logger = logging.getLogger("wsclient.testing")

Handler = Callable[["ServerSession"], None]
"""What a handler is: a callable that serves one :class:`ServerSession`.

A handler may also have a ``prepare(session)`` method. It is called in the connection
thread after the upgrade request is accepted and before the 101 response is sent and
anything is read, so settings such as :meth:`ServerSession.stop_reading` or
:meth:`ServerSession.ignore_pings` apply from the very first frame.
"""

ClientMessage = TextMessage | BinaryMessage
"""A complete message received from the client (not to be confused with ``wsclient.Message``,
what the client's own ``receive()`` returns)."""

Refusal = tuple[int, str, bytes]
"""An HTTP refusal of the upgrade: ``(status, reason, body)``."""

_READ_SIZE: Final = 65536
_LISTEN_BACKLOG: Final = 128
# Longest wait, after refusing an upgrade, for the client to close its side. Reading until
# then keeps unread request bytes from turning our close into a reset that could destroy the
# refusal before the client reads it.
_REFUSAL_LINGER: Final = 1.0
_LINGER_ZERO: Final = struct.pack("ii", 1, 0)
_DEFLATE_SETTINGS: Final = frozenset(
    name
    for name, parameter in inspect.signature(negotiate_server).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)


# Handlers ----------------------------------------------------------------------------------


def echo(session: ServerSession) -> None:
    """Send every text and binary message back with the same type, until the client closes.

    The core answers the client's Close frame; the session then closes TCP.
    """
    try:
        while (message := session.receive(timeout=None)) is not None:
            session.send(message.data)
    except ConnectionDisconnected:
        return


class _PreparedHandler:
    """A handler with a ``prepare`` step (see :data:`Handler`)."""

    def __init__(self, run: Handler, prepare: Handler) -> None:
        functools.update_wrapper(self, run)
        self._run = run
        self._prepare = prepare

    def __call__(self, session: ServerSession) -> None:
        self._run(session)

    def prepare(self, session: ServerSession) -> None:
        self._prepare(session)

    def __repr__(self) -> str:
        return f"<handler {getattr(self._run, '__name__', self._run)!r}>"


def _prepared_by(prepare: Handler) -> Callable[[Handler], _PreparedHandler]:
    def decorate(run: Handler) -> _PreparedHandler:
        return _PreparedHandler(run, prepare)

    return decorate


@_prepared_by(lambda session: session.stop_reading())
def silent(session: ServerSession) -> None:
    """Read nothing and answer nothing; keep TCP open until the server stops.

    Reading is stopped before the first byte is read, so the client's pings and Close frame
    are never answered and, once the socket buffers are full, the client's sends block.
    """
    session.closed.wait()


@_prepared_by(lambda session: session.ignore_pings())
def never_pong(session: ServerSession) -> None:
    """Like :func:`echo`, but never answer pings (a peer whose pongs are lost).

    Pings are ignored from the very first frame.
    """
    echo(session)


def close_with(code: int, reason: str = "") -> Handler:
    """Return a handler that closes at once with ``code`` and ``reason``.

    The close handshake runs as usual: the session waits (bounded) for the client's Close.

    Raises:
        ValueError: The code may not be sent in a Close frame (use 1000-1003, 1007-1014 or
            3000-4999; to send any bytes at all, use :meth:`ServerSession.send_raw`).
    """
    build_close_payload(code, reason)  # fail here, in the test, not in a connection thread

    def handler(session: ServerSession) -> None:
        session.close(code, reason)

    handler.__name__ = handler.__qualname__ = f"close_with({code}, {reason!r})"
    return handler


def send_then_close(messages: Iterable[str | bytes], code: int = 1000, reason: str = "") -> Handler:
    """Return a handler that sends ``messages`` (text for ``str``, binary for ``bytes``)
    then closes with ``code`` and ``reason``."""
    items = list(messages)

    def handler(session: ServerSession) -> None:
        for item in items:
            session.send(item)
        session.close(code, reason)

    handler.__name__ = handler.__qualname__ = "send_then_close"
    return handler


def drop_after(n_messages: int) -> Handler:
    """Return a handler that echoes ``n_messages`` messages, then drops TCP without a Close.

    With ``n_messages=0`` the connection is dropped right after the handshake.
    """
    if n_messages < 0:
        raise ValueError("n_messages must be >= 0")

    def handler(session: ServerSession) -> None:
        for _ in range(n_messages):
            message = session.receive(timeout=None)
            if message is None:
                return
            session.send(message.data)
        session.drop()

    handler.__name__ = handler.__qualname__ = f"drop_after({n_messages})"
    return handler


class _Router:
    def __init__(self, routes: Mapping[str, Handler], default: Handler | None) -> None:
        self.routes = dict(routes)
        self.default = default

    def _route(self, session: ServerSession) -> Handler | None:
        path = session.path.partition("?")[0]
        return self.routes.get(path, self.default)

    def prepare(self, session: ServerSession) -> None:
        prepare = getattr(self._route(session), "prepare", None)
        if callable(prepare):
            prepare(session)

    def __call__(self, session: ServerSession) -> None:
        handler = self._route(session)
        if handler is None:
            session.close(1008, "no handler for this path")
        else:
            handler(session)

    def __repr__(self) -> str:
        return f"path_router({self.routes!r}, default={self.default!r})"


def path_router(routes: Mapping[str, Handler], default: Handler | None = echo) -> Handler:
    """Return a handler that picks a handler by the request's path (query string ignored).

    Example::

        server = WebSocketTestServer(path_router({
            "/close": close_with(4000, "bye"),
            "/silent": silent,
        }))  # every other path echoes

    Args:
        routes: Handler for each path, such as ``"/chat"``.
        default: Handler for other paths; ``None`` closes them with 1008.
    """
    return _Router(routes, default)


# Transport ---------------------------------------------------------------------------------


class _Transport:
    """One accepted socket. Only the connection thread closes it; others shut it down,
    which wakes a thread blocked in ``recv`` or ``sendall`` without freeing the descriptor
    under its feet."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.aborted = False
        self._lock = threading.Lock()

    def start_tls(self, context: ssl.SSLContext, timeout: float) -> None:
        with self._lock:
            if self.aborted:
                raise ConnectionAbortedError("the server is stopping")
            self.sock.settimeout(timeout)
            # The SSL socket takes over the descriptor, so shutdown() keeps working.
            self.sock = context.wrap_socket(
                self.sock, server_side=True, do_handshake_on_connect=False
            )
            tls = self.sock
        assert isinstance(tls, ssl.SSLSocket)
        tls.do_handshake()

    def shutdown(self, how: int = socket.SHUT_RDWR, *, reset: bool = False) -> None:
        with self._lock:
            try:
                if reset:
                    # SO_LINGER with a zero timeout: closing sends a reset.
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
                # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would drop the
                # SSL object while another thread may be using it.
                socket.socket.shutdown(self.sock, how)
            except OSError:
                pass

    def abort(self, *, reset: bool = False) -> None:
        self.aborted = True
        self.shutdown(reset=reset)

    def close(self) -> None:
        with self._lock:
            self.sock.close()


def _drop_pongs(data: bytes) -> bytes:
    """Remove the Pong frames from complete, unmasked frames built by the core."""
    out = bytearray()
    position, end = 0, len(data)
    while position < end:
        length = data[position + 1] & 0x7F
        header = 2
        if length == 126:
            length = int.from_bytes(data[position + 2 : position + 4], "big")
            header = 4
        elif length == 127:
            length = int.from_bytes(data[position + 2 : position + 10], "big")
            header = 10
        stop = position + header + length
        if data[position] & 0x0F != OP_PONG:
            out += data[position:stop]
        position = stop
    return bytes(out)


# Session -----------------------------------------------------------------------------------


class ServerSession:
    """One accepted WebSocket connection, as seen by the server.

    The handler runs in its own thread (``wsclient-testserver-conn``); the methods are
    thread-safe, so a test may also drive a session from its own thread (find it with
    :meth:`WebSocketTestServer.wait_for_sessions`).

    Attributes:
        server: The server that accepted the connection.
        request: The upgrade request.
        path: The request target, such as ``"/chat?room=1"``.
        headers: The request headers (case-insensitive).
        subprotocol: The subprotocol selected, or ``None``.
        close_code_received: Code of the client's Close frame (1005 when it had none), or
            ``None`` before it arrives.
        close_reason_received: Reason of the client's Close frame, or ``None``.
        pings_received: Payloads of the client's pings, in order.
        pongs_received: Payloads of the client's pongs, in order.
        messages_received: Number of complete messages received.
        closed: Set once the connection is closed (the session no longer reads; TCP is
            shut down).
        received_close: Set when the client's Close frame arrives.
        handler_error: The exception the handler raised, if any.
    """

    def __init__(
        self,
        server: WebSocketTestServer,
        transport: _Transport,
        connection: ServerConnection,
        request: Request,
    ) -> None:
        self.server = server
        self.request = request
        self.path = request.path
        self.headers: Headers = request.headers
        self.subprotocol = connection.subprotocol
        self.close_code_received: int | None = None
        self.close_reason_received: str | None = None
        self.pings_received: list[bytes] = []
        self.pongs_received: list[bytes] = []
        self.messages_received = 0
        self.closed = threading.Event()
        self.received_close = threading.Event()
        self.handler_error: Exception | None = None

        self._transport = transport
        self._conn = connection
        self._lock = threading.Lock()  # guards the core, the outbox and the counters
        self._write_lock = threading.Lock()  # held by the one thread writing to the socket
        self._outbox: list[bytes] = []
        self._messages: queue.Queue[ClientMessage | None] = queue.Queue()
        self._ignore_pings = False
        self._paused = False
        self._read_condition = threading.Condition()
        self._closed_marked = False
        self._reader: threading.Thread | None = None

        # accept() queued the 101 response and may have parsed frames sent early.
        output = connection.data_to_send()
        if output:
            self._outbox.append(output)
        if self._absorb(connection.events_received()):
            self.received_close.set()

    def __repr__(self) -> str:
        return f"<ServerSession {self.path!r} closed={self.closed.is_set()}>"

    # State ---------------------------------------------------------------------------------

    @property
    def deflate_enabled(self) -> bool:
        """Whether permessage-deflate was negotiated."""
        return self._conn.deflate is not None

    @property
    def deflate(self) -> PerMessageDeflate | None:
        """The negotiated permessage-deflate codec (window bits, context takeover), if any."""
        return self._conn.deflate

    @property
    def protocol_error(self) -> ProtocolError | None:
        """The client's protocol violation that failed the connection, if any."""
        return self._conn.failure

    @property
    def close_code_sent(self) -> int | None:
        """Code of the Close frame the server sent, or ``None``."""
        return self._conn.close_code_sent

    # Receiving -----------------------------------------------------------------------------

    def receive(self, timeout: float | None = 5.0) -> ClientMessage | None:
        """Return the next message from the client.

        Pings are answered by the core (unless :meth:`ignore_pings`) and never returned.

        Args:
            timeout: Seconds to wait; ``None`` waits until a message arrives or the
                connection closes.

        Returns:
            The message, or ``None`` once the connection is closed and every message that
            arrived before the close has been returned.

        Raises:
            ReadTimeout: No message within ``timeout`` (also a builtin ``TimeoutError``).
        """
        try:
            message = self._messages.get(timeout=timeout)
        except queue.Empty:
            raise ReadTimeout(f"no message from the client within {timeout} s") from None
        if message is None:
            self._messages.put(None)  # for the next caller
        return message

    def stop_reading(self) -> None:
        """Stop reading from the socket, until :meth:`resume_reading`.

        Nothing the client sends is processed (not even pings or a Close frame), and once
        the socket buffers are full the client's sends block.
        """
        with self._read_condition:
            self._paused = True

    def resume_reading(self) -> None:
        """Read from the socket again after :meth:`stop_reading`."""
        with self._read_condition:
            self._paused = False
            self._read_condition.notify_all()

    def ignore_pings(self, flag: bool = True) -> None:
        """Stop (or, with ``False``, resume) answering the client's pings.

        Pings are still recorded in :attr:`pings_received`. Use it to play a dead peer
        whose connection stays up.
        """
        with self._lock:
            self._ignore_pings = flag

    # Sending -------------------------------------------------------------------------------

    def send(self, data: str | bytes) -> None:
        """Send a text message for ``str``, a binary message for ``bytes``.

        Raises:
            ConnectionDisconnected: The connection is closed.
        """
        if isinstance(data, str):
            self.send_text(data)
        else:
            self.send_binary(data)

    def send_text(self, data: str, *, fin: bool = True, compress: bool = True) -> None:
        """Send a text message, or its first fragment when ``fin`` is false.

        Args:
            data: The text.
            fin: Whether this is the whole message; finish it with :meth:`send_continuation`.
            compress: Compress it when permessage-deflate was negotiated.

        Raises:
            ConnectionDisconnected: The connection is closed.
        """
        self._queue(lambda conn: conn.send_text(data, fin=fin, compress=compress))

    def send_binary(
        self, data: bytes | bytearray | memoryview, *, fin: bool = True, compress: bool = True
    ) -> None:
        """Send a binary message, or its first fragment when ``fin`` is false.

        Args:
            data: The payload.
            fin: Whether this is the whole message; finish it with :meth:`send_continuation`.
            compress: Compress it when permessage-deflate was negotiated.

        Raises:
            ConnectionDisconnected: The connection is closed.
        """
        self._queue(lambda conn: conn.send_binary(data, fin=fin, compress=compress))

    def send_continuation(self, data: str | bytes, fin: bool) -> None:
        """Send the next fragment of the message started with ``fin=False``.

        Args:
            data: The fragment (``str`` is encoded as UTF-8).
            fin: Whether this is the last fragment.

        Raises:
            ConnectionDisconnected: The connection is closed.
            ValueError: No fragmented message is in progress.
        """
        self._queue(lambda conn: conn.send_continuation(data, fin=fin))

    def send_ping(self, data: bytes = b"") -> None:
        """Send a Ping (at most 125 bytes); the client's Pong lands in :attr:`pongs_received`.

        Raises:
            ConnectionDisconnected: The connection is closed.
        """
        self._queue(lambda conn: conn.send_ping(data))

    def send_pong(self, data: bytes = b"") -> None:
        """Send an unsolicited Pong (at most 125 bytes).

        Raises:
            ConnectionDisconnected: The connection is closed.
        """
        self._queue(lambda conn: conn.send_pong(data))

    def send_raw(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` to the socket as is, after everything sent before.

        The core does not see these bytes: use it to script frames, even invalid ones
        (bad opcodes, masked frames, truncated headers), with
        :func:`wsclient.protocol.build_frame` or by hand.

        Raises:
            ConnectionDisconnected: The socket is closed.
        """
        with self._lock:
            self._outbox.append(bytes(data))
        self._flush(block=True)

    def close(
        self, code: int = 1000, reason: str = "", wait: bool = True, timeout: float | None = None
    ) -> None:
        """Run the close handshake: send a Close frame, wait for the client's, close TCP.

        Does nothing more than waiting when the connection is already closing or closed.
        Reading resumes if it was stopped, since the client's Close must be read.

        Args:
            code: The close code.
            reason: The close reason (at most 123 UTF-8 bytes).
            wait: Wait for the client's Close frame; if it does not come within
                ``timeout``, drop the connection. Without waiting, the session still
                closes TCP when the client's Close arrives (or when the handler returns).
            timeout: Seconds to wait; defaults to the server's ``close_timeout``.

        Raises:
            ValueError: The code may not be sent or the reason is too long.
        """
        with self._lock:
            if self._conn.state is State.OPEN:
                self._conn.send_close(code, reason)
                output = self._conn.data_to_send()
                if output:
                    self._outbox.append(output)
        try:
            self._flush(block=True)
        except ConnectionDisconnected:
            pass
        if not wait:
            return
        self.resume_reading()
        if timeout is None:
            timeout = self.server.close_timeout
        if not self.closed.wait(timeout):
            self.drop()
        else:
            self._join_reader()

    def drop(self) -> None:
        """Close TCP abruptly, without a Close frame.

        The client sees the connection end (code 1006); the socket is closed with
        ``SO_LINGER`` 0, so a reset follows.
        """
        self._abort(reset=True)
        self._join_reader()

    # Internals -----------------------------------------------------------------------------

    def _abort(self, *, reset: bool = False) -> None:
        self._transport.abort(reset=reset)
        with self._read_condition:
            self._read_condition.notify_all()

    def _join_reader(self) -> None:
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(self.server.close_timeout)

    def _queue(self, action: Callable[[ServerConnection], None]) -> None:
        with self._lock:
            action(self._conn)
            output = self._conn.data_to_send()
            if output:
                self._outbox.append(output)
        self._flush(block=True)

    def _flush(self, *, block: bool) -> None:
        """Write the outbox. Without ``block``, leave it to the thread writing now, which
        looks at the outbox again after releasing the write lock."""
        while True:
            if not self._write_lock.acquire(blocking=block):
                return
            try:
                while True:
                    with self._lock:
                        if not self._outbox:
                            break
                        data = b"".join(self._outbox)
                        self._outbox.clear()
                    try:
                        self._transport.sock.sendall(data)
                    except OSError as exc:
                        with self._lock:
                            self._outbox.clear()
                        self._abort()
                        raise ConnectionDisconnected(1006, "", "the socket is closed") from exc
            finally:
                self._write_lock.release()
            with self._lock:
                if not self._outbox:
                    return

    def _absorb(self, events: list[Event]) -> bool:
        """Record events (under the lock); return whether a Close frame arrived."""
        close = False
        for event in events:
            if isinstance(event, (TextMessage, BinaryMessage)):
                self.messages_received += 1
                self._messages.put(event)
            elif isinstance(event, PingReceived):
                self.pings_received.append(event.data)
            elif isinstance(event, PongReceived):
                self.pongs_received.append(event.data)
            elif isinstance(event, CloseReceived):
                self.close_code_received = event.code
                self.close_reason_received = event.reason
                close = True
        return close

    def _may_read(self) -> bool:
        with self._read_condition:
            while self._paused and not self._transport.aborted:
                self._read_condition.wait()
        return not self._transport.aborted

    def _feed(self, data: bytes) -> None:
        with self._lock:
            try:
                self._conn.receive_data(data)
            except ProtocolError:
                pass  # the core queued a Close with the right code; see protocol_error
            output = self._conn.data_to_send()
            if output and self._ignore_pings:
                output = _drop_pongs(output)
            if output:
                self._outbox.append(output)
            close = self._absorb(self._conn.events_received())
        if close:
            self.received_close.set()

    def _read_loop(self) -> None:
        sock = self._transport.sock
        try:
            while True:
                with self._lock:
                    if self._conn.state is State.CLOSED:
                        break
                if not self._may_read():
                    break
                try:
                    data = sock.recv(_READ_SIZE)
                except OSError:
                    data = b""
                if not self._may_read():
                    break
                if not data:
                    break
                self._feed(data)
                try:
                    self._flush(block=False)
                except ConnectionDisconnected:
                    break
        except Exception as exc:  # a bug: report it rather than losing it in a thread
            self.server._record_error(exc)
        finally:
            with self._lock:
                if self._conn.state is not State.CLOSED:
                    self._conn.receive_eof()
            if not self._transport.aborted:
                try:
                    self._flush(block=True)  # the Close frame the core queued, if any
                except ConnectionDisconnected:
                    pass
            self._transport.shutdown()
            self._mark_closed()

    def _mark_closed(self) -> None:
        with self._lock:
            if self._closed_marked:
                return
            self._closed_marked = True
        self.closed.set()
        self._messages.put(None)

    def _run(self, handler: Handler) -> None:
        error: Exception | None = None
        prepare = getattr(handler, "prepare", None)
        if callable(prepare):
            try:
                prepare(self)
            except Exception as exc:
                error = exc
        self.server._register(self)
        try:
            self._flush(block=True)  # the 101 response
        except ConnectionDisconnected:
            pass
        self._reader = self.server._start_thread(self._read_loop, "wsclient-testserver-reader")
        if error is None:
            try:
                handler(self)
            except ConnectionDisconnected:
                pass  # the client went away: the normal end of many handlers
            except Exception as exc:
                error = exc
        if error is not None:
            self.handler_error = error
            self.server._record_error(error)
        self._finish(1011 if error is not None else 1000)

    def _finish(self, code: int) -> None:
        try:
            if not self.closed.is_set():
                self.close(code, "handler failed" if code == 1011 else "", wait=True)
        except Exception as exc:
            self.server._record_error(exc)
        finally:
            self._abort()
            self._join_reader()
            self._mark_closed()


# Server ------------------------------------------------------------------------------------


class WebSocketTestServer:
    """A thread-based loopback WebSocket server for tests.

    Use it as a context manager (``with WebSocketTestServer() as server:``) or call
    :meth:`start` and :meth:`stop`. Connect to :attr:`url`.

    Args:
        handler: Serves each connection (see :data:`Handler`); defaults to :func:`echo`.
            When it returns, the session is closed with 1000 if still open; if it raises,
            with 1011, and the exception is recorded in :attr:`errors`.
        host: Address to listen on.
        port: Port to listen on; 0 picks a free port.
        ssl_context: Serve ``wss://`` with this server-side context. The TLS handshake runs
            in the connection's thread, so a stalled client cannot block other accepts.
        subprotocols: Subprotocols the server supports; it selects the first one the client
            offered that is in this list.
        compression: Accept permessage-deflate when the client offers it.
        deflate_settings: Server settings for permessage-deflate, keyword arguments of
            :func:`wsclient.protocol.deflate.negotiate_server` (``server_max_window_bits``,
            ``client_no_context_takeover``, ``server_no_context_takeover``,
            ``compression_level``, ``memory_level``).
        max_size: Largest message accepted from the client, in bytes; ``None`` for no
            limit. Larger messages fail the connection with 1009.
        reject: Refuse every upgrade with this ``(status, reason, body)``, or a callable that
            returns the refusal for a :class:`~wsclient.protocol.Request` (``None`` to
            accept it). Refused requests are recorded in :attr:`requests` too.
        response_headers: Extra headers for every response (101 and refusals).
        handshake_timeout: Seconds a client has to complete TLS and send its request.
        close_timeout: Seconds to wait for the client's Close frame, and for each thread
            when stopping.

    Attributes:
        sessions: Every WebSocket connection accepted, in order.
        requests: Every upgrade request received (path and headers), in order, including
            refused ones.
        errors: Exceptions raised by handlers (and by the server's own threads, which
            would be a bug). Empty in a well-behaved test.
        handshake_failures: Why connections failed before the upgrade (TLS errors,
            timeouts, malformed requests).

    Raises:
        TypeError: Unknown key in ``deflate_settings``.
        ValueError: Invalid ``response_headers``.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        subprotocols: Sequence[str] = (),
        compression: bool = True,
        deflate_settings: Mapping[str, object] | None = None,
        max_size: int | None = 64 * 2**20,
        reject: Refusal | Callable[[Request], Refusal | None] | None = None,
        response_headers: list[tuple[str, str]] | None = None,
        handshake_timeout: float = 10.0,
        close_timeout: float = 5.0,
    ) -> None:
        settings = dict(deflate_settings or {})
        unknown = sorted(set(settings) - _DEFLATE_SETTINGS)
        if unknown:
            raise TypeError(
                f"unknown deflate_settings {unknown}; valid: {sorted(_DEFLATE_SETTINGS)}"
            )
        if response_headers:
            ServerHandshake.reject(500, "", b"", response_headers)  # validates the headers
        self.handler: Handler = handler if handler is not None else echo
        self.ssl_context = ssl_context
        self.subprotocols = list(subprotocols)
        self.compression = compression
        self.deflate_settings = settings
        self.max_size = max_size
        self.reject = reject
        self.response_headers = list(response_headers or [])
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout

        self.sessions: list[ServerSession] = []
        self.requests: list[Request] = []
        self.errors: list[Exception] = []
        self.handshake_failures: list[Exception] = []

        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._started = False
        self._stopping = False
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._threads: list[threading.Thread] = []
        self._accept_thread: threading.Thread | None = None
        self._transports: set[_Transport] = set()

    def __repr__(self) -> str:
        state = "running" if self._started and not self._stopping else "stopped"
        return f"<WebSocketTestServer {self._host}:{self._port} {state}>"

    # Addresses -----------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The port the server listens on (the real one once started, also with port 0)."""
        return self._port

    @property
    def url(self) -> str:
        """``ws://host:port/`` (``wss://`` with TLS).

        Raises:
            RuntimeError: The server was not started.
        """
        return self.url_for("/")

    def url_for(self, path: str) -> str:
        """The URL of ``path`` on this server, such as ``url_for("/chat")``.

        Raises:
            RuntimeError: The server was not started.
        """
        if not self._started:
            raise RuntimeError("start the server first")
        scheme = "wss" if self.ssl_context is not None else "ws"
        host = f"[{self._host}]" if ":" in self._host else self._host
        if not path.startswith("/"):
            path = "/" + path
        return f"{scheme}://{host}:{self._port}{path}"

    # Life cycle ----------------------------------------------------------------------------

    def start(self) -> WebSocketTestServer:
        """Bind, listen, and start accepting connections in a thread.

        Returns:
            The server itself.

        Raises:
            RuntimeError: The server was already started.
            OSError: The address could not be bound.
        """
        with self._lock:
            if self._started:
                raise RuntimeError("a WebSocketTestServer can be started only once")
            self._started = True
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        wake: tuple[socket.socket, socket.socket] | None = None
        selector: selectors.BaseSelector | None = None
        try:
            if sys.platform != "win32":
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self._host, self._port))
            listener.listen(_LISTEN_BACKLOG)
            listener.setblocking(False)
            wake = socket.socketpair()
            wake[0].setblocking(False)
            selector = selectors.DefaultSelector()
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wake[0], selectors.EVENT_READ)
        except BaseException:
            listener.close()
            if wake is not None:
                wake[0].close()
                wake[1].close()
            if selector is not None:
                selector.close()
            with self._lock:
                self._stopping = True
            raise
        self._port = listener.getsockname()[1]
        self._listener, self._wake, self._selector = listener, wake, selector
        self._accept_thread = self._start_thread(self._accept_loop, "wsclient-testserver")
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop: close the listener and every connection, and join every thread.

        Connections are shut down abruptly (no Close frame; close them in the test first
        for a clean closure), which wakes handlers blocked in :meth:`ServerSession.receive`
        (it returns ``None``) or in a send (it raises ``ConnectionDisconnected``).
        Idempotent.

        Args:
            timeout: Seconds to wait for the threads, in all; defaults to twice
                ``close_timeout``. A thread still running then (a handler blocked on
                something the server cannot interrupt) is reported with a
                ``RuntimeWarning``.
        """
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            started = self._started
        if not started:
            return
        if timeout is None:
            timeout = 2 * self.close_timeout
        deadline = time.monotonic() + timeout
        assert self._wake is not None and self._selector is not None
        assert self._listener is not None
        try:
            self._wake[1].send(b"\0")
        except OSError:
            pass
        if self._accept_thread is not None:
            self._accept_thread.join(max(0.0, deadline - time.monotonic()))
        self._selector.close()
        self._listener.close()
        self._wake[0].close()
        self._wake[1].close()

        with self._lock:
            transports = list(self._transports)
            sessions = list(self.sessions)
        for transport in transports:
            transport.abort()
        for session in sessions:
            session._abort()
        current = threading.current_thread()
        while True:
            with self._lock:
                alive = [t for t in self._threads if t.is_alive() and t is not current]
            remaining = deadline - time.monotonic()
            if not alive or remaining <= 0:
                break
            for thread in alive:
                thread.join(max(0.0, deadline - time.monotonic()))
        if alive:
            names = ", ".join(thread.name for thread in alive)
            warnings.warn(
                f"WebSocketTestServer.stop(): threads still running after {timeout} s: "
                f"{names} (a handler is blocked on something the server cannot interrupt)",
                RuntimeWarning,
                stacklevel=2,
            )

    def __enter__(self) -> WebSocketTestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # Waiting -------------------------------------------------------------------------------

    def wait_for_sessions(self, count: int, timeout: float = 5.0) -> list[ServerSession]:
        """Wait until ``count`` WebSocket connections were accepted; return the first ones.

        Raises:
            TimeoutError: Fewer connections within ``timeout`` seconds.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.sessions) >= count, timeout):
                raise TimeoutError(
                    f"{len(self.sessions)} of {count} WebSocket sessions within {timeout} s"
                )
            return self.sessions[:count]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[Request]:
        """Wait until ``count`` upgrade requests arrived (accepted or refused).

        Raises:
            TimeoutError: Fewer requests within ``timeout`` seconds.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(
                    f"{len(self.requests)} of {count} upgrade requests within {timeout} s"
                )
            return self.requests[:count]

    # Internals -----------------------------------------------------------------------------

    def _start_thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()
        return thread

    def _record_error(self, exc: Exception) -> None:
        logger.error("wsclient.testing: %s", exc, exc_info=exc)
        with self._lock:
            self.errors.append(exc)

    def _register(self, session: ServerSession) -> None:
        with self._changed:
            self.sessions.append(session)
            self._changed.notify_all()

    def _accept_loop(self) -> None:
        assert self._selector is not None and self._wake is not None
        try:
            while True:
                for key, _ in self._selector.select():
                    if key.fileobj is self._wake[0]:
                        return
                if not self._accept_pending():
                    return
        except Exception as exc:
            self._record_error(exc)

    def _accept_pending(self) -> bool:
        """Accept every pending connection; return ``False`` when stopping."""
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as exc:  # such as ECONNABORTED or EMFILE: keep serving
                with self._lock:
                    self.handshake_failures.append(exc)
                return True
            sock.setblocking(True)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            transport = _Transport(sock)
            with self._lock:
                if self._stopping:
                    sock.close()
                    return False
                self._transports.add(transport)
            self._start_thread(
                functools.partial(self._serve, transport), "wsclient-testserver-conn"
            )

    def _serve(self, transport: _Transport) -> None:
        try:
            accepted = self._handshake(transport)
            if accepted is not None:
                ServerSession(self, transport, *accepted)._run(self.handler)
        except Exception as exc:
            if not transport.aborted:
                with self._lock:
                    self.handshake_failures.append(exc)
        finally:
            transport.close()
            with self._lock:
                self._transports.discard(transport)

    def _handshake(self, transport: _Transport) -> tuple[ServerConnection, Request] | None:
        """TLS and the upgrade; return the open connection, or ``None`` if refused."""
        deadline = time.monotonic() + self.handshake_timeout
        if self.ssl_context is not None:
            transport.start_tls(self.ssl_context, self.handshake_timeout)
        sock = transport.sock
        conn = ServerConnection(
            max_size=self.max_size,
            deflate=self.compression,
            deflate_settings=self.deflate_settings,
        )
        request: Request | None = None
        while request is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no upgrade request within {self.handshake_timeout} s")
            sock.settimeout(remaining)
            data = sock.recv(_READ_SIZE)
            if not data:
                raise ConnectionError("the client closed before completing its request")
            try:
                conn.receive_data(data)
            except HandshakeError as exc:
                self._refuse(sock, transport, conn, (400, "Bad Request", f"{exc}\n".encode()))
                raise
            for event in conn.events_received():
                if isinstance(event, RequestReceived):
                    request = event.request
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()

        refusal: Refusal | None
        if callable(self.reject):
            try:
                refusal = self.reject(request)
            except Exception as exc:
                self._record_error(exc)
                refusal = (500, "Internal Server Error", b"")
        else:
            refusal = self.reject
        if refusal is not None:
            self._refuse(sock, transport, conn, refusal)
            return None
        problem = conn.handshake.validate()
        if problem is not None:
            self._refuse(sock, transport, conn, (400, "Bad Request", f"{problem}\n".encode()))
            raise HandshakeError(f"invalid upgrade request: {problem}")
        offered = conn.handshake.offered_subprotocols()
        subprotocol = next((name for name in offered if name in self.subprotocols), None)
        try:
            conn.accept(subprotocol, self.response_headers)
        except ProtocolError:
            pass  # frames sent before the 101 broke the protocol: the session starts closed
        sock.settimeout(None)
        return conn, request

    def _refuse(
        self, sock: socket.socket, transport: _Transport, conn: ServerConnection, refusal: Refusal
    ) -> None:
        status, reason, body = refusal
        conn.reject(status, reason, body, self.response_headers)
        sock.sendall(conn.data_to_send())
        transport.shutdown(socket.SHUT_WR)
        sock.settimeout(_REFUSAL_LINGER)
        try:
            while sock.recv(_READ_SIZE):
                pass
        except OSError:
            pass


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wsclient.testing",
        description="Serve a loopback WebSocket echo server until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    args = parser.parse_args(argv)
    with WebSocketTestServer(host=args.host, port=args.port) as server:
        print(server.url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(_main())
