"""Frame-level building blocks: opcodes, masking, frame headers, close payloads (RFC 6455 §5)."""

from __future__ import annotations

import os
import struct
import threading
from collections import deque
from collections.abc import Callable
from typing import Final

from ..exceptions import InvalidUTF8, ProtocolError

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

DATA_OPCODES: Final = frozenset({OP_CONTINUATION, OP_TEXT, OP_BINARY})
CONTROL_OPCODES: Final = frozenset({OP_CLOSE, OP_PING, OP_PONG})

MAX_CONTROL_PAYLOAD: Final = 125
MAX_CLOSE_REASON_BYTES: Final = 123

_pack_16 = struct.Struct("!BBH").pack
_pack_64 = struct.Struct("!BBQ").pack

# XOR tables, one per key byte value, built on first use: bytes.translate runs in C, so
# masking never loops over payload bytes in Python (see mask()).
_xor_tables: list[bytes | None] = [None] * 256


def _xor_table(key_byte: int) -> bytes:
    table = _xor_tables[key_byte]
    if table is None:
        table = bytes(value ^ key_byte for value in range(256))
        _xor_tables[key_byte] = table
    return table


def _mask_int(data: bytes | bytearray | memoryview, key: bytes | bytearray) -> bytes:
    # For small payloads one big-int XOR beats four translate calls.
    length = len(data)
    repeated = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        length, "little"
    )


def _py_mask_into(
    out: bytearray, start: int, data: bytes | bytearray | memoryview, key: bytes | bytearray
) -> None:
    length = len(data)
    if length <= 64:
        out[start : start + length] = _mask_int(data, key)
        return
    if not isinstance(data, bytes):
        data = bytes(data)  # stride slices of bytes run in C; of a memoryview, per item
    end = start + length
    for offset in range(4):
        # A stride-4 slice shares one key byte, so one translate table masks it all.
        out[start + offset : end : 4] = data[offset::4].translate(_xor_table(key[offset]))


def _py_mask(data: bytes | bytearray | memoryview, key: bytes | bytearray) -> bytes:
    if len(data) <= 64:
        return _mask_int(data, key)
    out = bytearray(len(data))
    _py_mask_into(out, 0, data, key)
    return bytes(out)


_MaskFunction = Callable[[bytes | bytearray | memoryview, bytes | bytearray], bytes]
_MaskedFrameFunction = Callable[
    [bytes | bytearray, bytes | bytearray | memoryview, bytes | bytearray], bytes
]


def _py_masked_frame(
    header: bytes | bytearray, data: bytes | bytearray | memoryview, key: bytes | bytearray
) -> bytes:
    return bytes(header) + _py_mask(data, key)


def _py_unfilled_bytes(size: int) -> tuple[bytes | bytearray, memoryview]:
    buffer = bytearray(size)
    return buffer, memoryview(buffer)


_MaskIntoFunction = Callable[
    [bytearray, int, bytes | bytearray | memoryview, bytes | bytearray], None
]

_c_mask: _MaskFunction | None
_c_masked_frame: _MaskedFrameFunction | None
_c_mask_into: _MaskIntoFunction | None
_c_unfilled_bytes: Callable[[int], tuple[bytes | bytearray, memoryview]] | None
try:
    from ._speedups import mask as _c_mask
    from ._speedups import mask_into as _c_mask_into
    from ._speedups import masked_frame as _c_masked_frame
    from ._speedups import unfilled_bytes as _c_unfilled_bytes
except ImportError:  # built without a C compiler: the pure-Python path is used
    _c_mask = _c_masked_frame = _c_mask_into = _c_unfilled_bytes = None

#: ``mask(data, key)``: ``data`` XOR-ed with the repeated 4-byte ``key`` (its own inverse).
mask: _MaskFunction = _c_mask or _py_mask
#: ``masked_frame(header, data, key)``: ``header`` followed by ``mask(data, key)``, built
#: in one allocation (a whole client frame without an intermediate copy).
masked_frame: _MaskedFrameFunction = _c_masked_frame or _py_masked_frame
#: ``mask_into(out, offset, data, key)``: write ``mask(data, key)`` into the bytearray
#: ``out`` at ``offset`` (it must fit).
mask_into: _MaskIntoFunction = _c_mask_into or _py_mask_into
#: ``unfilled_bytes(size)``: ``(data, view)``, a buffer of ``size`` bytes (at least 2) to fill
#: through the writable ``view``. Compiled, ``data`` is the ``bytes`` object itself, so the
#: filled message needs no copy; otherwise it is a ``bytearray`` (see ``filled_bytes``).
unfilled_bytes: Callable[[int], tuple[bytes | bytearray, memoryview]] = (
    _c_unfilled_bytes or _py_unfilled_bytes
)


