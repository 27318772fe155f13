"""The HTTP/1.1 opening handshake (RFC 6455 §4), both sides, without I/O."""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
import sys
from binascii import b2a_base64
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from .._version import __version__
from ..exceptions import HandshakeError, InvalidStatus
from .deflate import (
    EXTENSION_NAME,
    DeflateOptions,
    PerMessageDeflate,
    negotiate_server,
    parse_extensions_header,
)

try:
    # CPython's own SHA-1 takes about 2,000 fewer instructions per digest of a key than
    # OpenSSL's (hashlib.sha1), whose context set-up dominates for 60 bytes.
    from _sha1 import sha1 as _sha1  # type: ignore[import-not-found]  # (no stub)
except ImportError:  # a build without it
    from hashlib import sha1 as _sha1

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADERS = 128
MAX_LINE = 8192
MAX_HEAD = 65536
MAX_BODY = 65536
DEFAULT_USER_AGENT = f"wsclient/{__version__} Python/{sys.version_info[0]}.{sys.version_info[1]}"

HeadersLike = Mapping[str, str] | Iterable[tuple[str, str]]

# RFC 9110 §5.5: field values are visible characters, spaces and tabs (and obs-text).
# Regular expressions, not per-character loops: a handshake checks a few hundred characters.
_FORBIDDEN_VALUE_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CR_LF_NUL = re.compile(r"[\r\n\x00]")
# RFC 9110 §5.6.2 token.
_TOKEN_CHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_TOKEN = re.compile(_TOKEN_CHAR + "+")
# A header line after its CR LF: a token name and no CR, LF or NUL in the value, as
# _parse_header_lines requires; and (only so that _HEADER_FIELD need not strip) no space or
# tab at the end of the value.
_HEADER_LINE = r"\r\n" + _TOKEN_CHAR + r"+:[^\r\n\x00]*(?<![ \t])"
_HEADER_BLOCK = re.compile(f"(?:{_HEADER_LINE})*")
# A response head as servers send it, whole, checked in one match instead of several calls
# per line (each call costs about as much as matching a line): "HTTP/1.x", a 3-digit status
# and the reason up to CR LF, as _parse_status_line requires, at most MAX_HEADERS header
# lines, and the blank line. Group 3 is the header lines with the CR LF that ends the last.
# A head that does not match (or arrives in pieces) takes the line-by-line path, which
# applies the same rules and says what is wrong.
_RESPONSE_HEAD = re.compile(
    r"HTTP/1\.[01] ([0-9]{3})(?: ([^\r]*))?"
    f"((?:{_HEADER_LINE}){{0,{MAX_HEADERS}}}\r\n)\r\n"
)
# Name and value (after the spaces and tabs that start it) of each line of a block that
# matched _HEADER_LINES. Simple classes: those the matcher scans fastest.
_HEADER_FIELD = re.compile(r"\r\n([^:]+):[ \t]*([^\r]*)")
# Set by the protocol itself; a user value would break the handshake, so these are refused.
_RESERVED_HEADERS = frozenset(
    {
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)
# Characters allowed as-is in a request-target (RFC 3986 pchar, "/" and "?"); "%" is kept
# so that an already percent-encoded URL is not encoded twice.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"


# binascii directly: base64.b64encode is a Python wrapper around it.
def accept_key(key: str) -> str:
    """Compute Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    digest = _sha1((key + GUID).encode("ascii")).digest()
    return b2a_base64(digest, newline=False).decode("ascii")


def generate_key() -> str:
    """A fresh Sec-WebSocket-Key: 16 bytes from the OS random source, base64-encoded."""
    return b2a_base64(os.urandom(16), newline=False).decode("ascii")


class Headers:
    """An ordered, case-insensitive multi-map of HTTP header fields."""

    __slots__ = ("_block", "_by_name", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] | None = list(items)
        # Or the header lines of a response head that matched _RESPONSE_HEAD, parsed on
        # first use: most connections never look at the headers.
        self._block: str | None = None
        # Built on the first lookup: a validation looks up about five names.
        self._by_name: dict[str, list[str]] | None = None

    def get(self, name: str, default: str | None = None) -> str | None:
        """The values of ``name`` joined with ", " (RFC 9110 §5.3), or ``default``."""
        values = self._index().get(name.lower())
        return ", ".join(values) if values else default

    def get_all(self, name: str) -> list[str]:
        return list(self._index().get(name.lower(), ()))

    def _list(self) -> list[tuple[str, str]]:
        items = self._items
        if items is None:
            assert self._block is not None
            items = self._items = _HEADER_FIELD.findall(self._block)
            self._block = None
        return items

    def _index(self) -> dict[str, list[str]]:
        """Lower-cased name -> values (never an empty list); not to be modified."""
        by_name = self._by_name
        if by_name is None:
            by_name = self._by_name = {}
            for key, value in self._list():
                key = key.lower()
                if key in by_name:
                    by_name[key].append(value)
                else:
                    by_name[key] = [value]
        return by_name

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._list())

    def __len__(self) -> int:
        return len(self._list())

    def items(self) -> list[tuple[str, str]]:
        return list(self._list())

    def __repr__(self) -> str:
        return f"Headers({self._list()!r})"


_new_object = object.__new__


def _headers(items: list[tuple[str, str]] | None, block: str | None = None) -> Headers:
    """A :class:`Headers` that takes ``items`` as its own (no copy, no __init__ call), or
    that parses ``block`` (the header lines matched by _RESPONSE_HEAD) on first use."""
    headers = _new_object(Headers)
    headers._items = items
    headers._block = block
    headers._by_name = None
    return headers


@dataclass(frozen=True, slots=True)
class WebSocketURI:
    """A parsed ``ws://`` or ``wss://`` URL.

    Attributes:
        secure: ``True`` for ``wss://``.
        host: Host name or IP address, without brackets.
        port: TCP port (80 or 443 by default).
        resource: Path and query, encoded for the request line.
        user_info: ``(user, password)`` from the URL, sent as Basic authorization.
    """

    secure: bool
    host: str
    port: int
    resource: str
    user_info: tuple[str, str] | None = None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = 443 if self.secure else 80
        return host if self.port == default_port else f"{host}:{self.port}"


def parse_uri(url: str) -> WebSocketURI:
    """Parse a WebSocket URL; ``http``/``https`` are accepted as ``ws``/``wss``.

    Raises:
        TypeError: ``url`` is not a ``str``.
        ValueError: Not a ws/wss URL, no host, or an invalid port.
    """
    if type(url) is not str:
        if not isinstance(url, str):
            raise TypeError(f"the URL must be a str, not {type(url).__name__}")
        url = str(url)  # a subclass could hash and compare unlike the str it stands for
    return _parse_uri(url)


# A client that reconnects, or opens many connections to one service, parses the same
# URL each time: about 10 us in the middle of a connect, where caches are cold. The result
# is immutable, so it is shared.
@functools.lru_cache(maxsize=256)
def _parse_uri(url: str) -> WebSocketURI:
    if _CR_LF_NUL.search(url):
        raise ValueError("URL contains a control character")
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss", "http", "https"):
        raise ValueError(f"not a WebSocket URL (expected ws:// or wss://): {url!r}")
    secure = scheme in ("wss", "https")
    host = parts.hostname
    if not host:
        raise ValueError(f"URL has no host: {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid port in URL {url!r}") from exc
    if port is None:
        port = 443 if secure else 80
    # Non-ASCII and spaces would make the request line invalid; encode them.
    resource = quote(parts.path or "/", safe=_PATH_SAFE)
    if not resource.startswith("/"):
        resource = "/" + resource
    if parts.query:
        resource += "?" + quote(parts.query, safe=_QUERY_SAFE)
    user_info = None
    if parts.username is not None:
        user_info = (unquote(parts.username), unquote(parts.password or ""))
    return WebSocketURI(secure, host.lower(), port, resource, user_info)


def _validate_header(name: str, value: str) -> None:
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}: must be an HTTP token")
    if _CR_LF_NUL.search(value):
        raise ValueError(f"invalid value for header {name!r}: contains CR, LF or NUL")
    if _FORBIDDEN_VALUE_CHAR.search(value):
        raise ValueError(f"invalid value for header {name!r}: contains a control character")


def _header_pairs(headers: HeadersLike | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return [(str(key), str(value)) for key, value in headers.items()]
    return [(str(key), str(value)) for key, value in headers]


def _token_list(value: str | None) -> list[str]:
    if not value:
        return []
    return [item.strip().lower() for item in value.split(",") if item.strip()]


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP response to the upgrade request."""

    status: int
    reason: str
    headers: Headers
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP upgrade request, as received by the server role."""

    path: str
    headers: Headers


# A frozen dataclass's __init__ sets each field through object.__setattr__ from Python;
# the slot descriptors set the same fields for about half the instructions.
_set_response_status = vars(Response)["status"].__set__
_set_response_reason = vars(Response)["reason"].__set__
_set_response_headers = vars(Response)["headers"].__set__
_set_response_body = vars(Response)["body"].__set__


class _HeadReader:
    """Collects an HTTP head (start line and headers) from arbitrary chunks, with limits."""

    def __init__(self, what: str, start: bytes) -> None:
        self._what = what
        self._start = start
        self._buffer = bytearray()
        self._scanned = 0

    def feed(self, data: bytes) -> tuple[list[str], bytes] | None:
        """Return (lines, leftover bytes) once the head is complete, else ``None``."""
        buffer = self._buffer
        checked = len(buffer)
        buffer += data
        if checked < len(self._start):
            # Fail at once on a peer that does not speak HTTP (a TLS server, say) instead
            # of waiting for a head that never comes.
            seen = bytes(buffer[: len(self._start)])
            if not self._start.startswith(seen):
                kind = "status line" if self._what == "response" else "request line"
                raise HandshakeError(f"invalid HTTP {kind}: the {self._what} starts with {seen!r}")
        # Resume the search a little before the new data, in case CRLFCRLF straddles it.
        end = buffer.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end < 0:
            self._scanned = len(buffer)
            if len(buffer) > MAX_HEAD:
                raise HandshakeError(f"{self._what} head is larger than {MAX_HEAD} bytes")
            last_line_start = buffer.rfind(b"\n") + 1
            # + 1: the line's CR may have arrived without its LF; the limit excludes both.
            if len(buffer) - last_line_start > MAX_LINE + 1:
                raise HandshakeError(f"{self._what} has a line longer than {MAX_LINE} bytes")
            return None
        if end + 4 > MAX_HEAD:
            raise HandshakeError(f"{self._what} head is larger than {MAX_HEAD} bytes")
        head = bytes(buffer[:end])
        leftover = bytes(buffer[end + 4 :])
        self._buffer = bytearray()
        lines = head.split(b"\r\n")
        if len(lines) - 1 > MAX_HEADERS:
            raise HandshakeError(f"{self._what} has more than {MAX_HEADERS} headers")
        decoded: list[str] = []
        for line in lines:
            if len(line) > MAX_LINE:
                raise HandshakeError(f"{self._what} has a line longer than {MAX_LINE} bytes")
            decoded.append(line.decode("latin-1"))
        return decoded, leftover


def _parse_header_lines(lines: list[str], what: str) -> Headers:
    block = "\r\n" + "\r\n".join(lines) if lines else ""
    if _HEADER_BLOCK.fullmatch(block):
        return _headers(_HEADER_FIELD.findall(block))
    # What is wrong, or spaces after a value: line by line.
    items: list[tuple[str, str]] = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            # Also rejects obsolete line folding (a line starting with whitespace).
            raise HandshakeError(f"{what} has an invalid header line {line[:100]!r}")
        value = value.strip(" \t")
        if _CR_LF_NUL.search(value):
            raise HandshakeError(f"{what} header {name!r} has a control character")
        items.append((name, value))
    return Headers(items)


# Most connects of a process go to a few URLs with the same options, and parse_uri gives
# the same WebSocketURI for the same URL: the request text around the key is built once
# (about 20,000 instructions) and kept, by URI object and options. The URI is kept in the
# entry, so no other object can take its id while the entry exists.
_request_cache: dict[
    tuple[int, str | None, str | None, tuple[str, ...] | None],
    tuple[WebSocketURI, bytes, bytes, bytes],
] = {}
_REQUEST_CACHE_SIZE = 64


@dataclass(init=False, slots=True)
class ClientHandshake:
    """The client side of the opening handshake.

    Build it, send :meth:`request_bytes`, feed the response to :meth:`receive_data` until it
    returns the leftover bytes (the first frames), then read :attr:`subprotocol`,
    :attr:`deflate` and :attr:`response`.
    """

    uri: WebSocketURI
    headers: list[tuple[str, str]] | None
    subprotocols: list[str] | None
    origin: str | None
    user_agent: str | None
    deflate_options: DeflateOptions | None
    key: str

    response: Response | None
    subprotocol: str | None
    deflate: PerMessageDeflate | None
    # Made when the head does not arrive whole in the first read.
    _head: _HeadReader | None
    _refusal: tuple[int, str, Headers] | None
    _body: bytes | bytearray
    _body_expected: int | None

    # A hand-written __init__: the dataclass one, with its default factories and
    # __post_init__, cost more than the rest of the request.
    def __init__(
        self,
        uri: WebSocketURI,
        headers: HeadersLike | None = None,
        subprotocols: list[str] | None = None,
        origin: str | None = None,
        user_agent: str | None = DEFAULT_USER_AGENT,
        deflate_options: DeflateOptions | None = None,
        key: str | None = None,
    ) -> None:
        """``key`` is the Sec-WebSocket-Key; ``None`` draws a fresh one."""
        self.uri = uri
        # Pairs, taken once: an iterator would be used up by the checks, before the request.
        self.headers = None if headers is None else _header_pairs(headers)
        self.subprotocols = subprotocols
        self.origin = origin
        self.user_agent = user_agent
        self.deflate_options = deflate_options
        self.key = generate_key() if key is None else key
        self.response = None
        self.subprotocol = None
        self.deflate = None
        self._head = None
        self._refusal = None
        self._body = b""  # a bytearray once a refusal's body arrives
        self._body_expected = None
        if (
            headers is not None
            or subprotocols
            or origin is not None
            or (user_agent is not None and user_agent != DEFAULT_USER_AGENT)
        ):
            self._check_options()

    def _check_options(self) -> None:
        for name, value in self.headers or ():
            _validate_header(name, value)
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(
                    f"header {name!r} is set by the WebSocket handshake; use the "
                    "subprotocols / compression options instead"
                )
        for protocol in self.subprotocols or ():
            if not _TOKEN.fullmatch(protocol):
                raise ValueError(f"invalid subprotocol {protocol!r}: must be an HTTP token")
        if self.origin is not None:
            _validate_header("Origin", self.origin)
        if self.user_agent is not None and self.user_agent != DEFAULT_USER_AGENT:
            _validate_header("User-Agent", self.user_agent)

    def request_bytes(self) -> bytes:
        """The complete upgrade request."""
        uri, origin, user_agent, subprotocols = (
            self.uri,
            self.origin,
            self.user_agent,
            self.subprotocols,
        )
        cache_key: tuple[int, str | None, str | None, tuple[str, ...] | None] | None = None
        if (
            self.headers is None
            and type(uri) is WebSocketURI  # frozen: one object is always the same URI
            # A str subclass could compare equal to a str it does not print as.
            and (origin is None or type(origin) is str)
            and (user_agent is None or type(user_agent) is str)
        ):
            if subprotocols is None:
                cache_key = (id(uri), origin, user_agent, None)
            elif all(type(protocol) is str for protocol in subprotocols):
                cache_key = (id(uri), origin, user_agent, tuple(subprotocols))
        if cache_key is None:
            user = self.headers or []
            before, after = self._request_text(user)
            return (before + self.key + after + self._request_end(user)).encode()
        entry = _request_cache.get(cache_key)
        if entry is None:
            before, after = self._request_text([])
            entry = (uri, before.encode(), after.encode(), (after + "\r\n").encode())
            if len(_request_cache) >= _REQUEST_CACHE_SIZE:
                _request_cache.clear()
            _request_cache[cache_key] = entry
        options = self.deflate_options
        if options is None:
            return entry[1] + self.key.encode() + entry[3]
        extensions = f"Sec-WebSocket-Extensions: {options.offer()}\r\n\r\n"
        return entry[1] + self.key.encode() + entry[2] + extensions.encode()

    def _request_text(self, user: list[tuple[str, str]]) -> tuple[str, str]:
        """The request up to the key, and from the key through the Sec-WebSocket-Protocol
        line (each line with its CR LF); ``user``: the pairs of :attr:`headers`."""
        defaults: list[tuple[str, str]] = [("Host", self.uri.host_header)]
        if self.uri.user_info is not None:
            credentials = "{}:{}".format(*self.uri.user_info).encode("utf-8")
            defaults.append(("Authorization", "Basic " + base64.b64encode(credentials).decode()))
        if self.origin is not None:
            defaults.append(("Origin", self.origin))
        if self.user_agent is not None:
            defaults.append(("User-Agent", self.user_agent))
        overridden = {name.lower() for name, _ in user}
        before = [f"GET {self.uri.resource} HTTP/1.1\r\n"]
        before += [
            f"{name}: {value}\r\n" for name, value in defaults if name.lower() not in overridden
        ]
        before.append("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ")
        after = "\r\nSec-WebSocket-Version: 13\r\n"
        if self.subprotocols:
            after += "Sec-WebSocket-Protocol: " + ", ".join(self.subprotocols) + "\r\n"
        return "".join(before), after

    def _request_end(self, user: list[tuple[str, str]]) -> str:
        """The request after :meth:`_request_text`: extensions, user headers, blank line."""
        lines = []
        if self.deflate_options is not None:
            lines.append("Sec-WebSocket-Extensions: " + self.deflate_options.offer() + "\r\n")
        lines += [f"{name}: {value}\r\n" for name, value in user]
        lines.append("\r\n")
        return "".join(lines)

    def receive_data(self, data: bytes) -> bytes | None:
        """Feed response bytes; returns the bytes after the head once the upgrade succeeded.

        Raises:
            InvalidStatus: The server answered with a status other than 101 (raised once
                the start of the body has arrived, see :meth:`receive_eof`).
            HandshakeError: The response is malformed or fails validation.
        """
        if self._refusal is not None:
            self._body += data
            self._check_body_complete()
            return None
        reader = self._head
        if reader is None:
            if type(data) is bytes:
                # Usually the whole head is in the first read, and well-formed: one match
                # checks it. A head within MAX_LINE bytes has no line over the limit.
                match = _RESPONSE_HEAD.match(data[: MAX_LINE + 4].decode("latin-1"))
                if match is not None:
                    code, reason, block = match.groups()
                    return self._head_received(
                        101 if code == "101" else int(code),  # int() costs 1,000
                        reason or "",
                        _headers(None, block),
                        data[match.end() :],
                        block,
                    )
            reader = self._head = _HeadReader("response", b"HTTP/")
        parsed = reader.feed(data)
        if parsed is None:
            return None
        lines, leftover = parsed
        status, reason = self._parse_status_line(lines[0])
        return self._head_received(
            status, reason, _parse_header_lines(lines[1:], "response"), leftover
        )

    def _head_received(
        self,
        status: int,
        reason: str,
        headers: Headers,
        leftover: bytes,
        block: str | None = None,
    ) -> bytes | None:
        if status != 101:
            self._refusal = (status, reason, headers)
            self._body_expected = self._expected_body_length(headers)
            self._body = bytearray(leftover)
            self._check_body_complete()
            return None
        self.response = response = _new_object(Response)
        _set_response_status(response, status)
        _set_response_reason(response, reason)
        _set_response_headers(response, headers)
        _set_response_body(response, b"")
        self._validate(headers, block)
        # The connection keeps the response for its whole life: not the lookup index
        # built for the validation (about 800 bytes; built again if looked up).
        headers._by_name = None
        return leftover

    def receive_eof(self) -> None:
        """The server closed the connection before the handshake completed.

        Raises:
            InvalidStatus: A refusal whose body ran until the end of the connection.
            HandshakeError: The connection closed before a complete response.
        """
        if self._refusal is not None:
            self._raise_refusal()
        raise HandshakeError("connection closed before the handshake response was complete")

    @staticmethod
    def _expected_body_length(headers: Headers) -> int | None:
        if "chunked" in _token_list(headers.get("Transfer-Encoding")):
            return None
        length = headers.get("Content-Length")
        if length is not None:
            length = length.strip()
            if length.isascii() and length.isdigit():
                return min(int(length), MAX_BODY)
        return None

    def _check_body_complete(self) -> None:
        expected = self._body_expected
        if expected is not None and len(self._body) >= expected:
            self._raise_refusal()
        if len(self._body) >= MAX_BODY:
            self._raise_refusal()
        if (
            self._refusal is not None
            and "chunked" in _token_list(self._refusal[2].get("Transfer-Encoding"))
            and self._body.endswith(b"0\r\n\r\n")
        ):
            self._raise_refusal()

    def _raise_refusal(self) -> None:
        assert self._refusal is not None
        status, reason, headers = self._refusal
        body = bytes(self._body[:MAX_BODY])
        if "chunked" in _token_list(headers.get("Transfer-Encoding")):
            body = _dechunk(body)
        self.response = Response(status, reason, headers, body)
        raise InvalidStatus(
            f"server rejected WebSocket connection: HTTP {status} {reason}".rstrip(),
            status=status,
            reason=reason,
            headers=headers.items(),
            body=body,
        )

    @staticmethod
    def _parse_status_line(line: str) -> tuple[int, str]:
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        # isascii too: str.isdigit() also takes digits such as "²", which int() refuses.
        if (
            version not in ("HTTP/1.1", "HTTP/1.0")
            or len(code) != 3
            or not (code.isascii() and code.isdigit())
        ):
            raise HandshakeError(f"invalid HTTP status line {line[:100]!r}")
        return int(code), reason

    def _fail(self, message: str, headers: Headers) -> HandshakeError:
        assert self.response is not None
        return HandshakeError(
            message,
            status=self.response.status,
            reason=self.response.reason,
            headers=headers.items(),
        )

    def _validate(self, headers: Headers, block: str | None = None) -> None:
        """``block``: the header lines, when the head matched _RESPONSE_HEAD."""
        usual = False
        if block is not None:
            # Most servers send "Upgrade: websocket", "Connection: Upgrade" and the accept
            # key as whole lines, and often nothing to negotiate. A few searches of the
            # lines (checked by _RESPONSE_HEAD: each one after a CR LF and before one, no
            # CR LF inside) then show that the checks below would pass, without parsing and
            # indexing the headers. (str.lower() keeps the length of Latin-1 text, so
            # positions in both are the same.)
            lowered = block.lower()
            if "\r\nupgrade: websocket\r\n" in lowered and "\r\nconnection: upgrade\r\n" in lowered:
                start = lowered.find("\r\nsec-websocket-accept:")
                usual = (
                    start >= 0
                    and lowered.find("\r\nsec-websocket-accept:", start + 22) < 0
                    and block.startswith(f": {accept_key(self.key)}\r\n", start + 22)
                )
            if (
                usual
                and "\r\nsec-websocket-protocol:" not in lowered
                and "\r\nsec-websocket-extensions:" not in lowered
            ):
                return
        by_name = headers._index()
        if not usual:
            # Usually each header is just the token: no splitting then.
            values = by_name.get("upgrade")
            if values is None or (
                values[0].lower() != "websocket"
                and "websocket" not in _token_list(", ".join(values))
            ):
                raise self._fail("response lacks 'Upgrade: websocket'", headers)
            values = by_name.get("connection")
            if values is None or (
                values[0].lower() != "upgrade" and "upgrade" not in _token_list(", ".join(values))
            ):
                raise self._fail("response lacks 'Connection: Upgrade'", headers)
            accepts = by_name.get("sec-websocket-accept")
            if accepts is None or len(accepts) != 1 or accepts[0] != accept_key(self.key):
                raise self._fail("response has a wrong Sec-WebSocket-Accept", headers)

        values = by_name.get("sec-websocket-protocol")
        if values is not None:
            protocols = [p.strip() for p in values]
            if len(protocols) > 1 or "," in protocols[0]:
                raise self._fail("server selected more than one subprotocol", headers)
            if protocols[0] not in (self.subprotocols or []):
                raise self._fail(
                    f"server selected subprotocol {protocols[0]!r}, which was not offered",
                    headers,
                )
            self.subprotocol = protocols[0]

        values = by_name.get("sec-websocket-extensions")
        extensions_value = ", ".join(values) if values is not None else None
        if extensions_value:
            try:
                extensions = parse_extensions_header(extensions_value)
            except ValueError as exc:
                raise self._fail(f"invalid Sec-WebSocket-Extensions: {exc}", headers) from None
            for name, params in extensions:
                if name != EXTENSION_NAME or self.deflate_options is None:
                    raise self._fail(
                        f"server selected extension {name!r}, which was not offered", headers
                    )
                if self.deflate is not None:
                    raise self._fail("server selected permessage-deflate twice", headers)
                try:
                    self.deflate = self.deflate_options.accept_response(params)
                except HandshakeError as exc:
                    raise self._fail(str(exc), headers) from None


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    position = 0
    while True:
        line_end = body.find(b"\r\n", position)
        if line_end < 0:
            break
        size_text = body[position:line_end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return body
        if size == 0:
            break
        out += body[line_end + 2 : line_end + 2 + size]
        position = line_end + 2 + size + 2
    return bytes(out)


@dataclass
class ServerHandshake:
    """The server side of the opening handshake (used by :mod:`wsclient.testing`).

    Feed request bytes to :meth:`receive_data` until it returns a :class:`Request`, then
    build the answer with :meth:`accept` or :meth:`reject`.
    """

    deflate_enabled: bool = True
    deflate_settings: dict[str, object] = field(default_factory=dict)
    request: Request | None = field(default=None, init=False)
    leftover: bytes = field(default=b"", init=False)
    _head: _HeadReader = field(default_factory=lambda: _HeadReader("request", b"GET "), init=False)

    def receive_data(self, data: bytes) -> Request | None:
        parsed = self._head.feed(data)
        if parsed is None:
            return None
        lines, self.leftover = parsed
        method, _, rest = lines[0].partition(" ")
        path, _, version = rest.partition(" ")
        if method != "GET" or version != "HTTP/1.1" or not path:
            raise HandshakeError(f"invalid request line {lines[0][:100]!r}")
        self.request = Request(path, _parse_header_lines(lines[1:], "request"))
        return self.request

    def offered_subprotocols(self) -> list[str]:
        assert self.request is not None
        offered: list[str] = []
        for value in self.request.headers.get_all("Sec-WebSocket-Protocol"):
            offered += [item.strip() for item in value.split(",") if item.strip()]
        return offered

    def validate(self) -> str | None:
        """Return why the request is not a valid upgrade request, or ``None``."""
        assert self.request is not None
        headers = self.request.headers
        if "websocket" not in _token_list(headers.get("Upgrade")):
            return "missing 'Upgrade: websocket'"
        if "upgrade" not in _token_list(headers.get("Connection")):
            return "missing 'Connection: Upgrade'"
        if headers.get("Sec-WebSocket-Version") != "13":
            return "unsupported Sec-WebSocket-Version"
        key = headers.get_all("Sec-WebSocket-Key")
        try:
            if len(key) != 1 or len(base64.b64decode(key[0], validate=True)) != 16:
                return "invalid Sec-WebSocket-Key"
        except binascii.Error:
            return "invalid Sec-WebSocket-Key"
        return None

    def accept(
        self,
        subprotocol: str | None = None,
        extra_headers: HeadersLike | None = None,
    ) -> tuple[bytes, PerMessageDeflate | None]:
        """Build the 101 response; returns it and the negotiated deflate codec, if any."""
        assert self.request is not None
        headers = self.request.headers
        key = headers.get("Sec-WebSocket-Key") or ""
        lines = [
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Accept: {accept_key(key)}",
        ]
        if subprotocol is not None:
            lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
        codec: PerMessageDeflate | None = None
        extensions_value = headers.get("Sec-WebSocket-Extensions")
        if self.deflate_enabled and extensions_value:
            try:
                offers = [
                    params
                    for name, params in parse_extensions_header(extensions_value)
                    if name == EXTENSION_NAME
                ]
            except ValueError:
                offers = []
            negotiated = negotiate_server(offers, **self.deflate_settings)  # type: ignore[arg-type]
            if negotiated is not None:
                response_value, codec = negotiated
                lines.append(f"Sec-WebSocket-Extensions: {response_value}")
        for name, value in _header_pairs(extra_headers):
            _validate_header(name, value)
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"), codec

    @staticmethod
    def reject(
        status: int,
        reason: str = "",
        body: bytes = b"",
        headers: HeadersLike | None = None,
    ) -> bytes:
        """Build a refusal response with a body and Content-Length."""
        lines = [f"HTTP/1.1 {status} {reason}".rstrip()]
        for name, value in _header_pairs(headers):
            _validate_header(name, value)
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
