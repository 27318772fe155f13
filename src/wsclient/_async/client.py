"""WebSocketClient: opens the transport, runs the upgrade handshake, hands over a connection."""

from __future__ import annotations

import ssl as ssl_module
from collections.abc import Iterable
from typing import Any

from .._shared import check_seconds, logger
from ..exceptions import ConnectError, ConnectTimeout, HandshakeError, ProtocolError
from ..protocol import DEFAULT_MAX_SIZE, ClientConnection, DeflateOptions, State, WebSocketURI
from ..protocol.handshake import DEFAULT_USER_AGENT, HeadersLike, parse_uri
from ._backend import AsyncStream, open_stream
from ._backend import monotonic as _monotonic
from .connection import DEFAULT_MAX_FRAME_SIZE, Channel, WebSocketConnection

_CONNECTING = State.CONNECTING  # a global: State.CONNECTING costs about 70 ns on Python 3.11

# The keys conn_opts accepts: the WebSocketConnection constructor's options.
CONN_OPTS = (
    "text_queue_maxsize",
    "binary_queue_maxsize",
    "drop_frames",
    "protocol_handler",
    "pong_queue_maxsize",
    "stream_fragments",
)


class TCPConnector:
    """Opens the byte stream a WebSocket runs over: TCP, with TLS for ``wss://``.

    It is the seam through which other transports (proxies, Unix sockets) plug in: give
    :class:`WebSocketClient` an object with the same ``open`` method.
    """

    async def open(
        self,
        uri: WebSocketURI,
        *,
        ssl_context: ssl_module.SSLContext | None,
        timeout: float | None,
    ) -> AsyncStream:
        """Open a stream to ``uri``'s host and port within ``timeout`` seconds.

        Raises:
            TimeoutError: The connection took too long.
            OSError: The connection or the TLS handshake failed.
        """
        return await open_stream(
            uri.host,
            uri.port,
            ssl_context=ssl_context,
            server_hostname=uri.host if ssl_context is not None else None,
            timeout=timeout,
        )


def _ssl_context(
    uri: WebSocketURI, verify: bool, ssl: ssl_module.SSLContext | None
) -> ssl_module.SSLContext | None:
    if not uri.secure:
        if ssl is not None:
            raise ValueError("an ssl context was given for a ws:// URL; use wss://")
        return None
    if ssl is not None:
        return ssl
    context = ssl_module.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl_module.CERT_NONE
    return context


# Shared (it is frozen): checking a new one costs a connect about 13,000 instructions.
_DEFAULT_DEFLATE = DeflateOptions()


def _deflate_options(compression: str | DeflateOptions | None) -> DeflateOptions | None:
    if compression is None:
        return None
    if isinstance(compression, DeflateOptions):
        return compression
    if compression == "deflate":
        return _DEFAULT_DEFLATE
    raise ValueError(
        f"compression must be 'deflate', a DeflateOptions or None, not {compression!r}"
    )


def _check_conn_opts(conn_opts: dict[str, Any] | None) -> dict[str, Any]:
    if not conn_opts:
        return {}
    options = dict(conn_opts)
    unknown = sorted(set(options) - set(CONN_OPTS))
    if unknown:
        raise TypeError(
            f"unknown conn_opts key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(CONN_OPTS)}"
        )
    return options


