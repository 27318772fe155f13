"""RFC 6455 §5.5.1 (Close frames) and §7 (closing the connection)."""

from __future__ import annotations

import pytest

from wsclient.exceptions import ConnectionDisconnected, InvalidUTF8, ProtocolError
from wsclient.protocol import (
    BinaryMessage,
    CloseReceived,
    PingReceived,
    PongReceived,
    State,
    TextMessage,
    is_valid_close_code,
)
from wsclient.protocol.frames import build_close_payload, parse_close_payload

from .support import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_payload,
    frame,
    open_client,
    open_pair,
    sent_frames,
    transfer,
)

INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]
VALID_CODES = [*range(1000, 1004), *range(1007, 1015), 3000, 4999]


def close_frame(code: int | None = None, reason: bytes | str = b"") -> bytes:
    return frame(OP_CLOSE, close_payload(code, reason))


class TestClosePayload:
    """§5.5.1 and §7.4: the body of a Close frame."""

    @pytest.mark.parametrize("code", VALID_CODES)
    def test_valid_codes(self, code: int) -> None:
        assert is_valid_close_code(code)
        assert parse_close_payload(close_payload(code, "ok")) == (code, "ok")
        assert build_close_payload(code, "ok") == close_payload(code, "ok")

    @pytest.mark.parametrize("code", INVALID_CODES)
    def test_invalid_codes(self, code: int) -> None:
        assert not is_valid_close_code(code)
        with pytest.raises(ProtocolError) as info:
            parse_close_payload(close_payload(code))
        assert info.value.close_code == 1002
        with pytest.raises(ValueError, match="invalid close code"):
            build_close_payload(code)

    def test_empty_payload_means_no_status(self) -> None:
        assert parse_close_payload(b"") == (1005, "")
        assert build_close_payload(None) == b""

    def test_one_byte_payload(self) -> None:
        with pytest.raises(ProtocolError, match="1-byte") as info:
            parse_close_payload(b"\x03")
        assert info.value.close_code == 1002

    def test_code_without_reason(self) -> None:
        assert parse_close_payload(b"\x03\xe8") == (1000, "")

    def test_utf8_reason(self) -> None:
        assert parse_close_payload(close_payload(4000, "ça va ✓")) == (4000, "ça va ✓")

    @pytest.mark.parametrize("reason", [b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
    def test_invalid_utf8_reason(self, reason: bytes) -> None:
        with pytest.raises(InvalidUTF8) as info:
            parse_close_payload(close_payload(1000, reason))
        assert info.value.close_code == 1007

    def test_reason_of_123_bytes(self) -> None:
        assert len(build_close_payload(1000, "x" * 123)) == 125
        assert len(build_close_payload(1000, "€" * 41)) == 125  # 3 bytes each

    @pytest.mark.parametrize("reason", ["x" * 124, "€" * 42, "é" * 62])
    def test_reason_over_123_bytes(self, reason: str) -> None:
        with pytest.raises(ValueError, match="123"):
            build_close_payload(1000, reason)

    def test_reason_requires_a_code(self) -> None:
        with pytest.raises(ValueError, match="requires a close code"):
            build_close_payload(None, "why")


class TestPeerInitiatedClose:
    """§5.5.1 and §7.1.5: the peer sends Close first; we echo it and the connection closes."""

    @pytest.mark.parametrize("code", VALID_CODES)
    def test_echo_of_the_peer_code(self, code: int) -> None:
        client = open_client()
        client.receive_data(close_frame(code, "bye"))
        assert client.events_received() == [CloseReceived(code, "bye")]
        [echo] = sent_frames(client)
        assert echo.summary() == (OP_CLOSE, code.to_bytes(2, "big"), True, False)
        assert client.state is State.CLOSED
        assert (client.close_code, client.close_reason) == (code, "bye")
        assert (client.close_code_received, client.close_reason_received) == (code, "bye")
        assert (client.close_code_sent, client.close_reason_sent) == (code, "")
        assert client.close_handshake_done

    def test_empty_close_is_echoed_with_an_empty_close(self) -> None:
        client = open_client()
        client.receive_data(close_frame())
        assert client.events_received() == [CloseReceived(1005, "")]
        [echo] = sent_frames(client)
        assert echo.summary() == (OP_CLOSE, b"", True, False)
        assert client.state is State.CLOSED
        assert client.close_code == 1005
        assert client.close_handshake_done

    def test_close_split_across_chunks(self) -> None:
        client = open_client()
        raw = close_frame(1001, "going away")
        for index in range(len(raw) - 1):
            client.receive_data(raw[index : index + 1])
            assert client.state is State.OPEN
        client.receive_data(raw[-1:])
        assert client.events_received() == [CloseReceived(1001, "going away")]
        assert client.state is State.CLOSED

    def test_close_in_the_middle_of_a_fragmented_message(self) -> None:
        client = open_client()
        client.receive_data(frame(OP_TEXT, "Hel", fin=False) + close_frame(1000, "stop"))
        assert client.events_received() == [CloseReceived(1000, "stop")]
        [echo] = sent_frames(client)
        assert echo.close_code == 1000
        assert client.failure is None
        assert client.state is State.CLOSED

    def test_messages_before_the_close_are_delivered(self) -> None:
        client = open_client()
        client.receive_data(
            frame(OP_TEXT, "one") + frame(OP_BINARY, b"two") + close_frame(1000) + b"junk"
        )
        assert client.events_received() == [
            TextMessage("one"),
            BinaryMessage(b"two"),
            CloseReceived(1000, ""),
        ]

    def test_input_after_the_close_is_ignored(self) -> None:
        client = open_client()
        client.receive_data(close_frame(1000) + frame(OP_TEXT, "late"))
        assert client.events_received() == [CloseReceived(1000, "")]
        client.data_to_send()
        client.receive_data(frame(OP_PING, b"late"))
        client.receive_eof()
        assert client.events_received() == []
        assert client.data_to_send() == b""
        assert client.close_code == 1000

    def test_sending_after_the_peer_closed(self) -> None:
        client = open_client()
        client.receive_data(close_frame(1001, "bye"))
        client.data_to_send()
        with pytest.raises(ConnectionDisconnected) as info:
            client.send_text("late")
        assert (info.value.code, info.value.reason) == (1001, "bye")
        client.send_close(1000)  # nothing to do any more
        assert client.data_to_send() == b""

    def test_server_echoes_the_client_close(self) -> None:
        client, server = open_pair()
        client.send_close(4001, "custom")
        assert client.state is State.CLOSING
        assert transfer(client, server) == [CloseReceived(4001, "custom")]
        assert server.state is State.CLOSED
        assert transfer(server, client) == [CloseReceived(4001, "")]
        assert client.state is State.CLOSED
        assert client.close_handshake_done and server.close_handshake_done
        assert client.close_code == 4001


class TestLocalClose:
    """§7.1.2 and §7.1.3: we send Close first and keep reading until the peer's Close."""

    def test_send_close(self) -> None:
        client = open_client()
        client.send_close(1000, "done")
        [sent] = sent_frames(client)
        assert sent.summary() == (OP_CLOSE, b"\x03\xe8done", True, False)
        assert client.state is State.CLOSING
        assert (client.close_code_sent, client.close_reason_sent) == (1000, "done")
        assert client.close_code_received is None
        assert not client.close_handshake_done

    def test_send_close_without_code(self) -> None:
        client = open_client()
        client.send_close(None)
        [sent] = sent_frames(client)
        assert sent.summary() == (OP_CLOSE, b"", True, False)
        assert client.close_code_sent == 1005

    def test_keep_parsing_until_the_peer_close(self) -> None:
        client = open_client()
        client.send_close(1000)
        client.data_to_send()
        client.receive_data(frame(OP_TEXT, "still") + frame(OP_PONG, b"p"))
        assert client.events_received() == [TextMessage("still"), PongReceived(b"p")]
        assert client.state is State.CLOSING
        client.receive_data(frame(OP_BINARY, b"a", fin=False) + frame(OP_CONTINUATION, b"b"))
        assert client.events_received() == [BinaryMessage(b"ab")]
        client.receive_data(close_frame(1000, "ack"))
        assert client.events_received() == [CloseReceived(1000, "ack")]
        assert client.state is State.CLOSED
        assert client.data_to_send() == b""  # no second Close
        assert client.close_handshake_done
        assert (client.close_code, client.close_reason) == (1000, "ack")

    def test_ping_while_closing_is_reported(self) -> None:
        client = open_client()
        client.send_close(1000)
        client.data_to_send()
        client.receive_data(frame(OP_PING, b"?"))
        assert client.events_received() == [PingReceived(b"?")]
        assert client.state is State.CLOSING

    def test_peer_answers_with_another_code(self) -> None:
        client = open_client()
        client.send_close(1000)
        client.receive_data(close_frame(1001))
        assert client.close_code_sent == 1000
        assert client.close_code_received == 1001
        assert client.close_code == 1001

    def test_peer_answers_with_an_empty_close(self) -> None:
        client = open_client()
        client.send_close(1000)
        client.receive_data(close_frame())
        assert client.state is State.CLOSED
        assert client.close_code == 1005

    @pytest.mark.parametrize("code", INVALID_CODES)
    def test_invalid_code_is_a_value_error(self, code: int) -> None:
        client = open_client()
        with pytest.raises(ValueError, match="invalid close code"):
            client.send_close(code)
        assert client.state is State.OPEN
        assert client.data_to_send() == b""

    @pytest.mark.parametrize("code", VALID_CODES)
    def test_every_valid_code_can_be_sent(self, code: int) -> None:
        client = open_client()
        client.send_close(code)
        [sent] = sent_frames(client)
        assert sent.close_code == code

    def test_reason_over_123_bytes_is_a_value_error(self) -> None:
        client = open_client()
        with pytest.raises(ValueError, match="123"):
            client.send_close(1000, "x" * 124)
        assert client.state is State.OPEN
        assert client.data_to_send() == b""
        client.send_close(1000, "x" * 123)
        [sent] = sent_frames(client)
        assert sent.close_reason == b"x" * 123

    def test_send_close_is_idempotent(self) -> None:
        client = open_client()
        client.send_close(1000, "first")
        client.data_to_send()
        client.send_close(1001, "second")
        client.send_close()
        assert client.data_to_send() == b""
        assert (client.close_code_sent, client.close_reason_sent) == (1000, "first")
        assert client.state is State.CLOSING

    def test_send_close_validates_even_when_closing(self) -> None:
        client = open_client()
        client.send_close()
        with pytest.raises(ValueError):
            client.send_close(1006)

    def test_no_data_after_our_close(self) -> None:
        client = open_client()
        client.send_close()
        client.data_to_send()
        with pytest.raises(ConnectionDisconnected):
            client.send_text("x")
        with pytest.raises(ConnectionDisconnected):
            client.send_ping()
        assert client.data_to_send() == b""


class TestAbnormalClosure:
    """§7.1.5 and §7.4.1: the TCP connection ends without a Close frame (1006)."""

    def test_eof_before_close(self) -> None:
        client = open_client()
        client.receive_data(frame(OP_TEXT, "last words"))
        client.receive_eof()
        assert client.events_received() == [TextMessage("last words")]
        assert client.state is State.CLOSED
        assert client.eof_received
        assert client.close_code == 1006
        assert client.close_reason == ""
        assert client.close_code_received is None
        assert client.data_to_send() == b""
        assert not client.close_handshake_done

    def test_eof_in_the_middle_of_a_message(self) -> None:
        client = open_client()
        client.receive_data(frame(OP_TEXT, "Hel", fin=False) + frame(OP_CONTINUATION, "lo")[:3])
        client.receive_eof()
        assert client.events_received() == []
        assert client.close_code == 1006

    def test_eof_after_our_close(self) -> None:
        client = open_client()
        client.send_close(1000)
        client.receive_eof()
        assert client.state is State.CLOSED
        assert client.close_code_received is None
        assert not client.close_handshake_done

    def test_sending_after_eof(self) -> None:
        client = open_client()
        client.receive_eof()
        with pytest.raises(ConnectionDisconnected) as info:
            client.send_text("x")
        assert info.value.code == 1006


class TestCloseErrors:
    """§7.1.7 applied to Close frames: a bad Close fails the connection."""

    @pytest.mark.parametrize("code", INVALID_CODES)
    def test_invalid_code_on_the_wire(self, code: int) -> None:
        client = open_client()
        with pytest.raises(ProtocolError) as info:
            client.receive_data(close_frame(code))
        assert info.value.close_code == 1002
        [sent] = sent_frames(client)
        assert sent.close_code == 1002
        assert client.state is State.CLOSED
        assert client.close_code == 1002

    def test_one_byte_payload(self) -> None:
        client = open_client()
        with pytest.raises(ProtocolError) as info:
            client.receive_data(frame(OP_CLOSE, b"\x03"))
        assert info.value.close_code == 1002
        [sent] = sent_frames(client)
        assert sent.close_code == 1002

    def test_invalid_utf8_reason(self) -> None:
        client = open_client()
        with pytest.raises(InvalidUTF8) as info:
            client.receive_data(close_frame(1000, b"bad \xff reason"))
        assert info.value.close_code == 1007
        [sent] = sent_frames(client)
        assert sent.close_code == 1007
        assert client.close_code == 1007
        assert client.state is State.CLOSED

    def test_bad_close_after_our_close_sends_nothing_more(self) -> None:
        client = open_client()
        client.send_close(1000)
        client.data_to_send()
        with pytest.raises(ProtocolError):
            client.receive_data(close_frame(1005))
        assert client.data_to_send() == b""
        assert client.state is State.CLOSED
        assert client.close_code == 1000

    def test_events_before_the_error_in_the_same_chunk_are_returned(self) -> None:
        client = open_client()
        with pytest.raises(ProtocolError):
            client.receive_data(
                frame(OP_TEXT, "a") + frame(OP_PING, b"p") + frame(OP_CLOSE, b"\x03")
            )
        assert client.events_received() == [TextMessage("a"), PingReceived(b"p")]
        assert [(item.opcode, item.payload[:2]) for item in sent_frames(client)] == [
            (OP_PONG, b"p"),
            (OP_CLOSE, b"\x03\xea"),
        ]
