"""The benchmark peer: one process serving every endpoint on 127.0.0.1.

- WebSocket (picows, Cython): ``/echo`` echoes every message; ``/firehose?n=N&size=S`` pushes
  N binary messages of S bytes once the client's first message arrives (respecting flow
  control); ``/deflate`` echoes with permessage-deflate (RFC 7692), written here with zlib
  on top of picows' frame API, because picows has no compression of its own.
- Raw TCP (asyncio ``BufferedProtocol``): an echo port and a firehose port (the client sends
  ``b"N S\\n"`` and gets N * S bytes back), for the no-framing baselines.

It prints one JSON line with the ports, its pid and its event loop, then serves until stdin
closes. It runs on uvloop when installed (the peer must not be the bottleneck).

Usage: ``python benchmarks/server.py [--cpu N] [--loop auto|uvloop|asyncio]``
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import zlib
from urllib.parse import parse_qs, urlsplit

from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONTINUATION = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
_MAX_FRAME = 64 * 1024 * 1024
_LOOP_NAME = "asyncio"


def _answer_close(transport: WSTransport, frame: WSFrame) -> None:
    transport.send_close(frame.get_close_code(), frame.get_close_message())
    transport.disconnect()


class EchoListener(WSListener):
    """Echoes every message back with its type; reassembles fragmented messages."""

    def __init__(self) -> None:
        self.parts: list[bytes] | None = None
        self.opcode = _BINARY

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == _CLOSE:
            _answer_close(transport, frame)
        elif msg_type == _TEXT or msg_type == _BINARY:
            if frame.fin:
                transport.send(msg_type, frame.get_payload_as_memoryview())
            else:
                self.opcode = msg_type
                self.parts = [frame.get_payload_as_bytes()]
        elif msg_type == _CONTINUATION and self.parts is not None:
            self.parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                transport.send(self.opcode, b"".join(self.parts))
                self.parts = None


class FirehoseListener(WSListener):
    """Pushes ``count`` binary messages of ``size`` bytes after the first client message."""

    def __init__(self, count: int, size: int) -> None:
        self.remaining = count
        self.payload = bytes(size)
        self.started = False
        self.paused = False
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == _CLOSE:
            _answer_close(transport, frame)
        elif not self.started:
            self.started = True
            self._push()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._push()

    def _push(self) -> None:
        transport = self.transport
        assert transport is not None
        payload = self.payload
        send = transport.send
        while self.remaining and not self.paused:
            self.remaining -= 1
            send(_BINARY, payload)


def _negotiate_deflate(offers: str | None) -> tuple[str, int, bool] | None:
    """Accept the first permessage-deflate offer; return (response, server_bits, reset)."""
    if not offers:
        return None
    for offer in offers.split(","):
        params = [part.strip() for part in offer.split(";")]
        if params[0].lower() != "permessage-deflate":
            continue
        response = ["permessage-deflate"]
        server_bits = 15
        reset = False
        for param in params[1:]:
            name, _, value = param.partition("=")
            name = name.strip().lower()
            value = value.strip().strip('"')
            if name == "server_no_context_takeover":
                reset = True
                response.append(name)
            elif name == "server_max_window_bits" and value:
                server_bits = int(value)
                response.append(f"{name}={value}")
            elif name == "client_max_window_bits" and value:
                response.append(f"{name}={value}")
            elif name == "client_no_context_takeover":
                response.append(name)
        return "; ".join(response), server_bits, reset
    return None


class DeflateEchoListener(WSListener):
    """Echoes with permessage-deflate: decompress what arrives, compress what goes out."""

    def __init__(self, server_bits: int, reset: bool) -> None:
        # zlib cannot produce a raw stream with an 8-bit window; 9 is what everyone uses.
        self.server_bits = max(server_bits, 9)
        self.reset = reset
        self.decompressor = zlib.decompressobj(wbits=-15)
        self.compressor = self._new_compressor()
        self.parts: list[bytes] | None = None
        self.opcode = _BINARY
        self.compressed = False

    def _new_compressor(self) -> zlib._Compress:
        return zlib.compressobj(6, zlib.DEFLATED, -self.server_bits, 8)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == _CLOSE:
            _answer_close(transport, frame)
            return
        if msg_type == _TEXT or msg_type == _BINARY:
            self.opcode = msg_type
            self.compressed = frame.rsv1
            if frame.fin:
                self._echo(transport, frame.get_payload_as_bytes())
            else:
                self.parts = [frame.get_payload_as_bytes()]
        elif msg_type == _CONTINUATION and self.parts is not None:
            self.parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                payload = b"".join(self.parts)
                self.parts = None
                self._echo(transport, payload)

    def _echo(self, transport: WSTransport, payload: bytes) -> None:
        if not self.compressed:
            transport.send(self.opcode, payload)
            return
        data = self.decompressor.decompress(payload + _DEFLATE_TAIL)
        if self.reset:
            self.compressor = self._new_compressor()
        out = self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        transport.send(self.opcode, out[:-4], rsv1=True)


def _listener_factory(
    request: WSUpgradeRequest,
) -> WSListener | WSUpgradeResponseWithListener | None:
    target = urlsplit(request.path.decode("ascii"))
    if target.path in ("/", "/echo"):
        return EchoListener()
    if target.path == "/firehose":
        query = parse_qs(target.query)
        return FirehoseListener(int(query["n"][0]), int(query["size"][0]))
    if target.path == "/deflate":
        negotiated = _negotiate_deflate(request.headers.get("Sec-WebSocket-Extensions"))
        if negotiated is None:
            return EchoListener()
        header, server_bits, reset = negotiated
        response = WSUpgradeResponse.create_101_response(
            extra_headers={"Sec-WebSocket-Extensions": header}
        )
        return WSUpgradeResponseWithListener(response, DeflateEchoListener(server_bits, reset))
    return None


# Raw TCP --------------------------------------------------------------------------------------


# asyncio and uvloop call get_buffer, recv_into and buffer_updated back to back, so every
# raw connection can read into one shared buffer (an idle connection then costs no buffer).
_RAW_BUFFER = memoryview(bytearray(256 * 1024))


class RawEcho(asyncio.BufferedProtocol):
    """Writes back whatever it reads."""

    def __init__(self) -> None:
        self.view = _RAW_BUFFER
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        assert self.transport is not None
        self.transport.write(bytes(self.view[:nbytes]))


class RawFirehose(asyncio.BufferedProtocol):
    """Reads ``b"N S\\n"`` then writes N * S zero bytes, in 256 KiB writes, with flow control."""

    def __init__(self) -> None:
        self.view = memoryview(bytearray(4096))
        self.request = b""
        self.remaining = 0
        self.paused = False
        self.chunk = bytes(256 * 1024)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.request += bytes(self.view[:nbytes])
        if b"\n" in self.request:
            count, size = self.request.split(b"\n", 1)[0].split()
            self.request = b""
            self.remaining = int(count) * int(size)
            self._push()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._push()

    def _push(self) -> None:
        assert self.transport is not None
        while self.remaining and not self.paused:
            size = min(self.remaining, len(self.chunk))
            self.remaining -= size
            self.transport.write(self.chunk if size == len(self.chunk) else self.chunk[:size])


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    ws_server = await ws_create_server(
        _listener_factory, "127.0.0.1", 0, max_frame_size=_MAX_FRAME, backlog=4096
    )
    raw_server = await loop.create_server(RawEcho, "127.0.0.1", 0, backlog=4096)
    firehose_server = await loop.create_server(RawFirehose, "127.0.0.1", 0, backlog=4096)
    ports = {
        "pid": os.getpid(),
        "loop": _LOOP_NAME,
        "ws": ws_server.sockets[0].getsockname()[1],
        "raw": raw_server.sockets[0].getsockname()[1],
        "raw_firehose": firehose_server.sockets[0].getsockname()[1],
    }
    print(json.dumps(ports), flush=True)
    # Serve until the runner closes our stdin (or dies).
    stdin_closed = loop.create_future()

    def _on_stdin() -> None:
        if not sys.stdin.buffer.raw.read(4096) and not stdin_closed.done():  # type: ignore[attr-defined]
            stdin_closed.set_result(None)

    loop.add_reader(sys.stdin.fileno(), _on_stdin)
    await stdin_closed
    for server in (ws_server, raw_server, firehose_server):
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    parser.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop (auto: uvloop when installed; it halves the peer's CPU per message)",
    )
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    loop_name = args.loop
    if loop_name == "auto":
        loop_name = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    if loop_name == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    global _LOOP_NAME
    _LOOP_NAME = loop_name
    try:
        loop.run_until_complete(_serve())
    finally:
        loop.close()


if __name__ == "__main__":
    main()
