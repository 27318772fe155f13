"""Helpers shared by the tests of both flavors (import them as ``from helpers import ...``).

Deadlines in tests are multiples of ``TIMEOUT_UNIT`` so that one environment variable,
``WSCLIENT_TEST_TIMEOUT_SCALE`` (a positive float, default 1), stretches every wait and every
pytest-timeout limit on a slow machine. Tests never sleep for a fixed time to "let things
happen": they wait for a condition with a deadline.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = [
    "TIMEOUT_SCALE",
    "TIMEOUT_SCALE_VARIABLE",
    "TIMEOUT_UNIT",
    "timeout_scale",
    "wait_for_condition",
    "wsclient_threads",
]

T = TypeVar("T")

TIMEOUT_SCALE_VARIABLE = "WSCLIENT_TEST_TIMEOUT_SCALE"


def timeout_scale() -> float:
    """Return the factor from ``WSCLIENT_TEST_TIMEOUT_SCALE`` (1.0 when unset or empty).

    Raises:
        ValueError: The variable is set to something that is not a positive finite number.
    """
    raw = os.environ.get(TIMEOUT_SCALE_VARIABLE, "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{TIMEOUT_SCALE_VARIABLE} must be a positive number, not {raw!r}")
    return value


TIMEOUT_SCALE = timeout_scale()

#: Seconds a test may wait for something that should happen "soon" (a message to arrive, a
#: thread to stop). Generous on purpose: it bounds a failure, a passing test never waits it out.
TIMEOUT_UNIT = 5.0 * TIMEOUT_SCALE


def wait_for_condition(
    predicate: Callable[[], T],
    timeout: float | None = None,
    *,
    interval: float = 0.005,
    message: str | None = None,
) -> T:
    """Poll ``predicate`` until it returns a true value, and return that value.

    Args:
        predicate: Called repeatedly, from the calling thread, until its result is true.
        timeout: Seconds before giving up; defaults to ``TIMEOUT_UNIT``.
        interval: Longest pause between two calls, in seconds.
        message: Describes the condition in the failure message.

    Raises:
        AssertionError: The deadline passed before ``predicate`` returned a true value.
    """
    if timeout is None:
        timeout = TIMEOUT_UNIT
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"condition not met within {timeout:.2f}s: {what}")
        time.sleep(min(interval, remaining))


def wsclient_threads() -> list[threading.Thread]:
    """Return the live threads of wsclient connections (not of the built-in test server)."""
    return [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith("wsclient-") and not thread.name.startswith("wsclient-testserver")
    ]


def default_sigint() -> None:
    """``preexec_fn`` for a child that a test interrupts with SIGINT.

    A child inherits an ignored SIGINT (a test run started in the background by a
    non-interactive shell ignores it), and Python then never raises KeyboardInterrupt.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
