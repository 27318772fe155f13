"""Large masked frames built in the thread's reusable send buffer (frames.build_frames).

The frames must be exactly what RFC 6455 §5.2 asks for, whichever masking routine writes
them, and a view handed out must never be overwritten while someone may still read it.
"""

from __future__ import annotations

import os
import threading
import zlib

import pytest

from wsclient.protocol import frames
from wsclient.protocol.deflate import DeflateOptions

from .support import (
    OP_BINARY,
    OP_CONTINUATION,
    OP_TEXT,
    Frame,
    naive_mask,
    open_client,
    open_pair,
    parse_frames,
)

MASK_INTO = [("python", frames._py_mask_into)]
if frames._c_mask_into is not None:
    MASK_INTO.append(("c", frames._c_mask_into))


@pytest.fixture(params=MASK_INTO, ids=[name for name, _ in MASK_INTO])
def mask_into(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> object:
    """Run the test with each masking routine, and with a thread buffer of its own."""
    _, function = request.param
    monkeypatch.setattr(frames, "mask_into", function)
    frames.release_send_buffer()
    yield function
    frames.release_send_buffer()


@pytest.mark.parametrize(("name", "function"), MASK_INTO)
@pytest.mark.parametrize("length", [0, 1, 3, 64, 65, 127, 4099, 65536, 65541])
def test_mask_into_matches_the_reference(name: str, function: object, length: int) -> None:
    assert callable(function)
    data = os.urandom(length)
    key = os.urandom(4)
    out = bytearray(b"\xee" * (length + 10))
    function(out, 7, memoryview(data), key)
    assert out[:7] == b"\xee" * 7
    assert out[7 : 7 + length] == naive_mask(data, key)
    assert out[7 + length :] == b"\xee" * 3


def test_compiled_mask_into_rejects_what_does_not_fit() -> None:
    if frames._c_mask_into is None:
        assert frames.MASK_IMPLEMENTATION == "python"
        return
    with pytest.raises(ValueError, match="does not fit"):
        frames._c_mask_into(bytearray(10), 8, b"abc", b"abcd")
    with pytest.raises(ValueError, match="does not fit"):
        frames._c_mask_into(bytearray(10), -1, b"abc", b"abcd")
    with pytest.raises(ValueError, match="4 bytes"):
        frames._c_mask_into(bytearray(10), 0, b"abc", b"abc")
    with pytest.raises(TypeError):
        frames._c_mask_into(b"read-only", 0, b"abc", b"abcd")  # type: ignore[arg-type]


def _frames_of(data: bytes | memoryview) -> list[Frame]:
    return parse_frames(bytes(data), masked=True)


@pytest.mark.usefixtures("mask_into")
@pytest.mark.parametrize(
    ("length", "max_frame_size"),
    [
        (65536, None),
        (65536, 65536),
        (300_000, None),
        (300_000, 100_000),
        (1 << 20, 256 * 1024),
        (1 << 20, 4096),
        (1 << 20, 1000),
    ],
)
@pytest.mark.parametrize("fin", [True, False])
def test_frames_built_in_the_buffer(length: int, max_frame_size: int | None, fin: bool) -> None:
    payload = os.urandom(length)
    data = frames.build_frames(
        OP_BINARY,
        payload,
        max_frame_size=max_frame_size,
        fin=fin,
        rsv1=True,
        masked=True,
        reuse_buffer=True,
    )
    assert type(data) is memoryview
    parsed = _frames_of(data)
    size = length if max_frame_size is None else max_frame_size
    assert [item.opcode for item in parsed] == [OP_BINARY] + [OP_CONTINUATION] * (len(parsed) - 1)
    assert [len(item.payload) for item in parsed[:-1]] == [size] * (len(parsed) - 1)
    assert 0 < len(parsed[-1].payload) <= size
    assert b"".join(item.payload for item in parsed) == payload
    assert [item.fin for item in parsed] == [False] * (len(parsed) - 1) + [fin]
    assert [item.rsv1 for item in parsed] == [True] + [False] * (len(parsed) - 1)
    keys = [item.key for item in parsed]
    assert len(set(keys)) == len(keys), "every frame needs a fresh masking key"


@pytest.mark.usefixtures("mask_into")
def test_the_buffer_is_reused_until_released() -> None:
    first = frames.build_frames(
        OP_BINARY, os.urandom(100_000), max_frame_size=None, masked=True, reuse_buffer=True
    )
    assert type(first) is memoryview
    buffer = first.obj
    second_payload = os.urandom(80_000)
    second = frames.build_frames(
        OP_TEXT, second_payload, max_frame_size=None, masked=True, reuse_buffer=True
    )
    assert type(second) is memoryview and second.obj is buffer
    kept = bytes(second)
    frames.release_send_buffer()
    third = frames.build_frames(
        OP_BINARY, os.urandom(90_000), max_frame_size=None, masked=True, reuse_buffer=True
    )
    assert type(third) is memoryview and third.obj is not buffer
    # The view given out before the release still reads what it was built with.
    assert bytes(second) == kept
    assert [item.payload for item in _frames_of(second)] == [second_payload]


def test_each_thread_has_its_own_buffer() -> None:
    built: dict[str, object] = {}

    def build(name: str) -> None:
        view = frames.build_frames(
            OP_BINARY, bytes(70_000), max_frame_size=None, masked=True, reuse_buffer=True
        )
        assert type(view) is memoryview
        built[name] = view.obj

    threads = [threading.Thread(target=build, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    build("main")
    assert len({id(buffer) for buffer in built.values()}) == 3


@pytest.mark.parametrize(
    ("length", "reuse_buffer", "masked"),
    [
        (frames.SEND_BUFFER_MIN - 1, True, True),  # small: a plain bytes object is cheaper
        (frames.SEND_BUFFER_MAX, True, True),  # larger than a thread may keep
        (1 << 20, False, True),
        (1 << 20, True, False),  # server frames are not masked: nothing to build
    ],
)
def test_frames_outside_the_buffer_are_bytes(length: int, reuse_buffer: bool, masked: bool) -> None:
    payload = os.urandom(length)
    data = frames.build_frames(
        OP_BINARY, payload, max_frame_size=None, masked=masked, reuse_buffer=reuse_buffer
    )
    assert type(data) is bytes
    assert [item.payload for item in parse_frames(data, masked=masked)] == [payload]


class TestConnection:
    def test_data_to_write_gives_a_view_and_data_to_send_a_copy(self) -> None:
        client = open_client()
        client.reuse_send_buffer = True
        payload = os.urandom(200_000)
        client.send_binary(payload)
        view = client.data_to_write()
        assert type(view) is memoryview
        assert [item.payload for item in _frames_of(view)] == [payload]
        client.send_binary(payload)
        copy = client.data_to_send()
        assert type(copy) is bytes
        assert [item.payload for item in _frames_of(copy)] == [payload]

    def test_off_by_default(self) -> None:
        client = open_client()
        client.send_binary(os.urandom(200_000))
        assert type(client.data_to_write()) is bytes

    @pytest.mark.parametrize("max_frame_size", [None, 50_000])
    def test_frames_queued_before_the_next_one_keep_their_bytes(
        self, max_frame_size: int | None
    ) -> None:
        client = open_client(max_frame_size=max_frame_size)
        client.reuse_send_buffer = True
        first, second = os.urandom(150_000), os.urandom(120_000)
        client.send_binary(first)
        client.send_text(second, fin=False)  # also built in the buffer
        client.send_continuation(b"", fin=True)
        parsed = _frames_of(client.data_to_write())
        messages: list[bytes] = []
        for item in parsed:
            if item.opcode != OP_CONTINUATION:
                messages.append(b"")
            messages[-1] += item.payload
        assert messages == [first, second]

    def test_compressed_frames_in_the_buffer_decompress(self) -> None:
        options = DeflateOptions(min_size=0)
        client, server = open_pair(client={"deflate_options": options, "max_frame_size": 40_000})
        client.reuse_send_buffer = True
        payload = os.urandom(150_000)  # incompressible: the compressed frames stay large
        client.send_binary(payload)
        data = client.data_to_write()
        assert type(data) is memoryview
        parsed = _frames_of(data)
        assert len(parsed) == 4 and parsed[0].rsv1
        inflated = zlib.decompressobj(-15).decompress(
            b"".join(item.payload for item in parsed) + b"\x00\x00\xff\xff"
        )
        assert inflated == payload
        server.receive_data(data)
        [event] = server.events_received()
        assert event.data == payload  # type: ignore[union-attr]
