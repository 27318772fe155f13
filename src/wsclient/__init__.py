"""wsclient: a WebSocket client (RFC 6455, RFC 7692) in two flavors from one source.

``from wsclient import WebSocketClient`` is the asyncio flavor; ``from wsclient.sync import
WebSocketClient`` is the blocking, thread-based flavor with the same API.
"""

from ._async.client import TCPConnector, WebSocketClient
from ._async.connection import WebSocketConnection
from ._shared import ConnectionStats, Message, MessageType
from ._version import __version__
from .exceptions import (
    ConnectError,
    ConnectionDisconnected,
    ConnectTimeout,
    HandshakeError,
    InvalidStatus,
    InvalidUTF8,
    MessageTooBig,
    NoProtocolHandler,
    ProtocolError,
    ReadTimeout,
    WebSocketError,
    WriteTimeout,
)
from .handlers import JsonHandler, MsgpackHandler, ProtocolHandler
from .protocol import DeflateOptions

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "ConnectionDisconnected",
    "ConnectionStats",
    "DeflateOptions",
    "HandshakeError",
    "InvalidStatus",
    "InvalidUTF8",
    "JsonHandler",
    "Message",
    "MessageTooBig",
    "MessageType",
    "MsgpackHandler",
    "NoProtocolHandler",
    "ProtocolError",
    "ProtocolHandler",
    "ReadTimeout",
    "TCPConnector",
    "WebSocketClient",
    "WebSocketConnection",
    "WebSocketError",
    "WriteTimeout",
    "__version__",
]
