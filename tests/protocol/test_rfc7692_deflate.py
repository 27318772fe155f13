"""RFC 7692: permessage-deflate negotiation (§7.1) and compressed messages (§6, §7.2)."""

from __future__ import annotations

import random
import zlib
from typing import Any

import pytest

from wsclient.exceptions import HandshakeError, MessageTooBig, ProtocolError
from wsclient.protocol import (
    BinaryMessage,
    ClientConnection,
    DeflateOptions,
    Fragment,
    PingReceived,
    State,
    TextMessage,
    parse_uri,
)
from wsclient.protocol import deflate as deflate_module
from wsclient.protocol.deflate import parse_extensions_header

from .support import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    URL,
    frame,
    open_client,
    open_pair,
    parse_frames,
    request_key,
    response_101,
    sent_frames,
    transfer,
)

MIB = 1 << 20
TAIL = b"\x00\x00\xff\xff"

# RFC 7692 §7.2.3: payloads of the worked examples.
HELLO_COMPRESSED = bytes.fromhex("f248cdc9c90700")
HELLO_COMPRESSED_AGAIN = bytes.fromhex("f200110000")  # §7.2.3.2, with the shared window
HELLO_STORED = bytes.fromhex("000500faff48656c6c6f00")  # §7.2.3.3, no compression
HELLO_BFINAL = bytes.fromhex("f348cdc9c9070000")  # §7.2.3.4, BFINAL set
HELLO_TWO_BLOCKS = bytes.fromhex("f24805000000ffffcac9c90700")  # §7.2.3.5


def deflate_client(response: str = "permessage-deflate", **options: Any) -> ClientConnection:
    """A client that negotiated permessage-deflate with ``response`` as the server's answer."""
    options.setdefault("min_size", 0)
    client = open_client(
        f"Sec-WebSocket-Extensions: {response}", deflate_options=DeflateOptions(**options)
    )
    assert client.deflate is not None
    return client


def deflate_pair(**options: Any) -> tuple[ClientConnection, Any]:
    options.setdefault("min_size", 0)
    return open_pair(client={"deflate_options": DeflateOptions(**options)})


