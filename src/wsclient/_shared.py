"""Pieces both flavors share as they are (never generated): no I/O, no waiting."""

from __future__ import annotations

import enum
import logging
import numbers
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger("wsclient")
# A library never prints on its own: without this, Python's last-resort handler would write
# wsclient's warnings to stderr in programs that did not configure logging.
logger.addHandler(logging.NullHandler())


def check_seconds(value: float | None, name: str) -> None:
    """Refuse a duration that is not a number of seconds, or is NaN (which would never
    expire, or expire at once, depending on where it is compared). ``None`` (no limit),
    infinity (no limit) and a negative value (already expired) are durations.

    Raises:
        TypeError: ``value`` is not a real number (``bool`` included).
        ValueError: ``value`` is NaN.
    """
    if value is None:
        return
    kind = type(value)
    if kind is not float and kind is not int:
        if kind is bool or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number of seconds or None, not {kind.__name__}")
    if value != value:
        raise ValueError(f"{name} must be a number of seconds or None, not NaN")


class MailboxClosed(Exception):
    """Internal: a mailbox was closed and has nothing left to deliver."""


_Item = TypeVar("_Item")


def add_to_box(
    box: deque[tuple[int, _Item]], maxsize: int, last_sequence: int, items: Sequence[_Item]
) -> int:
    """Append the first ``items`` that fit in a mailbox's ``box`` (``maxsize`` 0: no limit),
    numbered on from ``last_sequence``; return how many were appended."""
    count = len(items)
    if maxsize:
        count = min(count, maxsize - len(box))
        if count <= 0:
            return 0
        if count < len(items):
            items = items[:count]
    first = last_sequence + 1
    box.extend(zip(range(first, first + count), items, strict=True))
    return count


class MessageType(enum.IntEnum):
    """The type of a received message (its opcode)."""

    TEXT = 1
    BINARY = 2


# Globals: a member read through its enum class costs about 70 ns on Python 3.11.
_TEXT, _BINARY = MessageType.TEXT, MessageType.BINARY


@dataclass(frozen=True, slots=True)
class Message:
    """A message returned by ``receive()`` and by iteration.

    Attributes:
        type: :attr:`MessageType.TEXT` or :attr:`MessageType.BINARY`.
        data: ``str`` for text, ``bytes`` for binary.
    """

    type: MessageType
    data: str | bytes

    @property
    def is_text(self) -> bool:
        """Whether this is a text message (``data`` is a ``str``)."""
        return self.type is _TEXT

    @property
    def is_binary(self) -> bool:
        """Whether this is a binary message (``data`` is ``bytes``)."""
        return self.type is _BINARY

    @property
    def text(self) -> str:
        """The data of a text message.

        Raises:
            TypeError: The message is binary.
        """
        if not isinstance(self.data, str):
            raise TypeError("this is a binary message; use .data")
        return self.data


# Mailbox kinds, shared by both flavors' connections.
KIND_TEXT = 0
KIND_BINARY = 1
KIND_PONG = 2
TEXT_ONLY = (KIND_TEXT,)
BINARY_ONLY = (KIND_BINARY,)
PONG_ONLY = (KIND_PONG,)
ANY_MESSAGE = (KIND_TEXT, KIND_BINARY)


@dataclass(slots=True)
class ConnectionStats:
    """Counters of one connection (see ``WebSocketConnection.stats``).

    Attributes:
        messages_in: Messages received (text and binary).
        messages_out: Messages sent.
        bytes_in: Payload bytes received (after decompression).
        bytes_out: Payload bytes sent (before compression).
        dropped_text: Text messages dropped because the buffer was full (``drop_frames``).
        dropped_binary: Binary messages dropped likewise.
        pings_sent: Pings sent (keepalive and explicit).
        pongs_received: Pongs received.
        pings_received: Pings received (each answered with a pong).
        text_buffered: Text messages waiting to be received.
        binary_buffered: Binary messages waiting to be received.
        compression_ratio_in: Decompressed over compressed bytes received (deflate only).
        compression_ratio_out: Uncompressed over compressed bytes sent (deflate only).
    """

    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped_text: int = 0
    dropped_binary: int = 0
    pings_sent: int = 0
    pongs_received: int = 0
    pings_received: int = 0
    text_buffered: int = 0
    binary_buffered: int = 0
    compression_ratio_in: float | None = None
    compression_ratio_out: float | None = None
