"""RFC 6455 §3 and §4: WebSocket URIs and the opening handshake, client side."""

from __future__ import annotations

import base64
import os
import sys

import pytest

from wsclient._version import __version__
from wsclient.exceptions import HandshakeError, InvalidStatus
from wsclient.protocol import (
    ClientConnection,
    DeflateOptions,
    HandshakeComplete,
    PerMessageDeflate,
    PingReceived,
    State,
    TextMessage,
    accept_key,
    parse_uri,
)
from wsclient.protocol import handshake as handshake_module

from .support import (
    OP_PING,
    OP_PONG,
    OP_TEXT,
    URL,
    frame,
    parse_request,
    request_key,
    response_101,
    sent_frames,
)

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def new_client(url: str = URL, **kwargs: object) -> tuple[ClientConnection, bytes]:
    client = ClientConnection(parse_uri(url), **kwargs)  # type: ignore[arg-type]
    return client, client.data_to_send()


def header_values(request: bytes, name: str) -> list[str]:
    _, headers = parse_request(request)
    return [value for key, value in headers if key.lower() == name.lower()]


def refusal(status_line: str, *headers: str, body: bytes = b"") -> bytes:
    return ("\r\n".join([status_line, *headers]) + "\r\n\r\n").encode("latin-1") + body


class TestURIs:
    """§3: ws and wss URIs."""

    @pytest.mark.parametrize(
        ("url", "secure", "host", "port", "resource", "host_header"),
        [
            ("ws://example.com", False, "example.com", 80, "/", "example.com"),
            ("wss://example.com", True, "example.com", 443, "/", "example.com"),
            ("ws://example.com:80/", False, "example.com", 80, "/", "example.com"),
            ("wss://example.com:443/", True, "example.com", 443, "/", "example.com"),
            ("ws://example.com:8080/", False, "example.com", 8080, "/", "example.com:8080"),
            ("wss://example.com:80/", True, "example.com", 80, "/", "example.com:80"),
            ("ws://example.com:443/", False, "example.com", 443, "/", "example.com:443"),
            ("http://example.com/", False, "example.com", 80, "/", "example.com"),
            ("https://example.com/", True, "example.com", 443, "/", "example.com"),
            ("WS://EXAMPLE.com/Path", False, "example.com", 80, "/Path", "example.com"),
            ("ws://127.0.0.1:9000", False, "127.0.0.1", 9000, "/", "127.0.0.1:9000"),
            ("ws://[::1]/", False, "::1", 80, "/", "[::1]"),
            ("ws://[::1]:8765/x", False, "::1", 8765, "/x", "[::1]:8765"),
            ("wss://[2001:db8::7]:443/", True, "2001:db8::7", 443, "/", "[2001:db8::7]"),
        ],
    )
    def test_parse(
        self, url: str, secure: bool, host: str, port: int, resource: str, host_header: str
    ) -> None:
        uri = parse_uri(url)
        assert (uri.secure, uri.host, uri.port, uri.resource) == (secure, host, port, resource)
        assert uri.host_header == host_header
        assert uri.user_info is None

    @pytest.mark.parametrize(
        ("url", "resource"),
        [
            ("ws://h/a/b?x=1&y=2", "/a/b?x=1&y=2"),
            ("ws://h?x=1", "/?x=1"),
            ("ws://h/chat?", "/chat"),
            ("ws://h/p#fragment", "/p"),
            ("ws://h/p?q=1#fragment", "/p?q=1"),
            ("ws://h/a b", "/a%20b"),
            ("ws://h/päth?q=ü", "/p%C3%A4th?q=%C3%BC"),
            ("ws://h/already%20encoded?v=%2F", "/already%20encoded?v=%2F"),
            ("ws://h/a:b@c;d=e,f+g!$&'()*~._-", "/a:b@c;d=e,f+g!$&'()*~._-"),
            ("ws://h/?q=a/b?c", "/?q=a/b?c"),
            ('ws://h/"<>', "/%22%3C%3E"),
        ],
    )
    def test_resource_is_kept_and_request_line_safe(self, url: str, resource: str) -> None:
        assert parse_uri(url).resource == resource

    def test_userinfo(self) -> None:
        uri = parse_uri("ws://user:p%40ss@example.com:8080/x")
        assert uri.user_info == ("user", "p@ss")
        assert uri.host == "example.com"
        assert uri.host_header == "example.com:8080"
        assert uri.resource == "/x"
        assert parse_uri("ws://user@h/").user_info == ("user", "")

    @pytest.mark.parametrize(
        "url",
        [
            "ftp://example.com/",
            "example.com",
            "ws://",
            "ws:///path",
            "ws://example.com:99999/",
            "ws://example.com:port/",
            "ws://exa\r\nmple.com/",
            "ws://example.com/\n",
            "ws://example.com/\x00",
        ],
    )
    def test_invalid(self, url: str) -> None:
        with pytest.raises(ValueError):
            parse_uri(url)
        with pytest.raises(ValueError):  # a failure is not remembered as a result
            parse_uri(url)

    def test_a_url_parsed_again_gives_the_same_immutable_result(self) -> None:
        first = parse_uri("ws://example.com:8080/a?b=c")
        assert parse_uri("ws://example.com:8080/a?b=c") is first
        with pytest.raises(AttributeError):
            first.host = "elsewhere"  # type: ignore[misc]

    def test_a_str_subclass_is_parsed_as_the_str_it_holds(self) -> None:
        class Url(str):
            def __hash__(self) -> int:
                return 0

            def __eq__(self, other: object) -> bool:
                return True

        assert parse_uri(Url("ws://one.example/")).host == "one.example"
        assert parse_uri(Url("ws://two.example/")).host == "two.example"

    @pytest.mark.parametrize("url", [b"ws://example.com/", None, 42])
    def test_a_url_that_is_not_text_is_refused(self, url: object) -> None:
        with pytest.raises(TypeError, match="must be a str"):
            parse_uri(url)  # type: ignore[arg-type]


