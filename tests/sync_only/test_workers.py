"""The pool of threads behind the sync flavor's spawn(): each connection's reader runs in one."""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from typing import Any

import pytest
from helpers import TIMEOUT_UNIT, wait_for_condition, wsclient_threads

from wsclient._sync._backend import TaskHandle, spawn
from wsclient.sync import WebSocketClient


def _reader_threads() -> list[threading.Thread]:
    return [thread for thread in wsclient_threads() if thread.name == "wsclient-reader"]


def test_the_next_connection_reuses_the_reader_thread_of_a_closed_one(test_server: Any) -> None:
    with WebSocketClient() as client:
        first = client.connect(test_server.url, start_keepalive=False)
        (reader,) = _reader_threads()
        first.close()
        # Back in the pool, under a name that says so.
        wait_for_condition(lambda: reader.name == "wsclient-idle", TIMEOUT_UNIT)
        second = client.connect(test_server.url, start_keepalive=False)
        assert _reader_threads() == [reader]
        second.send_text("still works")
        assert second.receive_text(timeout=TIMEOUT_UNIT) == "still works"
        second.close()
    # Nothing to do for the linger time: the pooled thread ends.
    wait_for_condition(lambda: not reader.is_alive(), TIMEOUT_UNIT)


def test_join_waits_for_the_function_not_for_the_thread() -> None:
    release = threading.Event()
    seen: list[bool] = []

    def work() -> None:
        release.wait(TIMEOUT_UNIT)

    handle = spawn(work, name="wsclient-test-work")
    assert not handle.done()
    assert not handle.join(0.01)
    assert not handle.is_current()
    release.set()
    assert handle.join(TIMEOUT_UNIT)
    assert handle.done()

    handles: list[TaskHandle] = []
    started = threading.Event()

    def report_current() -> None:
        started.wait(TIMEOUT_UNIT)
        seen.append(handles[0].is_current())

    current = spawn(report_current, name="wsclient-test-current")
    handles.append(current)
    started.set()
    assert current.join(TIMEOUT_UNIT)
    assert seen == [True]
    assert not current.is_current()


def test_a_failing_function_is_logged_and_its_thread_stays_usable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail() -> None:
        raise RuntimeError("boom")

    threads: list[threading.Thread] = []
    with caplog.at_level(logging.ERROR, logger="wsclient"):
        assert spawn(fail, name="wsclient-test-fail").join(TIMEOUT_UNIT)
        assert spawn(lambda: threads.append(threading.current_thread()), name="x").join(
            TIMEOUT_UNIT
        )
    assert any(record.exc_info and "boom" in str(record.exc_info[1]) for record in caplog.records)
    assert threads and threads[0].is_alive()


def test_concurrent_spawns_each_get_a_thread() -> None:
    barrier = threading.Barrier(5, timeout=TIMEOUT_UNIT)
    handles = [spawn(barrier.wait, name="wsclient-test-barrier") for _ in range(4)]
    # All four wait at the barrier together: they cannot share a thread.
    barrier.wait()
    assert all(handle.join(TIMEOUT_UNIT) for handle in handles)


def test_an_idle_worker_keeps_nothing_of_its_last_function() -> None:
    ran_in: list[threading.Thread] = []

    class Work:
        def run(self) -> None:
            ran_in.append(threading.current_thread())

    work = Work()
    reference = weakref.ref(work)
    assert spawn(work.run, name="wsclient-test-work").join(TIMEOUT_UNIT)
    del work
    # Freed while its thread waits for more work, not only when the thread ends.
    wait_for_condition(lambda: gc.collect() >= 0 and reference() is None, TIMEOUT_UNIT)
    assert ran_in[0].is_alive()