def filled_bytes(data: bytes | bytearray, view: memoryview) -> bytes:
    """The message filled through ``view`` (from :func:`unfilled_bytes`), as ``bytes``."""
    view.release()
    return data if type(data) is bytes else bytes(data)


#: Which masking runs: "c" (the optional compiled module) or "python".
MASK_IMPLEMENTATION = "c" if _c_mask is not None else "python"


# Masking keys come from the OS random source (RFC 6455 §5.3 asks for a strong source of
# entropy), drawn 4 KiB at a time: one getrandom call serves a thousand frames. A deque's
# popleft is atomic, so threads never share a key.
_RANDOM_BLOCK = 4096
#: Masking keys not used yet: ``popleft()`` one, or call :func:`new_masking_key` when empty.
masking_keys: deque[bytes] = deque()


def new_masking_key() -> bytes:
    """A fresh masking key (the next one drawn, or the first of a new block)."""
    try:
        return masking_keys.popleft()
    except IndexError:
        block = os.urandom(_RANDOM_BLOCK)
        masking_keys.extend(block[start : start + 4] for start in range(4, _RANDOM_BLOCK, 4))
        return block[:4]


#: The RSV1 bit of a frame's first byte: set on the first frame of a compressed message.
RSV1 = 0x40
# The keys of the header tables below: a message's opcode, with RSV1 if it is compressed.
_WHOLE_MESSAGE_KINDS = (OP_TEXT, OP_BINARY, RSV1 | OP_TEXT, RSV1 | OP_BINARY)

#: The first two bytes of a masked, unfragmented frame of fewer than 126 bytes, by opcode
#: (with :data:`RSV1` when compressed) and payload length: a small message's header is
#: looked up, not built.
MASKED_SMALL_HEADERS: dict[int, list[bytes]] = {
    kind: [bytes((0x80 | kind, 0x80 | length)) for length in range(126)]
    for kind in _WHOLE_MESSAGE_KINDS
}


#: The first two bytes of a masked, unfragmented frame of 126 to 65,535 bytes, by opcode
#: (with :data:`RSV1` when compressed); the 16-bit length follows.
MASKED_MEDIUM_HEADERS: dict[int, bytes] = {
    kind: bytes((0x80 | kind, 0x80 | 126)) for kind in _WHOLE_MESSAGE_KINDS
}


def build_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    *,
    fin: bool = True,
    rsv1: bool = False,
    masked: bool,
) -> bytes:
    """Serialize one frame; with ``masked`` a fresh key from the OS random source is used."""
    first = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 65536:
        header = _pack_16(first, mask_bit | 126, length)
    else:
        header = _pack_64(first, mask_bit | 127, length)
    if not masked:
        return header + payload
    key = new_masking_key()
    return masked_frame(header + key, payload, key)


# Large masked frames are built in a buffer that each thread reuses. A fresh buffer of a
# megabyte is fresh memory: the kernel maps it page by page as the mask is written, and
# that costs more than the masking itself. Frames larger than SEND_BUFFER_MAX still get a
# buffer of their own (a thread keeps at most this much for the rest of its life).
SEND_BUFFER_MIN: Final = 64 * 1024
SEND_BUFFER_MAX: Final = 1024 * 1024 + 64 * 1024
_MAX_HEADER: Final = 14


class _SendBuffer(threading.local):
    buffer: bytearray | None = None


_send_buffer = _SendBuffer()


def release_send_buffer() -> None:
    """Let the next large frame of this thread go to a new buffer.

    For an I/O layer that handed a view from :func:`build_frames` to a transport that may
    still read it later: the thread's buffer is left to that view.
    """
    _send_buffer.buffer = None