class TestClientRequest:
    """§4.1: the client's upgrade request."""

    def test_request_line_and_headers(self) -> None:
        client, request = new_client("ws://example.com/chat?room=1")
        assert client.state is State.CONNECTING
        request_line, headers = parse_request(request)
        assert request_line == "GET /chat?room=1 HTTP/1.1"
        key = request_key(request)
        assert headers == [
            ("Host", "example.com"),
            ("User-Agent", handshake_module.DEFAULT_USER_AGENT),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
        ]

    @pytest.mark.parametrize(
        ("url", "host"),
        [
            ("ws://example.com:80/", "example.com"),
            ("ws://example.com:81/", "example.com:81"),
            ("wss://example.com:443/", "example.com"),
            ("wss://example.com:8443/", "example.com:8443"),
            ("ws://[::1]:9000/", "[::1]:9000"),
            ("ws://[fe80::1]/", "[fe80::1]"),
        ],
    )
    def test_host_header(self, url: str, host: str) -> None:
        _, request = new_client(url)
        assert header_values(request, "Host") == [host]

    def test_key_is_16_random_bytes_in_base64(self) -> None:
        keys = set()
        for _ in range(20):
            _, request = new_client()
            key = request_key(request)
            assert len(base64.b64decode(key, validate=True)) == 16
            keys.add(key)
        assert len(keys) == 20

    def test_key_comes_from_the_os_random_source(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(os, "urandom", lambda size: bytes(range(size)))
        _, request = new_client()
        assert request_key(request) == base64.b64encode(bytes(range(16))).decode()

    def test_default_user_agent(self) -> None:
        expected = f"wsclient/{__version__} Python/{sys.version_info[0]}.{sys.version_info[1]}"
        assert handshake_module.DEFAULT_USER_AGENT == expected
        _, request = new_client()
        assert header_values(request, "User-Agent") == [expected]

    def test_custom_user_agent(self) -> None:
        _, request = new_client(user_agent="my-bot/2.0")
        assert header_values(request, "User-Agent") == ["my-bot/2.0"]

    @pytest.mark.parametrize("name", ["User-Agent", "user-agent", "USER-AGENT"])
    def test_user_agent_replaced_by_headers_case_insensitively(self, name: str) -> None:
        _, request = new_client(headers={name: "replaced/1"})
        assert header_values(request, "User-Agent") == ["replaced/1"]

    @pytest.mark.parametrize("option", ["user_agent", "origin"])
    @pytest.mark.parametrize("value", ["bot\r\nX-Injected: 1", "bot\x00", "bot\x7f"])
    def test_user_agent_or_origin_with_a_control_character_is_refused(
        self, option: str, value: str
    ) -> None:
        with pytest.raises(ValueError, match="invalid value for header"):
            new_client(**{option: value})

    def test_user_agent_removed(self) -> None:
        _, request = new_client(user_agent=None)
        assert header_values(request, "User-Agent") == []

    def test_host_replaced_by_headers(self) -> None:
        _, request = new_client(headers=[("host", "other.example:1234")])
        assert header_values(request, "Host") == ["other.example:1234"]

    def test_origin(self) -> None:
        _, request = new_client(origin="https://example.com")
        assert header_values(request, "Origin") == ["https://example.com"]
        _, request = new_client()
        assert header_values(request, "Origin") == []

    def test_extra_headers_are_sent_in_order_with_duplicates(self) -> None:
        _, request = new_client(headers=[("X-A", "1"), ("X-B", "2"), ("X-A", "3")])
        _, headers = parse_request(request)
        assert [pair for pair in headers if pair[0].startswith("X-")] == [
            ("X-A", "1"),
            ("X-B", "2"),
            ("X-A", "3"),
        ]

    def test_headers_given_as_a_one_shot_iterator_are_checked_and_sent(self) -> None:
        _, request = new_client(headers=iter([("X-Trace", "7")]))
        assert header_values(request, "X-Trace") == ["7"]
        with pytest.raises(ValueError, match="invalid header name"):
            new_client(headers=iter([("Bad Name", "x")]))

    def test_subprotocols_offered(self) -> None:
        _, request = new_client(subprotocols=["chat", "superchat"])
        assert header_values(request, "Sec-WebSocket-Protocol") == ["chat, superchat"]
        _, request = new_client()
        assert header_values(request, "Sec-WebSocket-Protocol") == []

    def test_extension_offered(self) -> None:
        _, request = new_client(deflate_options=DeflateOptions())
        assert header_values(request, "Sec-WebSocket-Extensions") == [
            "permessage-deflate; client_max_window_bits=12"
        ]
        _, request = new_client()
        assert header_values(request, "Sec-WebSocket-Extensions") == []

    def test_userinfo_becomes_basic_authorization(self) -> None:
        _, request = new_client("ws://alice:s%3Acret@example.com/room")
        request_line, _ = parse_request(request)
        assert request_line == "GET /room HTTP/1.1"
        expected = "Basic " + base64.b64encode(b"alice:s:cret").decode()
        assert header_values(request, "Authorization") == [expected]
        assert header_values(request, "Host") == ["example.com"]
        assert b"alice" not in request
        assert b"cret" not in request

    def test_authorization_header_replaces_userinfo(self) -> None:
        _, request = new_client("ws://alice:secret@example.com/", headers={"Authorization": "X"})
        assert header_values(request, "Authorization") == ["X"]

    @pytest.mark.parametrize(
        "name", ["", "Bad Name", "X:Y", "Ünicode", "X\r\nInjected", "tab\there", "(paren)"]
    )
    def test_header_name_must_be_a_token(self, name: str) -> None:
        with pytest.raises(ValueError, match="header name"):
            ClientConnection(parse_uri(URL), headers={name: "value"})

    @pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\r\nX-Injected: 1", "a\x00b"])
    def test_header_value_with_cr_lf_or_nul(self, value: str) -> None:
        with pytest.raises(ValueError, match="CR, LF or NUL"):
            ClientConnection(parse_uri(URL), headers=[("X-Test", value)])
        with pytest.raises(ValueError, match="CR, LF or NUL"):
            ClientConnection(parse_uri(URL), origin=value)
        with pytest.raises(ValueError, match="CR, LF or NUL"):
            ClientConnection(parse_uri(URL), user_agent=value)

    @pytest.mark.parametrize(
        "name",
        [
            "Upgrade",
            "connection",
            "Sec-WebSocket-Key",
            "SEC-WEBSOCKET-VERSION",
            "sec-websocket-extensions",
            "Sec-WebSocket-Protocol",
        ],
    )
    def test_reserved_headers_are_refused(self, name: str) -> None:
        with pytest.raises(ValueError, match="set by the WebSocket handshake"):
            ClientConnection(parse_uri(URL), headers={name: "x"})

    @pytest.mark.parametrize("protocol", ["", "two words", "a,b", "é"])
    def test_subprotocol_must_be_a_token(self, protocol: str) -> None:
        with pytest.raises(ValueError, match="subprotocol"):
            ClientConnection(parse_uri(URL), subprotocols=[protocol])


class TestServerResponse:
    """§4.1 (client requirements on the response) and §4.2.2 (Sec-WebSocket-Accept)."""

    def test_accept_key_rfc_example(self) -> None:
        assert accept_key(RFC_KEY) == RFC_ACCEPT

    def test_successful_handshake(self) -> None:
        client, request = new_client()
        client.receive_data(response_101(request_key(request)))
        assert client.state is State.OPEN
        [event] = client.events_received()
        assert isinstance(event, HandshakeComplete)
        assert event.subprotocol is None
        assert event.response.status == 101
        assert event.response.reason == "Switching Protocols"
        assert event.response.headers.get("upgrade") == "websocket"
        assert client.response is event.response
        assert client.subprotocol is None
        assert client.deflate is None
        assert client.data_to_send() == b""

    def test_response_fed_one_byte_at_a_time(self) -> None:
        client, request = new_client()
        response = response_101(request_key(request))
        for index in range(len(response) - 1):
            client.receive_data(response[index : index + 1])
            assert client.state is State.CONNECTING
            assert client.events_received() == []
        client.receive_data(response[-1:])
        assert client.state is State.OPEN
        assert [type(event) for event in client.events_received()] == [HandshakeComplete]

    def test_frames_in_the_same_chunk_as_the_head_are_not_lost(self) -> None:
        client, request = new_client()
        client.receive_data(
            response_101(request_key(request)) + frame(OP_TEXT, "Hello") + frame(OP_PING, b"p")
        )
        events = client.events_received()
        assert isinstance(events[0], HandshakeComplete)
        assert events[1:] == [TextMessage("Hello"), PingReceived(b"p")]
        assert [item.summary() for item in sent_frames(client)] == [(OP_PONG, b"p", True, False)]

    def test_partial_frame_after_the_head_is_kept(self) -> None:
        client, request = new_client()
        raw = frame(OP_TEXT, "Hello")
        client.receive_data(response_101(request_key(request)) + raw[:3])
        assert [type(event) for event in client.events_received()] == [HandshakeComplete]
        client.receive_data(raw[3:])
        assert client.events_received() == [TextMessage("Hello")]

    @pytest.mark.parametrize("missing", [1, 2, 3, 4])
    def test_head_terminator_split_across_chunks(self, missing: int) -> None:
        client, request = new_client()
        response = response_101(request_key(request))
        client.receive_data(response[:-missing])
        assert client.state is State.CONNECTING
        client.receive_data(response[-missing:] + frame(OP_TEXT, "x"))
        assert client.state is State.OPEN
        assert client.events_received()[1:] == [TextMessage("x")]

    @pytest.mark.parametrize(
        ("upgrade", "connection"),
        [
            ("websocket", "Upgrade"),
            ("WebSocket", "upgrade"),
            ("WEBSOCKET", "UPGRADE"),
            ("websocket", "keep-alive, Upgrade"),
            ("websocket, h2c", "Upgrade,keep-alive"),
        ],
    )
    def test_upgrade_and_connection_are_case_insensitive_token_lists(
        self, upgrade: str, connection: str
    ) -> None:
        client, request = new_client()
        response = (
            "HTTP/1.1 101 Switching Protocols\r\n"
            f"Upgrade: {upgrade}\r\nConnection: {connection}\r\n"
            f"Sec-WebSocket-Accept: {accept_key(request_key(request))}\r\n\r\n"
        )
        client.receive_data(response.encode())
        assert client.state is State.OPEN

    def test_connection_header_split_over_two_lines(self) -> None:
        client, request = new_client()
        response = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            "Connection: keep-alive\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(request_key(request))}\r\n\r\n"
        )
        client.receive_data(response.encode())
        assert client.state is State.OPEN

    @pytest.mark.parametrize(
        ("lines", "message"),
        [
            (["Connection: Upgrade", "ACCEPT"], "Upgrade: websocket"),
            (["Upgrade: websocket2", "Connection: Upgrade", "ACCEPT"], "Upgrade: websocket"),
            (["Upgrade: websocket", "ACCEPT"], "Connection: Upgrade"),
            (["Upgrade: websocket", "Connection: close", "ACCEPT"], "Connection: Upgrade"),
            (["Upgrade: websocket", "Connection: Upgrade"], "Sec-WebSocket-Accept"),
            (
                ["Upgrade: websocket", "Connection: Upgrade", "ACCEPT", "ACCEPT"],
                "Sec-WebSocket-Accept",
            ),
            (
                [
                    "Upgrade: websocket",
                    "Connection: Upgrade",
                    f"Sec-WebSocket-Accept: {RFC_ACCEPT}",
                ],
                "Sec-WebSocket-Accept",
            ),
            (
                ["Upgrade: websocket", "Connection: Upgrade", "LOWER_ACCEPT"],
                "Sec-WebSocket-Accept",
            ),
        ],
    )
    def test_invalid_101_response(self, lines: list[str], message: str) -> None:
        client, request = new_client()
        accept = accept_key(request_key(request))
        lines = [
            line.replace("LOWER_ACCEPT", f"Sec-WebSocket-Accept: {accept.lower()}").replace(
                "ACCEPT", f"Sec-WebSocket-Accept: {accept}"
            )
            for line in lines
        ]
        with pytest.raises(HandshakeError, match=message) as info:
            client.receive_data(refusal("HTTP/1.1 101 Switching Protocols", *lines))
        assert not isinstance(info.value, InvalidStatus)
        assert info.value.status == 101
        assert client.state is State.CLOSED
        client.receive_data(frame(OP_TEXT, "ignored"))
        assert client.events_received() == []

    @pytest.mark.parametrize(
        "status_line",
        [
            "HTTP/2 101 Switching",
            "ICY 200 OK",
            "HTTP/1.1 1O1 Typo",
            "HTTP/1.1",
            # Digits to str.isdigit(), not to HTTP (nor to int()).
            "HTTP/1.1 \u00b9\u00b2\u00b3 Superscript",
        ],
    )
    def test_invalid_status_line(self, status_line: str) -> None:
        client, _ = new_client()
        with pytest.raises(HandshakeError, match="status line") as info:
            client.receive_data(refusal(status_line))
        assert info.value.status is None
        assert client.state is State.CLOSED

    @pytest.mark.parametrize(
        "line", [" folded: continuation", "No colon here", "Bad Name: x", ": empty name"]
    )
    def test_invalid_header_line(self, line: str) -> None:
        client, request = new_client()
        with pytest.raises(HandshakeError, match="invalid header line"):
            client.receive_data(response_101(request_key(request), line))

    def test_eof_before_the_response_is_complete(self) -> None:
        client, request = new_client()
        client.receive_data(response_101(request_key(request))[:20])
        with pytest.raises(HandshakeError, match="closed before"):
            client.receive_eof()
        assert client.state is State.CLOSED

    def test_eof_before_any_response(self) -> None:
        client, _ = new_client()
        with pytest.raises(HandshakeError):
            client.receive_eof()
        assert client.state is State.CLOSED
        assert client.close_code == 1006