class WebSocketClient:
    """Connects to WebSocket servers.

    Use it as a context manager to close, on exit, every connection it opened.

    Args:
        connector: Opens the transport; defaults to :class:`TCPConnector`.
    """

    def __init__(self, connector: TCPConnector | None = None) -> None:
        self.connector = connector or TCPConnector()
        """Opens the transport of each new connection."""
        self._connections: list[WebSocketConnection] = []
        self._prune_at = 64

    async def connect(
        self,
        url: str,
        verify: bool = True,
        ssl: ssl_module.SSLContext | None = None,
        headers: HeadersLike | None = None,
        subprotocols: Iterable[str] | None = None,
        start_keepalive: bool = True,
        keepalive_interval: float = 30.0,
        conn_opts: dict[str, Any] | None = None,
        *,
        open_timeout: float | None = 10.0,
        close_timeout: float | None = 10.0,
        ping_timeout: float | None = 20.0,
        max_size: int | None = DEFAULT_MAX_SIZE,
        max_frame_size: int | None = DEFAULT_MAX_FRAME_SIZE,
        write_limit: int | tuple[int, int] = 65536,
        compression: str | DeflateOptions | None = "deflate",
        origin: str | None = None,
        user_agent: str | None = DEFAULT_USER_AGENT,
    ) -> WebSocketConnection:
        """Open a WebSocket connection and return it once the handshake succeeded.

        Args:
            url: ``ws://`` or ``wss://`` URL.
            verify: Verify the server's certificate and host name (``wss://``).
            ssl: TLS context to use as given (overrides ``verify``).
            headers: Extra request headers (a mapping or ``(name, value)`` pairs).
            subprotocols: Subprotocols to offer, in order of preference.
            start_keepalive: Start pinging the server every ``keepalive_interval`` seconds.
            keepalive_interval: Seconds between keepalive pings.
            conn_opts: Options for :class:`WebSocketConnection` (``text_queue_maxsize``,
                ``binary_queue_maxsize``, ``drop_frames``, ``protocol_handler``,
                ``pong_queue_maxsize``, ``stream_fragments``).
            open_timeout: Bound on TCP connect, TLS and the handshake together.
            close_timeout: Bound on the closing handshake.
            ping_timeout: Seconds to wait for a keepalive pong before closing with 1011;
                ``None`` never gives up.
            max_size: Largest incoming message in bytes (after decompression); ``None``
                for no limit.
            max_frame_size: Send messages longer than this as several frames, so that
                pings and pongs can pass between them; ``None`` never splits.
            write_limit: High-water mark of the outgoing buffer in bytes, or
                ``(high, low)``: a send waits while more than ``high`` bytes are queued,
                until ``low`` remain (default low: a quarter of high). The sync flavor
                sends like ``socket.sendall``: a send returns once the kernel has it all.
            compression: ``"deflate"`` (default) to offer permessage-deflate, a
                :class:`~wsclient.protocol.DeflateOptions` to tune it, ``None`` for none.
            origin: Value of the Origin header.
            user_agent: Value of the User-Agent header; ``None`` sends none.

        Returns:
            The open connection.

        Raises:
            TypeError: ``conn_opts`` has an unknown key, or a timeout or interval is
                not a number.
            ValueError: An invalid URL, header, subprotocol or option (a NaN timeout too).
            ConnectTimeout: ``open_timeout`` expired (also a ``TimeoutError``).
            ConnectError: The TCP or TLS connection failed.
            HandshakeError: The server refused or botched the upgrade (also a
                ``ConnectionError``); :class:`~wsclient.exceptions.InvalidStatus` for a
                status other than 101.
        """
        options = _check_conn_opts(conn_opts)
        for seconds, name in (
            (open_timeout, "open_timeout"),
            (close_timeout, "close_timeout"),
            (ping_timeout, "ping_timeout"),
            (keepalive_interval, "keepalive_interval"),
        ):
            check_seconds(seconds, name)
        uri = parse_uri(url)
        handler = options.get("protocol_handler")
        offered = list(subprotocols or [])
        if handler is not None and handler.name not in offered:
            offered.append(handler.name)
        protocol = ClientConnection(
            uri,
            headers=headers,
            subprotocols=offered or None,
            origin=origin,
            user_agent=user_agent,
            deflate_options=_deflate_options(compression),
            max_size=max_size,
            # Set before the handshake: frames may arrive in the same read as the response.
            stream_messages=bool(options.get("stream_fragments", False)),
            # The reader fails the connection once the messages before the error are handled.
            defer_failure=True,
        )
        if max_frame_size is not None and max_frame_size <= 0:
            raise ValueError("max_frame_size must be positive or None")
        high, low = (
            write_limit if isinstance(write_limit, tuple) else (write_limit, write_limit // 4)
        )
        if not 0 <= low <= high:
            raise ValueError("write_limit needs 0 <= low <= high")
        ssl_context = _ssl_context(uri, verify, ssl)
        deadline = None if open_timeout is None else _monotonic() + open_timeout
        try:
            stream = await self.connector.open(uri, ssl_context=ssl_context, timeout=open_timeout)
        except TimeoutError as exc:
            raise ConnectTimeout(
                f"timed out connecting to {uri.host}:{uri.port} after {open_timeout} s"
            ) from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {uri.host}:{uri.port}: {exc}") from exc
        early_error: ProtocolError | None = None
        try:
            stream.write_nowait(protocol.data_to_send())
            while protocol.state is _CONNECTING:
                remaining = None if deadline is None else deadline - _monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                data = await stream.read(remaining)
                try:
                    if data:
                        protocol.receive_data(data)
                    else:
                        protocol.receive_eof()
                except ProtocolError as exc:
                    # The handshake succeeded but the first frames were invalid.
                    early_error = exc
            if handler is not None and protocol.subprotocol != handler.name:
                # The upgrade succeeded, so say goodbye properly before giving up.
                protocol.send_close(1008, f"subprotocol {handler.name} required")
                stream.write_nowait(protocol.data_to_send())
                raise HandshakeError(
                    f"the server did not select subprotocol {handler.name!r} "
                    f"(selected: {protocol.subprotocol!r})"
                )
        except TimeoutError as exc:
            stream.abort()
            stream.close()
            raise ConnectTimeout(
                f"timed out waiting for the handshake response after {open_timeout} s"
            ) from exc
        except HandshakeError:
            stream.abort()
            stream.close()
            raise
        except OSError as exc:
            stream.abort()
            stream.close()
            raise ConnectError(f"connection lost during the handshake: {exc}") from exc
        except BaseException:
            stream.abort()
            stream.close()
            raise
        stream.set_write_limits(high, low)
        connection = WebSocketConnection(
            Channel(stream, protocol, close_timeout, ping_timeout, max_frame_size), **options
        )
        if connection._log_frames:
            logger.debug("connected to %s (subprotocol %s)", url, protocol.subprotocol)
        if early_error is not None:
            connection._error = early_error
        # Frames that arrived with the response may already need an answer (the reply to a
        # Close, a pong): send it now, not with the next write, which may never come.
        output = protocol.data_to_send()
        if output:
            stream.write_nowait(output)
        connection._start(start_keepalive and early_error is None, keepalive_interval)
        if len(self._connections) >= self._prune_at:
            # Forget closed connections now and then: amortized O(1) per connect.
            self._connections = [conn for conn in self._connections if not conn.closed]
            self._prune_at = max(64, 2 * len(self._connections))
        self._connections.append(connection)
        return connection

    async def close(self) -> None:
        """Close every connection this client opened that is still open."""
        connections, self._connections = self._connections, []
        for connection in connections:
            await connection.close()

    async def __aenter__(self) -> WebSocketClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
