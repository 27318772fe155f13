"""Helpers for the sans-I/O tests: hand-built frames, an independent frame parser, and
connections driven to OPEN without any socket.

The frame builder and parser here are written from RFC 6455 §5.2 directly and share no code
with ``wsclient.protocol.frames``, so that a bug in the core cannot cancel itself out.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from wsclient.protocol import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ClientConnection,
    Event,
    HandshakeComplete,
    RequestReceived,
    Role,
    ServerConnection,
    State,
    frames,
    parse_uri,
)
from wsclient.protocol.connection import Connection
from wsclient.protocol.handshake import accept_key

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "URL",
    "Frame",
    "close_payload",
    "frame",
    "naive_mask",
    "open_client",
    "open_pair",
    "parse_frames",
    "parse_request",
    "request_key",
    "response_101",
    "sent_frames",
    "transfer",
]

URL = "ws://example.com/chat"


def naive_mask(data: bytes, key: bytes) -> bytes:
    """Reference masking (RFC 6455 §5.3): one byte at a time, as the RFC writes it."""
    return bytes(byte ^ key[index % 4] for index, byte in enumerate(data))


def _fast_reference_mask(data: bytes, key: bytes) -> bytes:
    # Same result as naive_mask, fast enough for multi-megabyte payloads.
    size = len(data)
    repeated = (key * (size // 4 + 1))[:size]
    value = int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(size, "big")


def frame(
    opcode: int,
    payload: bytes | str = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    key: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """Build one raw frame by hand; unmasked (a server frame) unless ``key`` is given.

    ``length`` overrides the declared payload length (to announce more than is sent).
    """
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    first = (
        opcode
        | (0x80 if fin else 0)
        | (0x40 if rsv1 else 0)
        | (0x20 if rsv2 else 0)
        | (0x10 if rsv3 else 0)
    )
    size = len(payload) if length is None else length
    mask_bit = 0x80 if key is not None else 0
    if size < 126:
        header = bytes([first, mask_bit | size])
    elif size < 1 << 16:
        header = bytes([first, mask_bit | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([first, mask_bit | 127]) + size.to_bytes(8, "big")
    if key is None:
        return header + payload
    return header + key + _fast_reference_mask(payload, key)


def close_payload(code: int | None = None, reason: bytes | str = b"") -> bytes:
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    if code is None:
        return reason
    return code.to_bytes(2, "big") + reason


@dataclass(frozen=True)
class Frame:
    """One parsed frame; ``payload`` is unmasked, ``key`` is the masking key if any."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False
    key: bytes | None = None

    @property
    def close_code(self) -> int | None:
        assert self.opcode == OP_CLOSE
        return int.from_bytes(self.payload[:2], "big") if self.payload else None

    @property
    def close_reason(self) -> bytes:
        assert self.opcode == OP_CLOSE
        return self.payload[2:]

    def summary(self) -> tuple[int, bytes, bool, bool]:
        """What the receiver sees: opcode, payload, FIN, RSV1 (not the masking key)."""
        return (self.opcode, self.payload, self.fin, self.rsv1)


def parse_frames(data: bytes, *, masked: bool) -> list[Frame]:
    """Parse ``data`` into complete frames, checking the header encoding strictly.

    Every frame must carry a mask (client frames) or none (server frames), lengths must use
    the shortest encoding, and ``data`` must end on a frame boundary.
    """
    frames: list[Frame] = []
    position = 0
    while position < len(data):
        assert len(data) - position >= 2, "truncated frame header"
        first, second = data[position], data[position + 1]
        position += 2
        size = second & 0x7F
        if size == 126:
            size = int.from_bytes(data[position : position + 2], "big")
            position += 2
            assert size >= 126, "16-bit length used for a short payload"
        elif size == 127:
            size = int.from_bytes(data[position : position + 8], "big")
            position += 8
            assert size >= 1 << 16, "64-bit length used for a short payload"
            assert not size >> 63
        assert bool(second & 0x80) is masked, f"mask bit is {bool(second & 0x80)}"
        key = None
        if masked:
            key = data[position : position + 4]
            position += 4
        payload = data[position : position + size]
        assert len(payload) == size, "truncated payload"
        position += size
        if key is not None:
            payload = _fast_reference_mask(payload, key)
        frames.append(
            Frame(
                opcode=first & 0x0F,
                payload=payload,
                fin=bool(first & 0x80),
                rsv1=bool(first & 0x40),
                rsv2=bool(first & 0x20),
                rsv3=bool(first & 0x10),
                key=key,
            )
        )
    return frames


def sent_frames(connection: Connection) -> list[Frame]:
    """Parse everything ``connection`` queued (masked when it is the client)."""
    return parse_frames(connection.data_to_send(), masked=connection.role is Role.CLIENT)


# Handshakes -------------------------------------------------------------------------------


def parse_request(request: bytes) -> tuple[str, list[tuple[str, str]]]:
    """Split an upgrade request into its request line and its header pairs."""
    assert request.endswith(b"\r\n\r\n")
    request_line, *lines = request[:-4].decode("utf-8").split("\r\n")
    headers = []
    for line in lines:
        name, colon, value = line.partition(": ")
        assert colon, line
        headers.append((name, value))
    return request_line, headers


def request_key(request: bytes) -> str:
    _, headers = parse_request(request)
    [key] = [value for name, value in headers if name.lower() == "sec-websocket-key"]
    return key


def response_101(key: str, *extra: str) -> bytes:
    """A valid 101 answer to the request that carried ``key``, plus ``extra`` header lines."""
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def open_client(*extra_response_headers: str, **kwargs: Any) -> ClientConnection:
    """A ClientConnection driven to OPEN by a hand-built 101 response.

    The request and the HandshakeComplete event are consumed, so the connection starts with
    nothing to send and no event.
    """
    client = ClientConnection(parse_uri(URL), **kwargs)
    key = request_key(client.data_to_send())
    client.receive_data(response_101(key, *extra_response_headers))
    assert client.state is State.OPEN
    [event] = client.events_received()
    assert isinstance(event, HandshakeComplete)
    return client


def open_pair(
    *,
    subprotocol: str | None = None,
    client: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
) -> tuple[ClientConnection, ServerConnection]:
    """A client and a server that completed the handshake with each other."""
    client_connection = ClientConnection(parse_uri(URL), **(client or {}))
    server_connection = ServerConnection(**(server or {}))
    server_connection.receive_data(client_connection.data_to_send())
    [request] = server_connection.events_received()
    assert isinstance(request, RequestReceived)
    server_connection.accept(subprotocol)
    client_connection.receive_data(server_connection.data_to_send())
    [complete] = client_connection.events_received()
    assert isinstance(complete, HandshakeComplete)
    assert client_connection.state is State.OPEN
    assert server_connection.state is State.OPEN
    return client_connection, server_connection


def transfer(source: Connection, destination: Connection) -> list[Event]:
    """Deliver what ``source`` queued to ``destination`` and return its new events."""
    destination.receive_data(source.data_to_send())
    return destination.events_received()


@contextmanager
def fixed_masking_key(key: bytes) -> Iterator[None]:
    """Every frame built inside (up to a thousand) is masked with ``key``."""
    saved = list(frames.masking_keys)
    frames.masking_keys.clear()
    frames.masking_keys.extend([key] * 1000)
    try:
        yield
    finally:
        frames.masking_keys.clear()
        frames.masking_keys.extend(saved)
