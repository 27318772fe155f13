"""Helpers for the I/O tests of both flavors (this file is generated into tests/_sync)."""

from __future__ import annotations

from collections.abc import Callable

from helpers import TIMEOUT_UNIT

from wsclient._async._backend import monotonic, sleep
from wsclient.testing import ServerSession


def push_then_wait(count: int) -> Callable[[ServerSession], None]:
    """A test-server handler that sends texts m0 .. m{count-1}, then keeps the connection."""

    def handler(session: ServerSession) -> None:
        for index in range(count):
            session.send_text(f"m{index}")
        session.closed.wait(60)

    return handler


async def eventually(predicate: Callable[[], object], timeout: float = TIMEOUT_UNIT) -> None:
    """Wait until ``predicate()`` is true, failing the test after ``timeout`` seconds."""
    deadline = monotonic() + timeout
    while not predicate():
        if monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await sleep(0.005)
