"""The 101 response read whole in one read (checked by one match) and in pieces (read line
by line): the same headers, the same errors. And the request text, kept between connects."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsclient.exceptions import HandshakeError, InvalidStatus
from wsclient.protocol import (
    ClientConnection,
    DeflateOptions,
    HandshakeComplete,
    Headers,
    Response,
    State,
    WebSocketURI,
    accept_key,
    parse_uri,
)
from wsclient.protocol import handshake as handshake_module
from wsclient.protocol.handshake import ClientHandshake

from .support import URL, parse_request, request_key, response_101

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = accept_key(KEY)
STATUS = "HTTP/1.1 101 Switching Protocols"
USUAL = ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Accept: {ACCEPT}"]


def new_client() -> tuple[ClientConnection, bytes]:
    client = ClientConnection(parse_uri(URL))
    return client, client.data_to_send()


def head(status: str, *lines: str, tail: bytes = b"") -> bytes:
    return (status + "".join("\r\n" + line for line in lines) + "\r\n\r\n").encode("latin-1") + tail


def outcome(chunks: list[bytes], **options: Any) -> tuple[Any, ...]:
    """Everything the handshake tells once ``chunks`` are fed to it."""
    handshake = ClientHandshake(parse_uri(URL), key=KEY, **options)
    leftover = None
    try:
        for index, chunk in enumerate(chunks):
            leftover = handshake.receive_data(chunk)
            if leftover is not None:  # the rest goes to the frame parser
                leftover += b"".join(chunks[index + 1 :])
                break
    except HandshakeError as exc:
        return (type(exc), str(exc), exc.status, exc.reason, exc.headers, exc.body)
    response = handshake.response
    deflate = handshake.deflate
    return (
        leftover,
        None if response is None else (response.status, response.reason, response.body),
        None if response is None else list(response.headers),
        handshake.subprotocol,
        None if deflate is None else (deflate.compress_bits, deflate.decompress_bits),
    )


def splits(data: bytes) -> list[list[bytes]]:
    """``data`` cut in two at each position, and byte by byte."""
    cuts = [[data[:index], data[index:]] for index in range(1, len(data))]
    return [*cuts, [data[index : index + 1] for index in range(len(data))]]


def reference_headers(data: bytes) -> list[tuple[str, str]]:
    """The header fields of a well-formed head, as RFC 9110 §5 reads them."""
    text = data[: data.index(b"\r\n\r\n")].decode("latin-1")
    fields = []
    for line in text.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields.append((name, value.strip(" \t")))
    return fields


ACCEPTED = [
    pytest.param(head(STATUS, *USUAL), {}, id="usual"),
    pytest.param(
        head(STATUS, *reversed(USUAL), "Date: Mon, 1 Jan 2024", "Server: x"), {}, id="more"
    ),
    pytest.param(
        head(
            STATUS,
            "upgrade:websocket",
            "CONNECTION:\t keep-alive, Upgrade \t",
            f"Sec-WebSocket-Accept:   {ACCEPT}  ",
            "X-Empty:",
            "X-Blank: \t ",
            "X-Colon: a:b: c",
        ),
        {},
        id="odd-whitespace",
    ),
    pytest.param(
        head(
            STATUS,
            "Upgrade: websocket",
            "UPGRADE: h2c",
            "Connection: close",
            "connection: upgrade",
            f"sec-websocket-accept: {ACCEPT}",
            "X-A: 1",
            "x-a: 2",
        ),
        {},
        id="duplicates",
    ),
    pytest.param(head("HTTP/1.0 101", *USUAL), {}, id="http-1.0-no-reason"),
    pytest.param(head("HTTP/1.1 101 ", *USUAL), {}, id="empty-reason"),
    pytest.param(head("HTTP/1.1 101 Ça\nva\x00", *USUAL, "X-Latin: é\xff"), {}, id="latin-1"),
    pytest.param(head(STATUS, *USUAL, "X-Controls: a\x01b\x7fc\x0b"), {}, id="controls"),
    pytest.param(head("HTTP/1.1 101 a\rb", *USUAL), {}, id="reason-lone-cr"),
    pytest.param(head("HTTP/1.1 101 OK\r", *USUAL), {}, id="reason-cr-at-end"),
    pytest.param(
        head(STATUS, *USUAL, "Sec-WebSocket-Protocol: superchat"),
        {"subprotocols": ["chat", "superchat"]},
        id="subprotocol",
    ),
    pytest.param(
        head(
            STATUS,
            *USUAL,
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10",
        ),
        {"deflate_options": DeflateOptions()},
        id="deflate",
    ),
    pytest.param(head(STATUS, *USUAL, tail=b"\x81\x02hi\x89"), {}, id="frames-after"),
    pytest.param(
        head(STATUS, *USUAL, *[f"X-{index}: v" for index in range(125)]), {}, id="128-headers"
    ),
]


@pytest.mark.parametrize(("data", "options"), ACCEPTED)
def test_accepted_head_is_read_the_same_whole_and_in_pieces(
    data: bytes, options: dict[str, Any]
) -> None:
    whole = outcome([data], **options)
    leftover, (status, _, body), fields, _, _ = whole
    assert (status, body) == (101, b"")
    assert leftover == data[data.index(b"\r\n\r\n") + 4 :]
    assert fields == reference_headers(data)
    for chunks in splits(data):
        assert outcome(chunks, **options) == whole


REFUSED = [
    pytest.param(head(STATUS, *USUAL, " folded: x"), "invalid header line", id="obs-fold"),
    pytest.param(head(STATUS, *USUAL, "\tfolded"), "invalid header line", id="obs-fold-tab"),
    pytest.param(head(STATUS, "Bad Name: x", *USUAL), "invalid header line", id="space-in-name"),
    pytest.param(head(STATUS, *USUAL, "No colon"), "invalid header line", id="no-colon"),
    pytest.param(head(STATUS, *USUAL, ": x"), "invalid header line", id="empty-name"),
    pytest.param(head(STATUS, *USUAL, "Ünicode: x"), "invalid header line", id="latin-1-name"),
    pytest.param(head(STATUS, *USUAL, "X: a\x00b"), "control character", id="nul"),
    pytest.param(head(STATUS, *USUAL, "X: a\nb"), "control character", id="lone-lf"),
    pytest.param(head(STATUS, *USUAL, "X: a\rb"), "control character", id="lone-cr"),
    pytest.param(head(STATUS, *USUAL, "X: a\r"), "control character", id="cr-at-end"),
    pytest.param(
        head(STATUS, *USUAL, f"sec-websocket-accept: {ACCEPT}"),
        "Sec-WebSocket-Accept",
        id="accept-twice",
    ),
    pytest.param(
        head(STATUS, *USUAL[:2], f"Sec-WebSocket-Accept: {ACCEPT.lower()}"),
        "Sec-WebSocket-Accept",
        id="accept-lower-case",
    ),
    pytest.param(head(STATUS, *USUAL[:2]), "Sec-WebSocket-Accept", id="no-accept"),
    pytest.param(head(STATUS, *USUAL[1:]), "Upgrade: websocket", id="no-upgrade"),
    pytest.param(
        head(STATUS, "Upgrade: websocket2", *USUAL[1:]), "Upgrade: websocket", id="websocket2"
    ),
    pytest.param(
        head(STATUS, USUAL[0], "Connection: close", USUAL[2]), "Connection: Upgrade", id="close"
    ),
    pytest.param(
        head(STATUS, *USUAL, "Sec-WebSocket-Protocol: chat"), "not offered", id="subprotocol"
    ),
    pytest.param(
        head(STATUS, *USUAL, "Sec-WebSocket-Extensions: permessage-deflate"),
        "not offered",
        id="extension",
    ),
    pytest.param(head("HTTP/1.1 1O1 Typo", *USUAL), "status line", id="status"),
    pytest.param(head("HTTP/1.1 1010 x", *USUAL), "status line", id="4-digits"),
    pytest.param(head("HTTP/2 101 x", *USUAL), "status line", id="http-2"),
    pytest.param(
        head(STATUS, *USUAL, *[f"X-{index}: v" for index in range(126)]),
        "more than 128 headers",
        id="129-headers",
    ),
    pytest.param(
        head("HTTP/1.1 403 Forbidden", "Content-Length: 2", tail=b"no"), "403", id="refusal"
    ),
]


@pytest.mark.parametrize(("data", "message"), REFUSED)
def test_refused_head_is_refused_the_same_whole_and_in_pieces(data: bytes, message: str) -> None:
    whole = outcome([data])
    error_type, error_message, *_ = whole
    assert issubclass(error_type, HandshakeError)
    assert message in error_message
    for chunks in splits(data):
        assert outcome(chunks) == whole


def test_a_line_longer_than_the_limit_is_refused_whole_and_in_pieces() -> None:
    limit = handshake_module.MAX_LINE
    for length in (limit - 1, limit, limit + 1):
        data = head(STATUS, *USUAL, "X-Long: " + "a" * (length - len("X-Long: ")))
        whole = outcome([data])
        assert outcome([data[:10], data[10:]]) == whole
        assert outcome([data[:-2], data[-2:]]) == whole
        if length > limit:
            assert "line longer than 8192" in whole[1]
        else:
            assert whole[1][0] == 101


def test_a_head_that_is_not_http_is_refused_at_once() -> None:
    data = b"\x16\x03\x01\x02\x00" + head(STATUS, *USUAL)
    assert outcome([data])[:2] == (
        HandshakeError,
        "invalid HTTP status line: the response starts with b'\\x16\\x03\\x01\\x02\\x00'",
    )
    # Before the head could have ended, and whatever follows.
    assert outcome([data[:1], b"\r\n\r\n"])[:2] == (
        HandshakeError,
        "invalid HTTP status line: the response starts with b'\\x16'",
    )


_NAMES = ["Upgrade", "connection", "Sec-WebSocket-Accept", "X-A", "x-a", "Date", "A b", "", "é"]
_SEPARATORS = [":", ": ", ":\t", ": \t ", " :", ""]
_VALUES = ["websocket", "Upgrade", ACCEPT, ACCEPT.lower(), "", " ", "a, b", "a\x00", "a\rb", "é"]


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    status = draw(
        st.sampled_from(
            [STATUS, "HTTP/1.0 101", "HTTP/1.1 200 OK", "HTTP/1.1 101 \n", "HTTP/1.1 101\r"]
        )
    )
    lines = list(draw(st.sampled_from([USUAL, USUAL[::-1], []])))
    for _ in range(draw(st.integers(0, 5))):
        line = draw(
            st.one_of(
                st.builds(
                    lambda name, separator, value, padding: name + separator + value + padding,
                    st.sampled_from(_NAMES),
                    st.sampled_from(_SEPARATORS),
                    st.sampled_from(_VALUES),
                    st.sampled_from(["", " ", "\t", " \t"]),
                ),
                st.text(st.characters(max_codepoint=255), max_size=8),
            )
        )
        lines.insert(draw(st.integers(0, len(lines))), line)
    return head(status, *lines, tail=draw(st.sampled_from([b"", b"\x81\x00", b"\r\n"])))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=heads(), cut=st.integers(1, 200), subprotocols=st.sampled_from([None, ["chat"]]))
def test_any_head_is_read_the_same_whole_and_in_two_pieces(
    data: bytes, cut: int, subprotocols: list[str] | None
) -> None:
    whole = outcome([data], subprotocols=subprotocols)
    assert outcome([data[:cut], data[cut:]], subprotocols=subprotocols) == whole
    if whole[0] is not None and not isinstance(whole[0], type):  # upgraded
        assert whole[2] == reference_headers(data)


def test_headers_of_a_head_read_whole_behave_as_built_from_pairs() -> None:
    client, request = new_client()
    client.receive_data(response_101(request_key(request), "X-A: 1", "Date: today", "x-a:  2 "))
    headers = client.response.headers  # type: ignore[union-attr]
    pairs = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(request_key(request))),
        ("X-A", "1"),
        ("Date", "today"),
        ("x-a", "2"),
    ]
    built = Headers(pairs)
    assert repr(headers) == repr(built) == f"Headers({pairs!r})"
    assert len(headers) == len(built) == 6
    assert list(headers) == list(built) == pairs
    assert headers.items() == built.items() == pairs
    assert headers.get_all("X-A") == built.get_all("X-A") == ["1", "2"]
    assert headers.get("x-a") == "1, 2"
    assert headers.get("missing", "default") == "default"
    assert "DATE" in headers
    assert "Sec-WebSocket-Protocol" not in headers


def test_response_and_event_compare_as_if_built_by_their_constructors() -> None:
    client, request = new_client()
    client.receive_data(response_101(request_key(request)))
    [event] = client.events_received()
    response = client.response
    assert response is not None
    expected = Response(101, "Switching Protocols", response.headers)
    assert response == expected
    assert hash(response) == hash(expected)
    assert repr(response) == repr(expected)
    assert dataclasses.replace(response, status=200).status == 200
    assert event == HandshakeComplete(expected, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        response.status = 200  # type: ignore[misc]


def test_lower_case_keeps_the_length_of_latin_1_text() -> None:
    # The usual-case check of a response finds a name in the lower-cased header lines and
    # reads the value at the same position in the lines as received.
    assert all(len(chr(code).lower()) == 1 for code in range(256))


class TestRequestText:
    """The request text around the key is kept per URI and options, never mixed up."""

    @pytest.mark.parametrize(
        "url", [URL, "wss://example.com:8443/a?b=c", "ws://u:p@[::1]:9000/", "ws://h/é"]
    )
    @pytest.mark.parametrize(
        "options",
        [
            {},
            {"origin": "https://example.com"},
            {"user_agent": None},
            {"user_agent": "bot/1"},
            {"subprotocols": ["chat", "superchat"]},
            {"subprotocols": []},
            {"deflate_options": DeflateOptions()},
            {"deflate_options": DeflateOptions(client_max_window_bits=None)},
        ],
    )
    def test_same_as_built_afresh(self, url: str, options: dict[str, Any]) -> None:
        uri = parse_uri(url)
        kept = ClientHandshake(uri, key=KEY, **options)
        # With headers (even none) the request is built afresh each time.
        fresh = ClientHandshake(uri, [], key=KEY, **options)
        assert kept.request_bytes() == fresh.request_bytes()
        assert kept.request_bytes() == fresh.request_bytes()  # the second: from the cache
        other = ClientHandshake(uri, key="x" * 24, **options).request_bytes()
        assert other == fresh.request_bytes().replace(KEY.encode(), b"x" * 24)

    def test_each_uri_and_option_gets_its_own_text(self) -> None:
        one, two = parse_uri("ws://one.example/"), parse_uri("ws://two.example/")
        requests = [
            ClientHandshake(one, key=KEY).request_bytes(),
            ClientHandshake(two, key=KEY).request_bytes(),
            ClientHandshake(one, key=KEY, origin="https://a").request_bytes(),
            ClientHandshake(one, key=KEY, origin="https://b").request_bytes(),
            ClientHandshake(one, key=KEY, user_agent="ua/1").request_bytes(),
            ClientHandshake(one, key=KEY, subprotocols=["chat"]).request_bytes(),
            ClientHandshake(one, key=KEY, subprotocols=["chat", "x"]).request_bytes(),
            ClientHandshake(WebSocketURI(False, "one.example", 80, "/p"), key=KEY).request_bytes(),
        ]
        assert len(set(requests)) == len(requests)
        assert dict(parse_request(requests[1])[1])["Host"] == "two.example"
        assert dict(parse_request(requests[3])[1])["Origin"] == "https://b"

    def test_attributes_changed_after_construction_are_sent(self) -> None:
        uri = parse_uri(URL)
        ClientHandshake(uri, key=KEY).request_bytes()
        handshake = ClientHandshake(uri, key=KEY)
        handshake.origin = "https://changed"
        handshake.subprotocols = ["late"]
        _, headers = parse_request(handshake.request_bytes())
        assert ("Origin", "https://changed") in headers
        assert ("Sec-WebSocket-Protocol", "late") in headers

    def test_a_str_subclass_is_sent_as_it_prints(self) -> None:
        class Anything(str):
            def __eq__(self, other: object) -> bool:
                return True

            def __hash__(self) -> int:
                return hash("first")

        uri = parse_uri(URL)
        ClientHandshake(uri, key=KEY, origin="first").request_bytes()
        request = ClientHandshake(uri, key=KEY, origin=Anything("second")).request_bytes()
        assert ("Origin", "second") in parse_request(request)[1]
        ClientHandshake(uri, key=KEY, subprotocols=["first"]).request_bytes()
        request = ClientHandshake(uri, key=KEY, subprotocols=[Anything("second")]).request_bytes()
        assert ("Sec-WebSocket-Protocol", "second") in parse_request(request)[1]


def test_handshake_arguments_keep_their_order_and_a_key_is_drawn_when_none() -> None:
    uri = parse_uri(URL)
    handshake = ClientHandshake(uri, None, ["chat"], "https://o", "ua/1", None, KEY)
    assert (handshake.subprotocols, handshake.origin, handshake.user_agent) == (
        ["chat"],
        "https://o",
        "ua/1",
    )
    assert handshake.key == KEY
    assert len(ClientHandshake(uri).key) == 24
    assert ClientHandshake(uri).key != ClientHandshake(uri).key


def test_client_connection_state_after_a_whole_head_and_after_pieces() -> None:
    for cut in (None, 1, 40):
        client, request = new_client()
        data = response_101(request_key(request), "X-Extra: 1")
        if cut is None:
            client.receive_data(data)
        else:
            client.receive_data(data[:cut])
            assert client.state is State.CONNECTING
            client.receive_data(data[cut:])
        assert client.state is State.OPEN
        [event] = client.events_received()
        assert isinstance(event, HandshakeComplete)
        assert event.response.headers.get("x-extra") == "1"


def test_refusal_read_whole_exposes_its_headers() -> None:
    client, _ = new_client()
    with pytest.raises(InvalidStatus) as info:
        client.receive_data(head("HTTP/1.1 401 No", "X-Why:  because ", "Content-Length: 0"))
    assert info.value.headers == [("X-Why", "because"), ("Content-Length", "0")]
    assert client.response is None
