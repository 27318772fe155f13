"""The sans-I/O protocol core shared by both flavors: bytes in, events and bytes out.

Nothing in this package opens a socket, starts a thread, touches an event loop or reads a
clock; the async and sync flavors drive it.
"""

from .connection import (
    DEFAULT_MAX_SIZE,
    BinaryMessage,
    ClientConnection,
    CloseReceived,
    Connection,
    Event,
    Fragment,
    HandshakeComplete,
    PingReceived,
    PongReceived,
    RequestReceived,
    Role,
    ServerConnection,
    State,
    TextMessage,
)
from .deflate import DeflateOptions, PerMessageDeflate
from .frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    build_frame,
    is_valid_close_code,
    mask,
)
from .handshake import Headers, Request, Response, WebSocketURI, accept_key, parse_uri

__all__ = [
    "DEFAULT_MAX_SIZE",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "BinaryMessage",
    "ClientConnection",
    "CloseReceived",
    "Connection",
    "DeflateOptions",
    "Event",
    "Fragment",
    "HandshakeComplete",
    "Headers",
    "PerMessageDeflate",
    "PingReceived",
    "PongReceived",
    "Request",
    "RequestReceived",
    "Response",
    "Role",
    "ServerConnection",
    "State",
    "TextMessage",
    "WebSocketURI",
    "accept_key",
    "build_frame",
    "is_valid_close_code",
    "mask",
    "parse_uri",
]
