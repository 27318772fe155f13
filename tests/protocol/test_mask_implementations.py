"""RFC 6455 §5.3: the compiled and the pure-Python masking agree with a naive reference."""

from __future__ import annotations

import os
import shutil

import pytest

from wsclient.protocol import frames


def naive_mask(data: bytes, key: bytes) -> bytes:
    return bytes(byte ^ key[index % 4] for index, byte in enumerate(data))


IMPLEMENTATIONS = [("python", frames._py_mask, frames._py_mask_into)]
if frames._c_mask is not None and frames._c_mask_into is not None:
    IMPLEMENTATIONS.append(("c", frames._c_mask, frames._c_mask_into))


def test_the_compiled_mask_is_built_where_a_compiler_exists() -> None:
    if shutil.which("cc") or shutil.which("gcc"):
        assert frames.MASK_IMPLEMENTATION == "c"
        assert frames.mask is frames._c_mask
    else:
        assert frames.MASK_IMPLEMENTATION == "python"


@pytest.mark.parametrize(("name", "mask", "mask_into"), IMPLEMENTATIONS)
@pytest.mark.parametrize("length", [*range(0, 70), 127, 128, 129, 1000, 4099, 65536, 65541])
def test_mask_matches_the_reference(
    name: str, mask: object, mask_into: object, length: int
) -> None:
    assert callable(mask) and callable(mask_into)
    data = os.urandom(length)
    key = os.urandom(4)
    expected = naive_mask(data, key)
    assert mask(data, key) == expected
    assert mask(memoryview(data), key) == expected
    assert mask(bytearray(data), bytearray(key)) == expected
    out = bytearray(b"\xee" * (length + 7))
    mask_into(out, 3, memoryview(data), key)
    assert out[:3] == b"\xee" * 3 and out[-4:] == b"\xee" * 4
    assert bytes(out[3 : 3 + length]) == expected


def test_implementations_agree_on_a_mebibyte() -> None:
    data = os.urandom(1 << 20)
    key = os.urandom(4)
    results = {name: mask(data, key) for name, mask, _ in IMPLEMENTATIONS}
    assert results["python"] == naive_mask(data[:4096], key) + results["python"][4096:]
    assert len(set(results.values())) == 1


def test_compiled_mask_rejects_bad_arguments() -> None:
    if frames._c_mask is None or frames._c_mask_into is None:
        # Only the pure-Python path exists: it takes its key from the protocol core only.
        assert frames.MASK_IMPLEMENTATION == "python"
        return
    with pytest.raises(ValueError, match="4 bytes"):
        frames._c_mask(b"data", b"abc")
    with pytest.raises(ValueError, match="too small"):
        frames._c_mask_into(bytearray(3), 0, b"data", b"abcd")
    with pytest.raises(ValueError, match="too small"):
        frames._c_mask_into(bytearray(10), -1, b"data", b"abcd")