def compress_raw(data: bytes, bits: int = 15) -> bytes:
    """What a peer sends for ``data``: raw DEFLATE, sync-flushed, without the 4-byte tail."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


class TestWorkedExamples:
    """§7.2.3: the example payloads of the RFC, received and sent."""

    def test_message_compressed_in_one_block(self) -> None:
        client = deflate_client()
        raw = frame(OP_TEXT, HELLO_COMPRESSED, rsv1=True)
        assert raw == bytes.fromhex("c107f248cdc9c90700")
        client.receive_data(raw)
        assert client.events_received() == [TextMessage("Hello")]

    def test_fragmented_compressed_message(self) -> None:
        client = deflate_client()
        first = frame(OP_TEXT, HELLO_COMPRESSED[:3], rsv1=True, fin=False)
        second = frame(OP_CONTINUATION, HELLO_COMPRESSED[3:])
        assert first == bytes.fromhex("4103f248cd")
        assert second == bytes.fromhex("8004c9c90700")
        client.receive_data(first)
        assert client.events_received() == []
        client.receive_data(second)
        assert client.events_received() == [TextMessage("Hello")]

    def test_fragmented_compressed_message_byte_by_byte(self) -> None:
        client = deflate_client()
        raw = frame(OP_TEXT, HELLO_COMPRESSED[:3], rsv1=True, fin=False) + frame(
            OP_CONTINUATION, HELLO_COMPRESSED[3:]
        )
        for index in range(len(raw)):
            client.receive_data(raw[index : index + 1])
        assert client.events_received() == [TextMessage("Hello")]

    def test_sharing_the_lz77_window(self) -> None:
        client = deflate_client()
        client.receive_data(frame(OP_TEXT, HELLO_COMPRESSED, rsv1=True))
        client.receive_data(frame(OP_TEXT, HELLO_COMPRESSED_AGAIN, rsv1=True))
        assert client.events_received() == [TextMessage("Hello"), TextMessage("Hello")]

    def test_deflate_block_with_no_compression(self) -> None:
        client = deflate_client()
        raw = frame(OP_TEXT, HELLO_STORED, rsv1=True)
        assert raw == bytes.fromhex("c10b000500faff48656c6c6f00")
        client.receive_data(raw)
        assert client.events_received() == [TextMessage("Hello")]

    def test_deflate_block_with_bfinal_set(self) -> None:
        client = deflate_client()
        client.receive_data(frame(OP_TEXT, HELLO_BFINAL, rsv1=True))
        assert client.events_received() == [TextMessage("Hello")]

    def test_message_after_a_bfinal_block(self) -> None:
        # The peer ended its DEFLATE stream; the next message starts a new one.
        client = deflate_client()
        client.receive_data(frame(OP_TEXT, HELLO_BFINAL, rsv1=True))
        client.receive_data(frame(OP_TEXT, HELLO_COMPRESSED, rsv1=True))
        client.receive_data(frame(OP_BINARY, HELLO_BFINAL, rsv1=True))
        client.receive_data(frame(OP_TEXT, HELLO_COMPRESSED, rsv1=True))
        assert client.events_received() == [
            TextMessage("Hello"),
            TextMessage("Hello"),
            BinaryMessage(b"Hello"),
            TextMessage("Hello"),
        ]

    def test_two_deflate_blocks_in_one_message(self) -> None:
        client = deflate_client()
        client.receive_data(frame(OP_TEXT, HELLO_TWO_BLOCKS, rsv1=True))
        assert client.events_received() == [TextMessage("Hello")]

    def test_sending_hello_twice_shares_the_window(self) -> None:
        client = deflate_client()
        client.send_text("Hello")
        client.send_text("Hello")
        assert [item.summary() for item in sent_frames(client)] == [
            (OP_TEXT, HELLO_COMPRESSED, True, True),
            (OP_TEXT, HELLO_COMPRESSED_AGAIN, True, True),
        ]

    def test_client_no_context_takeover_resets_the_window(self) -> None:
        client = deflate_client(
            "permessage-deflate; client_no_context_takeover", client_no_context_takeover=True
        )
        client.send_text("Hello")
        client.send_text("Hello")
        assert [item.payload for item in sent_frames(client)] == [HELLO_COMPRESSED] * 2

    def test_client_no_context_takeover_imposed_by_the_server(self) -> None:
        client = deflate_client("permessage-deflate; client_no_context_takeover")
        assert client.deflate is not None and client.deflate.compress_no_context_takeover
        client.send_binary(b"Hello")
        client.send_binary(b"Hello")
        assert [item.payload for item in sent_frames(client)] == [HELLO_COMPRESSED] * 2

    def test_server_no_context_takeover_resets_the_inflater(self) -> None:
        client = deflate_client(
            "permessage-deflate; server_no_context_takeover", server_no_context_takeover=True
        )
        client.receive_data(frame(OP_TEXT, HELLO_COMPRESSED, rsv1=True) * 3)
        assert client.events_received() == [TextMessage("Hello")] * 3
        # A message that refers to the previous one cannot be inflated any more.
        with pytest.raises(ProtocolError) as info:
            client.receive_data(frame(OP_TEXT, HELLO_COMPRESSED_AGAIN, rsv1=True))
        [sent] = sent_frames(client)
        assert sent.close_code == info.value.close_code
        assert client.state is State.CLOSED


class TestOffer:
    """§7.1: the client's offer."""

    @pytest.mark.parametrize(
        ("options", "offer"),
        [
            (DeflateOptions(), "permessage-deflate; client_max_window_bits=12"),
            (
                DeflateOptions(client_max_window_bits=None),
                "permessage-deflate; client_max_window_bits",
            ),
            (
                DeflateOptions(client_max_window_bits=15, server_max_window_bits=10),
                "permessage-deflate; client_max_window_bits=15; server_max_window_bits=10",
            ),
            (
                DeflateOptions(client_no_context_takeover=True),
                "permessage-deflate; client_no_context_takeover; client_max_window_bits=12",
            ),
            (
                DeflateOptions(server_no_context_takeover=True, client_max_window_bits=None),
                "permessage-deflate; server_no_context_takeover; client_max_window_bits",
            ),
            (
                DeflateOptions(
                    client_max_window_bits=9,
                    server_max_window_bits=8,
                    client_no_context_takeover=True,
                    server_no_context_takeover=True,
                ),
                "permessage-deflate; client_no_context_takeover; server_no_context_takeover; "
                "client_max_window_bits=9; server_max_window_bits=8",
            ),
        ],
    )
    def test_offer(self, options: DeflateOptions, offer: str) -> None:
        assert options.offer() == offer
        client = ClientConnection(parse_uri(URL), deflate_options=options)
        assert f"\r\nSec-WebSocket-Extensions: {offer}\r\n".encode() in client.data_to_send()

    def test_offer_parses_back(self) -> None:
        options = DeflateOptions(server_max_window_bits=10, server_no_context_takeover=True)
        [(name, params)] = parse_extensions_header(options.offer())
        assert name == "permessage-deflate"
        assert params == [
            ("server_no_context_takeover", None),
            ("client_max_window_bits", "12"),
            ("server_max_window_bits", "10"),
        ]

    @pytest.mark.parametrize(
        "options",
        [
            {"client_max_window_bits": 7},
            {"client_max_window_bits": 16},
            {"server_max_window_bits": 7},
            {"server_max_window_bits": 16},
            {"compression_level": -1},
            {"compression_level": 10},
            {"memory_level": 0},
            {"memory_level": 10},
            {"min_size": -1},
        ],
    )
    def test_invalid_options(self, options: dict[str, int]) -> None:
        with pytest.raises(ValueError):
            DeflateOptions(**options)  # type: ignore[arg-type]


