from collections.abc import Callable
from typing import Any

def mask(data: bytes | bytearray | memoryview, key: bytes | bytearray, /) -> bytes: ...
def masked_frame(
    header: bytes | bytearray, data: bytes | bytearray | memoryview, key: bytes | bytearray, /
) -> bytes: ...
def mask_into(
    out: bytearray, offset: int, data: bytes | bytearray | memoryview, key: bytes | bytearray, /
) -> None: ...
def unfilled_bytes(size: int, /) -> tuple[bytes, memoryview]: ...
def configure_messages(
    text_type: type[Any], text_data: Any, binary_type: type[Any], binary_data: Any, /
) -> None: ...
def parse_messages(
    buffer: bytes | bytearray | memoryview,
    position: int,
    limit: int,
    events: list[Any],
    inflate: Callable[[bytes, bool, int], str | bytes] | None = None,
    /,
) -> int: ...
