"""Client and server roles talking to each other, and parsing under any chunking."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsclient.exceptions import HandshakeError, InvalidStatus
from wsclient.protocol import (
    BinaryMessage,
    ClientConnection,
    CloseReceived,
    Connection,
    DeflateOptions,
    Event,
    HandshakeComplete,
    PingReceived,
    PongReceived,
    RequestReceived,
    Role,
    ServerConnection,
    State,
    TextMessage,
    parse_uri,
)

from .support import (
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    URL,
    frame,
    open_client,
    open_pair,
    parse_frames,
    sent_frames,
    transfer,
)

MIB = 1 << 20
DEFLATE: dict[str, Any] = {"deflate_options": DeflateOptions(min_size=0)}


def reencode(raw: bytes, *, masked: bool) -> list[bytes]:
    """Split ``raw`` into the bytes of each frame."""
    return [
        frame(
            item.opcode,
            item.payload,
            fin=item.fin,
            rsv1=item.rsv1,
            rsv2=item.rsv2,
            rsv3=item.rsv3,
            key=item.key,
        )
        for item in parse_frames(raw, masked=masked)
    ]


def feed_in_chunks(connection: Connection, data: bytes, cuts: list[int]) -> list[Event]:
    start = 0
    for cut in sorted(cuts):
        connection.receive_data(data[start:cut])
        start = cut
    connection.receive_data(data[start:])
    return connection.events_received()


class TestHandshakeRoundTrip:
    def test_request_seen_by_the_server(self) -> None:
        client = ClientConnection(
            parse_uri("ws://example.com:8080/path?q=1"),
            subprotocols=["chat", "superchat"],
            origin="https://example.com",
            headers={"X-Token": "abc"},
        )
        server = ServerConnection()
        server.receive_data(client.data_to_send())
        [event] = server.events_received()
        assert isinstance(event, RequestReceived)
        request = event.request
        assert request.path == "/path?q=1"
        assert request.headers.get("Host") == "example.com:8080"
        assert request.headers.get("Origin") == "https://example.com"
        assert request.headers.get("X-Token") == "abc"
        assert server.handshake.offered_subprotocols() == ["chat", "superchat"]
        assert server.handshake.validate() is None
        server.accept("superchat", headers={"X-Server": "test"})
        client.receive_data(server.data_to_send())
        [complete] = client.events_received()
        assert isinstance(complete, HandshakeComplete)
        assert complete.subprotocol == client.subprotocol == server.subprotocol == "superchat"
        assert complete.response.headers.get("X-Server") == "test"

    def test_request_fed_to_the_server_byte_by_byte(self) -> None:
        client = ClientConnection(parse_uri(URL))
        server = ServerConnection()
        request = client.data_to_send()
        for index in range(len(request)):
            assert server.events_received() == []
            server.receive_data(request[index : index + 1])
        assert [type(event) for event in server.events_received()] == [RequestReceived]

    def test_frames_sent_before_the_server_accepts(self) -> None:
        client = ClientConnection(parse_uri(URL))
        server = ServerConnection()
        early = frame(OP_TEXT, "early", key=b"abcd")
        server.receive_data(client.data_to_send() + early[:3])
        server.receive_data(early[3:] + frame(OP_PING, b"p", key=b"efgh"))
        assert [type(event) for event in server.events_received()] == [RequestReceived]
        server.accept()
        assert server.events_received() == [TextMessage("early"), PingReceived(b"p")]
        client.receive_data(server.data_to_send())
        assert client.events_received()[1:] == [PongReceived(b"p")]

    def test_server_rejects(self) -> None:
        client = ClientConnection(parse_uri(URL))
        server = ServerConnection()
        server.receive_data(client.data_to_send())
        server.reject(403, "Forbidden", b"no entry", headers={"X-Why": "test"})
        assert server.state is State.CLOSED
        with pytest.raises(InvalidStatus) as info:
            client.receive_data(server.data_to_send())
        assert (info.value.status, info.value.reason, info.value.body) == (
            403,
            "Forbidden",
            b"no entry",
        )
        assert info.value.header("x-why") == "test"

    def test_server_refuses_an_invalid_request(self) -> None:
        server = ServerConnection()
        server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        with pytest.raises(HandshakeError, match="Connection"):
            server.accept()


class TestMessagesRoundTrip:
    @pytest.mark.parametrize("options", [{}, DEFLATE], ids=["plain", "deflate"])
    def test_every_kind_of_frame_both_ways(self, options: dict[str, Any]) -> None:
        client, server = open_pair(client=options)
        assert (client.deflate is not None) is bool(options)
        client.send_text("Hello, server")
        client.send_binary(b"\x00\x01\x02" * 100)
        client.send_ping(b"c-ping")
        client.send_pong(b"c-pong")
        assert transfer(client, server) == [
            TextMessage("Hello, server"),
            BinaryMessage(b"\x00\x01\x02" * 100),
            PingReceived(b"c-ping"),
            PongReceived(b"c-pong"),
        ]
        server.send_text("Hello, client ✓")
        server.send_binary(b"")
        server.send_ping(b"s-ping")
        assert transfer(server, client) == [
            PongReceived(b"c-ping"),
            TextMessage("Hello, client ✓"),
            BinaryMessage(b""),
            PingReceived(b"s-ping"),
        ]
        assert transfer(client, server) == [PongReceived(b"s-ping")]
        client.send_close(1000, "bye")
        assert transfer(client, server) == [CloseReceived(1000, "bye")]
        assert transfer(server, client) == [CloseReceived(1000, "")]
        assert client.state is server.state is State.CLOSED
        assert client.close_handshake_done and server.close_handshake_done

    @pytest.mark.parametrize("options", [{}, DEFLATE], ids=["plain", "deflate"])
    def test_server_initiated_close(self, options: dict[str, Any]) -> None:
        client, server = open_pair(client=options)
        server.send_text("last")
        server.send_close(1001, "restart")
        assert server.state is State.CLOSING
        assert transfer(server, client) == [TextMessage("last"), CloseReceived(1001, "restart")]
        assert client.state is State.CLOSED
        assert transfer(client, server) == [CloseReceived(1001, "")]
        assert server.state is State.CLOSED

    @pytest.mark.parametrize("options", [{}, DEFLATE], ids=["plain", "deflate"])
    def test_fragmented_sends(self, options: dict[str, Any]) -> None:
        client, server = open_pair(client=options)
        client.send_text("Hel", fin=False)
        client.send_ping(b"between")
        client.send_continuation("lo, ", fin=False)
        client.send_continuation("wörld", fin=True)
        client.send_binary(b"a", fin=False)
        client.send_continuation(b"", fin=False)
        client.send_continuation(b"b", fin=True)
        assert transfer(client, server) == [
            PingReceived(b"between"),
            TextMessage("Hello, wörld"),
            BinaryMessage(b"ab"),
        ]
        server.send_binary(b"x" * 1000, fin=False)
        server.send_continuation(b"y" * 1000, fin=True)
        assert transfer(server, client) == [
            PongReceived(b"between"),
            BinaryMessage(b"x" * 1000 + b"y" * 1000),
        ]

    @pytest.mark.parametrize("options", [{}, DEFLATE], ids=["plain", "deflate"])
    def test_max_frame_size_lets_pings_interleave(self, options: dict[str, Any]) -> None:
        client, server = open_pair(client={"max_frame_size": 1000, **options})
        data = random.Random(1).randbytes(5000)
        client.send_binary(data)
        frames = reencode(client.data_to_send(), masked=True)
        assert len(frames) >= 5  # compressed random data grows a little
        client.send_ping(b"urgent")
        ping = client.data_to_send()
        server.receive_data(frames[0] + frames[1] + ping + b"".join(frames[2:]))
        assert server.events_received() == [PingReceived(b"urgent"), BinaryMessage(data)]

    def test_server_max_frame_size(self) -> None:
        client, server = open_pair(server={"max_frame_size": 100})
        server.send_text("z" * 250)
        raw = server.data_to_send()
        assert [len(item.payload) for item in parse_frames(raw, masked=False)] == [100, 100, 50]
        client.receive_data(raw)
        assert client.events_received() == [TextMessage("z" * 250)]

    @pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
    @pytest.mark.parametrize("options", [{}, DEFLATE], ids=["plain", "deflate"])
    def test_sizes_both_ways(self, size: int, options: dict[str, Any]) -> None:
        client, server = open_pair(client=options)
        data = random.Random(size).randbytes(size)
        client.send_binary(data)
        server.send_binary(data)
        assert transfer(client, server) == [BinaryMessage(data)]
        assert transfer(server, client) == [BinaryMessage(data)]


# Chunking properties ----------------------------------------------------------------------

SIZES = st.one_of(
    st.sampled_from([0, 1, 125, 126, 127, 65535, 65536]),
    st.integers(min_value=0, max_value=300),
)
ALPHABET = "aZ é€😀"


@st.composite
def server_streams(draw: st.DrawFn) -> tuple[bytes, list[Event], list[bytes]]:
    """Raw unmasked frames from a server, the events they must produce and the pongs due."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    raw = b""
    events: list[Event] = []
    pongs: list[bytes] = []

    def control() -> None:
        nonlocal raw
        opcode = draw(st.sampled_from([OP_PING, OP_PONG]))
        payload = rng.randbytes(draw(st.sampled_from([0, 1, 125])))
        raw += frame(opcode, payload)
        if opcode == OP_PING:
            events.append(PingReceived(payload))
            pongs.append(payload)
        else:
            events.append(PongReceived(payload))

    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["text", "binary", "control"]))
        if kind == "control":
            control()
            continue
        size = draw(SIZES)
        if kind == "text":
            text = "".join(rng.choice(ALPHABET) for _ in range(size // 2 + size % 2))
            payload = text.encode()
            message: Event = TextMessage(text)
        else:
            payload = rng.randbytes(size)
            message = BinaryMessage(payload)
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for index, piece in enumerate(pieces):
            opcode = (OP_TEXT if kind == "text" else OP_BINARY) if index == 0 else OP_CONTINUATION
            raw += frame(opcode, piece, fin=index == len(pieces) - 1)
            if index < len(pieces) - 1 and draw(st.booleans()):
                control()
        events.append(message)
    return raw, events, pongs


def pong_payloads(client: Connection) -> list[bytes]:
    sent = sent_frames(client)
    assert all(item.opcode == OP_PONG for item in sent)
    return [item.payload for item in sent]


class TestChunking:
    """Any chunking of the input yields the same events as feeding it all at once."""

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
    @given(stream=server_streams(), data=st.data())
    def test_random_chunking(
        self, stream: tuple[bytes, list[Event], list[bytes]], data: st.DataObject
    ) -> None:
        raw, expected, pongs = stream
        cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=40), label="cuts")
        whole = open_client(max_size=None)
        whole.receive_data(raw)
        assert whole.events_received() == expected
        assert pong_payloads(whole) == pongs
        chunked = open_client(max_size=None)
        assert feed_in_chunks(chunked, raw, cuts) == expected
        assert pong_payloads(chunked) == pongs

    @settings(max_examples=40, deadline=None)
    @given(
        sizes=st.lists(SIZES, min_size=1, max_size=5),
        frame_size=st.one_of(st.none(), st.integers(1, 70000)),
        deflate=st.booleans(),
        from_client=st.booleans(),
        data=st.data(),
    )
    def test_random_chunking_of_real_peers(
        self,
        sizes: list[int],
        frame_size: int | None,
        deflate: bool,
        from_client: bool,
        data: st.DataObject,
    ) -> None:
        client_options: dict[str, Any] = dict(DEFLATE) if deflate else {}
        server_options: dict[str, Any] = {}
        (client_options if from_client else server_options)["max_frame_size"] = frame_size
        client, server = open_pair(client=client_options, server=server_options)
        sender, receiver = (client, server) if from_client else (server, client)
        expected: list[Event] = []
        for index, size in enumerate(sizes):
            payload = random.Random(index).randbytes(size)
            if index % 2:
                text = payload.hex()[:size]
                sender.send_text(text)
                expected.append(TextMessage(text))
            else:
                sender.send_binary(payload)
                expected.append(BinaryMessage(payload))
        sender.send_ping(b"done")
        expected.append(PingReceived(b"done"))
        raw = sender.data_to_send()
        cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=40), label="cuts")
        assert feed_in_chunks(receiver, raw, cuts) == expected

    def test_one_byte_at_a_time(self) -> None:
        client = ClientConnection(parse_uri(URL), **DEFLATE)
        server = ServerConnection()
        request = client.data_to_send()
        for index in range(len(request)):
            server.receive_data(request[index : index + 1])
        server.events_received()
        server.accept()
        server.send_text("κόσμε " * 30)
        server.send_binary(bytes(range(256)) * 300, fin=False)
        server.send_ping(b"p")
        server.send_continuation(b"end", fin=True)
        server.send_close(1000, "done")
        stream = server.data_to_send()
        for index in range(len(stream)):
            client.receive_data(stream[index : index + 1])
        events = client.events_received()
        assert isinstance(events[0], HandshakeComplete)
        assert events[1:] == [
            TextMessage("κόσμε " * 30),
            PingReceived(b"p"),
            BinaryMessage(bytes(range(256)) * 300 + b"end"),
            CloseReceived(1000, "done"),
        ]
        assert client.state is State.CLOSED
        reply = client.data_to_send()
        for index in range(len(reply)):
            server.receive_data(reply[index : index + 1])
        assert server.events_received() == [PongReceived(b"p"), CloseReceived(1000, "")]
        assert server.state is State.CLOSED