class TestAcceptResponse:
    """§7.1: the server's answer must stay within the offer."""

    def test_plain_response(self) -> None:
        codec = DeflateOptions().accept_response([])
        assert (codec.compress_bits, codec.decompress_bits) == (12, 15)
        assert not codec.compress_no_context_takeover
        assert not codec.decompress_no_context_takeover
        assert codec.can_compress

    def test_every_parameter(self) -> None:
        options = DeflateOptions(
            client_max_window_bits=12,
            server_max_window_bits=12,
            server_no_context_takeover=True,
        )
        codec = options.accept_response(
            [
                ("server_no_context_takeover", None),
                ("client_no_context_takeover", None),
                ("server_max_window_bits", "10"),
                ("client_max_window_bits", "11"),
            ]
        )
        assert (codec.compress_bits, codec.decompress_bits) == (11, 10)
        assert codec.compress_no_context_takeover
        assert codec.decompress_no_context_takeover

    def test_client_no_context_takeover_without_offer_is_allowed(self) -> None:
        codec = DeflateOptions().accept_response([("client_no_context_takeover", None)])
        assert codec.compress_no_context_takeover

    def test_server_no_context_takeover_without_request_is_allowed(self) -> None:
        codec = DeflateOptions().accept_response([("server_no_context_takeover", None)])
        assert codec.decompress_no_context_takeover

    def test_server_max_window_bits_without_request_is_allowed(self) -> None:
        codec = DeflateOptions().accept_response([("server_max_window_bits", "9")])
        assert codec.decompress_bits == 9

    def test_client_max_window_bits_chosen_by_the_server(self) -> None:
        options = DeflateOptions(client_max_window_bits=None)
        assert options.accept_response([]).compress_bits == 15
        assert options.accept_response([("client_max_window_bits", "10")]).compress_bits == 10

    @pytest.mark.parametrize(
        ("options", "params", "message"),
        [
            ({}, [("unknown", None)], "unknown parameter"),
            ({}, [("x-custom", "1")], "unknown parameter"),
            (
                {},
                [("server_no_context_takeover", None), ("server_no_context_takeover", None)],
                "duplicate",
            ),
            ({}, [("server_max_window_bits", "10"), ("server_max_window_bits", "10")], "dup"),
            ({}, [("server_no_context_takeover", "1")], "takes no value"),
            ({}, [("client_no_context_takeover", "1")], "takes no value"),
            ({}, [("server_max_window_bits", "7")], "8 to 15"),
            ({}, [("server_max_window_bits", "16")], "8 to 15"),
            ({}, [("server_max_window_bits", None)], "8 to 15"),
            ({}, [("server_max_window_bits", "010")], "8 to 15"),
            ({}, [("server_max_window_bits", "ten")], "8 to 15"),
            ({}, [("client_max_window_bits", "7")], "8 to 15"),
            ({}, [("client_max_window_bits", None)], "8 to 15"),
            (
                {"server_max_window_bits": 10},
                [("server_max_window_bits", "11")],
                "exceeds the offered 10",
            ),
            ({}, [("client_max_window_bits", "13")], "exceeds the offered 12"),
            (
                {"server_no_context_takeover": True},
                [],
                "server_no_context_takeover was requested",
            ),
            ({"server_max_window_bits": 10}, [], "server_max_window_bits was requested"),
        ],
    )
    def test_invalid_response(
        self, options: dict[str, Any], params: list[tuple[str, str | None]], message: str
    ) -> None:
        with pytest.raises(HandshakeError, match=message):
            DeflateOptions(**options).accept_response(params)

    def test_invalid_response_fails_the_handshake(self) -> None:
        client = ClientConnection(
            parse_uri(URL), deflate_options=DeflateOptions(server_no_context_takeover=True)
        )
        key = request_key(client.data_to_send())
        with pytest.raises(HandshakeError, match="server_no_context_takeover") as info:
            client.receive_data(response_101(key, "Sec-WebSocket-Extensions: permessage-deflate"))
        assert info.value.status == 101
        assert info.value.header("Sec-WebSocket-Extensions") == "permessage-deflate"
        assert client.state is State.CLOSED

    def test_quoted_parameter_value(self) -> None:
        client = deflate_client('permessage-deflate; server_max_window_bits="10"')
        assert client.deflate is not None and client.deflate.decompress_bits == 10


