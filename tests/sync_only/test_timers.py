"""The timer thread that runs every sync connection's keepalive."""

from __future__ import annotations

import logging
import threading

import pytest
from helpers import TIMEOUT_UNIT, wait_for_condition, wsclient_threads

from wsclient._sync._backend import call_later


def _timer_threads() -> list[threading.Thread]:
    return [thread for thread in wsclient_threads() if thread.name == "wsclient-keepalive"]


def test_callbacks_run_in_deadline_order_in_one_thread() -> None:
    ran: list[tuple[str, str]] = []

    def record(name: str) -> None:
        ran.append((name, threading.current_thread().name))

    for name, delay in [("third", 0.06), ("first", 0.0), ("second", 0.03)]:
        call_later(delay, lambda name=name: record(name))  # type: ignore[misc]
    wait_for_condition(lambda: len(ran) == 3, TIMEOUT_UNIT)
    assert ran == [(name, "wsclient-keepalive") for name in ("first", "second", "third")]
    assert len(_timer_threads()) == 1


def test_a_cancelled_callback_never_runs() -> None:
    ran: list[str] = []
    cancelled = call_later(0.02, lambda: ran.append("cancelled"))
    call_later(0.05, lambda: ran.append("kept"))
    cancelled.cancel()
    cancelled.cancel()  # a second cancel is harmless
    wait_for_condition(lambda: ran == ["kept"], TIMEOUT_UNIT)
    # A timer that already ran can be cancelled too (a keepalive stopping late does that).
    done = call_later(0.0, lambda: ran.append("done"))
    wait_for_condition(lambda: "done" in ran, TIMEOUT_UNIT)
    done.cancel()
    assert ran == ["kept", "done"]


def test_a_failing_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def fail() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="wsclient"):
        call_later(0.0, fail)
        call_later(0.02, lambda: ran.append("after"))
        wait_for_condition(lambda: ran == ["after"], TIMEOUT_UNIT)
    assert any(record.exc_info and "boom" in str(record.exc_info[1]) for record in caplog.records)


def test_the_thread_ends_when_idle_and_comes_back_when_needed() -> None:
    ran = threading.Event()
    handle = call_later(60.0, ran.set)
    assert len(_timer_threads()) == 1
    # Cancelling the only timer leaves nothing to wait for: the thread ends soon after,
    # instead of sleeping towards the cancelled deadline.
    handle.cancel()
    wait_for_condition(lambda: not _timer_threads(), TIMEOUT_UNIT)
    call_later(0.0, ran.set)
    assert ran.wait(TIMEOUT_UNIT)


def test_many_cancelled_timers_are_purged() -> None:
    from wsclient._sync._backend import _timers

    keep = call_later(60.0, lambda: None)
    for _ in range(1000):
        call_later(60.0, lambda: None).cancel()
    # Cancelled entries may wait in the heap for a while, but never outnumber live ones
    # by much: a connect-and-close loop must not grow it without bound.
    assert len(_timers._heap) <= 2 * 65
    keep.cancel()
    wait_for_condition(lambda: not _timer_threads(), TIMEOUT_UNIT)
