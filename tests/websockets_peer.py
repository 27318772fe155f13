"""The independent peer: a websockets (sync) server with a few scripted paths.

Paths: ``/echo``; ``/close/CODE`` closes at once with CODE and reason "bye";
``/fragments`` sends one text message in three fragments, then echoes;
``/subprotocol`` echoes and reports the selected subprotocol as its first message;
``/frames`` answers each message with the payload sizes of its frames, as JSON.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

SUBPROTOCOLS = ("chat", "json")


def _handler(connection: ServerConnection) -> None:
    assert connection.request is not None
    path = connection.request.path
    if path.startswith("/close/"):
        connection.close(int(path.rsplit("/", 1)[1]), "bye")
        return
    if path == "/frames":
        while True:
            try:
                sizes = [len(frame) for frame in connection.recv_streaming(decode=False)]
            except ConnectionClosed:
                return
            connection.send(json.dumps(sizes))
    if path == "/fragments":
        connection.send(["frag", "men", "ted"])
    elif path == "/subprotocol":
        connection.send(str(connection.subprotocol))
    for message in connection:
        connection.send(message)


def _select_subprotocol(connection: ServerConnection, offered: Sequence[str]) -> str | None:
    # Unlike websockets' default, accept clients that offer no known subprotocol.
    for protocol in offered:
        if protocol in SUBPROTOCOLS:
            return protocol
    return None


@contextmanager
def running_websockets_server(**kwargs: Any) -> Iterator[str]:
    """Serve on a free port of 127.0.0.1 and yield ``ws://127.0.0.1:PORT/``."""
    kwargs.setdefault("select_subprotocol", _select_subprotocol)
    kwargs.setdefault("max_size", 16 * 1024 * 1024)
    server = serve(_handler, "127.0.0.1", 0, **kwargs)
    port = server.socket.getsockname()[1]
    thread = threading.Thread(target=server.serve_forever, name="websockets-server")
    thread.start()
    try:
        yield f"{'wss' if kwargs.get('ssl') else 'ws'}://127.0.0.1:{port}/"
    finally:
        server.shutdown()
        thread.join(10)