class TestServerNegotiation:
    """§7.1 from the server's side (the package's own test server uses it)."""

    def test_all_four_parameters(self) -> None:
        client, server = deflate_pair(
            client_max_window_bits=10,
            server_max_window_bits=11,
            client_no_context_takeover=True,
            server_no_context_takeover=True,
        )
        assert client.response is not None
        assert client.response.headers.get("Sec-WebSocket-Extensions") == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=11; client_max_window_bits=10"
        )
        assert client.deflate is not None and server.deflate is not None
        assert (client.deflate.compress_bits, client.deflate.decompress_bits) == (10, 11)
        assert (server.deflate.compress_bits, server.deflate.decompress_bits) == (11, 10)
        assert client.deflate.compress_no_context_takeover
        assert client.deflate.decompress_no_context_takeover

    def test_server_without_deflate(self) -> None:
        client, server = open_pair(
            client={"deflate_options": DeflateOptions()}, server={"deflate": False}
        )
        assert client.deflate is None and server.deflate is None
        client.send_text("x" * 1000)
        [sent] = parse_frames(client.data_to_send(), masked=True)
        assert not sent.rsv1

    def test_client_without_deflate(self) -> None:
        client, server = open_pair()
        assert client.deflate is None and server.deflate is None


class TestCompressedFrames:
    """§6: RSV1 marks the first frame of a compressed message, and nothing else."""

    def test_rsv1_on_a_compressed_message(self) -> None:
        client, server = deflate_pair()
        text = "compress me " * 100
        client.send_text(text)
        raw = client.data_to_send()
        [sent] = parse_frames(raw, masked=True)
        assert sent.rsv1 and sent.fin and sent.opcode == OP_TEXT
        assert len(sent.payload) < len(text) // 5
        server.receive_data(raw)
        assert server.events_received() == [TextMessage(text)]

    def test_rsv1_only_on_the_first_fragment(self) -> None:
        client, server = deflate_pair()
        client.send_text("Hel" * 50, fin=False)
        client.send_continuation("lo" * 50, fin=False)
        client.send_continuation("!", fin=True)
        raw = client.data_to_send()
        sent = parse_frames(raw, masked=True)
        assert [(item.opcode, item.fin, item.rsv1) for item in sent] == [
            (OP_TEXT, False, True),
            (OP_CONTINUATION, False, False),
            (OP_CONTINUATION, True, False),
        ]
        server.receive_data(raw)
        assert server.events_received() == [TextMessage("Hel" * 50 + "lo" * 50 + "!")]

    def test_rsv1_only_on_the_first_frame_with_max_frame_size(self) -> None:
        client, server = open_pair(
            client={"deflate_options": DeflateOptions(min_size=0), "max_frame_size": 16}
        )
        data = bytes(range(256)) * 4
        client.send_binary(data)
        raw = client.data_to_send()
        sent = parse_frames(raw, masked=True)
        assert len(sent) > 2
        assert [item.rsv1 for item in sent] == [True] + [False] * (len(sent) - 1)
        assert [item.opcode for item in sent] == [OP_BINARY] + [OP_CONTINUATION] * (len(sent) - 1)
        server.receive_data(raw)
        assert server.events_received() == [BinaryMessage(data)]

    def test_control_frames_are_never_compressed(self) -> None:
        client = deflate_client()
        client.send_ping(b"ping" * 30)
        client.send_pong(b"pong" * 30)
        client.receive_data(frame(OP_PING, b"p" * 100))
        client.send_close(1000, "r" * 100)
        sent = sent_frames(client)
        assert [(item.opcode, item.rsv1) for item in sent] == [
            (OP_PING, False),
            (OP_PONG, False),
            (OP_PONG, False),
            (OP_CLOSE, False),
        ]
        assert sent[0].payload == b"ping" * 30
        assert sent[2].payload == b"p" * 100
        assert sent[3].close_reason == b"r" * 100

    def test_compress_false_sends_uncompressed(self) -> None:
        client, server = deflate_pair()
        client.send_text("x" * 1000, compress=False)
        client.send_binary(b"y" * 1000, compress=False)
        raw = client.data_to_send()
        assert [item.summary() for item in parse_frames(raw, masked=True)] == [
            (OP_TEXT, b"x" * 1000, True, False),
            (OP_BINARY, b"y" * 1000, True, False),
        ]
        server.receive_data(raw)
        assert server.events_received() == [TextMessage("x" * 1000), BinaryMessage(b"y" * 1000)]

    def test_compress_false_on_a_fragmented_message(self) -> None:
        client = deflate_client()
        client.send_binary(b"a" * 500, fin=False, compress=False)
        client.send_continuation(b"b" * 500, fin=True)
        assert [item.summary() for item in sent_frames(client)] == [
            (OP_BINARY, b"a" * 500, False, False),
            (OP_CONTINUATION, b"b" * 500, True, False),
        ]

    def test_min_size(self) -> None:
        client = deflate_client(min_size=10)
        client.send_text("x" * 9)
        client.send_text("x" * 10)
        client.send_binary(b"")
        small, large, empty = sent_frames(client)
        assert small.summary() == (OP_TEXT, b"x" * 9, True, False)
        assert large.rsv1
        assert empty.summary() == (OP_BINARY, b"", True, False)

    def test_default_min_size(self) -> None:
        assert DeflateOptions().min_size == 128
        client = open_client(
            "Sec-WebSocket-Extensions: permessage-deflate", deflate_options=DeflateOptions()
        )
        client.send_text("a" * 127)
        client.send_text("a" * 128)
        assert [item.rsv1 for item in sent_frames(client)] == [False, True]

    def test_uncompressed_message_from_the_peer(self) -> None:
        client = deflate_client()
        client.receive_data(frame(OP_TEXT, "plain") + frame(OP_TEXT, HELLO_COMPRESSED, rsv1=True))
        assert client.events_received() == [TextMessage("plain"), TextMessage("Hello")]

    @pytest.mark.parametrize(
        "raw",
        [
            frame(OP_TEXT, HELLO_COMPRESSED[:3], rsv1=True, fin=False)
            + frame(OP_CONTINUATION, HELLO_COMPRESSED[3:], rsv1=True),
            frame(OP_PING, b"", rsv1=True),
            frame(OP_CLOSE, b"", rsv1=True),
            frame(OP_TEXT, HELLO_COMPRESSED, rsv1=True, rsv2=True),
            frame(OP_TEXT, HELLO_COMPRESSED, rsv3=True),
        ],
        ids=["continuation", "ping", "close", "rsv2", "rsv3"],
    )
    def test_misplaced_rsv_bits(self, raw: bytes) -> None:
        client = deflate_client()
        with pytest.raises(ProtocolError) as info:
            client.receive_data(raw)
        assert info.value.close_code == 1002
        [sent] = sent_frames(client)
        assert sent.close_code == 1002

    def test_invalid_compressed_data(self) -> None:
        client = deflate_client()
        with pytest.raises(ProtocolError) as info:
            client.receive_data(frame(OP_BINARY, b"\xff\xff\xff", rsv1=True))
        [sent] = sent_frames(client)
        assert sent.close_code == info.value.close_code
        assert client.state is State.CLOSED

    def test_stream_messages_with_compression(self) -> None:
        client = open_client(
            "Sec-WebSocket-Extensions: permessage-deflate",
            deflate_options=DeflateOptions(),
            stream_messages=True,
        )
        client.receive_data(
            frame(OP_TEXT, HELLO_COMPRESSED[:3], rsv1=True, fin=False)
            + frame(OP_CONTINUATION, HELLO_COMPRESSED[3:])
        )
        events = client.events_received()
        assert all(isinstance(event, Fragment) and event.text for event in events)
        assert "".join(event.data for event in events) == "Hello"  # type: ignore[union-attr,misc]
        assert events[0].first and events[-1].last  # type: ignore[union-attr]

    def test_server_window_of_8_bits(self) -> None:
        # zlib cannot deflate with a 256-byte window and uses 512 instead; inflate accordingly.
        client = deflate_client(
            "permessage-deflate; server_max_window_bits=8", server_max_window_bits=8
        )
        data = b"0123456789" * 100
        client.receive_data(frame(OP_BINARY, compress_raw(data, bits=9), rsv1=True))
        assert client.events_received() == [BinaryMessage(data)]

    @pytest.mark.parametrize(
        ("offered", "response"),
        [
            (None, "permessage-deflate; client_max_window_bits=8"),
            (8, "permessage-deflate"),
            (8, "permessage-deflate; client_max_window_bits=8"),
        ],
    )
    def test_client_window_of_8_bits_sends_uncompressed(
        self, offered: int | None, response: str
    ) -> None:
        client = deflate_client(response, client_max_window_bits=offered)
        assert client.deflate is not None and client.deflate.compress_bits == 8
        client.send_text("a" * 1000)
        client.send_binary(b"b" * 1000, fin=False)
        client.send_continuation(b"c", fin=True)
        assert [item.summary() for item in sent_frames(client)] == [
            (OP_TEXT, b"a" * 1000, True, False),
            (OP_BINARY, b"b" * 1000, False, False),
            (OP_CONTINUATION, b"c", True, False),
        ]
        # Receiving compressed messages still works.
        client.receive_data(frame(OP_TEXT, HELLO_COMPRESSED, rsv1=True))
        assert client.events_received() == [TextMessage("Hello")]


