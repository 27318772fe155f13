"""What the connections of one event loop share: the deadlines of waits, and the loop's life."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from helpers import TIMEOUT_UNIT

from wsclient import WebSocketClient
from wsclient._async import _backend
from wsclient._async._backend import AsyncEvent


async def test_deadlines_expire_in_time_order_whatever_the_order_they_were_set_in() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    finished: list[tuple[str, bool, float]] = []

    async def wait(name: str, event: AsyncEvent, timeout: float) -> None:
        outcome = await event.wait(timeout)
        finished.append((name, outcome, loop.time() - started))

    never = [AsyncEvent() for _ in range(3)]
    answered = AsyncEvent()
    # Each shorter deadline set after a longer one moves the loop's single timer earlier.
    tasks = [
        asyncio.create_task(wait("long", never[0], 0.3)),
        asyncio.create_task(wait("answered", answered, TIMEOUT_UNIT)),
        asyncio.create_task(wait("short", never[1], 0.05)),
        asyncio.create_task(wait("middle", never[2], 0.15)),
    ]
    await asyncio.sleep(0)
    answered.set()
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT_UNIT)
    assert [(name, outcome) for name, outcome, _ in finished] == [
        ("answered", True),
        ("short", False),
        ("middle", False),
        ("long", False),
    ]
    elapsed = {name: seconds for name, _, seconds in finished}
    assert elapsed["short"] >= 0.05
    assert elapsed["middle"] >= 0.15
    assert elapsed["long"] >= 0.3


async def test_deadlines_of_waits_that_ended_early_do_not_pile_up() -> None:
    deadlines = _backend._helpers_of(asyncio.get_running_loop()).deadlines
    for _ in range(1000):
        event = AsyncEvent()
        waiting = asyncio.create_task(event.wait(TIMEOUT_UNIT * 10))
        await asyncio.sleep(0)
        event.set()
        assert await waiting
    # Ended entries are swept once they are more than half of the heap.
    assert len(deadlines._heap) <= 2 * _backend._SWEEP_MIN + 2


async def test_a_cancelled_wait_with_a_timeout_is_cancelled_not_timed_out() -> None:
    event = AsyncEvent()
    waiting = asyncio.create_task(event.wait(TIMEOUT_UNIT))
    await asyncio.sleep(0)
    waiting.cancel()
    try:
        await waiting
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the cancellation was swallowed")
    # Its deadline still runs out harmlessly later; a new wait times out on its own.
    assert await AsyncEvent().wait(0.01) is False


async def _use_a_connection(url: str, loops: list[weakref.ref[asyncio.AbstractEventLoop]]) -> None:
    loops.append(weakref.ref(asyncio.get_running_loop()))
    async with WebSocketClient() as client:
        connection = await client.connect(url)
        await connection.send_text("hello")
        assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "hello"
        await connection.close()


def test_an_event_loop_that_used_wsclient_is_freed_once_dropped(test_server: Any) -> None:
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []
    helpers_before = len(_backend._loop_helpers)
    for _ in range(3):
        asyncio.run(_use_a_connection(test_server.url, loops))
    gc.collect()
    assert [ref() for ref in loops] == [None, None, None]
    assert len(_backend._loop_helpers) == helpers_before


async def test_timers_and_deadlines_share_one_heap_and_run_in_time_order() -> None:
    loop = asyncio.get_running_loop()
    ran: list[str] = []
    done = loop.create_future()

    def record(name: str) -> None:
        ran.append(name)
        if len(ran) == 3:
            done.set_result(None)

    cancelled = _backend.call_later(0.02, lambda: record("cancelled"))
    _backend.call_later(0.08, lambda: record("late"))
    _backend.call_later(0.01, lambda: record("early"))
    # A callback may schedule another: it runs after the heap is settled.
    _backend.call_later(0.03, lambda: _backend.call_later(0.01, lambda: record("chained")))
    cancelled.cancel()
    await asyncio.wait_for(done, TIMEOUT_UNIT)
    assert ran == ["early", "chained", "late"]


async def test_a_timer_callback_that_raises_is_reported_and_the_others_still_run() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        after = loop.create_future()

        def fail() -> None:
            raise RuntimeError("boom")

        _backend.call_later(0, fail)
        _backend.call_later(0, lambda: after.set_result(None))
        await asyncio.wait_for(after, TIMEOUT_UNIT)
    finally:
        loop.set_exception_handler(None)
    assert len(reported) == 1
    assert isinstance(reported[0]["exception"], RuntimeError)


async def test_a_connect_timeout_is_a_timeout_and_leaves_the_task_uncancelled() -> None:
    task = asyncio.current_task()
    assert task is not None
    with_timeout = _backend._cancel_after(0.02, asyncio.sleep(TIMEOUT_UNIT))
    started = asyncio.get_running_loop().time()
    try:
        await with_timeout
    except TimeoutError:
        pass
    else:
        raise AssertionError("no timeout")
    assert asyncio.get_running_loop().time() - started < TIMEOUT_UNIT
    assert task.cancelling() == 0
    assert await _backend._cancel_after(TIMEOUT_UNIT, asyncio.sleep(0, "result")) == "result"


async def test_a_cancellation_from_outside_is_not_turned_into_a_timeout() -> None:
    outcome: list[str] = []

    async def guarded() -> None:
        try:
            await _backend._cancel_after(TIMEOUT_UNIT, asyncio.sleep(TIMEOUT_UNIT))
        except TimeoutError:
            outcome.append("timeout")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    task = asyncio.create_task(guarded())
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert outcome == ["cancelled"]


async def test_an_awaitable_that_swallows_the_timeout_returns_and_the_task_is_uncancelled() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(TIMEOUT_UNIT)
        except asyncio.CancelledError:
            return "finished anyway"
        return "slept"

    task = asyncio.current_task()
    assert task is not None
    assert await _backend._cancel_after(0.01, stubborn()) == "finished anyway"
    assert task.cancelling() == 0


async def test_a_timer_cancelled_by_another_of_the_same_batch_does_not_run() -> None:
    loop = asyncio.get_running_loop()
    ran: list[str] = []
    after = loop.create_future()
    # All due at once: they run in one batch, in the order they were set.
    handles: dict[str, _backend.TimerHandle] = {}
    handles["first"] = _backend.call_later(
        0, lambda: (ran.append("first"), handles["second"].cancel())
    )
    handles["second"] = _backend.call_later(0, lambda: ran.append("second"))
    _backend.call_later(0, lambda: after.set_result(None))
    await asyncio.wait_for(after, TIMEOUT_UNIT)
    assert ran == ["first"]
    deadlines = _backend._helpers_of(loop).deadlines
    assert deadlines._ended == sum(1 for entry in deadlines._heap if entry[2] is None)
