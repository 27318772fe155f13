"""RFC 6455 §7.1.7 (failing the connection), §8.1 (UTF-8) and §10.4 (size limits)."""

from __future__ import annotations

import pytest

from wsclient.exceptions import InvalidUTF8, MessageTooBig, ProtocolError
from wsclient.protocol import (
    BinaryMessage,
    ClientConnection,
    Connection,
    PingReceived,
    Role,
    State,
    TextMessage,
    parse_uri,
)

from .support import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    URL,
    close_payload,
    frame,
    open_client,
    open_pair,
    parse_frames,
    request_key,
    response_101,
    sent_frames,
)

MIB = 1 << 20

BAD_INPUT = {
    "masked server frame": frame(OP_TEXT, "hi", key=b"abcd"),
    "masked server ping": frame(OP_PING, b"", key=b"abcd"),
    "rsv1 without extension": frame(OP_TEXT, "hi", rsv1=True),
    "rsv2": frame(OP_TEXT, "hi", rsv2=True),
    "rsv3": frame(OP_BINARY, b"hi", rsv3=True),
    "rsv1 on ping": frame(OP_PING, b"", rsv1=True),
    # The payload would be a valid Close, Ping or Pong payload: only the opcode is wrong.
    **{f"reserved opcode {op:#x}": frame(op, close_payload(1000)) for op in range(3, 8)},
    **{f"reserved opcode {op:#x}": frame(op, close_payload(1000)) for op in range(0xB, 0x10)},
    "ping over 125 bytes": frame(OP_PING, b"x" * 126),
    "pong over 125 bytes": frame(OP_PONG, b"x" * 126),
    "close over 125 bytes": frame(OP_CLOSE, close_payload(1000, b"x" * 124)),
    "fragmented ping": frame(OP_PING, b"x", fin=False),
    "fragmented close": frame(OP_CLOSE, close_payload(1000), fin=False),
    "continuation without message": frame(OP_CONTINUATION, b"x"),
    "final continuation without message": frame(OP_CONTINUATION, b"x", fin=False),
    "text during fragmented message": frame(OP_TEXT, "a", fin=False) + frame(OP_TEXT, "b"),
    "binary during fragmented message": (
        frame(OP_BINARY, b"a", fin=False) + frame(OP_BINARY, b"b", fin=False)
    ),
    "64-bit length with the top bit set": bytes([0x82, 0x7F]) + (1 << 63).to_bytes(8, "big"),
    "64-bit length of all ones": bytes([0x82, 0x7F]) + b"\xff" * 8,
    "close with 1 byte": frame(OP_CLOSE, b"\x03"),
    "close with code 1005": frame(OP_CLOSE, close_payload(1005)),
}


def assert_failed(client: Connection, code: int) -> None:
    """The connection is failed: one Close with ``code`` queued, state CLOSED, input ignored."""
    [sent] = sent_frames(client)
    assert sent.opcode == OP_CLOSE
    assert sent.close_code == code
    assert client.state is State.CLOSED
    assert client.close_code == code
    assert client.failure is not None and client.failure.close_code == code
    client.events_received()
    client.receive_data(frame(OP_TEXT, "after") + frame(OP_PING, b"after"))
    client.receive_eof()
    assert client.events_received() == []
    assert client.data_to_send() == b""
    client.send_close()
    assert client.data_to_send() == b""


