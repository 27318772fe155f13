"""The sync flavor of wsclient: blocking sockets and threads, the same API as the async one.

It never runs an event loop, so it works inside programs that already run one (notebooks).
"""

from ._shared import ConnectionStats, Message, MessageType
from ._sync.client import TCPConnector, WebSocketClient
from ._sync.connection import WebSocketConnection
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
]