class TestRefusal:
    """§4.1: any status other than 101 fails the handshake with the details exposed."""

    def test_content_length_body(self) -> None:
        client, _ = new_client()
        response = refusal(
            "HTTP/1.1 403 Forbidden",
            "Content-Type: text/plain",
            "Content-Length: 12",
            body=b"go away now!",
        )
        with pytest.raises(InvalidStatus) as info:
            client.receive_data(response)
        error = info.value
        assert isinstance(error, HandshakeError)
        assert error.status == 403
        assert error.reason == "Forbidden"
        assert error.headers == [("Content-Type", "text/plain"), ("Content-Length", "12")]
        assert error.header("content-type") == "text/plain"
        assert error.headers_dict["content-length"] == "12"
        assert error.body == b"go away now!"
        assert "403" in str(error)
        assert client.state is State.CLOSED

    def test_content_length_body_arriving_later(self) -> None:
        client, _ = new_client()
        response = refusal("HTTP/1.1 401 Unauthorized", "Content-Length: 6", body=b"denied")
        for index in range(len(response) - 1):
            client.receive_data(response[index : index + 1])
        with pytest.raises(InvalidStatus) as info:
            client.receive_data(response[-1:])
        assert (info.value.status, info.value.body) == (401, b"denied")

    def test_a_content_length_of_non_ascii_digits_is_no_length(self) -> None:
        client, _ = new_client()
        client.receive_data(
            refusal("HTTP/1.1 404 Not Found", "Content-Length: \u00b3", body=b"abc")
        )
        with pytest.raises(InvalidStatus) as info:
            client.receive_eof()  # the body ran until the end of the connection
        assert (info.value.status, info.value.body) == (404, b"abc")

    def test_empty_body(self) -> None:
        client, _ = new_client()
        with pytest.raises(InvalidStatus) as info:
            client.receive_data(refusal("HTTP/1.1 404 Not Found", "Content-Length: 0"))
        assert (info.value.status, info.value.reason, info.value.body) == (404, "Not Found", b"")

    def test_chunked_body(self) -> None:
        client, _ = new_client()
        body = b"5\r\nHello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
        response = refusal("HTTP/1.1 500 Oops", "Transfer-Encoding: chunked", body=body)
        client.receive_data(response[:-10])
        with pytest.raises(InvalidStatus) as info:
            client.receive_data(response[-10:])
        assert info.value.status == 500
        assert info.value.body == b"Hello world"

    def test_chunked_body_wins_over_content_length(self) -> None:
        client, _ = new_client()
        body = b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"
        response = refusal(
            "HTTP/1.1 400 Bad Request",
            "Content-Length: 3",
            "Transfer-Encoding: chunked",
            body=body,
        )
        client.receive_data(response[:-5])
        with pytest.raises(InvalidStatus) as info:
            client.receive_data(response[-5:])
        assert info.value.body == b"abcdef"

    def test_body_until_eof(self) -> None:
        client, _ = new_client()
        client.receive_data(refusal("HTTP/1.1 503 Service Unavailable", body=b"try "))
        client.receive_data(b"later")
        assert client.state is State.CONNECTING
        with pytest.raises(InvalidStatus) as info:
            client.receive_eof()
        assert info.value.status == 503
        assert info.value.reason == "Service Unavailable"
        assert info.value.body == b"try later"
        assert client.state is State.CLOSED

    def test_status_without_reason(self) -> None:
        client, _ = new_client()
        with pytest.raises(InvalidStatus) as info:
            client.receive_data(refusal("HTTP/1.1 400", "Content-Length: 0"))
        assert (info.value.status, info.value.reason) == (400, "")

    def test_redirect_exposes_location(self) -> None:
        client, _ = new_client()
        with pytest.raises(InvalidStatus) as info:
            client.receive_data(
                refusal("HTTP/1.1 302 Found", "Location: ws://other/", "Content-Length: 0")
            )
        assert info.value.header("Location") == "ws://other/"

    def test_large_body_is_truncated(self) -> None:
        client, _ = new_client()
        client.receive_data(refusal("HTTP/1.1 500 Error"))
        with pytest.raises(InvalidStatus) as info:
            for _ in range(100):
                client.receive_data(b"x" * 1024)
        assert info.value.body == b"x" * handshake_module.MAX_BODY