class _RecordingZlib:
    """Stands in for the zlib module in deflate.py and counts the bytes inflated."""

    def __init__(self) -> None:
        self.inflated = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(zlib, name)

    def decompressobj(self, *args: Any, **kwargs: Any) -> Any:
        recorder = self
        real = zlib.decompressobj(*args, **kwargs)

        class Decompressor:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def decompress(self, data: bytes, max_length: int = 0) -> bytes:
                out = real.decompress(data, max_length)
                recorder.inflated += len(out)
                return out

        return Decompressor()


def zeros_compressed(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(MIB)
    out = b"".join(compressor.compress(block) for _ in range(size // MIB))
    out += compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


class TestDecompressionLimit:
    """max_size applies to the inflated size, checked while inflating."""

    def test_message_inflating_to_max_size_is_accepted(self) -> None:
        client = deflate_client()
        client.max_size = 1000
        client.receive_data(frame(OP_BINARY, compress_raw(b"z" * 1000), rsv1=True))
        assert client.events_received() == [BinaryMessage(b"z" * 1000)]

    def test_message_inflating_over_max_size(self) -> None:
        client = deflate_client()
        client.max_size = 1000
        with pytest.raises(MessageTooBig) as info:
            client.receive_data(frame(OP_BINARY, compress_raw(b"z" * 1001), rsv1=True))
        assert info.value.close_code == 1009
        [sent] = sent_frames(client)
        assert sent.close_code == 1009

    def test_fragments_add_up_after_inflation(self) -> None:
        client = deflate_client()
        client.max_size = 1000
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        first = compressor.compress(b"z" * 600) + compressor.flush(zlib.Z_SYNC_FLUSH)
        second = compressor.compress(b"y" * 401) + compressor.flush(zlib.Z_SYNC_FLUSH)
        client.receive_data(frame(OP_TEXT, first, rsv1=True, fin=False))
        with pytest.raises(MessageTooBig):
            client.receive_data(frame(OP_CONTINUATION, second[:-4]))
        [sent] = sent_frames(client)
        assert sent.close_code == 1009

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("chunk", [None, 4096])
    def test_decompression_bomb(self, monkeypatch: pytest.MonkeyPatch, chunk: int | None) -> None:
        recording = _RecordingZlib()
        monkeypatch.setattr(deflate_module, "zlib", recording)
        client = deflate_client()
        client.max_size = MIB
        bomb = zeros_compressed(256 * MIB)
        assert len(bomb) < MIB // 2  # a small frame...
        raw = frame(OP_BINARY, bomb, rsv1=True)
        with pytest.raises(MessageTooBig):
            if chunk is None:
                client.receive_data(raw)
            else:
                for start in range(0, len(raw), chunk):
                    client.receive_data(raw[start : start + chunk])
        # ...that stops inflating just past max_size instead of producing 256 MiB.
        assert MIB < recording.inflated <= MIB + 1
        [sent] = sent_frames(client)
        assert sent.close_code == 1009

    def test_no_limit(self) -> None:
        client = deflate_client()
        client.max_size = None
        client.receive_data(frame(OP_BINARY, zeros_compressed(8 * MIB), rsv1=True))
        assert client.events_received() == [BinaryMessage(bytes(8 * MIB))]


class TestCompressedRoundTrips:
    """Client and server with permessage-deflate, in both directions."""

    @pytest.mark.parametrize(
        "options",
        [
            {},
            {"client_no_context_takeover": True, "server_no_context_takeover": True},
            {"client_max_window_bits": 9, "server_max_window_bits": 9},
            {"client_max_window_bits": None},
            {"compression_level": 0},
            {"compression_level": 9, "memory_level": 9},
        ],
    )
    def test_many_messages_both_ways(self, options: dict[str, Any]) -> None:
        client, server = deflate_pair(**options)
        messages = ["", "a", "Hello", "Hello", "x" * 5000, "κόσμε " * 300, "Hello"]
        for text in messages:
            client.send_text(text)
            server.send_text(text[::-1])
            client.send_binary(text.encode())
        assert transfer(client, server) == [
            event
            for text in messages
            for event in (TextMessage(text), BinaryMessage(text.encode()))
        ]
        assert transfer(server, client) == [TextMessage(text[::-1]) for text in messages]

    def test_pings_between_compressed_fragments(self) -> None:
        client, server = deflate_pair()
        server.send_text("part one, ", fin=False)
        server.send_ping(b"1")
        server.send_continuation("part two", fin=True)
        assert transfer(server, client) == [
            PingReceived(b"1"),
            TextMessage("part one, part two"),
        ]
        [pong] = parse_frames(client.data_to_send(), masked=True)
        assert pong.summary() == (OP_PONG, b"1", True, False)


class TestWholeCompressedMessages:
    """A compressed message that arrives whole takes a short path: it must behave exactly
    like one that arrives a byte at a time (the general path)."""

    @staticmethod
    def _outcome(raw: bytes, whole: bool, max_size: int | None) -> tuple[Any, ...]:
        client = deflate_client()
        client.max_size = max_size
        error: Exception | None = None
        try:
            if whole:
                client.receive_data(raw)
            else:
                for index in range(len(raw)):
                    client.receive_data(raw[index : index + 1])
        except ProtocolError as exc:
            error = exc
        events = client.events_received()
        closes = [sent.close_code for sent in sent_frames(client)]
        return (
            events,
            None if error is None else (type(error), error.close_code),
            closes,
            client.deflate.bytes_in_compressed if client.deflate else None,
            client.deflate.bytes_in_decompressed if client.deflate else None,
        )

    @pytest.mark.parametrize(
        "messages",
        [
            [(OP_TEXT, "héllo wörld " * 50)],
            [(OP_BINARY, bytes(range(256)) * 8)],
            # The window is shared across messages, and with uncompressed ones between.
            [(OP_TEXT, "abc" * 100), (OP_TEXT, "abc" * 100), (OP_BINARY, b"abc" * 100)],
            [(OP_TEXT, "")],
        ],
    )
    def test_same_events_whole_or_byte_by_byte(self, messages: list[tuple[int, Any]]) -> None:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        raw = b""
        for index, (opcode, data) in enumerate(messages):
            payload = data.encode() if isinstance(data, str) else data
            if index == 1:
                raw += frame(opcode, payload)  # uncompressed, between compressed ones
                continue
            out = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
            raw += frame(opcode, out[:-4], rsv1=True)
        whole = self._outcome(raw, True, None)
        assert whole == self._outcome(raw, False, None)
        expected = [
            TextMessage(data) if opcode == OP_TEXT else BinaryMessage(data)
            for opcode, data in messages
        ]
        assert whole[0] == expected

    @pytest.mark.parametrize(
        ("opcode", "payload", "max_size", "close_code"),
        [
            (OP_TEXT, b"ok \xff\xfe not utf-8", None, 1007),
            (OP_TEXT, b"\xed\xa0\x80 a surrogate", None, 1007),
            (OP_BINARY, b"z" * 1001, 1000, 1009),
            (OP_TEXT, b"z" * 1001, 1000, 1009),
        ],
    )
    def test_same_failure_whole_or_byte_by_byte(
        self, opcode: int, payload: bytes, max_size: int | None, close_code: int
    ) -> None:
        raw = frame(OP_TEXT, compress_raw(b"before"), rsv1=True)
        raw += frame(opcode, compress_raw(payload), rsv1=True)
        whole = self._outcome(raw, True, max_size)
        byte_by_byte = self._outcome(raw, False, max_size)
        assert whole[:3] == byte_by_byte[:3]
        assert whole[0] == [TextMessage("before")]
        assert whole[1] is not None and whole[1][1] == close_code
        assert whole[2] == [close_code]

    def test_invalid_deflate_data_fails_with_1007_either_way(self) -> None:
        raw = frame(OP_BINARY, b"\xff\xff\xff\xff not deflate", rsv1=True)
        whole = self._outcome(raw, True, None)
        assert whole[:3] == self._outcome(raw, False, None)[:3]
        assert whole[1] == (ProtocolError, 1007)


class TestWholeCompressedMessagesOfOneFrame:
    """A compressed message of one frame below 64 KiB is inflated from the frame parser's
    tight loop (compiled or not): the limits and checks of the full parser hold there too."""

    def test_max_size_applies_to_the_inflated_size(self) -> None:
        client = deflate_client()
        client.max_size = 1000
        client.receive_data(frame(OP_BINARY, compress_raw(bytes(1000)), rsv1=True))
        assert client.events_received() == [BinaryMessage(bytes(1000))]
        payload = compress_raw(bytes(1001))
        assert len(payload) < 100  # far below the limit before inflating
        with pytest.raises(MessageTooBig):
            client.receive_data(frame(OP_BINARY, payload, rsv1=True))
        [sent] = sent_frames(client)
        assert sent.close_code == 1009

    def test_a_compressed_payload_longer_than_max_size_may_inflate_within_it(self) -> None:
        # Incompressible data grows a little: max_size bounds the message, not the frame.
        client = deflate_client()
        client.max_size = 1000
        data = random.Random(3).randbytes(1000)
        payload = compress_raw(data)
        assert len(payload) > client.max_size
        client.receive_data(frame(OP_BINARY, payload, rsv1=True))
        assert client.events_received() == [BinaryMessage(data)]

    def test_invalid_utf8_once_inflated_fails_with_1007(self) -> None:
        client = deflate_client()
        client.receive_data(
            frame(OP_TEXT, compress_raw(b"fine"), rsv1=True)
            + frame(OP_TEXT, compress_raw("café".encode()), rsv1=True)
        )
        assert client.events_received() == [TextMessage("fine"), TextMessage("café")]
        with pytest.raises(ProtocolError) as info:
            client.receive_data(frame(OP_TEXT, compress_raw(b"\xff after"), rsv1=True))
        assert info.value.close_code == 1007
        [sent] = sent_frames(client)
        assert sent.close_code == 1007

    def test_messages_before_a_bad_one_in_the_same_read_are_delivered(self) -> None:
        client = deflate_client()
        with pytest.raises(ProtocolError) as info:
            client.receive_data(
                frame(OP_TEXT, compress_raw(b"first"), rsv1=True)
                + frame(OP_BINARY, b"\xff\xff\xff", rsv1=True)
                + frame(OP_TEXT, b"never")
            )
        assert info.value.close_code == 1007
        assert client.events_received() == [TextMessage("first")]
        [sent] = sent_frames(client)
        assert sent.close_code == 1007
        assert client.state is State.CLOSED

    def test_one_frame_of_64_kib_or_more_read_whole(self) -> None:
        # Past the tight loop (its lengths stop at 16 bits): the full parser inflates it
        # the same way, in one piece when the whole frame is in the buffer.
        rng = random.Random(5)
        text = "".join(rng.choices("abcdefghijklmnopqrstuvwxyzé", k=150_000))
        binary = rng.randbytes(70_000)
        text_payload, binary_payload = compress_raw(text.encode()), compress_raw(binary)
        assert min(len(text_payload), len(binary_payload)) >= 65536
        client = deflate_client()
        client.receive_data(
            frame(OP_TEXT, text_payload, rsv1=True) + frame(OP_BINARY, binary_payload, rsv1=True)
        )
        assert client.events_received() == [TextMessage(text), BinaryMessage(binary)]
        invalid = compress_raw(rng.randbytes(70_000))
        with pytest.raises(ProtocolError) as info:
            client.receive_data(frame(OP_TEXT, invalid, rsv1=True))
        assert info.value.close_code == 1007
