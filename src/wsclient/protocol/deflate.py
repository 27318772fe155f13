"""permessage-deflate (RFC 7692): negotiation and the per-message codec."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from ..exceptions import HandshakeError, InvalidUTF8, MessageTooBig, ProtocolError

EXTENSION_NAME = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"

ExtensionParams = list[tuple[str, str | None]]


def parse_extensions_header(value: str) -> list[tuple[str, ExtensionParams]]:
    """Parse a Sec-WebSocket-Extensions value into ``[(name, [(param, value)])]``.

    Raises:
        ValueError: The value does not follow the RFC 6455 §9.1 grammar.
    """
    result: list[tuple[str, ExtensionParams]] = []
    for item in _split_outside_quotes(value, ","):
        if not item.strip():
            continue
        parts = _split_outside_quotes(item, ";")
        name = parts[0].strip()
        if not _is_token(name):
            raise ValueError(f"invalid extension name {name!r}")
        params: ExtensionParams = []
        for part in parts[1:]:
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not _is_token(key):
                raise ValueError(f"invalid extension parameter {part.strip()!r}")
            param_value: str | None = None
            if sep:
                raw = raw.strip()
                if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                    raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
                if not _is_token(raw):
                    raise ValueError(f"invalid value for extension parameter {key!r}")
                param_value = raw
            params.append((key, param_value))
        result.append((name, params))
    return result


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise ValueError("unterminated quoted string in extension header")
    parts.append("".join(current))
    return parts


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _is_token(text: str) -> bool:
    return bool(text) and all(char in _TOKEN_CHARS for char in text)


def _window_bits(name: str, value: str | None) -> int:
    if value is None or not (value.isascii() and value.isdigit()) or value != str(int(value)):
        raise ValueError(f"{name} needs a value from 8 to 15, got {value!r}")
    bits = int(value)
    if not 8 <= bits <= 15:
        raise ValueError(f"{name} needs a value from 8 to 15, got {bits}")
    return bits


def _answered_window_bits(name: str, value: str | None, offered: int | None) -> int:
    """A window size in the server's answer, at most the one offered (RFC 7692 §7.1.2)."""
    bits = _window_bits(name, value)
    if offered is not None and bits > offered:
        raise ValueError(f"{name}={bits} exceeds the offered {offered}")
    return bits


