"""RFC 6455 §5.4 and §7.1.7: frames are processed in order, also when read together.

* ``defer_failure``: a protocol error leaves the Close to :meth:`Connection.fail`, so that
  the messages before the bad frame can be answered first.
* Runs of whole continuation frames in one read are handed on together (one inflate or
  UTF-8 step); the outcome must be exactly the one of feeding them frame by frame.
"""

from __future__ import annotations

import zlib

import pytest

from wsclient.exceptions import InvalidUTF8, MessageTooBig, ProtocolError
from wsclient.protocol import (
    BinaryMessage,
    CloseReceived,
    DeflateOptions,
    Fragment,
    PingReceived,
    State,
    TextMessage,
)

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
    parse_frames,
    sent_frames,
)

DEFLATE = "Sec-WebSocket-Extensions: permessage-deflate"


def fragments(opcode: int, payload: bytes, size: int, *, rsv1: bool = False) -> list[bytes]:
    pieces = [payload[start : start + size] for start in range(0, len(payload), size)]
    return [
        frame(
            opcode if index == 0 else OP_CONTINUATION,
            piece,
            fin=index == len(pieces) - 1,
            rsv1=rsv1 and index == 0,
        )
        for index, piece in enumerate(pieces)
    ]


# §7.1.7 with defer_failure ------------------------------------------------------------------


class TestDeferredFailure:
    def test_error_queues_nothing_until_fail(self) -> None:
        client = open_client(defer_failure=True)
        data = frame(OP_TEXT, "hello") + frame(0x3) + frame(OP_PING, b"late")
        with pytest.raises(ProtocolError) as caught:
            client.receive_data(data)
        assert caught.value.close_code == 1002
        assert client.events_received() == [TextMessage("hello")]
        assert client.state is State.OPEN
        assert client.failure is caught.value
        assert client.data_to_send() == b""
        # The application answers the message that came before the bad frame.
        client.send_text("echo: hello")
        # Input after the error is ignored: the ping behind the bad frame is never answered.
        client.receive_data(frame(OP_PING, b"ignored"))
        assert client.events_received() == []
        client.fail()
        assert client.state is State.CLOSED
        sent = sent_frames(client)
        assert [(f.opcode, f.payload) for f in sent[:1]] == [(OP_TEXT, b"echo: hello")]
        assert sent[1].opcode == OP_CLOSE and sent[1].close_code == 1002
        assert len(sent) == 2
        assert client.close_code == 1002
        client.fail()  # idempotent
        assert client.data_to_send() == b""

    def test_fail_without_a_failure_does_nothing(self) -> None:
        client = open_client(defer_failure=True)
        client.fail()
        assert client.state is State.OPEN
        assert client.data_to_send() == b""

    def test_fail_after_closing_started_sends_no_second_close(self) -> None:
        client = open_client(defer_failure=True)
        with pytest.raises(ProtocolError):
            client.receive_data(frame(OP_TEXT, b"\xff"))
        client.send_close(1011, "gone")
        client.fail()
        assert client.state is State.CLOSED
        assert [f.close_code for f in sent_frames(client)] == [1011]

    def test_eof_while_a_failure_is_pending(self) -> None:
        client = open_client(defer_failure=True)
        with pytest.raises(ProtocolError):
            client.receive_data(frame(OP_CONTINUATION, b"x"))
        client.receive_eof()
        assert client.state is State.CLOSED
        client.fail()
        assert client.data_to_send() == b""

    def test_default_fails_at_once(self) -> None:
        client = open_client()
        with pytest.raises(ProtocolError):
            client.receive_data(frame(OP_TEXT, "hello") + frame(0x3))
        assert client.state is State.CLOSED
        assert [f.close_code for f in sent_frames(client)] == [1002]


# §5.4: batched continuation frames ------------------------------------------------------------


Outcome = tuple[list[object], list[tuple[int, bytes]], object]


def one_by_one(data: list[bytes], *headers: str, **kwargs: object) -> Outcome:
    """Feed ``data`` one frame per call; return events, output and (error type, code)."""
    client = open_client(*headers, **kwargs)
    events: list[object] = []
    error: object = None
    try:
        for piece in data:
            client.receive_data(piece)
            events += client.events_received()
    except ProtocolError as exc:
        error = (type(exc), exc.close_code)
        events += client.events_received()
    return events, frames_of(client.data_to_send()), error


