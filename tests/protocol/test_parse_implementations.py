"""The compiled and the pure-Python parser of common frames take exactly the frames a naive
reference takes, and stop where it stops."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsclient.exceptions import ProtocolError
from wsclient.protocol import BinaryMessage, Event, TextMessage, connection

from .support import OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT, frame

# Taken at import: the autouse frame_parser fixture hides the compiled one in its runs.
COMPILED = connection._c_parse_messages
IMPLEMENTATIONS = [("python", connection._py_parse_messages)]
if COMPILED is not None:
    IMPLEMENTATIONS.append(("c", COMPILED))

INVALID_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"ok\xe2\x82"]


def fake_inflate(payload: bytes, is_text: bool, limit: int) -> str | bytes:
    """Stands for PerMessageDeflate.inflate_message: shows what it was given."""
    if payload == b"boom":
        raise ProtocolError("the inflater refused", 1007)
    shown = f"{payload.hex()}/{limit}"
    return shown if is_text else shown.encode()


def reference(
    data: bytes, position: int, limit: int, inflating: bool = False
) -> tuple[int, list[Event]]:
    """Whole final unmasked text and binary frames without RSV bits, below 64 KiB and within
    ``limit`` (unless negative), text valid UTF-8: one by one, the obvious way. With
    ``inflating``, such frames with RSV1 too, through fake_inflate and whatever their size."""
    events: list[Event] = []
    while len(data) - position >= 2:
        first, second = data[position], data[position + 1]
        compressed = inflating and first in (0xC1, 0xC2)
        if (first not in (0x81, 0x82) and not compressed) or second & 0x80:
            break
        if second & 0x7F == 127:
            break
        length, header = second, 2
        if length == 126:
            if len(data) - position < 4:
                break
            length, header = int.from_bytes(data[position + 2 : position + 4], "big"), 4
        if position + header + length > len(data) or (0 <= limit < length and not compressed):
            break
        payload = data[position + header : position + header + length]
        if compressed:
            inflated = fake_inflate(payload, first == 0xC1, limit)
            if first == 0xC1:
                events.append(TextMessage(inflated))  # type: ignore[arg-type]
            else:
                events.append(BinaryMessage(inflated))  # type: ignore[arg-type]
        elif first == 0x81:
            try:
                events.append(TextMessage(payload.decode("utf-8")))
            except UnicodeDecodeError:
                break
        else:
            events.append(BinaryMessage(payload))
        position += header + length
    return position, events


def test_the_compiled_parser_is_built_where_a_compiler_exists() -> None:
    if shutil.which("cc") or shutil.which("gcc"):
        assert connection.PARSE_IMPLEMENTATION == "c"
        assert COMPILED is not None
    else:
        assert connection.PARSE_IMPLEMENTATION == "python"


frames_strategy = st.lists(
    st.tuples(
        st.sampled_from([OP_TEXT, OP_BINARY, OP_CONTINUATION, OP_PING, OP_CLOSE, 0x3]),
        st.one_of(
            st.binary(max_size=140),
            st.text(max_size=60).map(str.encode),
            st.sampled_from(INVALID_UTF8),
            st.sampled_from([125, 126, 127, 65535, 65536, 70_000]).map(lambda n: b"a" * n),
        ),
        st.booleans(),  # fin
        st.booleans(),  # rsv1
        st.booleans(),  # masked
    ),
    max_size=8,
)


@pytest.mark.parametrize(("name", "parse_messages"), IMPLEMENTATIONS)
@settings(max_examples=300, deadline=None)
@given(
    frames=frames_strategy,
    cut=st.integers(min_value=0, max_value=1 << 20),
    start=st.integers(min_value=0, max_value=8),
    limit=st.sampled_from([-1, 0, 1, 10, 125, 126, 4096, 1 << 20]),
    kind=st.sampled_from([bytes, bytearray, memoryview]),
    inflating=st.booleans(),
)
def test_takes_what_the_reference_takes_and_stops_where_it_stops(
    name: str,
    parse_messages: connection._ParseMessages,
    frames: list[tuple[int, bytes, bool, bool, bool]],
    cut: int,
    start: int,
    limit: int,
    kind: type,
    inflating: bool,
) -> None:
    raw = b"".join(
        frame(opcode, payload, fin=fin or opcode >= 8, rsv1=rsv1, key=b"abcd" if masked else None)
        for opcode, payload, fin, rsv1, masked in frames
        if payload != b"boom"
    )
    data = raw[: min(cut, len(raw))]
    start = min(start, len(data))
    buffer = memoryview(bytearray(data)) if kind is memoryview else kind(data)
    events: list[Event] = []
    if inflating:
        stop = parse_messages(buffer, start, limit, events, fake_inflate)
    else:
        stop = parse_messages(buffer, start, limit, events)
    assert (stop, events) == reference(data, start, limit, inflating)
    for event in events:
        assert type(event.data) is (str if type(event) is TextMessage else bytes)  # type: ignore[union-attr]


@pytest.mark.parametrize(("name", "parse_messages"), IMPLEMENTATIONS)
def test_appends_to_the_list_it_is_given(
    name: str, parse_messages: connection._ParseMessages
) -> None:
    earlier = TextMessage("earlier")
    events: list[Event] = [earlier]
    data = frame(OP_TEXT, b"caf\xc3\xa9") + frame(OP_BINARY, b"") + frame(OP_TEXT, b"\xff")
    stop = parse_messages(data, 0, -1, events)
    assert events == [earlier, TextMessage("café"), BinaryMessage(b"")]
    assert stop == len(data) - 3  # the invalid text frame is left for the full parser


@pytest.mark.parametrize(("name", "parse_messages"), IMPLEMENTATIONS)
def test_an_inflater_error_propagates_after_the_messages_before_it(
    name: str, parse_messages: connection._ParseMessages
) -> None:
    events: list[Event] = []
    data = (
        frame(OP_TEXT, b"first", rsv1=True)
        + frame(OP_BINARY, b"boom", rsv1=True)
        + frame(OP_TEXT, b"never")
    )
    with pytest.raises(ProtocolError, match="refused"):
        parse_messages(data, 0, 10, events, fake_inflate)
    assert events == [TextMessage(f"{b'first'.hex()}/10")]


@pytest.mark.parametrize(("name", "parse_messages"), IMPLEMENTATIONS)
def test_none_as_inflater_leaves_compressed_frames(
    name: str, parse_messages: connection._ParseMessages
) -> None:
    events: list[Event] = []
    data = frame(OP_TEXT, b"plain") + frame(OP_TEXT, b"x", rsv1=True)
    assert parse_messages(data, 0, -1, events, None) == len(frame(OP_TEXT, b"plain"))
    assert events == [TextMessage("plain")]


def test_the_compiled_parser_rejects_bad_arguments() -> None:
    compiled = COMPILED
    if compiled is None:
        assert connection.PARSE_IMPLEMENTATION == "python"
        return
    with pytest.raises(ValueError, match="outside"):
        compiled(b"\x81\x00", 3, -1, [])
    with pytest.raises(ValueError, match="outside"):
        compiled(b"\x81\x00", -1, -1, [])
    with pytest.raises(TypeError, match="list"):
        compiled(b"\x81\x00", 0, -1, ())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        compiled("text", 0, -1, [])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="4 or 5 arguments"):
        compiled(b"", 0, -1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="4 or 5 arguments"):
        compiled(b"", 0, -1, [], None, None)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="not callable"):
        compiled(b"\xc1\x00", 0, -1, [], "not a function")  # type: ignore[arg-type]