class TestLinearity:
    """A large message arriving in small chunks is processed in linear time."""

    SIZE = 16 * MIB
    CHUNK = 1024

    def feed(self, connection: Connection, raw: bytes) -> None:
        view = memoryview(raw)
        for start in range(0, len(raw), self.CHUNK):
            connection.receive_data(view[start : start + self.CHUNK].tobytes())

    @pytest.mark.timeout(60)
    def test_binary_16_mib_in_1_kib_chunks(self) -> None:
        client = open_client(max_size=None)
        data = random.Random(16).randbytes(self.SIZE)
        self.feed(client, frame(OP_BINARY, data) + frame(OP_TEXT, "after"))
        assert client.events_received() == [BinaryMessage(data), TextMessage("after")]

    @pytest.mark.timeout(60)
    def test_text_16_mib_in_1_kib_chunks(self) -> None:
        client = open_client(max_size=None)
        text = "κόσμε, 😀 " * (self.SIZE // 16)
        self.feed(client, frame(OP_TEXT, text))
        [event] = client.events_received()
        assert isinstance(event, TextMessage)
        assert event.data == text

    @pytest.mark.timeout(60)
    def test_masked_16_mib_in_1_kib_chunks(self) -> None:
        server = Connection(Role.SERVER, max_size=None)
        data = random.Random(17).randbytes(self.SIZE)
        self.feed(server, frame(OP_BINARY, data, key=b"\x12\x34\x56\x78"))
        assert server.events_received() == [BinaryMessage(data)]

    @pytest.mark.timeout(60)
    def test_fragmented_16_mib_in_1_kib_chunks(self) -> None:
        client = open_client(max_size=None)
        data = random.Random(18).randbytes(self.SIZE)
        step = 100_000
        raw = b"".join(
            frame(
                OP_BINARY if start == 0 else OP_CONTINUATION,
                data[start : start + step],
                fin=start + step >= len(data),
            )
            + frame(OP_PING, b"")
            for start in range(0, len(data), step)
        )
        self.feed(client, raw)
        events = client.events_received()
        assert events[-2:] == [BinaryMessage(data), PingReceived(b"")]
        assert events[:-2] == [PingReceived(b"")] * (len(events) - 2)
