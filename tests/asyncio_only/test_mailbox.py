"""The asyncio mailbox hands an item straight to a blocked get: nothing may be lost or reordered.

A get blocked on empty boxes receives the next item of its kinds through its wake-up
instead of through a box. These tests pin the cases where that item is still in flight:
the get cancelled before it runs, the mailbox closed meanwhile, and wait_idle asked meanwhile.
"""

from __future__ import annotations

import asyncio

import pytest
from helpers import TIMEOUT_UNIT

from wsclient._async._backend import AsyncMailbox, MailboxClosed
from wsclient._shared import ANY_MESSAGE, KIND_BINARY, KIND_TEXT, TEXT_ONLY


async def _blocked_get(
    mailbox: AsyncMailbox[str], kinds: tuple[int, ...], timeout: float | None
) -> asyncio.Task[tuple[int, str]]:
    task = asyncio.create_task(mailbox.get(kinds, timeout))
    # A get that blocks with nothing to take is what wait_idle waits for.
    assert await mailbox.wait_idle(TIMEOUT_UNIT)
    assert not task.done()
    return task


async def test_a_blocked_get_receives_the_item_put_for_it() -> None:
    mailbox: AsyncMailbox[str] = AsyncMailbox([0, 0])
    getter = await _blocked_get(mailbox, TEXT_ONLY, None)
    assert mailbox.put_nowait(KIND_TEXT, "first")
    assert mailbox.put_nowait(KIND_TEXT, "second")
    assert await asyncio.wait_for(getter, TIMEOUT_UNIT) == (KIND_TEXT, "first")
    assert mailbox.get_nowait(TEXT_ONLY) == (KIND_TEXT, "second")
    assert mailbox.get_nowait(ANY_MESSAGE) is None


async def test_an_item_of_another_kind_waits_in_its_box() -> None:
    mailbox: AsyncMailbox[str] = AsyncMailbox([0, 0])
    getter = await _blocked_get(mailbox, TEXT_ONLY, None)
    assert mailbox.put_nowait(KIND_BINARY, "binary")
    assert not getter.done()
    assert mailbox.put_nowait(KIND_TEXT, "text")
    assert await asyncio.wait_for(getter, TIMEOUT_UNIT) == (KIND_TEXT, "text")
    assert mailbox.get_nowait(ANY_MESSAGE) == (KIND_BINARY, "binary")


@pytest.mark.parametrize("timeout", [None, 10 * TIMEOUT_UNIT], ids=["no-timeout", "timeout"])
async def test_a_get_cancelled_before_it_takes_its_item_puts_it_back_in_arrival_order(
    timeout: float | None,
) -> None:
    mailbox: AsyncMailbox[str] = AsyncMailbox([0, 0])
    assert mailbox.put_nowait(KIND_BINARY, "binary 1")
    getter = await _blocked_get(mailbox, TEXT_ONLY, timeout)
    assert mailbox.put_nowait(KIND_TEXT, "text 1")  # handed to the getter
    assert mailbox.put_nowait(KIND_BINARY, "binary 2")
    assert mailbox.put_nowait(KIND_TEXT, "text 2")
    # Cancelled after the hand-over, before the getter ran: the item must not be lost.
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(getter, TIMEOUT_UNIT)
    taken = []
    while (found := mailbox.get_nowait(ANY_MESSAGE)) is not None:
        taken.append(found[1])
    assert taken == ["binary 1", "text 1", "binary 2", "text 2"]


async def test_a_get_cancelled_before_it_takes_its_item_wakes_another_get() -> None:
    mailbox: AsyncMailbox[str] = AsyncMailbox([0, 0])
    first = await _blocked_get(mailbox, TEXT_ONLY, None)
    second = asyncio.create_task(mailbox.get(ANY_MESSAGE, None))
    await asyncio.sleep(0)
    assert mailbox.put_nowait(KIND_TEXT, "text")  # handed to the first get, blocked first
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first, TIMEOUT_UNIT)
    assert await asyncio.wait_for(second, TIMEOUT_UNIT) == (KIND_TEXT, "text")


async def test_an_item_handed_over_before_close_is_still_delivered() -> None:
    mailbox: AsyncMailbox[str] = AsyncMailbox([0, 0])
    getter = await _blocked_get(mailbox, ANY_MESSAGE, None)
    assert mailbox.put_nowait(KIND_BINARY, "last")
    mailbox.close()
    assert await asyncio.wait_for(getter, TIMEOUT_UNIT) == (KIND_BINARY, "last")
    with pytest.raises(MailboxClosed):
        await asyncio.wait_for(mailbox.get(ANY_MESSAGE, None), TIMEOUT_UNIT)


async def test_wait_idle_does_not_count_a_get_whose_item_is_on_its_way() -> None:
    # The close after a protocol error waits for the application to have taken every
    # message: an item handed over but not yet returned by get is not taken.
    mailbox: AsyncMailbox[str] = AsyncMailbox([0, 0])
    getter = await _blocked_get(mailbox, TEXT_ONLY, None)
    assert mailbox.put_nowait(KIND_TEXT, "text")
    assert not await mailbox.wait_idle(0)
    assert await asyncio.wait_for(getter, TIMEOUT_UNIT) == (KIND_TEXT, "text")
    again = await _blocked_get(mailbox, TEXT_ONLY, None)
    again.cancel()
    with pytest.raises(asyncio.CancelledError):
        await again


async def test_close_wakes_a_blocked_get_with_mailbox_closed() -> None:
    mailbox: AsyncMailbox[str] = AsyncMailbox([0, 0])
    getter = await _blocked_get(mailbox, TEXT_ONLY, None)
    mailbox.close()
    with pytest.raises(MailboxClosed):
        await asyncio.wait_for(getter, TIMEOUT_UNIT)


async def test_a_blocked_get_takes_the_first_of_a_run_put_at_once() -> None:
    # put_many_nowait fills the box rather than handing over: it must wake the get.
    mailbox: AsyncMailbox[str] = AsyncMailbox([0, 0])
    getter = await _blocked_get(mailbox, ANY_MESSAGE, None)
    assert mailbox.put_many_nowait(KIND_BINARY, ["one", "two"]) == 2
    assert await asyncio.wait_for(getter, TIMEOUT_UNIT) == (KIND_BINARY, "one")
    assert mailbox.get_nowait(ANY_MESSAGE) == (KIND_BINARY, "two")


async def test_a_take_wakes_a_put_waiting_for_room_and_not_a_get_of_the_other_kind() -> None:
    # Blocked gets and puts waiting for room are woken by different events: a take makes
    # room for the put, and the get of the other kind goes on waiting until cancelled.
    mailbox: AsyncMailbox[str] = AsyncMailbox([1, 1])
    assert mailbox.put_nowait(KIND_TEXT, "held")
    getter = await _blocked_get(mailbox, (KIND_BINARY,), None)
    putter = asyncio.create_task(mailbox.put(KIND_TEXT, "waits for room"))
    await asyncio.sleep(0)
    assert not putter.done()
    assert mailbox.take_nowait(KIND_TEXT) == "held"
    assert await asyncio.wait_for(putter, TIMEOUT_UNIT)
    assert not getter.done()
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(getter, TIMEOUT_UNIT)
    assert mailbox.take_nowait(KIND_TEXT) == "waits for room"
