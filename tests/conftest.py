"""Test configuration shared by every test.

* ``async def`` tests run in a fresh event loop with ``asyncio.run``: no plugin is needed, and
  the generated sync tests are plain functions. Fixtures are synchronous (servers run in
  threads), so an async test receives ready values. Async ``@given`` tests work too.
* Every test gets a pytest-timeout limit (the configured default, or its own
  ``@pytest.mark.timeout``), multiplied by ``WSCLIENT_TEST_TIMEOUT_SCALE``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from helpers import TIMEOUT_UNIT, timeout_scale

DEFAULT_TIMEOUT = 60.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test function to completion in its own event loop."""
    function = pyfuncitem.obj
    hypothesis = getattr(function, "hypothesis", None)
    if hypothesis is not None and inspect.iscoroutinefunction(hypothesis.inner_test):
        # Hypothesis calls the inner test once per example: make each call run a loop.
        hypothesis.inner_test = _run_in_event_loop(hypothesis.inner_test)
        return None
    if not inspect.iscoroutinefunction(function):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(function(**arguments))
    return True


def _run_in_event_loop(
    function: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., None]:
    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(function(*args, **kwargs))

    return run


def _default_timeout(config: pytest.Config) -> float:
    """Return the limit for tests without a marker: ``--timeout``, else the ini value."""
    value = config.getoption("timeout", None)
    if value is None:
        value = config.getini("timeout") or DEFAULT_TIMEOUT
    return float(value)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test a timeout marker scaled by ``WSCLIENT_TEST_TIMEOUT_SCALE``."""
    try:
        scale = timeout_scale()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc
    default = _default_timeout(config)
    for item in items:
        marker = item.get_closest_marker("timeout")
        if marker is None:
            if default > 0:  # 0 disables the limit, as with pytest-timeout itself
                item.add_marker(pytest.mark.timeout(default * scale))
            continue
        args = list(marker.args)
        kwargs = dict(marker.kwargs)
        if args:
            timeout = args.pop(0)
        else:
            timeout = kwargs.pop("timeout", None)
        if timeout is None or float(timeout) <= 0:
            continue
        # Prepended, so that it is the closest marker, which is the one pytest-timeout reads.
        item.add_marker(pytest.mark.timeout(float(timeout) * scale, *args, **kwargs), append=False)


@pytest.fixture
def timeout_unit() -> float:
    """Seconds to wait for something that should happen soon (scaled ``TIMEOUT_UNIT``)."""
    return TIMEOUT_UNIT


# Servers --------------------------------------------------------------------------------------
# Every I/O test talks to real servers on 127.0.0.1: the package's own test server and the
# independent websockets server. Both run in threads, so the fixtures are plain functions.


@pytest.fixture(scope="session")
def tls_ca() -> Any:
    """A throwaway certificate authority (trustme)."""
    import trustme

    return trustme.CA()


@pytest.fixture(scope="session")
def server_ssl_context(tls_ca: Any) -> Any:
    """A server TLS context with a certificate for 127.0.0.1 and localhost."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_ssl_context(tls_ca: Any) -> Any:
    """A client TLS context that trusts the test CA."""
    import ssl

    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    return context


@pytest.fixture
def test_server() -> Any:
    """The package's own server (echo by default), stopped after the test."""
    from wsclient.testing import WebSocketTestServer

    with WebSocketTestServer() as server:
        yield server


@pytest.fixture
def websockets_server() -> Any:
    """The independent websockets server; see ``websockets_peer`` for its paths."""
    from websockets_peer import running_websockets_server

    with running_websockets_server() as url:
        yield url


@pytest.fixture(params=["wsclient", "websockets"])
def echo_url(request: pytest.FixtureRequest) -> Any:
    """An echo server URL, once for each server implementation."""
    if request.param == "wsclient":
        from wsclient.testing import WebSocketTestServer

        with WebSocketTestServer() as server:
            yield server.url
    else:
        from websockets_peer import running_websockets_server

        with running_websockets_server() as url:
            yield url + "echo"
