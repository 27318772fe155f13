"""The HTTP/1.1 opening handshake (RFC 6455 §4), both sides, without I/O."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
import sys
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
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
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


def accept_key(key: str) -> str:
    """Compute Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def generate_key() -> str:
    """A fresh Sec-WebSocket-Key: 16 bytes from the OS random source, base64-encoded."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


class Headers:
    """An ordered, case-insensitive multi-map of HTTP header fields."""

    __slots__ = ("_by_name", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)
        # Built on the first lookup: a validation looks up about five names.
        self._by_name: dict[str, list[str]] | None = None

    def get(self, name: str, default: str | None = None) -> str | None:
        """The values of ``name`` joined with ", " (RFC 9110 §5.3), or ``default``."""
        values = self.get_all(name)
        return ", ".join(values) if values else default

    def get_all(self, name: str) -> list[str]:
        by_name = self._by_name
        if by_name is None:
            by_name = self._by_name = {}
            for key, value in self._items:
                by_name.setdefault(key.lower(), []).append(value)
        return list(by_name.get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get_all(name))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


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


@dataclass
class ClientHandshake:
    """The client side of the opening handshake.

    Build it, send :meth:`request_bytes`, feed the response to :meth:`receive_data` until it
    returns the leftover bytes (the first frames), then read :attr:`subprotocol`,
    :attr:`deflate` and :attr:`response`.
    """

    uri: WebSocketURI
    headers: HeadersLike | None = None
    subprotocols: list[str] | None = None
    origin: str | None = None
    user_agent: str | None = DEFAULT_USER_AGENT
    deflate_options: DeflateOptions | None = None
    key: str = field(default_factory=generate_key)

    response: Response | None = field(default=None, init=False)
    subprotocol: str | None = field(default=None, init=False)
    deflate: PerMessageDeflate | None = field(default=None, init=False)
    _head: _HeadReader = field(
        default_factory=lambda: _HeadReader("response", b"HTTP/"), init=False
    )
    _refusal: tuple[int, str, Headers] | None = field(default=None, init=False)
    _body: bytearray = field(default_factory=bytearray, init=False)
    _body_expected: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        user = _header_pairs(self.headers)
        for name, value in user:
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
        defaults: list[tuple[str, str]] = [("Host", self.uri.host_header)]
        if self.uri.user_info is not None:
            credentials = "{}:{}".format(*self.uri.user_info).encode("utf-8")
            defaults.append(("Authorization", "Basic " + base64.b64encode(credentials).decode()))
        if self.origin is not None:
            defaults.append(("Origin", self.origin))
        if self.user_agent is not None:
            defaults.append(("User-Agent", self.user_agent))
        user = _header_pairs(self.headers)
        overridden = {name.lower() for name, _ in user}
        lines = [f"GET {self.uri.resource} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in defaults if name.lower() not in overridden]
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self.key}",
            "Sec-WebSocket-Version: 13",
        ]
        if self.subprotocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(self.subprotocols))
        if self.deflate_options is not None:
            lines.append("Sec-WebSocket-Extensions: " + self.deflate_options.offer())
        lines += [f"{name}: {value}" for name, value in user]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

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
        parsed = self._head.feed(data)
        if parsed is None:
            return None
        lines, leftover = parsed
        status, reason = self._parse_status_line(lines[0])
        headers = _parse_header_lines(lines[1:], "response")
        if status != 101:
            self._refusal = (status, reason, headers)
            self._body_expected = self._expected_body_length(headers)
            self._body += leftover
            self._check_body_complete()
            return None
        self.response = Response(status, reason, headers)
        self._validate(headers)
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
        if length is not None and length.strip().isdigit():
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
        if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
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

    def _validate(self, headers: Headers) -> None:
        if "websocket" not in _token_list(headers.get("Upgrade")):
            raise self._fail("response lacks 'Upgrade: websocket'", headers)
        if "upgrade" not in _token_list(headers.get("Connection")):
            raise self._fail("response lacks 'Connection: Upgrade'", headers)
        accepts = headers.get_all("Sec-WebSocket-Accept")
        if len(accepts) != 1 or accepts[0] != accept_key(self.key):
            raise self._fail("response has a wrong Sec-WebSocket-Accept", headers)

        protocols = [p.strip() for p in headers.get_all("Sec-WebSocket-Protocol")]
        if protocols:
            if len(protocols) > 1 or "," in protocols[0]:
                raise self._fail("server selected more than one subprotocol", headers)
            if protocols[0] not in (self.subprotocols or []):
                raise self._fail(
                    f"server selected subprotocol {protocols[0]!r}, which was not offered",
                    headers,
                )
            self.subprotocol = protocols[0]

        extensions_value = headers.get("Sec-WebSocket-Extensions")
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