def _reusable_buffer(size: int) -> bytearray:
    buffer = _send_buffer.buffer
    if buffer is None or len(buffer) < size:
        # Rounded up, so that a stream of slightly growing frames does not reallocate
        # each time.
        buffer = _send_buffer.buffer = bytearray(-(-size // SEND_BUFFER_MIN) * SEND_BUFFER_MIN)
    return buffer


def build_frames(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    *,
    max_frame_size: int | None,
    fin: bool = True,
    rsv1: bool = False,
    masked: bool,
    reuse_buffer: bool = False,
) -> bytes | memoryview:
    """Serialize ``payload`` as frames of at most ``max_frame_size`` bytes (``None``: one).

    The first frame carries ``opcode`` and ``rsv1``, the others are continuations; only
    the last may carry FIN (when ``fin``). With ``reuse_buffer``, masked frames of at least
    ``SEND_BUFFER_MIN`` bytes in all are built in this thread's send buffer and returned as
    a view of it: the caller must send or copy the bytes before this thread builds frames
    again, or call :func:`release_send_buffer`.
    """
    length = len(payload)
    if max_frame_size is None or length <= max_frame_size:
        count = 1
        max_frame_size = length
    else:
        count = -(-length // max_frame_size)
    bound = length + count * _MAX_HEADER
    if not (masked and reuse_buffer and SEND_BUFFER_MIN <= length and bound <= SEND_BUFFER_MAX):
        if count == 1:
            return build_frame(opcode, payload, fin=fin, rsv1=rsv1, masked=masked)
        view = memoryview(payload)
        return b"".join(
            build_frame(
                opcode if start == 0 else OP_CONTINUATION,
                view[start : start + max_frame_size],
                fin=fin and start + max_frame_size >= length,
                rsv1=rsv1 and start == 0,
                masked=masked,
            )
            for start in range(0, length, max_frame_size)
        )
    buffer = _reusable_buffer(bound)
    view = memoryview(payload)
    offset = 0
    for start in range(0, length, max_frame_size):
        piece = view[start : start + max_frame_size]
        size = len(piece)
        first = (opcode if start == 0 else OP_CONTINUATION) | (0x40 if rsv1 and start == 0 else 0)
        if fin and start + size >= length:
            first |= 0x80
        if size < 126:
            header = bytes((first, 0x80 | size))
        elif size < 65536:
            header = _pack_16(first, 0x80 | 126, size)
        else:
            header = _pack_64(first, 0x80 | 127, size)
        key = new_masking_key()
        end = offset + len(header) + 4
        buffer[offset:end] = header + key
        mask_into(buffer, end, piece, key)
        offset = end + size
    return memoryview(buffer)[:offset]


# Close codes (RFC 6455 §7.4) ---------------------------------------------------------------

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_UNSUPPORTED_DATA: Final = 1003
CLOSE_NO_STATUS: Final = 1005
CLOSE_ABNORMAL: Final = 1006
CLOSE_INVALID_DATA: Final = 1007
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_MESSAGE_TOO_BIG: Final = 1009
CLOSE_MANDATORY_EXTENSION: Final = 1010
CLOSE_INTERNAL_ERROR: Final = 1011

# 1004, 1005, 1006 and 1015 are reserved for reporting and must never be sent; 1012-1014
# were registered with IANA after RFC 6455 and are used by servers in the wild.
_SENDABLE_BELOW_3000: Final = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a Close frame on the wire."""
    return code in _SENDABLE_BELOW_3000 or 3000 <= code <= 4999


def build_close_payload(code: int | None, reason: str = "") -> bytes:
    """Serialize a Close payload, validating code and reason as the user's input.

    Raises:
        ValueError: ``code`` is not allowed on the wire, or the reason is longer than 123
            UTF-8 bytes, or a reason is given without a code.
    """
    if code is None:
        if reason:
            raise ValueError("a close reason requires a close code")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"invalid close code {code}: use 1000-1003, 1007-1014 or 3000-4999")
    encoded = reason.encode("utf-8")
    if len(encoded) > MAX_CLOSE_REASON_BYTES:
        raise ValueError(
            f"close reason is {len(encoded)} bytes in UTF-8; the limit is {MAX_CLOSE_REASON_BYTES}"
        )
    return code.to_bytes(2, "big") + encoded


def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """Parse a received Close payload into ``(code, reason)``; no payload means 1005.

    Raises:
        ProtocolError: A 1-byte payload or a code not allowed on the wire (1002).
        InvalidUTF8: The reason is not valid UTF-8 (1007).
    """
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolError("close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code} received")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidUTF8("close reason is not valid UTF-8") from exc
    return code, reason