class TestSubprotocolAndExtensions:
    """§4.1: the server may only select what the client offered."""

    def test_selected_subprotocol(self) -> None:
        client, request = new_client(subprotocols=["chat", "superchat"])
        client.receive_data(response_101(request_key(request), "Sec-WebSocket-Protocol: superchat"))
        [event] = client.events_received()
        assert isinstance(event, HandshakeComplete)
        assert event.subprotocol == "superchat"
        assert client.subprotocol == "superchat"

    def test_no_subprotocol_selected(self) -> None:
        client, request = new_client(subprotocols=["chat"])
        client.receive_data(response_101(request_key(request)))
        assert client.state is State.OPEN
        assert client.subprotocol is None

    @pytest.mark.parametrize(
        ("offered", "selected"),
        [
            (["chat"], "other"),
            (None, "chat"),
            (["chat", "superchat"], "chat, superchat"),
        ],
    )
    def test_subprotocol_not_offered(self, offered: list[str] | None, selected: str) -> None:
        client, request = new_client(subprotocols=offered)
        with pytest.raises(HandshakeError, match="subprotocol") as info:
            client.receive_data(
                response_101(request_key(request), f"Sec-WebSocket-Protocol: {selected}")
            )
        assert info.value.status == 101
        assert client.state is State.CLOSED

    def test_two_subprotocol_headers(self) -> None:
        client, request = new_client(subprotocols=["chat", "superchat"])
        with pytest.raises(HandshakeError, match="subprotocol"):
            client.receive_data(
                response_101(
                    request_key(request),
                    "Sec-WebSocket-Protocol: chat",
                    "Sec-WebSocket-Protocol: superchat",
                )
            )

    def test_deflate_accepted(self) -> None:
        client, request = new_client(deflate_options=DeflateOptions())
        client.receive_data(
            response_101(request_key(request), "Sec-WebSocket-Extensions: permessage-deflate")
        )
        assert client.state is State.OPEN
        assert isinstance(client.deflate, PerMessageDeflate)

    def test_deflate_declined(self) -> None:
        client, request = new_client(deflate_options=DeflateOptions())
        client.receive_data(response_101(request_key(request)))
        assert client.state is State.OPEN
        assert client.deflate is None

    @pytest.mark.parametrize(
        ("options", "extensions"),
        [
            (None, "permessage-deflate"),
            (DeflateOptions(), "x-webkit-deflate-frame"),
            (DeflateOptions(), "permessage-deflate, permessage-deflate"),
            (DeflateOptions(), "permessage-deflate; bogus"),
            (DeflateOptions(), 'permessage-deflate; client_max_window_bits="10'),
        ],
    )
    def test_extension_not_offered_or_invalid(
        self, options: DeflateOptions | None, extensions: str
    ) -> None:
        client, request = new_client(deflate_options=options)
        with pytest.raises(HandshakeError, match="xtension|permessage-deflate") as info:
            client.receive_data(
                response_101(request_key(request), f"Sec-WebSocket-Extensions: {extensions}")
            )
        assert info.value.status == 101
        assert client.state is State.CLOSED


