"""Behaviour only the asyncio flavor has: cancellation and tasks."""

from __future__ import annotations

import asyncio
from typing import Any

from _async._util import eventually
from helpers import TIMEOUT_UNIT

from wsclient import WebSocketClient
from wsclient.testing import WebSocketTestServer, send_then_close


def _wsclient_tasks() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("wsclient-") and not task.done()
    ]


async def test_closing_leaves_no_task_behind(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url, keepalive_interval=0.05)
        # Bytes are read in the loop's callbacks and the keepalive is a timer: an open
        # connection with nothing to wait for runs no task.
        assert _wsclient_tasks() == []
        await eventually(lambda: connection.stats.pings_sent >= 2)
        await connection.send_text("echo")
        assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "echo"
        assert _wsclient_tasks() == []
        await connection.close()
    assert _wsclient_tasks() == []


async def test_a_reader_task_runs_only_while_messages_wait_for_room() -> None:
    with WebSocketTestServer(send_then_close(["one", "two", "three"])) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(server.url, conn_opts={"text_queue_maxsize": 1})
            # The second message finds the buffer full: a reader waits for room with it.
            await eventually(lambda: len(_wsclient_tasks()) == 1)
            assert [await connection.receive_text(timeout=TIMEOUT_UNIT) for _ in range(3)] == [
                "one",
                "two",
                "three",
            ]
            await eventually(lambda: connection.closed)
            assert connection.close_code == 1000
    assert _wsclient_tasks() == []


async def test_cancelled_receive_loses_no_message(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url)
        for attempt in range(20):
            waiting = asyncio.create_task(connection.receive_text())
            await asyncio.sleep(0)
            await connection.send_text(f"m{attempt}")
            await asyncio.sleep(0)
            waiting.cancel()
            try:
                received = await waiting
            except asyncio.CancelledError:
                received = await connection.receive_text(timeout=TIMEOUT_UNIT)
            assert received == f"m{attempt}"


async def test_receive_timeout_inside_wait_for_loses_nothing(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url)
        await connection.send_text("late")
        try:
            await asyncio.wait_for(connection.receive_bytes(), 0.01)
        except TimeoutError:
            pass
        assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "late"