@dataclass(frozen=True, slots=True)
class DeflateOptions:
    """What the client offers, and how it compresses.

    Attributes:
        client_max_window_bits: Window the client promises to compress with (8-15), offered
            as ``client_max_window_bits=N``; ``None`` offers the bare parameter (the server
            may then choose) and compresses with 15 unless the server lowers it.
        server_max_window_bits: Window the server is asked to compress with; ``None``
            leaves the choice to the server.
        client_no_context_takeover: Promise to reset the compressor after each message.
        server_no_context_takeover: Ask the server to reset its compressor after each message.
        compression_level: zlib level, 0-9 (speed against ratio).
        memory_level: zlib memory level, 1-9 (memory against speed).
        min_size: Messages shorter than this many bytes are sent uncompressed.
    """

    client_max_window_bits: int | None = 12
    server_max_window_bits: int | None = None
    client_no_context_takeover: bool = False
    server_no_context_takeover: bool = False
    compression_level: int = 6
    memory_level: int = 5
    min_size: int = 128

    def __post_init__(self) -> None:
        for name in ("client_max_window_bits", "server_max_window_bits"):
            bits = getattr(self, name)
            if bits is not None and not 8 <= bits <= 15:
                raise ValueError(f"{name} must be between 8 and 15, got {bits}")
        if not 0 <= self.compression_level <= 9:
            raise ValueError("compression_level must be between 0 and 9")
        if not 1 <= self.memory_level <= 9:
            raise ValueError("memory_level must be between 1 and 9")
        if self.min_size < 0:
            raise ValueError("min_size must not be negative")

    def offer(self) -> str:
        """The Sec-WebSocket-Extensions value the client sends."""
        parts = [EXTENSION_NAME]
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_max_window_bits is None:
            parts.append("client_max_window_bits")
        else:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        if self.server_max_window_bits is not None:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        return "; ".join(parts)

    def accept_response(self, params: ExtensionParams) -> PerMessageDeflate:
        """Validate the server's answer to :meth:`offer` and build the client's codec.

        Raises:
            HandshakeError: The server answered with a parameter or value the offer did not
                allow (RFC 7692 §7.1).
        """
        seen: set[str] = set()
        server_no_takeover = False
        client_no_takeover = self.client_no_context_takeover
        server_bits = 15
        client_bits = self.client_max_window_bits or 15
        try:
            for name, value in params:
                if name in seen:
                    raise ValueError(f"duplicate parameter {name}")
                seen.add(name)
                if name == "server_no_context_takeover":
                    if value is not None:
                        raise ValueError("server_no_context_takeover takes no value")
                    server_no_takeover = True
                elif name == "client_no_context_takeover":
                    # Allowed even when not offered (RFC 7692 §7.1.1.2).
                    if value is not None:
                        raise ValueError("client_no_context_takeover takes no value")
                    client_no_takeover = True
                elif name == "server_max_window_bits":
                    server_bits = _answered_window_bits(name, value, self.server_max_window_bits)
                elif name == "client_max_window_bits":
                    client_bits = _answered_window_bits(name, value, self.client_max_window_bits)
                else:
                    raise ValueError(f"unknown parameter {name}")
            if self.server_no_context_takeover and not server_no_takeover:
                raise ValueError("server_no_context_takeover was requested but not accepted")
            if self.server_max_window_bits is not None and "server_max_window_bits" not in seen:
                raise ValueError("server_max_window_bits was requested but not accepted")
        except ValueError as exc:
            raise HandshakeError(f"invalid permessage-deflate response: {exc}") from None
        return PerMessageDeflate(
            compress_bits=client_bits,
            decompress_bits=server_bits,
            compress_no_context_takeover=client_no_takeover,
            decompress_no_context_takeover=server_no_takeover,
            compression_level=self.compression_level,
            memory_level=self.memory_level,
            min_size=self.min_size,
        )


def negotiate_server(
    offers: list[ExtensionParams],
    *,
    server_max_window_bits: int | None = None,
    client_no_context_takeover: bool = False,
    server_no_context_takeover: bool = False,
    compression_level: int = 6,
    memory_level: int = 5,
) -> tuple[str, PerMessageDeflate] | None:
    """Server side: accept the first acceptable permessage-deflate offer.

    Returns the response header value and the server's codec, or ``None`` when no offer
    is acceptable (the server then runs without compression).
    """
    for params in offers:
        try:
            names = [name for name, _ in params]
            if len(set(names)) != len(names):
                continue
            values = dict(params)
            response = [EXTENSION_NAME]
            server_bits = server_max_window_bits or 15
            client_bits = 15
            server_no_takeover = server_no_context_takeover
            client_no_takeover = client_no_context_takeover
            for name, value in params:
                if name == "server_no_context_takeover":
                    if value is not None:
                        raise ValueError(name)
                    server_no_takeover = True
                elif name == "client_no_context_takeover":
                    if value is not None:
                        raise ValueError(name)
                    client_no_takeover = True
                elif name == "server_max_window_bits":
                    server_bits = min(server_bits, _window_bits(name, value))
                elif name == "client_max_window_bits":
                    if value is not None:
                        client_bits = _window_bits(name, value)
                else:
                    raise ValueError(name)
        except ValueError:
            continue
        if server_no_takeover:
            response.append("server_no_context_takeover")
        if client_no_takeover:
            response.append("client_no_context_takeover")
        if "server_max_window_bits" in values or server_max_window_bits is not None:
            response.append(f"server_max_window_bits={server_bits}")
        if "client_max_window_bits" in values and values["client_max_window_bits"] is not None:
            response.append(f"client_max_window_bits={client_bits}")
        codec = PerMessageDeflate(
            compress_bits=server_bits,
            decompress_bits=client_bits,
            compress_no_context_takeover=server_no_takeover,
            decompress_no_context_takeover=client_no_takeover,
            compression_level=compression_level,
            memory_level=memory_level,
            min_size=0,
        )
        return "; ".join(response), codec
    return None