class TestFailTheConnection:
    """§7.1.7: protocol errors fail the connection with 1002."""

    @pytest.mark.parametrize("raw", BAD_INPUT.values(), ids=BAD_INPUT.keys())
    def test_protocol_error(self, raw: bytes) -> None:
        client = open_client()
        with pytest.raises(ProtocolError) as info:
            client.receive_data(raw)
        assert type(info.value) is ProtocolError
        assert info.value.close_code == 1002
        assert client.failure is info.value
        assert client.events_received() == []
        assert_failed(client, 1002)

    @pytest.mark.parametrize("raw", BAD_INPUT.values(), ids=BAD_INPUT.keys())
    def test_protocol_error_fed_byte_by_byte(self, raw: bytes) -> None:
        client = open_client()
        with pytest.raises(ProtocolError) as info:
            for index in range(len(raw)):
                client.receive_data(raw[index : index + 1])
        assert info.value.close_code == 1002
        assert_failed(client, 1002)

    @pytest.mark.parametrize("raw", BAD_INPUT.values(), ids=BAD_INPUT.keys())
    def test_events_before_the_error_are_returned(self, raw: bytes) -> None:
        client = open_client()
        with pytest.raises(ProtocolError):
            client.receive_data(frame(OP_TEXT, "first") + frame(OP_PING, b"p") + raw)
        assert client.events_received() == [TextMessage("first"), PingReceived(b"p")]
        pong, close = sent_frames(client)
        assert pong.summary() == (OP_PONG, b"p", True, False)
        assert close.close_code == 1002

    def test_continuation_after_a_complete_message(self) -> None:
        client = open_client()
        with pytest.raises(ProtocolError, match="continuation") as info:
            client.receive_data(frame(OP_TEXT, "a") + frame(OP_CONTINUATION, "b"))
        assert info.value.close_code == 1002
        assert client.events_received() == [TextMessage("a")]
        assert_failed(client, 1002)

    def test_close_reason_describes_the_error(self) -> None:
        client = open_client()
        with pytest.raises(ProtocolError) as info:
            client.receive_data(frame(0x3, b""))
        [sent] = sent_frames(client)
        assert sent.close_reason == str(info.value).encode()
        assert b"opcode" in sent.close_reason

    def test_long_error_message_is_cut_to_123_bytes(self) -> None:
        client = open_client()
        client._fail(ProtocolError("é" * 100))
        [sent] = sent_frames(client)
        assert sent.close_reason == ("é" * 61).encode()

    @pytest.mark.parametrize(
        "header",
        [
            frame(OP_PING, b"x" * 126)[:4],
            bytes([0x82, 0x7F]) + (1 << 63).to_bytes(8, "big"),
            frame(0xF, b"payload follows")[:2],
        ],
        ids=["control over 125", "64-bit top bit", "reserved opcode"],
    )
    def test_error_is_detected_from_the_header_alone(self, header: bytes) -> None:
        client = open_client()
        with pytest.raises(ProtocolError):
            client.receive_data(header)
        assert_failed(client, 1002)

    def test_unmasked_client_frame_fails_the_server(self) -> None:
        _, server = open_pair()
        with pytest.raises(ProtocolError, match="unmasked"):
            server.receive_data(frame(OP_TEXT, "not masked"))
        [sent] = parse_frames(server.data_to_send(), masked=False)
        assert sent.close_code == 1002
        assert server.state is State.CLOSED

    def test_error_while_closing_sends_no_second_close(self) -> None:
        client = open_client()
        client.send_close(1000)
        client.data_to_send()
        with pytest.raises(ProtocolError):
            client.receive_data(frame(0x3))
        assert client.data_to_send() == b""
        assert client.state is State.CLOSED

    def test_error_in_the_leftover_of_the_handshake(self) -> None:
        client = ClientConnection(parse_uri(URL))
        key = request_key(client.data_to_send())
        with pytest.raises(ProtocolError):
            client.receive_data(response_101(key) + frame(OP_TEXT, "ok") + frame(0x7))
        assert [type(event).__name__ for event in client.events_received()] == [
            "HandshakeComplete",
            "TextMessage",
        ]
        assert_failed(client, 1002)


