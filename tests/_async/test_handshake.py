"""Opening the connection: TCP, TLS, the upgrade handshake and its options."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import pytest
from helpers import TIMEOUT_UNIT

from wsclient._async.client import WebSocketClient
from wsclient.exceptions import (
    ConnectError,
    ConnectTimeout,
    HandshakeError,
    InvalidStatus,
    NoProtocolHandler,
)
from wsclient.handlers import JsonHandler, MsgpackHandler
from wsclient.testing import WebSocketTestServer

from ._util import eventually


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_unknown_conn_opts_key_is_a_type_error_before_any_io() -> None:
    async with WebSocketClient() as client:
        with pytest.raises(TypeError, match="valid keys: text_queue_maxsize"):
            # Nothing listens there: a TypeError (not ConnectError) proves no I/O happened.
            await client.connect(
                f"ws://127.0.0.1:{_unused_port()}/", conn_opts={"text_queue_size": 3}
            )


async def test_invalid_header_is_a_value_error_before_any_io() -> None:
    async with WebSocketClient() as client:
        with pytest.raises(ValueError, match="CR, LF or NUL"):
            await client.connect(
                f"ws://127.0.0.1:{_unused_port()}/", headers={"X-Evil": "a\r\nInjected: 1"}
            )


async def test_refused_tcp_connection_is_a_connect_error() -> None:
    async with WebSocketClient() as client:
        with pytest.raises(ConnectError) as caught:
            await client.connect(f"ws://127.0.0.1:{_unused_port()}/")
        assert isinstance(caught.value, ConnectionError)
        assert isinstance(caught.value.__cause__, OSError)


async def test_refused_upgrade_exposes_status_headers_and_body() -> None:
    with WebSocketTestServer(reject=(403, "Forbidden", b"go away")) as server:
        async with WebSocketClient() as client:
            with pytest.raises(InvalidStatus) as caught:
                await client.connect(server.url)
    error = caught.value
    assert isinstance(error, HandshakeError)
    assert isinstance(error, ConnectionError)
    assert error.status == 403
    assert error.reason == "Forbidden"
    assert error.body == b"go away"
    assert error.header("content-length") == "7"


@pytest.mark.parametrize(
    ("scheme", "waiting_for"),
    [
        # The kernel accepts TCP; no upgrade response ever comes.
        ("ws", "timed out waiting for the handshake response"),
        # Nor does a TLS handshake: the timeout covers TCP and TLS, not only the upgrade.
        ("wss", "timed out connecting to 127.0.0.1"),
    ],
)
async def test_silent_server_hits_open_timeout(
    scheme: str, waiting_for: str, client_ssl_context: Any
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        async with WebSocketClient() as client:
            with pytest.raises(ConnectTimeout) as caught:
                await client.connect(
                    f"{scheme}://127.0.0.1:{port}/",
                    ssl=client_ssl_context if scheme == "wss" else None,
                    open_timeout=0.2,
                )
        assert isinstance(caught.value, TimeoutError)
        assert waiting_for in str(caught.value)


async def test_request_carries_defaults_and_user_headers(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(
            test_server.url + "path?q=1",
            headers={"X-Token": "abc", "user-agent": "custom/1.0"},
            origin="http://example.com",
        )
        await connection.close()
    request = test_server.requests[0]
    assert request.path == "/path?q=1"
    assert request.headers.get("X-Token") == "abc"
    assert request.headers.get_all("User-Agent") == ["custom/1.0"]
    assert request.headers.get("Origin") == "http://example.com"
    assert request.headers.get("Host") == f"127.0.0.1:{test_server.port}"


async def test_default_user_agent_and_its_removal(test_server: Any) -> None:
    async with WebSocketClient() as client:
        await (await client.connect(test_server.url)).close()
        await (await client.connect(test_server.url, user_agent=None)).close()
    first, second = test_server.requests
    assert (first.headers.get("User-Agent") or "").startswith("wsclient/")
    assert "User-Agent" not in second.headers


async def test_subprotocol_negotiation(websockets_server: str) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(
            websockets_server + "subprotocol", subprotocols=["unknown", "chat"]
        )
        assert connection.subprotocol == "chat"
        assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "chat"


async def test_protocol_handler_is_offered_and_used() -> None:
    with WebSocketTestServer(subprotocols=["json"]) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(
                server.url, conn_opts={"protocol_handler": JsonHandler()}
            )
            assert connection.subprotocol == "json"
            await connection.send_protocol({"x": [1, "ü"]})
            assert await connection.receive_protocol(timeout=TIMEOUT_UNIT) == {"x": [1, "ü"]}


async def test_protocol_handler_not_selected_fails_the_handshake(test_server: Any) -> None:
    async with WebSocketClient() as client:
        with pytest.raises(HandshakeError, match="did not select subprotocol 'json'"):
            await client.connect(test_server.url, conn_opts={"protocol_handler": JsonHandler()})
    (session,) = test_server.wait_for_sessions(1, timeout=TIMEOUT_UNIT)
    await eventually(lambda: session.close_code_received is not None)
    assert session.close_code_received == 1008


async def test_protocol_calls_without_handler_fail_at_once(test_server: Any) -> None:
    async with WebSocketClient() as client:
        connection = await client.connect(test_server.url)
        with pytest.raises(NoProtocolHandler):
            await connection.send_protocol({"x": 1})
        with pytest.raises(NoProtocolHandler):
            await connection.receive_protocol()


async def test_tls_with_trusted_ca(server_ssl_context: Any, client_ssl_context: Any) -> None:
    with WebSocketTestServer(ssl_context=server_ssl_context) as server:
        assert server.url.startswith("wss://")
        async with WebSocketClient() as client:
            connection = await client.connect(server.url, ssl=client_ssl_context)
            await connection.send_text("secure")
            assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "secure"


async def test_tls_unknown_ca_fails_with_verify_and_passes_without(
    server_ssl_context: Any,
) -> None:
    with WebSocketTestServer(ssl_context=server_ssl_context) as server:
        async with WebSocketClient() as client:
            with pytest.raises(ConnectError) as caught:
                await client.connect(server.url)
            assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
            connection = await client.connect(server.url, verify=False)
            await connection.send_text("unverified")
            assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "unverified"


async def test_tls_wrong_host_fails_with_verify_and_passes_without(
    tls_ca: Any, client_ssl_context: Any
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("other.example").configure_cert(context)
    with WebSocketTestServer(ssl_context=context) as server:
        async with WebSocketClient() as client:
            with pytest.raises(ConnectError) as caught:
                await client.connect(server.url, ssl=client_ssl_context)
            assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
            connection = await client.connect(server.url, verify=False)
            await connection.close()
            assert connection.close_code == 1000


async def test_ssl_context_with_ws_url_is_rejected(client_ssl_context: Any) -> None:
    async with WebSocketClient() as client:
        with pytest.raises(ValueError, match="wss://"):
            await client.connect(f"ws://127.0.0.1:{_unused_port()}/", ssl=client_ssl_context)


async def test_msgpack_handler() -> None:
    msgpack_handler = MsgpackHandler()
    with WebSocketTestServer(subprotocols=["msgpack"]) as server:
        async with WebSocketClient() as client:
            connection = await client.connect(
                server.url, conn_opts={"protocol_handler": msgpack_handler}
            )
            assert connection.subprotocol == "msgpack"
            await connection.send_protocol({"k": [1, b"\x00", "ü"]})
            assert await connection.receive_protocol(timeout=TIMEOUT_UNIT) == {
                "k": [1, b"\x00", "ü"]
            }


async def test_client_context_manager_closes_its_connections(test_server: Any) -> None:
    async with WebSocketClient() as client:
        first = await client.connect(test_server.url)
        second = await client.connect(test_server.url)
    assert first.closed and second.closed
    assert (first.close_code, second.close_code) == (1000, 1000)


async def test_connection_context_manager_closes(test_server: Any) -> None:
    async with WebSocketClient() as client:
        async with await client.connect(test_server.url) as connection:
            await connection.send_text("inside")
            assert await connection.receive_text(timeout=TIMEOUT_UNIT) == "inside"
        assert connection.closed
        assert connection.close_code == 1000
