"""Subprotocol handlers: encode and decode application messages for ``send_protocol``.

A handler's :attr:`ProtocolHandler.name` is offered as a subprotocol; the server must
select it, else the handshake fails.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

__all__ = ["JsonHandler", "MsgpackHandler", "ProtocolHandler"]


class ProtocolHandler(ABC):
    """Base class for subprotocol handlers.

    Subclass it and implement :attr:`name`, :meth:`encode` and :meth:`decode`::

        class UpperHandler(ProtocolHandler):
            name = "upper"

            def encode(self, data):
                return data.upper().encode()

            def decode(self, data):
                return data.decode()
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """The subprotocol name offered in the handshake."""

    @abstractmethod
    def encode(self, data: Any) -> bytes:
        """Encode ``data`` into the bytes of one binary message."""

    @abstractmethod
    def decode(self, data: bytes) -> Any:
        """Decode the bytes of one binary message."""


class JsonHandler(ProtocolHandler):
    """JSON over binary messages (UTF-8), under the subprotocol name ``json``.

    Args:
        name: The subprotocol name to offer.
    """

    def __init__(self, name: str = "json") -> None:
        self._name = name

    @property
    def name(self) -> str:
        """The subprotocol name offered in the handshake (``json`` unless told otherwise)."""
        return self._name

    def encode(self, data: Any) -> bytes:
        """Serialize ``data`` as compact JSON in UTF-8.

        Raises:
            TypeError: ``data`` is not JSON-serializable.
        """
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def decode(self, data: bytes) -> Any:
        """Parse the JSON document in ``data``.

        Raises:
            ValueError: ``data`` is not valid JSON in UTF-8.
        """
        return json.loads(data)


class MsgpackHandler(ProtocolHandler):
    """MessagePack over binary messages, under the subprotocol name ``msgpack``.

    Needs the optional dependency: ``pip install 'wsclient[msgpack]'``.

    Raises:
        ImportError: msgpack is not installed (raised when the handler is created).
    """

    def __init__(self, name: str = "msgpack") -> None:
        try:
            import msgpack
        except ImportError as exc:
            raise ImportError(
                "MsgpackHandler needs msgpack: pip install 'wsclient[msgpack]'"
            ) from exc
        self._msgpack = msgpack
        self._name = name

    @property
    def name(self) -> str:
        """The subprotocol name offered in the handshake (``msgpack`` unless told otherwise)."""
        return self._name

    def encode(self, data: Any) -> bytes:
        """Pack ``data`` with MessagePack (``bytes`` stay binary, ``str`` stays text).

        Raises:
            TypeError: ``data`` holds a type MessagePack cannot pack.
        """
        packed: bytes = self._msgpack.packb(data, use_bin_type=True)
        return packed

    def decode(self, data: bytes) -> Any:
        """Unpack the MessagePack object in ``data`` (strings decoded as UTF-8).

        Raises:
            ValueError: ``data`` is not one valid MessagePack object.
        """
        return self._msgpack.unpackb(data, raw=False)