class TestInvalidUTF8:
    """§8.1: text must be UTF-8; failing fast, with 1007."""

    @pytest.mark.parametrize(
        "payload",
        [
            b"\xff",
            b"\xc0\xaf",  # overlong "/"
            b"\xe0\x80\xaf",  # overlong "/"
            b"\xed\xa0\x80",  # UTF-16 surrogate
            b"\xf4\x90\x80\x80",  # above U+10FFFF
            b"\xf8\x88\x80\x80\x80",  # 5-byte form
            b"\x80",  # lone continuation byte
            b"ok\xe2\x82",  # truncated at the end of the message
            "κόσμε".encode() + b"\xed\xa0\x80edited",
        ],
    )
    def test_invalid_text(self, payload: bytes) -> None:
        client = open_client()
        with pytest.raises(InvalidUTF8) as info:
            client.receive_data(frame(OP_TEXT, payload))
        assert info.value.close_code == 1007
        assert_failed(client, 1007)

    def test_detected_at_the_first_invalid_fragment(self) -> None:
        client = open_client()
        client.receive_data(frame(OP_TEXT, "κόσμε", fin=False))
        with pytest.raises(InvalidUTF8):
            client.receive_data(frame(OP_CONTINUATION, b"\xf4\x90\x80\x80", fin=False))
        assert client.events_received() == []
        assert_failed(client, 1007)

    @pytest.mark.parametrize(
        "prefix",
        [b"\xed\xa0", b"\xed\xbf", b"\xf4\x90", b"\xe0\x80", b"\xf0\x8f", b"\xc0", b"\xf5"],
    )
    def test_invalid_prefix_at_the_end_of_a_fragment(self, prefix: bytes) -> None:
        # No continuation can make these valid: fail now, before the next fragment.
        client = open_client()
        with pytest.raises(InvalidUTF8):
            client.receive_data(frame(OP_TEXT, b"ok " + prefix, fin=False))
        assert_failed(client, 1007)

    def test_invalid_prefix_split_across_fragments(self) -> None:
        client = open_client()
        client.receive_data(frame(OP_TEXT, b"ok \xed", fin=False))
        with pytest.raises(InvalidUTF8):
            client.receive_data(frame(OP_CONTINUATION, b"\xa0", fin=False))
        assert_failed(client, 1007)

    def test_invalid_prefix_at_the_end_of_a_partial_frame(self) -> None:
        client = open_client()
        raw = frame(OP_TEXT, b"surrogate: \xed\xa0\x80 and more text")
        with pytest.raises(InvalidUTF8):
            client.receive_data(raw[: raw.index(b"\xa0") + 1])
        assert_failed(client, 1007)

    @pytest.mark.parametrize(
        ("prefix", "rest"),
        [
            (b"\xed", b"\x80\x80"),  # U+D000
            (b"\xed\x9f", b"\xbf"),  # U+D7FF, the last code point before the surrogates
            (b"\xee\x80", b"\x80"),  # U+E000, the first one after them
            (b"\xf4\x8f", b"\xbf\xbf"),  # U+10FFFF
            (b"\xe0\xa0", b"\x80"),  # U+0800
        ],
    )
    def test_valid_prefix_at_the_end_of_a_fragment(self, prefix: bytes, rest: bytes) -> None:
        client = open_client()
        client.receive_data(frame(OP_TEXT, prefix, fin=False))
        client.receive_data(frame(OP_CONTINUATION, rest))
        assert client.events_received() == [TextMessage((prefix + rest).decode())]

    def test_detected_in_the_first_fragment(self) -> None:
        client = open_client()
        with pytest.raises(InvalidUTF8):
            client.receive_data(frame(OP_TEXT, b"abc\xc3\x28", fin=False))
        assert_failed(client, 1007)

    def test_detected_while_the_payload_of_a_single_frame_is_arriving(self) -> None:
        client = open_client()
        payload = b"valid text, then \xff and much more that has not arrived yet"
        raw = frame(OP_TEXT, payload)
        first_chunk = raw[: raw.index(b"\xff") + 1]
        with pytest.raises(InvalidUTF8):
            client.receive_data(first_chunk)
        assert_failed(client, 1007)

    def test_detected_in_a_large_frame_fed_in_chunks(self) -> None:
        client = open_client(max_size=None)
        payload = b"a" * 5000 + b"\xfe" + b"b" * 100_000
        raw = frame(OP_TEXT, payload)
        with pytest.raises(InvalidUTF8):
            for start in range(0, 5100, 100):
                client.receive_data(raw[start : start + 100])
        assert_failed(client, 1007)

    def test_character_split_across_fragments_then_invalid(self) -> None:
        client = open_client()
        client.receive_data(frame(OP_TEXT, b"\xe2", fin=False))
        client.receive_data(frame(OP_CONTINUATION, b"\x82", fin=False))
        with pytest.raises(InvalidUTF8):
            client.receive_data(frame(OP_CONTINUATION, b"\x28", fin=False))
        assert_failed(client, 1007)

    def test_truncated_character_at_the_end_of_a_fragmented_message(self) -> None:
        client = open_client()
        client.receive_data(frame(OP_TEXT, b"ok\xe2\x82", fin=False))
        with pytest.raises(InvalidUTF8):
            client.receive_data(frame(OP_CONTINUATION, b""))
        assert_failed(client, 1007)

    def test_valid_after_split_characters(self) -> None:
        client = open_client()
        encoded = "€uro €".encode()
        for index in range(len(encoded) - 1):
            opcode = OP_CONTINUATION if index else OP_TEXT
            client.receive_data(frame(opcode, encoded[index : index + 1], fin=False))
        client.receive_data(frame(OP_CONTINUATION, encoded[-1:]))
        assert client.events_received() == [TextMessage("€uro €")]

    def test_invalid_close_reason(self) -> None:
        client = open_client()
        with pytest.raises(InvalidUTF8):
            client.receive_data(frame(OP_CLOSE, close_payload(1000, b"\xc3")))
        assert_failed(client, 1007)

    def test_binary_is_never_validated(self) -> None:
        client = open_client()
        client.receive_data(frame(OP_BINARY, b"\xff", fin=False) + frame(OP_CONTINUATION, b"\xc3"))
        assert client.events_received() == [BinaryMessage(b"\xff\xc3")]