def all_at_once(data: list[bytes], *headers: str, **kwargs: object) -> Outcome:
    """Feed ``data`` in one call; return events, output and (error type, code)."""
    client = open_client(*headers, **kwargs)
    error: object = None
    try:
        client.receive_data(b"".join(data))
    except ProtocolError as exc:
        error = (type(exc), exc.close_code)
    return client.events_received(), frames_of(client.data_to_send()), error


def frames_of(output: bytes) -> list[tuple[int, bytes]]:
    return [(f.opcode, f.payload) for f in parse_frames(output, masked=True)]


class TestBatchedContinuationFrames:
    TEXT = ("héllo wörld, " * 400).encode("utf-8")

    @pytest.mark.parametrize("size", [1, 3, 64, 1000])
    def test_text_in_small_fragments(self, size: int) -> None:
        data = fragments(OP_TEXT, self.TEXT, size)
        events, _, error = all_at_once(data)
        assert error is None
        assert events == [TextMessage(self.TEXT.decode("utf-8"))]
        assert events == one_by_one(data)[0]

    def test_binary_in_small_fragments_with_pings_between(self) -> None:
        pieces = fragments(OP_BINARY, bytes(range(256)) * 8, 100)
        data = pieces[:5] + [frame(OP_PING, b"p1")] + pieces[5:] + [frame(OP_PING, b"p2")]
        events, output, error = all_at_once(data)
        assert error is None
        assert events == [
            PingReceived(b"p1"),
            BinaryMessage(bytes(range(256)) * 8),
            PingReceived(b"p2"),
        ]
        assert output == [(OP_PONG, b"p1"), (OP_PONG, b"p2")]
        assert (events, output, error) == one_by_one(data)

    def test_compressed_fragments(self) -> None:
        payloads = [self.TEXT, self.TEXT[::-1], b"x" * 5000]
        # One compressor for all three: context takeover, as a server sends them.
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        data: list[bytes] = []
        for payload in payloads:
            body = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
            data += fragments(OP_BINARY, body[:-4], 7, rsv1=True)
        options = DeflateOptions()
        events, _, error = all_at_once(data, DEFLATE, deflate_options=options)
        assert error is None
        assert events == [BinaryMessage(payload) for payload in payloads]
        assert events == one_by_one(data, DEFLATE, deflate_options=options)[0]

    def test_invalid_utf8_in_a_run_fails_with_1007_before_later_frames(self) -> None:
        bad = self.TEXT[:100] + b"\xc3\x28" + self.TEXT[100:200]
        # A bad opcode follows the message: the UTF-8 error comes first, as frame by frame.
        data = fragments(OP_TEXT, bad, 10)[:-1] + [frame(0x3)]
        expected = one_by_one(data)
        assert expected[2] == (InvalidUTF8, 1007)
        assert all_at_once(data) == expected

    def test_max_size_in_a_run_fails_with_1009(self) -> None:
        data = fragments(OP_BINARY, b"z" * 1000, 10)
        assert all_at_once(data, max_size=999)[2] == (MessageTooBig, 1009)
        assert all_at_once(data, max_size=1000)[0] == [BinaryMessage(b"z" * 1000)]

    def test_close_between_fragments(self) -> None:
        data = fragments(OP_TEXT, self.TEXT, 50)
        data = data[:3] + [frame(OP_CLOSE, close_payload(1000))] + data[3:]
        events, output, error = all_at_once(data)
        assert error is None
        assert events == [CloseReceived(1000, "")]
        assert [opcode for opcode, _ in output] == [OP_CLOSE]

    def test_stream_mode_keeps_one_fragment_per_frame(self) -> None:
        data = fragments(OP_TEXT, b"abcdef", 2)
        events, _, _ = all_at_once(data, stream_messages=True)
        assert events == [
            Fragment(True, "ab", True, False),
            Fragment(True, "cd", False, False),
            Fragment(True, "ef", False, True),
        ]
