"""RFC 6455 §5.3: the compiled and the pure-Python masking agree with a naive reference."""

from __future__ import annotations

import os
import shutil

import pytest

from wsclient.protocol import frames


def naive_mask(data: bytes, key: bytes) -> bytes:
    return bytes(byte ^ key[index % 4] for index, byte in enumerate(data))


IMPLEMENTATIONS = [("python", frames._py_mask, frames._py_masked_frame)]
if frames._c_mask is not None and frames._c_masked_frame is not None:
    IMPLEMENTATIONS.append(("c", frames._c_mask, frames._c_masked_frame))


def test_the_compiled_mask_is_built_where_a_compiler_exists() -> None:
    if shutil.which("cc") or shutil.which("gcc"):
        assert frames.MASK_IMPLEMENTATION == "c"
        assert frames.mask is frames._c_mask
    else:
        assert frames.MASK_IMPLEMENTATION == "python"


@pytest.mark.parametrize(("name", "mask", "masked_frame"), IMPLEMENTATIONS)
@pytest.mark.parametrize("length", [*range(0, 70), 127, 128, 129, 1000, 4099, 65536, 65541])
def test_mask_matches_the_reference(
    name: str, mask: object, masked_frame: object, length: int
) -> None:
    assert callable(mask) and callable(masked_frame)
    data = os.urandom(length)
    key = os.urandom(4)
    expected = naive_mask(data, key)
    assert mask(data, key) == expected
    assert mask(memoryview(data), key) == expected
    assert mask(bytearray(data), bytearray(key)) == expected
    header = os.urandom(length % 15)
    frame = masked_frame(header, memoryview(data), key)
    assert type(frame) is bytes
    assert frame == header + expected
    assert masked_frame(bytearray(header), bytearray(data), bytearray(key)) == frame


def test_implementations_agree_on_a_mebibyte() -> None:
    data = os.urandom(1 << 20)
    key = os.urandom(4)
    results = {name: mask(data, key) for name, mask, _ in IMPLEMENTATIONS}
    assert results["python"] == naive_mask(data[:4096], key) + results["python"][4096:]
    assert len(set(results.values())) == 1


def test_compiled_mask_rejects_bad_arguments() -> None:
    if frames._c_mask is None or frames._c_masked_frame is None:
        # Only the pure-Python path exists: it takes its key from the protocol core only.
        assert frames.MASK_IMPLEMENTATION == "python"
        return
    with pytest.raises(ValueError, match="4 bytes"):
        frames._c_mask(b"data", b"abc")
    with pytest.raises(ValueError, match="4 bytes"):
        frames._c_masked_frame(b"\x82\x84", b"data", b"abcde")
    with pytest.raises(TypeError):
        frames._c_masked_frame("header", b"data", b"abcd")


FILLERS = [("python", frames._py_unfilled_bytes)]
if frames._c_unfilled_bytes is not None:
    FILLERS.append(("c", frames._c_unfilled_bytes))


@pytest.mark.parametrize(("name", "unfilled_bytes"), FILLERS)
@pytest.mark.parametrize("size", [2, 3, 4096, 1 << 20])
def test_a_message_filled_in_place_becomes_bytes(
    name: str, unfilled_bytes: object, size: int
) -> None:
    assert callable(unfilled_bytes)
    data, view = unfilled_bytes(size)
    assert len(data) == size and len(view) == size and not view.readonly
    expected = os.urandom(size)
    view[: size // 2] = expected[: size // 2]
    view[size // 2 :] = expected[size // 2 :]
    result = frames.filled_bytes(data, view)
    assert type(result) is bytes and result == expected
    with pytest.raises(ValueError):
        view[0]  # released: nothing can write into the message any more


def test_the_compiled_filler_keeps_its_bytes_alive() -> None:
    if frames._c_unfilled_bytes is None:
        assert frames.MASK_IMPLEMENTATION == "python"
        return
    data, view = frames._c_unfilled_bytes(16)
    del data
    view[:] = b"0123456789abcdef"
    assert bytes(view) == b"0123456789abcdef"
    with pytest.raises(ValueError, match="at least 2"):
        frames._c_unfilled_bytes(1)