class TestLimits:
    """Limits on the response head: 128 headers, 8 KiB a line, 64 KiB in all."""

    @staticmethod
    def response_with(key: str, lines: list[str]) -> bytes:
        return response_101(key, *lines)

    @pytest.mark.parametrize("chunk", [None, 1, 1000])
    def test_128_headers_are_accepted(self, chunk: int | None) -> None:
        client, request = new_client()
        response = response_101(request_key(request), *[f"X-H{i}: v" for i in range(125)])
        assert response.count(b"\r\n") - 2 == 128
        self.feed(client, response, chunk)
        assert client.state is State.OPEN

    @pytest.mark.parametrize("chunk", [None, 1, 1000])
    def test_129_headers_are_refused(self, chunk: int | None) -> None:
        client, request = new_client()
        response = response_101(request_key(request), *[f"X-H{i}: v" for i in range(126)])
        with pytest.raises(HandshakeError, match="more than 128 headers") as info:
            self.feed(client, response, chunk)
        assert not isinstance(info.value, InvalidStatus)
        assert client.state is State.CLOSED

    @pytest.mark.parametrize("chunk", [None, 1, 1000])
    def test_line_of_8_kib_is_accepted(self, chunk: int | None) -> None:
        client, request = new_client()
        line = "X-Long: " + "a" * (8192 - len("X-Long: "))
        assert len(line) == handshake_module.MAX_LINE
        self.feed(client, response_101(request_key(request), line), chunk)
        assert client.state is State.OPEN

    @pytest.mark.parametrize("chunk", [None, 1, 1000])
    def test_line_over_8_kib_is_refused(self, chunk: int | None) -> None:
        client, request = new_client()
        line = "X-Long: " + "a" * (8193 - len("X-Long: "))
        with pytest.raises(HandshakeError, match="line longer than 8192"):
            self.feed(client, response_101(request_key(request), line), chunk)
        assert client.state is State.CLOSED

    def test_endless_line_is_refused_before_the_head_ends(self) -> None:
        client, _ = new_client()
        client.receive_data(b"HTTP/1.1 101 Switching Protocols\r\nX-Endless: ")
        with pytest.raises(HandshakeError, match="line longer than 8192"):
            for _ in range(10):
                client.receive_data(b"a" * 1000)

    @pytest.mark.parametrize("chunk", [None, 1000])
    def test_head_over_64_kib_is_refused(self, chunk: int | None) -> None:
        client, request = new_client()
        lines = [f"X-H{i:03}: " + "a" * 8000 for i in range(9)]
        response = response_101(request_key(request), *lines)
        assert 65536 < len(response) < 80000
        with pytest.raises(HandshakeError, match="larger than 65536"):
            self.feed(client, response, chunk)
        assert client.state is State.CLOSED

    def test_endless_head_is_refused_before_it_ends(self) -> None:
        client, _ = new_client()
        client.receive_data(b"HTTP/1.1 101 Switching Protocols\r\n")
        with pytest.raises(HandshakeError, match="larger than 65536"):
            for index in range(100):
                client.receive_data(f"X-H{index:03}: ".encode() + b"a" * 990 + b"\r\n")

    @staticmethod
    def response_of_length(key: str, length: int) -> bytes:
        pad_lines = [f"X-P{i:02}: " + "a" * 8000 for i in range(8)]
        partial = response_101(key, *pad_lines, "X-Pad: ")
        missing = length - len(partial)
        assert 0 < missing < 8000
        response = response_101(key, *pad_lines, "X-Pad: " + "b" * missing)
        assert len(response) == length
        return response

    @pytest.mark.parametrize("chunk", [None, 1, 1000])
    def test_head_of_exactly_64_kib_is_accepted(self, chunk: int | None) -> None:
        client, request = new_client()
        response = self.response_of_length(request_key(request), handshake_module.MAX_HEAD)
        self.feed(client, response, chunk)
        assert client.state is State.OPEN

    @pytest.mark.parametrize("chunk", [None, 1, 1000])
    def test_head_one_byte_over_64_kib_is_refused(self, chunk: int | None) -> None:
        client, request = new_client()
        response = self.response_of_length(request_key(request), handshake_module.MAX_HEAD + 1)
        with pytest.raises(HandshakeError, match="larger than 65536"):
            self.feed(client, response, chunk)
        assert client.state is State.CLOSED

    @staticmethod
    def feed(client: ClientConnection, data: bytes, chunk: int | None) -> None:
        if chunk is None:
            client.receive_data(data)
            return
        for start in range(0, len(data), chunk):
            client.receive_data(data[start : start + chunk])
