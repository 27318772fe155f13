"""RFC 6455 §5: data framing (base framing, masking, fragmentation, control and data frames)."""

from __future__ import annotations

import os
import random
import zlib
from collections import deque

import pytest

from wsclient.exceptions import ConnectionDisconnected, MessageTooBig
from wsclient.protocol import (
    BinaryMessage,
    Connection,
    Fragment,
    PingReceived,
    PongReceived,
    Role,
    TextMessage,
    build_frame,
    frames,
    mask,
)
from wsclient.protocol.connection import (
    DIRECT_RECEIVE_MAX_UNLIMITED,
    DIRECT_RECEIVE_MIN,
    READ_INTO_MIN,
)
from wsclient.protocol.deflate import DeflateOptions

from .support import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Frame,
    fixed_masking_key,
    frame,
    naive_mask,
    open_client,
    open_pair,
    parse_frames,
    sent_frames,
    transfer,
)

EDGE_SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def payload_of(size: int) -> bytes:
    return bytes(index % 251 for index in range(size))


class TestBaseFraming:
    """§5.2: the frame header, with 7-, 16- and 64-bit payload lengths."""

    @pytest.mark.parametrize("size", EDGE_SIZES)
    def test_receive_binary_of_each_length_encoding(self, size: int) -> None:
        client = open_client()
        data = payload_of(size)
        client.receive_data(frame(OP_BINARY, data))
        assert client.events_received() == [BinaryMessage(data)]
        assert client.data_to_send() == b""

    @pytest.mark.parametrize("size", EDGE_SIZES)
    def test_receive_text_of_each_length_encoding(self, size: int) -> None:
        client = open_client()
        data = ("é" * size)[: size // 2] + "a" * (size % 2)
        client.receive_data(frame(OP_TEXT, data))
        assert client.events_received() == [TextMessage(data)]

    @pytest.mark.parametrize("size", [0, 5, 125, 126, 300, 65535, 65536])
    def test_header_split_at_every_byte(self, size: int) -> None:
        data = payload_of(size)
        raw = frame(OP_BINARY, data)
        header_size = len(raw) - size
        for split in range(1, min(header_size + 1, len(raw))):
            client = open_client()
            client.receive_data(raw[:split])
            assert client.events_received() == []
            client.receive_data(raw[split:])
            assert client.events_received() == [BinaryMessage(data)]

    @pytest.mark.parametrize(
        ("size", "length_bytes"),
        [
            (0, bytes([0x80])),
            (125, bytes([0x80 | 125])),
            (126, bytes([0x80 | 126, 0x00, 0x7E])),
            (65535, bytes([0x80 | 126, 0xFF, 0xFF])),
            (65536, bytes([0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0])),
        ],
    )
    def test_client_frame_header_uses_the_minimal_length(
        self, size: int, length_bytes: bytes
    ) -> None:
        client = open_client()
        data = payload_of(size)
        client.send_binary(data)
        raw = client.data_to_send()
        assert raw[0] == 0x82  # FIN, no RSV bits, binary
        assert raw[1 : 1 + len(length_bytes)] == length_bytes
        assert len(raw) == 1 + len(length_bytes) + 4 + size
        assert parse_frames(raw, masked=True) == [
            Frame(OP_BINARY, data, key=raw[1 + len(length_bytes) : 5 + len(length_bytes)])
        ]

    def test_send_text_is_one_final_text_frame_in_utf8(self) -> None:
        client = open_client()
        client.send_text("Grüße ✓")
        [sent] = sent_frames(client)
        assert sent.summary() == (OP_TEXT, "Grüße ✓".encode(), True, False)
        assert (sent.rsv2, sent.rsv3) == (False, False)

    @pytest.mark.parametrize(
        ("opcode", "fin", "rsv1", "first_byte"),
        [
            (OP_TEXT, True, False, 0x81),
            (OP_BINARY, True, False, 0x82),
            (OP_TEXT, False, False, 0x01),
            (OP_CONTINUATION, True, False, 0x80),
            (OP_TEXT, True, True, 0xC1),
            (OP_CLOSE, True, False, 0x88),
            (OP_PING, True, False, 0x89),
            (OP_PONG, True, False, 0x8A),
        ],
    )
    def test_build_frame_first_byte(
        self, opcode: int, fin: bool, rsv1: bool, first_byte: int
    ) -> None:
        raw = build_frame(opcode, b"abc", fin=fin, rsv1=rsv1, masked=False)
        assert bytes(raw) == bytes([first_byte, 3]) + b"abc"

    @pytest.mark.parametrize("size", EDGE_SIZES)
    def test_build_frame_unmasked_matches_reference(self, size: int) -> None:
        data = payload_of(size)
        assert bytes(build_frame(OP_BINARY, data, masked=False)) == frame(OP_BINARY, data)

    @pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
    @pytest.mark.parametrize("size", [10, 200])
    def test_build_frame_accepts_any_bytes_like(self, kind: type, size: int) -> None:
        data = payload_of(size)
        [parsed] = parse_frames(bytes(build_frame(OP_BINARY, kind(data), masked=True)), masked=True)
        assert parsed.payload == data

    def test_many_frames_in_one_chunk(self) -> None:
        client = open_client()
        raw = frame(OP_TEXT, "a") + frame(OP_BINARY, b"b") + frame(OP_PONG, b"c") + frame(OP_TEXT)
        client.receive_data(raw)
        assert client.events_received() == [
            TextMessage("a"),
            BinaryMessage(b"b"),
            PongReceived(b"c"),
            TextMessage(""),
        ]

    def test_receive_accepts_bytearray(self) -> None:
        client = open_client()
        client.receive_data(bytearray(frame(OP_TEXT, "Hello")))
        assert client.events_received() == [TextMessage("Hello")]

    def test_events_are_returned_once(self) -> None:
        client = open_client()
        client.receive_data(frame(OP_TEXT, "x"))
        assert client.events_received() == [TextMessage("x")]
        assert client.events_received() == []
        assert client.data_to_send() == b""


class TestMasking:
    """§5.3: every client frame is masked with a fresh key; the server unmasks."""

    def test_mask_matches_reference_for_every_length_up_to_300(self) -> None:
        rng = random.Random(6455)
        for size in range(301):
            data = rng.randbytes(size)
            key = rng.randbytes(4)
            assert mask(data, key) == naive_mask(data, key), f"length {size}"

    def test_mask_one_mebibyte_matches_reference(self) -> None:
        data = os.urandom(1 << 20)
        key = b"\x37\xfa\x21\x3d"
        masked = mask(data, key)
        assert masked == naive_mask(data, key)
        assert mask(masked, key) == data

    @pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
    @pytest.mark.parametrize("size", [0, 3, 64, 65, 1000])
    def test_mask_accepts_any_bytes_like(self, kind: type, size: int) -> None:
        data = payload_of(size)
        key = b"\x01\x80\xfe\x7f"
        assert mask(kind(data), key) == naive_mask(data, key)
        assert mask(memoryview(data)[1:], key) == naive_mask(data[1:], key)

    def test_build_frame_uses_a_fresh_key_each_time(self) -> None:
        data = b"same payload" * 10
        raw_frames = [bytes(build_frame(OP_BINARY, data, masked=True)) for _ in range(64)]
        parsed = [parse_frames(raw, masked=True)[0] for raw in raw_frames]
        assert all(item.payload == data for item in parsed)
        keys = [item.key for item in parsed]
        assert len(set(keys)) == len(keys)

    def test_build_frame_takes_the_key_from_the_os_random_source(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[int] = []

        def fake_urandom(size: int) -> bytes:
            calls.append(size)
            return (b"\x37\xfa\x21\x3d" + bytes(range(4, 256))) * (size // 256)

        # Keys are drawn from the OS in blocks of 4 KiB, one block per 1024 frames.
        monkeypatch.setattr(frames, "masking_keys", deque())
        monkeypatch.setattr(os, "urandom", fake_urandom)
        raw = build_frame(OP_TEXT, b"Hello", masked=True)
        assert calls == [4096]
        assert bytes(raw) == bytes.fromhex("818537fa213d7f9f4d5158")
        assert bytes(build_frame(OP_TEXT, b"", masked=True))[2:] == bytes(range(4, 8))
        assert calls == [4096]

    def test_every_client_frame_is_masked_with_its_own_key(self) -> None:
        client = open_client()
        client.send_text("text")
        client.send_binary(b"binary")
        client.send_text("frag", fin=False)
        client.send_continuation("ment", fin=True)
        client.send_ping(b"ping")
        client.send_pong(b"pong")
        client.send_close(1000, "bye")
        sent = sent_frames(client)  # parse_frames asserts the mask bit on every frame
        assert [item.opcode for item in sent] == [
            OP_TEXT,
            OP_BINARY,
            OP_TEXT,
            OP_CONTINUATION,
            OP_PING,
            OP_PONG,
            OP_CLOSE,
        ]
        keys = [item.key for item in sent]
        assert len(set(keys)) == len(keys)

    def test_server_frames_are_not_masked(self) -> None:
        client, server = open_pair()
        server.send_text("hi")
        server.send_ping(b"p")
        assert parse_frames(server.data_to_send(), masked=False) == [
            Frame(OP_TEXT, b"hi"),
            Frame(OP_PING, b"p"),
        ]

    @pytest.mark.parametrize(
        ("size", "chunk"),
        [(size, chunk) for size in (1, 7, 125, 126, 1000) for chunk in (1, 3, 5, 1000)]
        + [(65536, 1000), (65536, 4097)],
    )
    def test_server_unmasks_payload_arriving_at_any_offset(self, size: int, chunk: int) -> None:
        server = Connection(Role.SERVER)
        data = payload_of(size)
        raw = frame(OP_BINARY, data, key=b"\x9a\x12\xc3\x04") + frame(
            OP_TEXT, "ok", key=b"\x01\x02\x03\x04"
        )
        for start in range(0, len(raw), chunk):
            server.receive_data(raw[start : start + chunk])
        assert server.events_received() == [BinaryMessage(data), TextMessage("ok")]

    def test_server_unmasks_fragments_with_different_keys(self) -> None:
        server = Connection(Role.SERVER)
        server.receive_data(
            frame(OP_TEXT, "Hel", fin=False, key=b"abcd")
            + frame(OP_PING, b"x", key=b"efgh")
            + frame(OP_CONTINUATION, "lo", key=b"ijkl")
        )
        assert server.events_received() == [PingReceived(b"x"), TextMessage("Hello")]
        assert parse_frames(server.data_to_send(), masked=False) == [Frame(OP_PONG, b"x")]


class TestFragmentation:
    """§5.4: messages split into frames, with control frames in between."""

    def test_text_in_three_fragments(self) -> None:
        client = open_client()
        client.receive_data(frame(OP_TEXT, "Hel", fin=False))
        client.receive_data(frame(OP_CONTINUATION, "lo, ", fin=False))
        assert client.events_received() == []
        client.receive_data(frame(OP_CONTINUATION, "world"))
        assert client.events_received() == [TextMessage("Hello, world")]

    def test_binary_in_fragments(self) -> None:
        client = open_client()
        client.receive_data(
            frame(OP_BINARY, b"\x00\x01", fin=False)
            + frame(OP_CONTINUATION, b"\x02", fin=False)
            + frame(OP_CONTINUATION, b"\x03")
        )
        assert client.events_received() == [BinaryMessage(b"\x00\x01\x02\x03")]

    def test_empty_fragments(self) -> None:
        client = open_client()
        client.receive_data(
            frame(OP_TEXT, "", fin=False)
            + frame(OP_CONTINUATION, "a", fin=False)
            + frame(OP_CONTINUATION, "", fin=False)
            + frame(OP_CONTINUATION, "")
        )
        assert client.events_received() == [TextMessage("a")]

    def test_control_frames_interleaved(self) -> None:
        client = open_client()
        client.receive_data(
            frame(OP_TEXT, "Hel", fin=False)
            + frame(OP_PING, b"1")
            + frame(OP_CONTINUATION, "l", fin=False)
            + frame(OP_PONG, b"2")
            + frame(OP_CONTINUATION, "o")
        )
        assert client.events_received() == [
            PingReceived(b"1"),
            PongReceived(b"2"),
            TextMessage("Hello"),
        ]
        assert [item.summary() for item in sent_frames(client)] == [(OP_PONG, b"1", True, False)]

    def test_fragments_of_two_messages_in_a_row(self) -> None:
        client = open_client()
        client.receive_data(
            frame(OP_BINARY, b"a", fin=False)
            + frame(OP_CONTINUATION, b"b")
            + frame(OP_TEXT, "c", fin=False)
            + frame(OP_CONTINUATION, "d")
        )
        assert client.events_received() == [BinaryMessage(b"ab"), TextMessage("cd")]

    def test_large_fragments_arriving_in_pieces(self) -> None:
        client = open_client()
        first, second = payload_of(70000), payload_of(300)
        raw = frame(OP_BINARY, first, fin=False) + frame(OP_CONTINUATION, second)
        for start in range(0, len(raw), 999):
            client.receive_data(raw[start : start + 999])
        assert client.events_received() == [BinaryMessage(first + second)]

    def test_stream_messages_delivers_fragments(self) -> None:
        client = open_client(stream_messages=True)
        client.receive_data(frame(OP_TEXT, "Hel", fin=False))
        assert client.events_received() == [Fragment(True, "Hel", True, False)]
        client.receive_data(frame(OP_CONTINUATION, "lo"))
        assert client.events_received() == [Fragment(True, "lo", False, True)]
        client.receive_data(frame(OP_BINARY, b"xy"))
        assert client.events_received() == [Fragment(False, b"xy", True, True)]

    def test_stream_messages_holds_back_a_split_character(self) -> None:
        client = open_client(stream_messages=True)
        euro = "€".encode()
        client.receive_data(frame(OP_TEXT, b"a" + euro[:1], fin=False))
        client.receive_data(frame(OP_CONTINUATION, euro[1:2], fin=False))
        client.receive_data(frame(OP_CONTINUATION, euro[2:]))
        assert client.events_received() == [
            Fragment(True, "a", True, False),
            Fragment(True, "€", False, True),
        ]

    def test_send_fragmented_text(self) -> None:
        client = open_client()
        client.send_text("Hel", fin=False)
        client.send_continuation("l", fin=False)
        client.send_continuation(b"o", fin=True)
        assert [item.summary() for item in sent_frames(client)] == [
            (OP_TEXT, b"Hel", False, False),
            (OP_CONTINUATION, b"l", False, False),
            (OP_CONTINUATION, b"o", True, False),
        ]

    def test_send_fragmented_text_split_inside_a_character(self) -> None:
        client, server = open_pair()
        euro = "€".encode()
        client.send_text(b"price: " + euro[:1], fin=False)
        client.send_continuation(euro[1:], fin=True)
        assert [item.summary() for item in parse_frames(client.data_to_send(), masked=True)] == [
            (OP_TEXT, b"price: \xe2", False, False),
            (OP_CONTINUATION, b"\x82\xac", True, False),
        ]
        client.send_text(bytearray(b"pre-encoded"))
        client.send_text(memoryview("ünïcode".encode()))
        assert transfer(client, server) == [TextMessage("pre-encoded"), TextMessage("ünïcode")]

    def test_send_fragmented_binary_with_a_ping_in_between(self) -> None:
        client = open_client()
        client.send_binary(b"ab", fin=False)
        client.send_ping(b"!")
        client.send_continuation(b"cd", fin=True)
        client.send_binary(b"next")
        assert [item.summary() for item in sent_frames(client)] == [
            (OP_BINARY, b"ab", False, False),
            (OP_PING, b"!", True, False),
            (OP_CONTINUATION, b"cd", True, False),
            (OP_BINARY, b"next", True, False),
        ]

    def test_continuation_without_a_started_message_is_refused(self) -> None:
        client = open_client()
        with pytest.raises(ValueError, match="no fragmented message"):
            client.send_continuation(b"x", fin=True)
        assert client.data_to_send() == b""

    def test_new_message_during_a_fragmented_send_is_refused(self) -> None:
        client = open_client()
        client.send_text("a", fin=False)
        client.data_to_send()
        with pytest.raises(ValueError, match="in progress"):
            client.send_text("b")
        with pytest.raises(ValueError, match="in progress"):
            client.send_binary(b"b")
        assert client.data_to_send() == b""
        client.send_continuation("c", fin=True)
        client.send_text("d")
        assert [item.summary() for item in sent_frames(client)] == [
            (OP_CONTINUATION, b"c", True, False),
            (OP_TEXT, b"d", True, False),
        ]

    @pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
    def test_max_frame_size_splits_outgoing_messages(self, kind: type) -> None:
        client = open_client(max_frame_size=100)
        data = payload_of(250)
        client.send_binary(kind(data))
        client.send_text("short")
        assert [item.summary() for item in sent_frames(client)] == [
            (OP_BINARY, data[:100], False, False),
            (OP_CONTINUATION, data[100:200], False, False),
            (OP_CONTINUATION, data[200:], True, False),
            (OP_TEXT, b"short", True, False),
        ]

    def test_max_frame_size_exact_multiple(self) -> None:
        client = open_client(max_frame_size=4)
        client.send_text("12345678")
        assert [item.summary() for item in sent_frames(client)] == [
            (OP_TEXT, b"1234", False, False),
            (OP_CONTINUATION, b"5678", True, False),
        ]

    def test_max_frame_size_applies_to_each_fragment(self) -> None:
        client = open_client(max_frame_size=2)
        client.send_text("abc", fin=False)
        client.send_continuation("de", fin=True)
        assert [item.summary() for item in sent_frames(client)] == [
            (OP_TEXT, b"ab", False, False),
            (OP_CONTINUATION, b"c", False, False),
            (OP_CONTINUATION, b"de", True, False),
        ]

    @pytest.mark.parametrize("value", [0, -1])
    def test_max_frame_size_must_be_positive(self, value: int) -> None:
        with pytest.raises(ValueError, match="max_frame_size"):
            Connection(Role.CLIENT, max_frame_size=value)


class TestControlFrames:
    """§5.5: Ping, Pong (Close is in test_rfc6455_closing.py)."""

    @pytest.mark.parametrize("payload", [b"", b"Hello", bytes(range(125))])
    def test_ping_is_answered_with_a_pong_with_the_same_payload(self, payload: bytes) -> None:
        client = open_client()
        client.receive_data(frame(OP_PING, payload))
        assert client.events_received() == [PingReceived(payload)]
        assert [item.summary() for item in sent_frames(client)] == [(OP_PONG, payload, True, False)]

    def test_every_ping_gets_its_own_pong_in_order(self) -> None:
        client = open_client()
        client.receive_data(frame(OP_PING, b"1") + frame(OP_PING, b"2") + frame(OP_PING, b"3"))
        assert client.events_received() == [
            PingReceived(b"1"),
            PingReceived(b"2"),
            PingReceived(b"3"),
        ]
        assert [item.payload for item in sent_frames(client)] == [b"1", b"2", b"3"]

    def test_pong_is_queued_ahead_of_later_data(self) -> None:
        client = open_client()
        client.send_text("before")
        client.receive_data(frame(OP_PING, b"p"))
        client.send_text("after")
        assert [item.summary()[:2] for item in sent_frames(client)] == [
            (OP_TEXT, b"before"),
            (OP_PONG, b"p"),
            (OP_TEXT, b"after"),
        ]

    def test_ping_split_across_chunks(self) -> None:
        client = open_client()
        raw = frame(OP_PING, b"abcdef")
        client.receive_data(raw[:4])
        assert client.events_received() == []
        assert client.data_to_send() == b""
        client.receive_data(raw[4:])
        assert client.events_received() == [PingReceived(b"abcdef")]

    def test_pong_is_reported_and_not_answered(self) -> None:
        client = open_client()
        client.receive_data(frame(OP_PONG, b"latency"))
        assert client.events_received() == [PongReceived(b"latency")]
        assert client.data_to_send() == b""

    @pytest.mark.parametrize("payload", [b"", b"x" * 125])
    def test_send_ping_and_pong(self, payload: bytes) -> None:
        client = open_client()
        client.send_ping(payload)
        client.send_pong(payload)
        assert [item.summary() for item in sent_frames(client)] == [
            (OP_PING, payload, True, False),
            (OP_PONG, payload, True, False),
        ]

    def test_control_payload_over_125_bytes_is_refused(self) -> None:
        client = open_client()
        with pytest.raises(ValueError, match="125"):
            client.send_ping(b"x" * 126)
        with pytest.raises(ValueError, match="125"):
            client.send_pong(b"x" * 126)
        assert client.data_to_send() == b""

    def test_ping_and_pong_round_trip(self) -> None:
        client, server = open_pair()
        client.send_ping(b"hi")
        assert transfer(client, server) == [PingReceived(b"hi")]
        assert transfer(server, client) == [PongReceived(b"hi")]
        server.send_ping(b"yo")
        assert transfer(server, client) == [PingReceived(b"yo")]
        assert transfer(client, server) == [PongReceived(b"yo")]


class TestDataFrames:
    """§5.6: text payloads are UTF-8, binary payloads are arbitrary."""

    @pytest.mark.parametrize("text", ["", "ascii", "κόσμε", "日本語", "🎉 emoji", "\u0000nul"])
    def test_text_in_utf8(self, text: str) -> None:
        client = open_client()
        client.receive_data(frame(OP_TEXT, text.encode("utf-8")))
        assert client.events_received() == [TextMessage(text)]

    def test_binary_is_not_validated(self) -> None:
        client = open_client()
        client.receive_data(frame(OP_BINARY, b"\xff\xfe\xc0\x80"))
        assert client.events_received() == [BinaryMessage(b"\xff\xfe\xc0\x80")]

    @pytest.mark.parametrize("split", [1, 2, 3])
    def test_character_split_across_fragments_is_valid(self, split: int) -> None:
        client = open_client()
        encoded = "a😀".encode()
        client.receive_data(frame(OP_TEXT, encoded[: split + 1], fin=False))
        client.receive_data(frame(OP_CONTINUATION, encoded[split + 1 :]))
        assert client.events_received() == [TextMessage("a😀")]

    def test_character_split_into_one_byte_fragments(self) -> None:
        client = open_client()
        encoded = "😀".encode()
        raw = frame(OP_TEXT, encoded[:1], fin=False)
        raw += frame(OP_CONTINUATION, encoded[1:2], fin=False)
        raw += frame(OP_CONTINUATION, encoded[2:3], fin=False)
        raw += frame(OP_CONTINUATION, encoded[3:])
        client.receive_data(raw)
        assert client.events_received() == [TextMessage("😀")]

    def test_send_after_close_raises(self) -> None:
        client = open_client()
        client.send_close()
        client.data_to_send()
        with pytest.raises(ConnectionDisconnected):
            client.send_text("late")
        with pytest.raises(ConnectionDisconnected):
            client.send_binary(b"late")
        with pytest.raises(ConnectionDisconnected):
            client.send_ping()
        with pytest.raises(ConnectionDisconnected):
            client.send_pong()
        assert client.data_to_send() == b""


class TestFrameNow:
    """frame_now: a whole small message framed for an immediate write, or None to queue it."""

    def test_each_small_frame_gets_the_next_key_from_the_os_random_source(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[int] = []

        def fake_urandom(size: int) -> bytes:
            calls.append(size)
            return bytes(range(256)) * (size // 256)

        client = open_client()
        monkeypatch.setattr(os, "urandom", fake_urandom)
        saved = list(frames.masking_keys)
        frames.masking_keys.clear()
        try:
            sent = [client.frame_now(OP_BINARY, b"abc") for _ in range(3)]
        finally:
            frames.masking_keys.clear()
            frames.masking_keys.extend(saved)
        assert calls == [4096]
        assert [bytes(raw)[2:6] for raw in sent if raw is not None] == [
            bytes(range(0, 4)),
            bytes(range(4, 8)),
            bytes(range(8, 12)),
        ]
        assert [parse_frames(raw, masked=True)[0].payload for raw in sent if raw] == [b"abc"] * 3

    @pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
    @pytest.mark.parametrize("size", [0, 125, 126, 2048, 65535, 65536])
    def test_same_bytes_as_the_queue(self, opcode: int, size: int) -> None:
        payload = payload_of(size)
        with fixed_masking_key(b"\x01\x02\x03\x04"):
            direct = open_client().frame_now(opcode, payload)
            queued = open_client()
            if opcode == OP_TEXT:
                queued.send_text(payload)
            else:
                queued.send_binary(payload)
        assert direct is not None and direct == queued.data_to_send()
        [sent] = parse_frames(direct, masked=True)
        assert (sent.opcode, sent.fin, sent.rsv1, sent.payload) == (opcode, True, False, payload)

    def test_each_frame_gets_its_own_mask(self) -> None:
        client = open_client()
        first, second = client.frame_now(OP_TEXT, b"same"), client.frame_now(OP_TEXT, b"same")
        assert first is not None and second is not None
        assert first[2:6] != second[2:6]
        assert client.data_to_send() == b""  # nothing was queued

    def test_none_behind_queued_bytes(self) -> None:
        client = open_client()
        client.send_ping(b"p")  # queued, not yet taken by the I/O layer
        assert client.frame_now(OP_TEXT, b"x") is None

    def test_none_during_a_fragmented_message(self) -> None:
        client = open_client()
        client.send_text("first", fin=False)
        client.data_to_send()
        assert client.frame_now(OP_TEXT, b"x") is None

    @pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
    @pytest.mark.parametrize("size", [0, 100, 127, 2048, 200_000])
    @pytest.mark.parametrize("compress", [True, False], ids=["compress", "no-compress"])
    def test_with_compression_same_bytes_as_the_queue(
        self, opcode: int, size: int, compress: bool
    ) -> None:
        # Random printable ASCII (valid text, compressible only a little): compressed
        # frames with 7-, 16- and 64-bit lengths; below min_size the message goes
        # uncompressed. Two messages: the second uses the context of the first.
        payload = bytes(random.Random(size).choices(range(32, 127), k=size))
        options = DeflateOptions(min_size=100)
        extension = "Sec-WebSocket-Extensions: permessage-deflate"
        with fixed_masking_key(b"\x01\x02\x03\x04"):
            direct_client = open_client(extension, deflate_options=options)
            direct = [direct_client.frame_now(opcode, payload, compress) for _ in range(2)]
            queued_client = open_client(extension, deflate_options=options)
            queued = []
            for _ in range(2):
                if opcode == OP_TEXT:
                    queued_client.send_text(payload, compress=compress)
                else:
                    queued_client.send_binary(payload, compress=compress)
                queued.append(queued_client.data_to_send())
        assert direct == queued
        assert direct_client.data_to_send() == b""
        expect_compressed = compress and size >= 100
        server = open_pair(client={"deflate_options": options})[1]
        for raw in direct:
            assert raw is not None
            [sent] = parse_frames(raw, masked=True)
            assert (sent.opcode, sent.fin, sent.rsv1) == (opcode, True, expect_compressed)
            server.receive_data(raw)
        message = TextMessage if opcode == OP_TEXT else BinaryMessage
        data: str | bytes = payload.decode() if opcode == OP_TEXT else payload
        assert server.events_received() == [message(data)] * 2  # type: ignore[arg-type]

    def test_compressed_only_when_sure_to_fit_max_frame_size(self) -> None:
        # Compressed, a message close to max_frame_size might not fit in one frame after
        # all: it takes the queue, which splits it after compression.
        client = open_client(
            "Sec-WebSocket-Extensions: permessage-deflate",
            deflate_options=DeflateOptions(min_size=0),
            max_frame_size=1000,
        )
        assert client.frame_now(OP_TEXT, b"x" * 800) is not None
        assert client.frame_now(OP_TEXT, b"x" * 900) is None
        assert client.frame_now(OP_TEXT, b"x" * 990, compress=False) is not None
        assert client.frame_now(OP_TEXT, b"x" * 1001, compress=False) is None

    @pytest.mark.parametrize("memory_level", [1, 5, 9])
    @pytest.mark.parametrize("size", [0, 1, 1000, 4095, 4096, 70_000, 1_000_000])
    def test_incompressible_data_stays_within_the_margin(
        self, size: int, memory_level: int
    ) -> None:
        # The margin frame_now keeps below max_frame_size before it compresses.
        client = open_client(
            "Sec-WebSocket-Extensions: permessage-deflate",
            deflate_options=DeflateOptions(min_size=0, memory_level=memory_level),
        )
        assert client.deflate is not None
        for _ in range(3):
            compressed = client.deflate.compress(os.urandom(size))
            assert len(compressed) <= size + (size >> 3) + (size >> 5) + 64

    def test_none_above_max_frame_size(self) -> None:
        client = open_client(max_frame_size=100)
        assert client.frame_now(OP_BINARY, bytes(100)) is not None
        assert client.frame_now(OP_BINARY, bytes(101)) is None

    def test_none_for_a_large_message_built_in_the_send_buffer(self) -> None:
        client = open_client()
        client.reuse_send_buffer = True
        assert client.frame_now(OP_BINARY, bytes(frames.SEND_BUFFER_MIN - 1)) is not None
        assert client.frame_now(OP_BINARY, bytes(frames.SEND_BUFFER_MIN)) is None

    def test_refused_once_closing(self) -> None:
        client = open_client()
        client.send_close(1000)
        with pytest.raises(ConnectionDisconnected):
            client.frame_now(OP_TEXT, b"x")


class TestRFCExamples:
    """§5.7: the example frames of the RFC, byte for byte."""

    HELLO_UNMASKED = bytes.fromhex("810548656c6c6f")
    HELLO_MASKED = bytes.fromhex("818537fa213d7f9f4d5158")
    HEL = bytes.fromhex("010348656c")
    LO = bytes.fromhex("80026c6f")
    PING_UNMASKED = bytes.fromhex("890548656c6c6f")
    PONG_MASKED = bytes.fromhex("8a8537fa213d7f9f4d5158")

    def test_single_frame_unmasked_text(self) -> None:
        client = open_client()
        client.receive_data(self.HELLO_UNMASKED)
        assert client.events_received() == [TextMessage("Hello")]
        assert frame(OP_TEXT, "Hello") == self.HELLO_UNMASKED
        assert bytes(build_frame(OP_TEXT, b"Hello", masked=False)) == self.HELLO_UNMASKED

    def test_single_frame_masked_text(self) -> None:
        server = Connection(Role.SERVER)
        server.receive_data(self.HELLO_MASKED)
        assert server.events_received() == [TextMessage("Hello")]
        assert mask(b"Hello", b"\x37\xfa\x21\x3d") == self.HELLO_MASKED[6:]
        with fixed_masking_key(b"\x37\xfa\x21\x3d"):
            client = open_client()
            client.send_text("Hello")
            assert client.data_to_send() == self.HELLO_MASKED
            assert open_client().frame_now(OP_TEXT, b"Hello") == self.HELLO_MASKED

    def test_fragmented_unmasked_text(self) -> None:
        client = open_client()
        client.receive_data(self.HEL)
        assert client.events_received() == []
        client.receive_data(self.LO)
        assert client.events_received() == [TextMessage("Hello")]

    def test_fragmented_text_sent_by_a_server(self) -> None:
        client, server = open_pair(server={"max_frame_size": 3})
        server.send_text("Hello")
        raw = server.data_to_send()
        assert raw == self.HEL + self.LO
        client.receive_data(raw)
        assert client.events_received() == [TextMessage("Hello")]

    def test_unmasked_ping_and_masked_pong(self) -> None:
        client = open_client()
        with fixed_masking_key(b"\x37\xfa\x21\x3d"):
            client.receive_data(self.PING_UNMASKED)
        assert client.events_received() == [PingReceived(b"Hello")]
        assert client.data_to_send() == self.PONG_MASKED
        server = Connection(Role.SERVER)
        server.receive_data(self.PONG_MASKED)
        assert server.events_received() == [PongReceived(b"Hello")]

    def test_256_bytes_binary_in_a_single_unmasked_frame(self) -> None:
        data = os.urandom(256)
        raw = bytes(build_frame(OP_BINARY, data, masked=False))
        assert raw[:4] == bytes.fromhex("827e0100")
        assert raw[4:] == data
        client = open_client()
        client.receive_data(raw)
        assert client.events_received() == [BinaryMessage(data)]

    def test_64_kib_binary_in_a_single_unmasked_frame(self) -> None:
        data = os.urandom(65536)
        raw = bytes(build_frame(OP_BINARY, data, masked=False))
        assert raw[:10] == bytes.fromhex("827f0000000000010000")
        assert raw[10:] == data
        client = open_client()
        client.receive_data(raw)
        assert client.events_received() == [BinaryMessage(data)]


class TestLargeMessageReadInPlace:
    """A large binary message that is still arriving is read straight into its own buffer."""

    SIZE = 300_000

    def arriving(self, client: Connection, data: bytes, first_chunk: int) -> bytes:
        """Feed the header and ``first_chunk`` payload bytes; return the rest of the frame."""
        raw = frame(OP_BINARY, data)
        header = len(raw) - len(data)
        client.receive_data(raw[: header + first_chunk])
        return raw[header + first_chunk :]

    @pytest.mark.parametrize("first_chunk", [0, 1, 4096])
    @pytest.mark.parametrize("read_size", [1, 7, 65536, 1 << 20])
    def test_reading_into_the_receive_buffer_delivers_the_message(
        self, first_chunk: int, read_size: int
    ) -> None:
        client = open_client()
        data = os.urandom(self.SIZE if read_size > 1 else READ_INTO_MIN + 4096 + 100)
        rest = self.arriving(client, data, first_chunk)
        reads = 0
        while len(rest) >= READ_INTO_MIN:
            target = client.receive_buffer()
            assert target is not None and len(target) == len(rest)
            assert not target.readonly
            taken = min(read_size, len(rest))
            target[:taken] = rest[:taken]
            target.release()
            assert client.events_received() == []
            client.receive_buffer_filled(taken)
            rest = rest[taken:]
            reads += 1
        # The last bit is not worth a read of its own: it comes with the next bytes.
        assert client.receive_buffer() is None
        assert reads == -(-(len(data) - first_chunk - READ_INTO_MIN + 1) // read_size)
        client.receive_data(rest + frame(OP_TEXT, "next"))
        assert client.events_received() == [BinaryMessage(data), TextMessage("next")]

    def test_in_place_message_is_true_exactly_while_a_message_is_read_into_place(self) -> None:
        client = open_client()
        assert not client.in_place_message
        data = os.urandom(self.SIZE)
        rest = self.arriving(client, data, 10)
        assert client.in_place_message and client.receiving_in_place
        target = client.receive_buffer()
        assert target is not None
        target[:] = rest
        target.release()
        client.receive_buffer_filled(len(rest))
        assert not client.in_place_message and not client.receiving_in_place
        assert client.events_received() == [BinaryMessage(data)]
        # A message abandoned midway (the connection dropped) is not read into any more.
        self.arriving(client, data, 10)
        assert client.in_place_message
        client.receive_eof()
        assert not client.in_place_message and client.receive_buffer() is None

    def test_the_message_is_immutable_bytes(self) -> None:
        client = open_client()
        data = os.urandom(self.SIZE)
        rest = self.arriving(client, data, 10)
        target = client.receive_buffer()
        assert target is not None
        target[:] = rest
        client.receive_buffer_filled(len(rest))
        (event,) = client.events_received()
        assert isinstance(event, BinaryMessage) and type(event.data) is bytes
        assert event.data == data
        hash(event.data)

    def test_a_view_of_the_read_buffer_is_not_kept(self) -> None:
        client = open_client()
        raw = frame(OP_BINARY, b"a" * 10_000) + frame(OP_TEXT, "b" * 5000) + frame(OP_PING)
        raw += frame(OP_BINARY, b"c" * 70_000)[:30_000]
        buffer = bytearray(raw)
        client.receive_data(memoryview(buffer))
        buffer[:] = bytes(len(buffer))
        client.receive_data(frame(OP_BINARY, b"c" * 70_000)[30_000:])
        assert client.events_received() == [
            BinaryMessage(b"a" * 10_000),
            TextMessage("b" * 5000),
            PingReceived(b""),
            BinaryMessage(b"c" * 70_000),
        ]

    def test_bytes_after_the_message_in_the_same_chunk_are_parsed(self) -> None:
        client = open_client()
        data = payload_of(self.SIZE)
        rest = self.arriving(client, data, 1000)
        client.receive_data(rest + frame(OP_TEXT, "next") + frame(OP_PING, b"p"))
        assert client.events_received() == [
            BinaryMessage(data),
            TextMessage("next"),
            PingReceived(b"p"),
        ]
        assert client.receive_buffer() is None

    def test_receive_data_and_the_receive_buffer_can_alternate(self) -> None:
        client = open_client()
        data = os.urandom(self.SIZE)
        rest = self.arriving(client, data, 3)
        while len(rest) >= READ_INTO_MIN:
            target = client.receive_buffer()
            assert target is not None
            target[:5000] = rest[:5000]
            client.receive_buffer_filled(5000)
            client.receive_data(rest[5000:7000])
            rest = rest[7000:]
        assert client.receive_buffer() is None
        client.receive_data(rest)
        assert client.events_received() == [BinaryMessage(data)]

    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param(frame(OP_TEXT, "x" * 100_000), id="text: UTF-8 is checked as it arrives"),
            pytest.param(frame(OP_BINARY, b"x" * 100_000, fin=False), id="first fragment"),
            pytest.param(frame(OP_BINARY, b"x" * 60_000), id="less than READ_INTO_MIN to come"),
        ],
    )
    def test_other_frames_use_receive_data(self, raw: bytes) -> None:
        client = open_client()
        client.receive_data(raw[:1000])
        assert client.receive_buffer() is None

    def test_not_when_streaming_fragments(self) -> None:
        client = open_client(stream_messages=True)
        client.receive_data(frame(OP_BINARY, b"x" * 100_000)[:1000])
        assert client.receive_buffer() is None

    def test_not_for_compressed_messages(self) -> None:
        client = open_client(
            "Sec-WebSocket-Extensions: permessage-deflate", deflate_options=DeflateOptions()
        )
        compressor = zlib.compressobj(wbits=-15)
        compressed = compressor.compress(os.urandom(100_000)) + compressor.flush(zlib.Z_SYNC_FLUSH)
        client.receive_data(frame(OP_BINARY, compressed[:-4], rsv1=True)[:1000])
        assert client.receive_buffer() is None

    def test_max_size_is_checked_before_any_buffer_exists(self) -> None:
        client = open_client(max_size=100_000)
        with pytest.raises(MessageTooBig):
            client.receive_data(frame(OP_BINARY, b"x" * 100_001)[:1000])
        assert client.receive_buffer() is None

    def test_without_max_size_a_header_alone_allocates_at_most_the_cap(self) -> None:
        client = open_client(max_size=None)
        client.receive_data(frame(OP_BINARY, b"abc", length=DIRECT_RECEIVE_MAX_UNLIMITED + 1))
        assert client.receive_buffer() is None
        capped = open_client(max_size=None)
        capped.receive_data(frame(OP_BINARY, b"abc", length=DIRECT_RECEIVE_MAX_UNLIMITED))
        target = capped.receive_buffer()
        assert target is not None and len(target) == DIRECT_RECEIVE_MAX_UNLIMITED - 3

    @pytest.mark.parametrize("size", [DIRECT_RECEIVE_MIN - 1, DIRECT_RECEIVE_MIN, 20_000])
    @pytest.mark.parametrize("split", [1, 3, 2000])
    def test_medium_messages_split_across_reads(self, size: int, split: int) -> None:
        client = open_client()
        messages = [os.urandom(size) for _ in range(3)]
        raw = b"".join(frame(OP_BINARY, message) for message in messages)
        for start in range(0, len(raw), len(raw) // 3 + split):
            # Views of a reused read buffer, as the I/O layers hand them over.
            buffer = bytearray(raw[start : start + len(raw) // 3 + split])
            client.receive_data(memoryview(buffer))
            buffer[:] = bytes(len(buffer))
        assert client.events_received() == [BinaryMessage(message) for message in messages]

    def test_end_of_stream_abandons_the_message(self) -> None:
        client = open_client()
        self.arriving(client, os.urandom(self.SIZE), 10)
        target = client.receive_buffer()
        assert target is not None
        client.receive_eof()
        assert client.receive_buffer() is None
        # A read that was in flight when the connection ended is ignored.
        client.receive_buffer_filled(len(target))
        assert client.events_received() == []

    def test_a_read_larger_than_the_buffer_is_refused(self) -> None:
        client = open_client()
        rest = self.arriving(client, os.urandom(self.SIZE), 10)
        with pytest.raises(ValueError, match="cannot have been read"):
            client.receive_buffer_filled(len(rest) + 1)
        with pytest.raises(ValueError, match="cannot have been read"):
            client.receive_buffer_filled(-1)
