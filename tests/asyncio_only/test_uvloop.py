"""The async flavor on uvloop's event loop, whose transports are not asyncio's classes."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from _async._util import eventually
from helpers import TIMEOUT_UNIT

from wsclient import WebSocketClient
from wsclient.testing import WebSocketTestServer

uvloop = pytest.importorskip("uvloop")


def run_on_uvloop(main: Callable[[], Awaitable[None]]) -> None:
    uvloop.run(main())


def test_messages_both_ways_and_a_clean_close(test_server: Any) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB: read into place, written in batches

    async def main() -> None:
        async with WebSocketClient() as client:
            connection = await client.connect(test_server.url, max_size=None)
            # Back to back: the writes after the first of a loop iteration leave together.
            for index in range(100):
                await connection.send_text(f"m{index}")
            await connection.send_bytes(big)
            received = [await connection.receive_text(timeout=TIMEOUT_UNIT) for _ in range(100)]
            assert received == [f"m{index}" for index in range(100)]
            assert await connection.receive_bytes(timeout=TIMEOUT_UNIT) == big
            await connection.close()
            assert connection.closed_cleanly

    run_on_uvloop(main)


def test_tls_and_keepalive(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    async def main() -> None:
        with WebSocketTestServer(ssl_context=server_ssl_context) as server:
            async with WebSocketClient() as client:
                connection = await client.connect(
                    server.url, ssl=client_ssl_context, keepalive_interval=0.05
                )
                await connection.send_text("over TLS")
                assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "over TLS"
                await eventually(lambda: connection.stats.pongs_received >= 2)
                await connection.close()
                assert connection.closed_cleanly

    run_on_uvloop(main)
