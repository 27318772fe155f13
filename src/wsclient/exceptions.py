"""Every exception wsclient raises, in one hierarchy.

::

    WebSocketError
    ├── ConnectError                 TCP, TLS or proxy connection failed (also ConnectionError)
    │   └── ConnectTimeout           open_timeout expired (also TimeoutError)
    ├── HandshakeError               the HTTP upgrade was refused or invalid (also ConnectionError)
    │   └── InvalidStatus            the server answered with a status other than 101
    ├── ProtocolError                the peer broke RFC 6455 / RFC 7692; carries the close code
    │   ├── InvalidUTF8              a text message or close reason was not UTF-8 (1007)
    │   └── MessageTooBig            a message exceeded ``max_size`` (1009)
    ├── ConnectionDisconnected       the connection is closed; carries code and reason
    ├── ReadTimeout                  a receive did not complete in time (also TimeoutError)
    ├── WriteTimeout                 a send did not complete in time (also TimeoutError)
    └── NoProtocolHandler            send_protocol/receive_protocol without a handler

Invalid arguments from the caller (a bad close code, a header with CR/LF) raise the
builtin ``ValueError`` or ``TypeError`` as usual in Python.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "ConnectionDisconnected",
    "HandshakeError",
    "InvalidStatus",
    "InvalidUTF8",
    "MessageTooBig",
    "NoProtocolHandler",
    "ProtocolError",
    "ReadTimeout",
    "WebSocketError",
    "WriteTimeout",
]


class WebSocketError(Exception):
    """Base class of every exception raised by wsclient."""


class ConnectError(WebSocketError, ConnectionError):
    """The TCP, TLS or proxy connection could not be established.

    The underlying ``OSError`` or ``ssl.SSLError`` is chained as ``__cause__``.
    """


class ConnectTimeout(ConnectError, TimeoutError):
    """Opening the connection (TCP, TLS and handshake) took longer than ``open_timeout``."""


class HandshakeError(WebSocketError, ConnectionError):
    """The HTTP upgrade handshake failed.

    Attributes:
        status: The HTTP status code of the response, or ``None`` if no valid status line
            was received.
        reason: The reason phrase of the status line.
        headers: The response headers as a list of ``(name, value)`` pairs.
        body: The first bytes of the response body (at most 64 KiB), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.headers = list(headers or [])
        self.body = body

    def header(self, name: str) -> str | None:
        """Return the first response header called ``name`` (case-insensitive), if any."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    @property
    def headers_dict(self) -> Mapping[str, str]:
        """The response headers as a dict with lowercase names (last value wins)."""
        return {key.lower(): value for key, value in self.headers}


class InvalidStatus(HandshakeError):
    """The server refused the upgrade with a status other than 101."""


class ProtocolError(WebSocketError):
    """The peer violated the WebSocket protocol.

    Attributes:
        close_code: The close code wsclient sends to the peer when it fails the
            connection because of this error (1002 unless a subclass says otherwise).
    """

    close_code: int = 1002

    def __init__(self, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        if close_code is not None:
            self.close_code = close_code


class InvalidUTF8(ProtocolError):
    """A text message or a close reason was not valid UTF-8 (close code 1007)."""

    close_code = 1007


class MessageTooBig(ProtocolError):
    """A message was larger than ``max_size`` (close code 1009)."""

    close_code = 1009


class ConnectionDisconnected(WebSocketError):
    """The connection is closed (cleanly or not); no more messages will arrive.

    Raised by every receive once the messages buffered before the close have been
    delivered, and by every send after the close. The reason for an abnormal closure
    (a protocol error, a dead peer, a reset) is chained as ``__cause__``.

    Attributes:
        code: The close code (1000 for a normal closure, 1006 when the TCP connection
            dropped without a Close frame).
        reason: The close reason text.
    """

    def __init__(self, code: int = 1006, reason: str = "", message: str | None = None) -> None:
        self.code = code
        self.reason = reason
        if message is None:
            message = f"connection closed: code {code}"
            if reason:
                message += f" ({reason})"
        super().__init__(message)


class ReadTimeout(WebSocketError, TimeoutError):
    """A receive did not complete within its timeout; the connection stays usable."""


class WriteTimeout(WebSocketError, TimeoutError):
    """A send did not complete within its timeout because the peer is not reading.

    The message stays queued, whole and in order, and goes out if the peer resumes
    reading; the connection stays usable (keepalive still detects a dead peer).
    """


class NoProtocolHandler(WebSocketError):
    """``send_protocol`` or ``receive_protocol`` was called without a protocol handler."""