class TestMessageTooBig:
    """§10.4: a message over ``max_size`` fails the connection with 1009."""

    def test_declared_length_over_the_limit_fails_before_the_payload(self) -> None:
        client = open_client(max_size=1000)
        header = frame(OP_BINARY, length=1001)
        assert len(header) == 4
        with pytest.raises(MessageTooBig) as info:
            client.receive_data(header)
        assert info.value.close_code == 1009
        assert_failed(client, 1009)

    def test_text_over_the_limit(self) -> None:
        client = open_client(max_size=10)
        with pytest.raises(MessageTooBig):
            client.receive_data(frame(OP_TEXT, "x" * 11))
        assert_failed(client, 1009)

    def test_message_at_the_limit_is_accepted(self) -> None:
        client = open_client(max_size=1000)
        client.receive_data(frame(OP_BINARY, b"x" * 1000) + frame(OP_TEXT, "y" * 1000))
        assert client.events_received() == [BinaryMessage(b"x" * 1000), TextMessage("y" * 1000)]

    def test_limit_is_per_message(self) -> None:
        client = open_client(max_size=1000)
        client.receive_data(frame(OP_BINARY, b"x" * 1000) * 5)
        assert client.events_received() == [BinaryMessage(b"x" * 1000)] * 5

    def test_fragments_add_up(self) -> None:
        client = open_client(max_size=1000)
        client.receive_data(frame(OP_BINARY, b"x" * 600, fin=False))
        second = frame(OP_CONTINUATION, length=401)
        with pytest.raises(MessageTooBig):
            client.receive_data(second)
        assert_failed(client, 1009)

    def test_fragments_up_to_the_limit(self) -> None:
        client = open_client(max_size=1000)
        client.receive_data(
            frame(OP_TEXT, "x" * 600, fin=False) + frame(OP_CONTINUATION, "y" * 400)
        )
        assert client.events_received() == [TextMessage("x" * 600 + "y" * 400)]

    def test_huge_declared_length_with_the_default_limit(self) -> None:
        client = open_client()
        with pytest.raises(MessageTooBig):
            client.receive_data(frame(OP_BINARY, length=1 << 40)[:10])
        assert_failed(client, 1009)

    def test_default_limit_is_4_mib(self) -> None:
        client = open_client()
        assert client.max_size == 4 * MIB
        client.receive_data(frame(OP_BINARY, b"\x00" * (4 * MIB)))
        assert client.events_received() == [BinaryMessage(b"\x00" * (4 * MIB))]
        with pytest.raises(MessageTooBig):
            client.receive_data(frame(OP_BINARY, length=4 * MIB + 1)[:10])

    def test_none_means_no_limit(self) -> None:
        client = open_client(max_size=None)
        data = b"\x01" * (5 * MIB)
        client.receive_data(frame(OP_BINARY, data))
        assert client.events_received() == [BinaryMessage(data)]
        client.receive_data(frame(OP_BINARY, length=1 << 40)[:10])
        assert client.state is State.OPEN
        assert client.data_to_send() == b""

    @pytest.mark.parametrize("value", [0, -1])
    def test_max_size_must_be_positive(self, value: int) -> None:
        with pytest.raises(ValueError, match="max_size"):
            Connection(Role.CLIENT, max_size=value)

    def test_server_role_limit(self) -> None:
        client, server = open_pair(server={"max_size": 100})
        client.send_binary(b"x" * 101)
        with pytest.raises(MessageTooBig):
            server.receive_data(client.data_to_send())
        [sent] = parse_frames(server.data_to_send(), masked=False)
        assert sent.close_code == 1009
        assert server.state is State.CLOSED