class PerMessageDeflate:
    """The negotiated codec of one connection: compresses outgoing, inflates incoming."""

    def __init__(
        self,
        *,
        compress_bits: int,
        decompress_bits: int,
        compress_no_context_takeover: bool,
        decompress_no_context_takeover: bool,
        compression_level: int = 6,
        memory_level: int = 5,
        min_size: int = 0,
    ) -> None:
        self.compress_bits = compress_bits
        self.decompress_bits = decompress_bits
        self.compress_no_context_takeover = compress_no_context_takeover
        self.decompress_no_context_takeover = decompress_no_context_takeover
        self.compression_level = compression_level
        self.memory_level = memory_level
        self.min_size = min_size
        # zlib cannot compress with a 256-byte window (it silently uses 512), which a peer
        # that asked for 8 bits could not inflate; sending uncompressed is always allowed.
        self.can_compress = compress_bits >= 9
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None
        self.bytes_in_compressed = 0
        self.bytes_in_decompressed = 0
        self.bytes_out_uncompressed = 0
        self.bytes_out_compressed = 0

    @property
    def name(self) -> str:
        return EXTENSION_NAME

    def compress(self, data: bytes | bytearray | memoryview, *, final: bool = True) -> bytes:
        """Compress one message, or one fragment of it when ``final`` is false."""
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = zlib.compressobj(
                self.compression_level, zlib.DEFLATED, -self.compress_bits, self.memory_level
            )
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if final:
            if out.endswith(_TAIL):
                out = out[:-4]
            if self.compress_no_context_takeover:
                self._compressor = None
        self.bytes_out_uncompressed += len(data)
        self.bytes_out_compressed += len(out)
        return out

    def decompress(self, data: bytes, *, final: bool, limit: int | None) -> bytes:
        """Inflate one frame's payload of a compressed message.

        ``limit`` is how many more bytes the message may still grow by; inflation stops
        as soon as it is exceeded, so a small bomb never expands in memory.

        Raises:
            MessageTooBig: The inflated message would exceed the limit (1009).
            ProtocolError: The payload is not a valid deflate stream (1007: the data does
                not match the message type; RFC 7692 names no code).
        """
        decompressor = self._decompressor
        if decompressor is None:
            # Inflating with a larger window than the peer's is always correct, and zlib
            # rejects raw streams made with 8 bits when inflating with 8.
            decompressor = self._decompressor = zlib.decompressobj(-max(self.decompress_bits, 9))
        if final:
            data = data + _TAIL
        try:
            if limit is None:
                out = decompressor.decompress(data)
            else:
                out = decompressor.decompress(data, limit + 1)
                if len(out) > limit or decompressor.unconsumed_tail:
                    raise MessageTooBig("message exceeds max_size once decompressed")
        except zlib.error as exc:
            raise ProtocolError(f"invalid compressed data: {exc}", 1007) from None
        self.bytes_in_compressed += len(data) - (4 if final else 0)
        self.bytes_in_decompressed += len(out)
        # A peer may end the DEFLATE stream with a BFINAL block (RFC 7692 §7.2.3.4): the
        # next message then starts a new stream, which an ended inflater would ignore.
        if final and (self.decompress_no_context_takeover or decompressor.eof):
            self._decompressor = None
        return out

    def inflate_message(self, payload: bytes, is_text: bool, limit: int) -> str | bytes:
        """The data of a whole message of one compressed frame: inflated, and decoded if
        ``is_text`` (the frame parser's short way; ``limit``: max_size, negative for none).

        Raises:
            MessageTooBig: The inflated message would exceed ``limit`` (1009).
            ProtocolError: The payload is not a valid deflate stream (1007).
            InvalidUTF8: Text that is not valid UTF-8 (1007).
        """
        data = self.decompress(payload, final=True, limit=None if limit < 0 else limit)
        if not is_text:
            return data
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise InvalidUTF8("invalid UTF-8 in text message") from None

    def reset_decompressor(self) -> None:
        """Forget the inflate context (used when a message is abandoned)."""
        self._decompressor = None
