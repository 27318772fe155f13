"""An open WebSocket connection: the reader, the keepalive, buffers, send and receive."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, replace
from logging import DEBUG
from typing import Any, cast

from .._shared import (
    ANY_MESSAGE,
    BINARY_ONLY,
    KIND_BINARY,
    KIND_PONG,
    KIND_TEXT,
    PONG_ONLY,
    TEXT_ONLY,
    ConnectionStats,
    MailboxClosed,
    Message,
    MessageType,
    check_seconds,
    logger,
)
from ..exceptions import (
    ConnectionDisconnected,
    NoProtocolHandler,
    ProtocolError,
    ReadTimeout,
    WriteTimeout,
)
from ..handlers import ProtocolHandler
from ..protocol import (
    BinaryMessage,
    ClientConnection,
    CloseReceived,
    Event,
    Fragment,
    PingReceived,
    PongReceived,
    State,
    TextMessage,
)
from ..protocol.frames import build_close_payload
from ..protocol.frames import release_send_buffer as _release_send_buffer
from ._backend import (
    AsyncEvent,
    AsyncLock,
    AsyncMailbox,
    AsyncStream,
    StateLock,
    TaskHandle,
    TimerHandle,
)
from ._backend import call_later as _call_later
from ._backend import monotonic as _monotonic
from ._backend import spawn as _spawn

_NORMAL_CLOSE_CODES = (1000, 1001)
# Module constants, not State.X: an enum member read through its class costs about 70 ns
# on Python 3.11 (a plain global, 6), and _consume asks on every read.
_OPEN, _CLOSED = State.OPEN, State.CLOSED
_TEXT_TYPE, _BINARY_TYPE = MessageType.TEXT, MessageType.BINARY
# Large enough that framing costs nothing (for the peer too: a message in several frames is
# reassembled, which cost the benchmark peer a third more CPU per 1 MiB message than one
# frame), small enough that a pong waits for at most this many bytes of a large message.
DEFAULT_MAX_FRAME_SIZE = 1024 * 1024
# A large message is written this many bytes at a time, in whole frames: each write wakes
# the peer, and on loopback four writes of 256 KiB cost the client half as much again as
# one of 1 MiB. Between writes the send waits for the buffer to drain, so a pong never waits
# behind more than this (plus the buffer's high-water mark).
_WRITE_BATCH = 1024 * 1024


# At most this many messages go into a buffer in one call (see _dispatch_nowait).
_DISPATCH_RUN = 64


def _write_batch(max_frame_size: int) -> int:
    """How many payload bytes of a large message one write carries: whole frames."""
    return max_frame_size * max(1, _WRITE_BATCH // max_frame_size)


@dataclass
class Channel:
    """What :meth:`WebSocketClient.connect` hands to a :class:`WebSocketConnection`.

    Attributes:
        stream: The open transport.
        protocol: The protocol core, already OPEN.
        close_timeout: Seconds to wait for the closing handshake and the TCP close.
        ping_timeout: Seconds to wait for a keepalive pong before the peer is declared
            dead; ``None`` never declares it dead.
        max_frame_size: Outgoing messages longer than this are sent as several frames.
    """

    stream: AsyncStream
    protocol: ClientConnection
    close_timeout: float | None = 10.0
    ping_timeout: float | None = 20.0
    max_frame_size: int | None = DEFAULT_MAX_FRAME_SIZE


def _ignore_bytes(data: bytes | memoryview) -> bool:
    """A consumer for what follows the server's Close (nothing valid may): drops it."""
    return True


def _describe(event: Event) -> str:
    if isinstance(event, TextMessage | BinaryMessage):
        name = "TEXT" if isinstance(event, TextMessage) else "BINARY"
        return f"{name} {len(event.data)} bytes"
    if isinstance(event, Fragment):
        name = "TEXT" if event.text else "BINARY"
        return f"{name} fragment {len(event.data)} bytes{'' if event.last else ' (more follow)'}"
    if isinstance(event, PingReceived | PongReceived):
        name = "PING" if isinstance(event, PingReceived) else "PONG"
        return f"{name} {event.data!r}"
    if isinstance(event, CloseReceived):
        return f"CLOSE {event.code} {event.reason!r}"
    return type(event).__name__


def _ratio(uncompressed: int, compressed: int) -> float | None:
    return uncompressed / compressed if compressed else None


@dataclass
class _PendingPing:
    sent_at: float
    answered: AsyncEvent
    from_user: bool
    round_trip: float | None = None


class _Keepalive:
    """The keepalive of one connection: a ping every interval, and a deadline for each pong.

    It runs as timer callbacks (see ``call_later``), never as a task or thread of its own,
    so nothing here may wait: the ping is queued with ``write_nowait``, and a dead peer is
    failed by aborting the stream, which the reader then finishes.
    """

    __slots__ = ("_connection", "_deadline_timers", "_interval", "_ping_timer", "_stopped")

    def __init__(self, connection: WebSocketConnection, interval: float) -> None:
        self._connection = connection
        self._interval = interval
        self._stopped = False
        self._deadline_timers: dict[bytes, TimerHandle] = {}
        self._ping_timer: TimerHandle | None = _call_later(interval, self._ping)

    def stop(self) -> None:
        # Under the state lock, so that a ping running now in another thread does not
        # schedule its successor after this.
        with self._connection._state_lock:
            self._stopped = True
            timers = list(self._deadline_timers.values())
            if self._ping_timer is not None:
                timers.append(self._ping_timer)
            self._ping_timer = None
            self._deadline_timers.clear()
        for timer in timers:
            timer.cancel()

    def _ping(self) -> None:
        connection = self._connection
        try:
            if self._stopped or connection._protocol.state is not _OPEN:
                return
            payload = os.urandom(4)
            pending = _PendingPing(_monotonic(), AsyncEvent(), from_user=False)
            connection._send_ping(payload, pending)
        except ConnectionDisconnected:
            return
        except Exception as exc:
            logger.exception("keepalive stopped: %r", exc)
            return
        ping_timeout = connection._ping_timeout
        with connection._state_lock:
            if self._stopped:
                return
            self._ping_timer = _call_later(self._interval, self._ping)
            if ping_timeout is not None:
                self._deadline_timers[payload] = _call_later(
                    ping_timeout, lambda: self._check_pong(payload, pending)
                )

    def _check_pong(self, payload: bytes, pending: _PendingPing) -> None:
        connection = self._connection
        with connection._state_lock:
            self._deadline_timers.pop(payload, None)
            if self._stopped or pending.answered.is_set():
                return
        connection._pending_pings.pop(payload, None)
        if connection._reading_paused or connection._last_received > pending.sent_at:
            return
        connection._fail_dead_peer()


class WebSocketConnection:
    """An open WebSocket connection.

    Text and binary messages wait in separate bounded buffers: :meth:`receive_text` never
    takes a binary message and :meth:`receive_bytes` never takes a text one, while
    :meth:`receive` (and iteration) takes whichever arrived first. When a buffer is full,
    reading from the network pauses until the application catches up, unless
    ``drop_frames`` is set: then the oldest message of that type is dropped (and counted in
    :attr:`stats`).

    Created by :meth:`WebSocketClient.connect`; use it as a context manager to close it.
    The ``OPCODE_*`` class attributes are the frame opcodes of RFC 6455 (section 5.2).

    Args:
        conn: The open transport and protocol state (from ``connect``).
        text_queue_maxsize: Capacity of the text buffer, in messages (0: unbounded).
        binary_queue_maxsize: Capacity of the binary buffer, in messages (0: unbounded).
        drop_frames: Drop the oldest message instead of pausing when a buffer is full.
        protocol_handler: Codec for :meth:`send_protocol` and :meth:`receive_protocol`.
        pong_queue_maxsize: Capacity of the buffer of pongs answering :meth:`ping`.
        stream_fragments: Buffer messages piece by piece as they arrive instead of whole,
            so that :meth:`receive_fragments` can hand out a large message without holding
            it all; the queue sizes then count pieces. The other receives still return
            whole messages.
    """

    # Slots, not a __dict__: about a kilobyte less for every open connection.
    __slots__ = (
        "__weakref__",
        "_close_timeout",
        "_closed",
        "_backlog",
        "_consume_error",
        "_drop_frames",
        "_error",
        "_server_close_timer",
        "_keepalive",
        "_last_received",
        "_mailbox",
        "_max_frame_size",
        "_open_stream_kind",
        "_partial",
        "_pending_pings",
        "_ping_timeout",
        "_protocol",
        "_reader",
        "_reading_paused",
        "_send_lock",
        "_state_lock",
        "_log_frames",
        "_stats",
        "_stream",
        "_streaming",
        "latency",
        "protocol_handler",
    )

    OPCODE_CONTINUATION = 0x0
    OPCODE_TEXT = 0x1
    OPCODE_BINARY = 0x2
    OPCODE_CLOSE = 0x8
    OPCODE_PING = 0x9
    OPCODE_PONG = 0xA

    def __init__(
        self,
        conn: Channel,
        text_queue_maxsize: int = 100,
        binary_queue_maxsize: int = 100,
        drop_frames: bool = False,
        protocol_handler: ProtocolHandler | None = None,
        *,
        pong_queue_maxsize: int = 100,
        stream_fragments: bool = False,
    ) -> None:
        self._stream = conn.stream
        self._protocol = conn.protocol
        self._close_timeout = conn.close_timeout
        self._ping_timeout = conn.ping_timeout
        self._drop_frames = drop_frames
        self.protocol_handler = protocol_handler
        """Codec of :meth:`send_protocol` and :meth:`receive_protocol` (``None``: none)."""
        self._mailbox: AsyncMailbox[Any] = AsyncMailbox(
            [text_queue_maxsize, binary_queue_maxsize, pong_queue_maxsize]
        )
        self._mailbox.read_when_empty(
            self._stream, self._consume, self._receive_target, self._target_filled
        )
        self._state_lock = StateLock()
        # Decided once, as websockets does: asking the logger costs about as much as
        # parsing a small frame, on every message.
        self._log_frames = logger.isEnabledFor(DEBUG)
        self._send_lock = AsyncLock()
        self._closed = AsyncEvent()
        self._error: BaseException | None = None
        self._pending_pings: dict[bytes, _PendingPing] = {}
        self._reader: TaskHandle | None = None
        # Bounds the wait for the server's TCP close when no reader task runs (see _unparked).
        self._server_close_timer: TimerHandle | None = None
        # Events the reader's fast path could not buffer, and an error it hit: the reader
        # loop takes over with both.
        self._backlog: list[Event] = []
        self._consume_error: Exception | None = None
        self._keepalive: _Keepalive | None = None
        self._reading_paused = False
        self._last_received = _monotonic()
        self._max_frame_size = conn.max_frame_size
        # The core splits what is written at once into frames (see _send).
        conn.protocol.max_frame_size = conn.max_frame_size
        conn.protocol.reuse_send_buffer = True
        self._streaming = stream_fragments or conn.protocol.stream_messages
        conn.protocol.stream_messages = self._streaming
        # Streaming mode: pieces of a message already taken by a receive that timed out, and
        # the kind of the message a fragment iterator is reading (or abandoned).
        self._partial: dict[int, list[Any]] = {}
        self._open_stream_kind: int | None = None
        self.latency: float | None = None
        """Round-trip time of the last answered ping, in seconds (``None`` before any)."""
        self._stats = ConnectionStats()

    # Lifecycle --------------------------------------------------------------------------

    def _start(self, start_keepalive: bool, keepalive_interval: float) -> None:
        # Frames that came with the handshake response, handled as any read's are.
        events = self._protocol.events_received()
        if events:
            index = self._dispatch_nowait(events, 0)
            if index < len(events):
                self._backlog = events[index:]
        # Where the stream can hand arriving bytes to _consume with nobody waiting to read
        # (see its park method), no reader is started until one is needed: starting one
        # costs a connect-and-close about 5% more, and an idle connection about 1.8 KiB.
        if self._reader_needed() or not self._stream.park(self._consume, self._unparked):
            self._reader = _spawn(self._read_loop, name="wsclient-reader")
        if start_keepalive:
            self.start_keep_alive(keepalive_interval)

    def _reader_needed(self) -> bool:
        """Whether something waits to be done that only the reader loop does.

        (_consume answers the same, negated, inlined there: it runs on every read.)
        """
        protocol = self._protocol
        return (
            bool(self._backlog)
            or self._consume_error is not None
            or protocol.state is _CLOSED
            or protocol.failure is not None
            or (protocol.in_place_message and protocol.receiving_in_place)
        )

    def _unparked(self) -> None:
        """The stream stopped handing bytes to :meth:`_consume` while no reader task ran:
        it declined them, or the stream ended. Runs in the stream's read callback.

        The end of a clean close needs no task: after the server's Close, wait for its
        TCP close (bounded by ``close_timeout``, as the reader loop does) and finish. All
        else is the reader loop's work.
        """
        protocol = self._protocol
        stream = self._stream
        try:
            if protocol.state is _CLOSED and not self._backlog and self._consume_error is None:
                if stream.at_eof:
                    self._finish()
                    return
                if stream.park(_ignore_bytes, self._unparked):
                    if self._server_close_timer is None and self._close_timeout is not None:
                        self._server_close_timer = _call_later(self._close_timeout, stream.abort)
                    return
            self._resume_reading()
        except Exception as exc:  # in a loop callback: nothing may escape
            logger.exception("reader could not resume: %r", exc)
            if self._error is None:
                self._error = exc
            stream.abort()
            self._finish()

    def _resume_reading(self) -> None:
        # Something needs the reader loop again: bytes arrived on a socket the stream had
        # handed over while idle, or a parked consumer declined (see _unparked).
        try:
            self._reader = _spawn(self._read_loop, name="wsclient-reader")
        except RuntimeError as exc:
            # No thread to be had: nobody would ever read again, so end the connection
            # rather than leave receives waiting for nothing.
            logger.warning("cannot resume reading, closing the connection: %s", exc)
            if self._error is None:
                self._error = exc
            self._stream.abort()
            self._finish()

    async def _read_loop(self) -> None:
        stream = self._stream
        protocol = self._protocol
        consume, resume_reading = self._consume, self._resume_reading
        went_idle = False
        try:
            events = protocol.events_received()
            if events:
                await self._dispatch(events)
            while True:
                if self._consume_error is not None:
                    raise self._consume_error
                if self._backlog:
                    events, self._backlog = self._backlog, []
                    await self._dispatch(events)
                if protocol.state is _CLOSED:
                    break
                if protocol.failure is not None:
                    await self._fail_in_order()
                    continue
                target = protocol.receive_buffer()
                if target is not None:
                    # A large message is arriving: its bytes go straight to their place.
                    received = await stream.read_into(target)
                    target.release()
                    self._process(None, received)
                else:
                    more = await stream.consume(consume, when_idle=resume_reading)
                    if more is None:
                        # Nothing arrived for a while: no thread waits for this connection
                        # until the stream calls _resume_reading.
                        went_idle = True
                        self._mailbox.shrink()
                        return
                    if not more:
                        self._process(None, 0)
                if self._consume_error is not None:
                    raise self._consume_error
            if not protocol.eof_received:
                await self._wait_for_server_close()
        except Exception as exc:
            if self._error is None:
                self._error = exc
            logger.debug("reader stopped: %r", exc)
        finally:
            if not went_idle:
                self._finish()

    def _consume(self, data: bytes | memoryview) -> bool:
        """Handle bytes that arrived, without waiting; False once the reader must take over.

        The stream calls this as soon as bytes arrive, so a message reaches its buffer
        without a hop through the reader. What needs a wait (a full buffer, a failure to
        report in order, the end) is left to the reader loop, which this wakes by
        returning False. So is a large message to read into place, unless the stream
        fills it through :meth:`_receive_target` and :meth:`_target_filled`.
        """
        # _handle_read's work, inlined: this runs for every read.
        try:
            self._process(data, len(data))
        except Exception as exc:
            self._consume_error = exc
            return False
        protocol = self._protocol
        return (
            not self._backlog
            and protocol.state is not _CLOSED
            and protocol.failure is None
            and not (protocol.in_place_message and protocol.receiving_in_place)
        )

    def _receive_target(self) -> memoryview | None:
        """The buffer a large message is read into, if one is being read in place."""
        protocol = self._protocol
        if self._backlog or self._consume_error is not None or protocol.failure is not None:
            return None
        return protocol.receive_buffer()

    def _target_filled(self, received: int) -> bool:
        """Handle ``received`` bytes read into :meth:`_receive_target`, like :meth:`_consume`."""
        return self._handle_read(None, received)

    def _handle_read(self, data: bytes | memoryview | None, received: int) -> bool:
        """:meth:`_process` without raising; whether reading may go on without the reader
        loop (no message waits for room, no failure to report, not closed)."""
        try:
            self._process(data, received)
        except Exception as exc:
            self._consume_error = exc
            return False
        protocol = self._protocol
        return not self._backlog and protocol.state is not _CLOSED and protocol.failure is None

    def _process(self, data: bytes | memoryview | None, received: int) -> None:
        """Feed what was read to the core (``data``, or ``received`` bytes read into place;
        nothing read: end of stream) and buffer the resulting messages that fit."""
        protocol = self._protocol
        # acquire/release rather than a with-statement, here and in _write_whole_message:
        # the with-statement costs about three times as much, on every message.
        state_lock = self._state_lock
        state_lock.acquire()
        try:
            try:
                if not received:
                    protocol.receive_eof()
                elif data is None:
                    protocol.receive_buffer_filled(received)
                else:
                    protocol.receive_data(data)
            except ProtocolError as exc:
                logger.warning("failing the connection: %s", exc)
                self._error = exc
            events = protocol.events_received()
            output = protocol.data_to_send()
            if output:
                self._stream.write_nowait(output)
        finally:
            state_lock.release()
        self._last_received = _monotonic()
        if self._backlog:
            # Never ahead of messages still waiting for room.
            self._backlog.extend(events)
        elif events:
            index = self._dispatch_nowait(events, 0)
            if index < len(events):
                self._backlog = events[index:]

    async def _fail_in_order(self) -> None:
        # The protocol error came after messages that the application may still have to
        # answer: the peer must see those answers before the Close (frames are processed
        # in order). So the Close goes out once the application has taken every message
        # and waits for more, closes, or close_timeout has passed.
        await self._mailbox.wait_idle(self._close_timeout)
        with self._state_lock:
            self._protocol.fail()
            output = self._protocol.data_to_send()
            if output:
                self._stream.write_nowait(output)

    async def _wait_for_server_close(self) -> None:
        # The server closes TCP first (RFC 6455 §7.1.1); give it close_timeout to do so.
        deadline = None if self._close_timeout is None else _monotonic() + self._close_timeout
        while True:
            remaining = None if deadline is None else deadline - _monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                data = await self._stream.read(remaining)
            except (TimeoutError, OSError):
                break
            if not data:
                return
        self._stream.abort()

    def _finish(self) -> None:
        with self._state_lock:
            if self._protocol.state is not _CLOSED:
                self._protocol.receive_eof()
        timer, self._server_close_timer = self._server_close_timer, None
        if timer is not None:
            timer.cancel()
        self._stream.close()
        self._mailbox.close()
        self.stop_keep_alive()
        for pending in self._pending_pings.values():
            pending.answered.set()
        self._closed.set()
        if self._log_frames:
            logger.debug("connection closed: code %s", self._protocol.close_code)

    def _dispatch_nowait(self, events: list[Event], start: int) -> int:
        """Handle ``events[start:]`` until a message does not fit in its buffer.

        Returns the index of that message (not yet counted), or ``len(events)``.
        """
        stats = self._stats
        mailbox = self._mailbox
        if self._log_frames:
            for event in events[start:]:
                logger.debug("< %s", _describe(event))
        end = len(events)
        index = start
        while index < end:
            event = events[index]
            event_type = type(event)
            if event_type is BinaryMessage or event_type is TextMessage:
                kind = KIND_BINARY if event_type is BinaryMessage else KIND_TEXT
                run_end = index + 1
                if run_end == end or type(events[run_end]) is not event_type:
                    # One message (a round trip): no list to build.
                    data = event.data  # type: ignore[union-attr]
                    if not mailbox.put_nowait(kind, data):
                        return index
                    stats.messages_in += 1
                    stats.bytes_in += len(data)
                    index = run_end
                    continue
                # A run of whole messages of one kind goes into its buffer in one call: one
                # read of small messages delivers dozens of them. (Capped: when the buffer
                # is full, the rest of a long run is looked at again, one message a time.)
                run_limit = min(end, index + _DISPATCH_RUN)
                while run_end < run_limit and type(events[run_end]) is event_type:
                    run_end += 1
                payloads = [
                    message.data
                    for message in cast("list[BinaryMessage | TextMessage]", events[index:run_end])
                ]
                added = mailbox.put_many_nowait(kind, payloads)
                if added < len(payloads):
                    del payloads[added:]
                stats.messages_in += added
                stats.bytes_in += sum(map(len, payloads))
                index += added
                if index < run_end:
                    return index
                continue
            if isinstance(event, Fragment):
                if not mailbox.put_nowait(KIND_TEXT if event.text else KIND_BINARY, event):
                    return index
                self._count_fragment(event)
            elif isinstance(event, PongReceived):
                stats.pongs_received += 1
                self._on_pong(event.data)
            elif isinstance(event, PingReceived):
                stats.pings_received += 1
            elif isinstance(event, CloseReceived):
                if self._log_frames:
                    logger.debug("close received: %s %s", event.code, event.reason)
            index += 1
        return end

    def _count_fragment(self, fragment: Fragment) -> None:
        if fragment.last:
            self._stats.messages_in += 1
        self._stats.bytes_in += len(fragment.data)

    async def _dispatch(self, events: list[Event]) -> None:
        """Handle ``events``, waiting for room when a buffer is full."""
        index = 0
        while True:
            index = self._dispatch_nowait(events, index)
            if index == len(events):
                return
            event = events[index]
            if isinstance(event, Fragment):
                self._count_fragment(event)
                await self._deliver(KIND_TEXT if event.text else KIND_BINARY, event)
            else:
                assert isinstance(event, TextMessage | BinaryMessage)
                self._stats.messages_in += 1
                self._stats.bytes_in += len(event.data)
                await self._deliver(
                    KIND_TEXT if isinstance(event, TextMessage) else KIND_BINARY, event.data
                )
            index += 1

    async def _deliver(self, kind: int, data: str | bytes | Fragment) -> None:
        mailbox = self._mailbox
        if mailbox.put_nowait(kind, data):
            return
        if self._drop_frames:
            mailbox.drop_oldest(kind)
            if kind == KIND_TEXT:
                self._stats.dropped_text += 1
            else:
                self._stats.dropped_binary += 1
            logger.warning(
                "%s buffer full: dropped the oldest message (%d dropped so far)",
                "text" if kind == KIND_TEXT else "binary",
                self._stats.dropped_text + self._stats.dropped_binary,
            )
            mailbox.put_nowait(kind, data)
            return
        # The application is slower than the peer: stop reading until it catches up.
        self._reading_paused = True
        try:
            delivered = await mailbox.put(kind, data)
        finally:
            self._reading_paused = False
            self._last_received = _monotonic()
        if not delivered and not mailbox.closed:
            # Closing: the reader must reach the server's Close, so what no longer fits is
            # dropped (and counted); the messages already buffered are still delivered.
            if kind == KIND_TEXT:
                self._stats.dropped_text += 1
            else:
                self._stats.dropped_binary += 1
            logger.debug("closing with a full buffer: dropped a message")

    def _on_pong(self, data: bytes) -> None:
        pending = self._pending_pings.pop(data, None)
        if pending is None:
            return
        now = _monotonic()
        pending.round_trip = self.latency = now - pending.sent_at
        pending.answered.set()
        if pending.from_user and not self._mailbox.put_nowait(KIND_PONG, data):
            self._mailbox.drop_oldest(KIND_PONG)
            self._mailbox.put_nowait(KIND_PONG, data)

    def _disconnected(self) -> ConnectionDisconnected:
        protocol = self._protocol
        return ConnectionDisconnected(protocol.close_code, protocol.close_reason)

    # Sending ----------------------------------------------------------------------------

    async def _drain(self, timeout: float | None) -> None:
        try:
            await self._stream.drain(timeout)
        except TimeoutError:
            raise WriteTimeout(
                f"the peer did not read the message within {timeout} s; "
                "it stays queued and goes out if the peer resumes reading"
            ) from None
        except OSError as exc:
            raise self._disconnected() from (self._error or exc)

    async def _send_in_turn(
        self,
        opcode: int,
        payload: bytes | bytearray | memoryview,
        timeout: float | None,
        compress: bool,
    ) -> None:
        """Send a message that :meth:`_write_whole_message` could not send at once."""
        limit = self._max_frame_size
        queued = False  # whole: it goes out, so it counts, even if a drain then fails
        async with self._send_lock:
            try:
                if limit is None or len(payload) <= limit:
                    self._write_frame(opcode, payload, True, compress)
                    queued = True
                    await self._drain(timeout)
                    return
                # A few frames at a time (one write each, that wakes the peer once), each
                # batch written before the next is built, so that pongs and keepalive
                # pings can go out between the batches of a large message.
                view = memoryview(payload)
                batch = _write_batch(limit)
                written = 0
                try:
                    for start in range(0, len(view), batch):
                        piece = view[start : start + batch]
                        last = start + batch >= len(view)
                        self._write_frame(opcode if start == 0 else None, piece, last, compress)
                        written = start + batch
                        await self._drain(timeout)
                except BaseException:
                    # Never leave a message half-queued: the peer would wait for its end
                    # and no other message could follow. The rest is queued behind what is
                    # already waiting and goes out if the peer resumes reading.
                    queued = self._queue_rest_of_message(view, written, compress)
                    raise
                queued = True
            finally:
                if queued:
                    self._stats.messages_out += 1
                    self._stats.bytes_out += len(payload)

    def _queue_rest_of_message(self, view: memoryview, start: int, compress: bool) -> bool:
        """Queue the frames of ``view[start:]``; False if the connection closed first."""
        limit = self._max_frame_size
        assert limit is not None
        batch = _write_batch(limit)
        try:
            for offset in range(start, len(view), batch):
                last = offset + batch >= len(view)
                self._write_frame(None, view[offset : offset + batch], last, compress)
        except ConnectionDisconnected:
            return False
        return True

    def _write_whole_message(
        self, opcode: int, payload: bytes | bytearray | memoryview, compress: bool
    ) -> bool:
        """Send a one-frame message at once unless a fragmented message is in progress.

        A single frame cannot interleave with another message, so it needs the send lock
        only to wait for a fragmented message (from another sender) to end. A message
        sent (queued: it goes out even if a drain then times out) is counted.
        """
        limit = self._max_frame_size
        if limit is not None and len(payload) > limit:
            return False
        state_lock = self._state_lock
        state_lock.acquire()
        try:
            protocol = self._protocol
            frame = protocol.frame_now(opcode, payload, compress)
            if frame is not None:
                self._stream.write_nowait(frame)
            else:
                if protocol.sending_fragmented_message:
                    return False
                if opcode == self.OPCODE_TEXT:
                    protocol.send_text(payload, compress=compress)
                else:
                    protocol.send_binary(payload, compress=compress)
                self._write_data(protocol.data_to_write())
        except ConnectionDisconnected:
            raise self._disconnected() from self._error
        finally:
            state_lock.release()
        stats = self._stats
        stats.messages_out += 1
        stats.bytes_out += len(payload)
        if self._log_frames:
            kind = "TEXT" if opcode == self.OPCODE_TEXT else "BINARY"
            logger.debug("> %s %d bytes", kind, len(payload))
        return True

    def _write_data(self, data: bytes | memoryview) -> None:
        # A view is of this thread's send buffer: if the stream still holds it, the next
        # large message must not overwrite it.
        if not self._stream.write_nowait(data) and type(data) is memoryview:
            _release_send_buffer()

    def _write_frame(
        self,
        opcode: int | None,
        payload: bytes | bytearray | memoryview,
        fin: bool,
        compress: bool,
    ) -> None:
        """Hand one frame to the core and its bytes to the stream (opcode None: continuation)."""
        with self._state_lock:
            protocol = self._protocol
            try:
                if opcode is None:
                    protocol.send_continuation(payload, fin=fin)
                elif opcode == self.OPCODE_TEXT:
                    protocol.send_text(payload, fin=fin, compress=compress)
                else:
                    protocol.send_binary(payload, fin=fin, compress=compress)
            except ConnectionDisconnected:
                raise self._disconnected() from self._error
            self._write_data(protocol.data_to_write())
        if self._log_frames:
            kind = {None: "CONTINUATION", self.OPCODE_TEXT: "TEXT"}.get(opcode, "BINARY")
            logger.debug("> %s %d bytes%s", kind, len(payload), "" if fin else " (more follow)")

    async def send_text(
        self, message: str, *, timeout: float | None = None, compress: bool = True
    ) -> None:
        """Send a text message.

        Args:
            message: The text.
            timeout: Seconds to wait for the peer to take the data when the outgoing
                buffer is full; ``None`` waits as long as the connection lives.
            compress: ``False`` sends this message uncompressed even with deflate on.

        Raises:
            TypeError: ``message`` is not a ``str``.
            ConnectionDisconnected: The connection is closed.
            WriteTimeout: The peer did not read in time (the message stays queued).
        """
        if not isinstance(message, str):
            raise TypeError(f"send_text needs a str, got {type(message).__name__}")
        if timeout is not None:
            check_seconds(timeout, "timeout")
        payload = message.encode("utf-8")
        # Without a call to wait in between: each level of those costs a few percent of a
        # small message's round trip.
        if self._write_whole_message(self.OPCODE_TEXT, payload, compress):
            if self._stream.must_drain():
                await self._drain(timeout)
        else:
            await self._send_in_turn(self.OPCODE_TEXT, payload, timeout, compress)

    async def send_bytes(
        self,
        data: bytes | bytearray | memoryview,
        *,
        timeout: float | None = None,
        compress: bool = True,
    ) -> None:
        """Send a binary message.

        Args:
            data: The payload.
            timeout: As for :meth:`send_text`.
            compress: As for :meth:`send_text`.

        Raises:
            TypeError: ``data`` is not bytes-like.
            ConnectionDisconnected: The connection is closed.
            WriteTimeout: The peer did not read in time (the message stays queued).
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"send_bytes needs bytes, got {type(data).__name__}")
        if timeout is not None:
            check_seconds(timeout, "timeout")
        if self._write_whole_message(self.OPCODE_BINARY, data, compress):
            if self._stream.must_drain():
                await self._drain(timeout)
        else:
            await self._send_in_turn(self.OPCODE_BINARY, data, timeout, compress)

    async def send_json(self, data: Any, *, timeout: float | None = None) -> None:
        """Serialize ``data`` as JSON and send it as a text message.

        Raises:
            TypeError: ``data`` is not JSON-serializable.
            ConnectionDisconnected: The connection is closed.
        """
        await self.send_text(json.dumps(data, ensure_ascii=False), timeout=timeout)

    async def send_protocol(self, data: Any, *, timeout: float | None = None) -> None:
        """Encode ``data`` with the protocol handler and send it as a binary message.

        Raises:
            NoProtocolHandler: The connection has no protocol handler.
            ConnectionDisconnected: The connection is closed.
        """
        handler = self._require_handler()
        await self.send_bytes(handler.encode(data), timeout=timeout)

    async def send_fragments(
        self,
        fragments: Iterable[str | bytes] | AsyncIterable[str | bytes],
        *,
        timeout: float | None = None,
    ) -> None:
        """Send one message made of several frames, one per fragment (a fragment longer
        than ``max_frame_size`` is split further).

        The first fragment decides the type (``str``: text, ``bytes``: binary); every
        fragment must have that type. Pings and pongs still flow between the frames, and
        no other message can slip in between them.

        A message cannot be left unfinished, so an error in the middle (a timeout, a
        fragment of the wrong type, an exception from the iterable, a cancellation) closes
        the connection with 1011 after the frames already sent.

        Raises:
            TypeError: The fragments mix types or are not str/bytes.
            WriteTimeout: The peer did not read in time (the connection is then closing).
            ConnectionDisconnected: The connection is closed.
        """
        check_seconds(timeout, "timeout")
        async with self._send_lock:
            started: type | None = None
            previous: str | bytes | None = None
            try:
                if isinstance(fragments, AsyncIterable):
                    async for fragment in fragments:
                        if previous is not None:
                            started = await self._send_fragment(previous, started, False, timeout)
                        previous = fragment
                else:
                    for fragment in fragments:
                        if previous is not None:
                            started = await self._send_fragment(previous, started, False, timeout)
                        previous = fragment
                if previous is None:
                    raise ValueError("send_fragments needs at least one fragment")
                await self._send_fragment(previous, started, True, timeout)
            except BaseException as exc:
                self._close_unfinished_message(exc)
                raise
            self._stats.messages_out += 1

    def _close_unfinished_message(self, exc: BaseException) -> None:
        with self._state_lock:
            protocol = self._protocol
            if not protocol.sending_fragmented_message or protocol.state is not _OPEN:
                return
            logger.warning("closing: a fragmented message was interrupted by %r", exc)
            protocol.send_close(1011, "message interrupted")
            self._stream.write_nowait(protocol.data_to_send())
            self._mailbox.stop_waiting_puts()
            if self._error is None:
                self._error = exc

    async def _send_fragment(
        self, fragment: str | bytes, started: type | None, last: bool, timeout: float | None
    ) -> type:
        kind: type = str if isinstance(fragment, str) else bytes
        if not isinstance(fragment, str | bytes | bytearray | memoryview):
            raise TypeError(f"fragments must be str or bytes, got {type(fragment).__name__}")
        if started is not None and kind is not started:
            raise TypeError("all fragments of a message must have the same type")
        payload = fragment.encode("utf-8") if isinstance(fragment, str) else fragment
        if started is not None:
            opcode = None
        else:
            opcode = self.OPCODE_TEXT if kind is str else self.OPCODE_BINARY
        self._write_frame(opcode, payload, last, True)
        self._stats.bytes_out += len(payload)
        await self._drain(timeout)
        return kind

    async def ping(
        self, data: bytes = b"", *, wait: bool = False, timeout: float | None = None
    ) -> float | None:
        """Send a ping; with ``wait``, wait for its pong and return the round-trip time.

        Without ``wait`` the pong is delivered to :meth:`receive_pong`.

        Args:
            data: Up to 125 bytes of payload; pings in flight must have distinct payloads.
            wait: Wait for the pong and return the round trip in seconds.
            timeout: With ``wait``, seconds to wait for the pong.

        Raises:
            ValueError: ``data`` is longer than 125 bytes, or a ping with the same payload
                is still waiting for its pong.
            ReadTimeout: With ``wait``, no pong arrived in time.
            ConnectionDisconnected: The connection is closed.
        """
        check_seconds(timeout, "timeout")
        data = bytes(data)
        if len(data) > 125:
            raise ValueError(f"ping payload is {len(data)} bytes; the limit is 125")
        if data in self._pending_pings:
            raise ValueError("a ping with this payload is already waiting for its pong")
        pending = _PendingPing(_monotonic(), AsyncEvent(), from_user=not wait)
        self._send_ping(data, pending)
        await self._drain(None)
        if not wait:
            return None
        if not await pending.answered.wait(timeout):
            self._pending_pings.pop(data, None)
            raise ReadTimeout(f"no pong within {timeout} s")
        if pending.round_trip is None:
            raise self._disconnected() from self._error
        return pending.round_trip

    def _send_ping(self, data: bytes, pending: _PendingPing) -> None:
        with self._state_lock:
            try:
                self._protocol.send_ping(data)
            except ConnectionDisconnected:
                raise self._disconnected() from self._error
            self._pending_pings[data] = pending
            self._stream.write_nowait(self._protocol.data_to_send())
        self._stats.pings_sent += 1
        logger.debug("> PING %r", data)

    # Receiving --------------------------------------------------------------------------

    async def _get(self, kinds: tuple[int, ...], timeout: float | None) -> tuple[int, Any]:
        try:
            return await self._mailbox.get(kinds, timeout)
        except (TimeoutError, MailboxClosed) as exc:
            raise self._receive_failure(exc, timeout)  # noqa: B904 (the cause is set)

    def _receive_failure(self, exc: Exception, timeout: float | None) -> Exception:
        """What a receive raises when the mailbox gave up with ``exc``."""
        error: Exception
        if isinstance(exc, MailboxClosed):
            error = self._disconnected()
            error.__cause__ = self._error
        else:
            error = ReadTimeout(f"nothing received within {timeout} s")
        error.__suppress_context__ = True
        return error

    async def _receive(self, kinds: tuple[int, ...], timeout: float | None) -> tuple[int, Any]:
        if not self._streaming or kinds == PONG_ONLY:
            # Most receives find a message already waiting: take it without a wait.
            found = self._mailbox.get_nowait(kinds)
            if found is not None:
                return found
            return await self._get(kinds, timeout)
        await self._skip_abandoned_stream(timeout)
        deadline = None if timeout is None else _monotonic() + timeout
        started = [kind for kind in kinds if kind in self._partial]
        if started:
            kind = started[0]
            parts = self._partial[kind]
        else:
            kind, fragment = await self._get(kinds, timeout)
            if fragment.last:
                return kind, fragment.data
            parts = self._partial[kind] = [fragment.data]
        while True:
            remaining = None if deadline is None else max(deadline - _monotonic(), 0)
            # On a timeout the pieces stay in self._partial for the next receive.
            _, fragment = await self._get((kind,), remaining)
            parts.append(fragment.data)
            if fragment.last:
                del self._partial[kind]
                joiner = "" if kind == KIND_TEXT else b""
                return kind, joiner.join(parts)

    async def _skip_abandoned_stream(self, timeout: float | None) -> None:
        kind = self._open_stream_kind
        if kind is None:
            return
        # A fragment iterator stopped before the end of its message: drop the rest of it.
        while True:
            _, fragment = await self._get((kind,), timeout)
            if fragment.last:
                self._open_stream_kind = None
                return

    async def receive_fragments(self, timeout: float | None = None) -> AsyncIterator[str | bytes]:
        """Iterate over the pieces of the next message (either type) as they arrive.

        Needs ``conn_opts={"stream_fragments": True}``. Text pieces are ``str`` (never a
        split character), binary pieces ``bytes``. Starting another receive before the
        iteration ends drops the rest of the message.

        Args:
            timeout: Seconds to wait for each piece.

        Raises:
            ValueError: The connection does not stream fragments.
            ReadTimeout: A piece did not arrive in time.
            ConnectionDisconnected: The connection closed.
        """
        if not self._streaming:
            raise ValueError("receive_fragments needs conn_opts={'stream_fragments': True}")
        check_seconds(timeout, "timeout")
        await self._skip_abandoned_stream(timeout)
        if self._partial:
            kind, parts = next(iter(self._partial.items()))
            del self._partial[kind]
            self._open_stream_kind = kind
            for part in parts:
                yield part
        else:
            kind, fragment = await self._get(ANY_MESSAGE, timeout)
            if fragment.last:
                yield fragment.data
                return
            self._open_stream_kind = kind
            yield fragment.data
        while True:
            _, fragment = await self._get((kind,), timeout)
            if fragment.last:
                self._open_stream_kind = None
            yield fragment.data
            if fragment.last:
                return

    async def receive_text(self, timeout: float | None = None) -> str:
        """Return the next text message (binary messages stay in their buffer).

        Raises:
            ReadTimeout: No text message arrived within ``timeout`` seconds.
            ConnectionDisconnected: The connection is closed and no text message is left.
        """
        if timeout is not None:
            check_seconds(timeout, "timeout")
        if not self._streaming:
            # Most receives find a message already waiting.
            waiting = self._mailbox.take_nowait(KIND_TEXT)
            if waiting is not None:
                text: str = waiting
                return text
            # The mailbox's wait without _get's: one call level less on every receive that
            # waits (a round trip at a time, or a thousand connections answering).
            try:
                _, data = await self._mailbox.get(TEXT_ONLY, timeout, known_empty=True)
            except (TimeoutError, MailboxClosed) as exc:
                raise self._receive_failure(exc, timeout)  # noqa: B904 (the cause is set)
        else:
            _, data = await self._receive(TEXT_ONLY, timeout)
        text = data
        return text

    async def receive_bytes(self, timeout: float | None = None) -> bytes:
        """Return the next binary message (text messages stay in their buffer).

        Raises:
            ReadTimeout: No binary message arrived within ``timeout`` seconds.
            ConnectionDisconnected: The connection is closed and no binary message is left.
        """
        if timeout is not None:
            check_seconds(timeout, "timeout")
        if not self._streaming:
            waiting = self._mailbox.take_nowait(KIND_BINARY)
            if waiting is not None:
                payload: bytes = waiting
                return payload
            try:  # (not through _get: see receive_text)
                _, data = await self._mailbox.get(BINARY_ONLY, timeout, known_empty=True)
            except (TimeoutError, MailboxClosed) as exc:
                raise self._receive_failure(exc, timeout)  # noqa: B904 (the cause is set)
        else:
            _, data = await self._receive(BINARY_ONLY, timeout)
        payload = data
        return payload

    async def receive_json(self, timeout: float | None = None) -> Any:
        """Return the next text message parsed as JSON.

        Raises:
            ValueError: The message is not valid JSON (it is consumed).
            ReadTimeout: No text message arrived in time.
            ConnectionDisconnected: The connection is closed.
        """
        return json.loads(await self.receive_text(timeout))

    async def receive_protocol(self, timeout: float | None = None) -> Any:
        """Return the next binary message decoded by the protocol handler.

        Raises:
            NoProtocolHandler: The connection has no protocol handler (raised at once).
            ReadTimeout: No binary message arrived in time.
            ConnectionDisconnected: The connection is closed.
        """
        handler = self._require_handler()
        return handler.decode(await self.receive_bytes(timeout))

    async def receive_pong(self, timeout: float | None = None) -> bytes:
        """Return the payload of the next pong answering a :meth:`ping` call.

        Keepalive pongs never appear here.

        Raises:
            ReadTimeout: No pong arrived in time.
            ConnectionDisconnected: The connection is closed.
        """
        check_seconds(timeout, "timeout")
        _, data = await self._receive(PONG_ONLY, timeout)
        payload: bytes = data
        return payload

    async def receive(self, timeout: float | None = None) -> Message:
        """Return the next message of either type, in arrival order.

        It takes from the same buffers as the typed receives: a message taken by one is
        never seen by the other, and the messages of each type keep their order.

        Raises:
            ReadTimeout: No message arrived in time.
            ConnectionDisconnected: The connection is closed and no message is left.
        """
        if timeout is not None:
            check_seconds(timeout, "timeout")
        kind, data = await self._receive(ANY_MESSAGE, timeout)
        return Message(_TEXT_TYPE if kind == KIND_TEXT else _BINARY_TYPE, data)

    def _require_handler(self) -> ProtocolHandler:
        if self.protocol_handler is None:
            raise NoProtocolHandler(
                "no protocol_handler: pass conn_opts={'protocol_handler': ...} to connect()"
            )
        return self.protocol_handler

    def __aiter__(self) -> WebSocketConnection:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except ConnectionDisconnected as exc:
            if exc.code in _NORMAL_CLOSE_CODES:
                raise StopAsyncIteration from None
            raise

    # Keepalive --------------------------------------------------------------------------

    def start_keep_alive(self, interval: float = 30.0) -> None:
        """Ping the server every ``interval`` seconds and close if it stops answering.

        A pong missing after ``ping_timeout`` seconds closes the connection with 1011,
        unless data arrived since the ping or reading is paused because the application
        is behind (then the peer is not to blame). Restarts a running keepalive.
        """
        check_seconds(interval, "keepalive interval")
        if interval <= 0:
            raise ValueError("keepalive interval must be positive")
        self.stop_keep_alive()
        with self._state_lock:
            # Under the lock that _finish takes to mark the end: a keepalive started just
            # as the reader finished is either seen and stopped by it, or not started.
            if self._closed.is_set() or self._protocol.state is _CLOSED:
                return
            self._keepalive = _Keepalive(self, interval)

    def stop_keep_alive(self) -> None:
        """Stop the keepalive pings (the connection stays open)."""
        keepalive, self._keepalive = self._keepalive, None
        if keepalive is not None:
            keepalive.stop()

    def _fail_dead_peer(self) -> None:
        logger.warning("no pong within %s s: closing the connection (1011)", self._ping_timeout)
        with self._state_lock:
            if self._protocol.state is _OPEN:
                self._protocol.send_close(1011, "keepalive ping timeout")
                self._stream.write_nowait(self._protocol.data_to_send())
        if self._error is None:
            self._error = TimeoutError(f"no pong within {self._ping_timeout} s")
        self._mailbox.stop_waiting_puts()
        self._stream.abort()

    # Closing ----------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Run the closing handshake and close the TCP connection.

        Safe to call more than once and from any task or thread; later calls wait for
        the first to finish. Bounded by ``close_timeout``.

        Raises:
            ValueError: ``code`` may not be sent or ``reason`` exceeds 123 UTF-8 bytes.
        """
        build_close_payload(code, reason)
        with self._state_lock:
            if self._protocol.state is _OPEN:
                if self._protocol.failure is not None:
                    # The reader is failing the connection: the Close it owes goes out now.
                    self._protocol.fail()
                    self._mailbox.close()
                else:
                    self._protocol.send_close(code, reason)
                    if self._log_frames:
                        logger.debug("> CLOSE %d %r", code, reason)
                self._stream.write_nowait(self._protocol.data_to_send())
        # A reader waiting for room in a full buffer would never see the server's Close.
        self._mailbox.stop_waiting_puts()
        if not self._closed.is_set():
            if self._stream.must_drain():
                try:
                    await self._stream.drain(self._close_timeout)
                except (TimeoutError, OSError):
                    self._stream.abort()
            if not await self._closed.wait(self._close_timeout):
                self._stream.abort()
                await self._closed.wait(self._close_timeout)
        self.stop_keep_alive()
        reader = self._reader
        if reader is not None and not reader.done() and not reader.is_current():
            await reader.join(self._close_timeout)

    async def __aenter__(self) -> WebSocketConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # State ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the connection is fully closed."""
        return self._closed.is_set()

    @property
    def close_code(self) -> int | None:
        """How the connection ended, once closing has started; ``None`` while open.

        The code of the server's Close frame when one arrived (1005 if it had no code);
        otherwise the code wsclient sent (your ``close`` code, 1002/1007/1009 for a
        protocol error, 1011 for a dead peer); 1006 when the connection dropped with no
        Close frame either way. :attr:`closed_cleanly` tells whether both Close frames
        were exchanged.
        """
        if self._protocol.state is _OPEN:
            return None
        return self._protocol.close_code

    @property
    def closed_cleanly(self) -> bool:
        """Whether the closing handshake completed: a Close frame went each way."""
        return self._protocol.close_handshake_done

    @property
    def close_reason(self) -> str | None:
        """The reason that goes with :attr:`close_code` (from the same Close frame)."""
        if self._protocol.state is _OPEN:
            return None
        return self._protocol.close_reason

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server selected, if any."""
        return self._protocol.subprotocol

    @property
    def dropped_messages(self) -> int:
        """How many messages ``drop_frames`` has dropped so far."""
        return self._stats.dropped_text + self._stats.dropped_binary

    @property
    def stats(self) -> ConnectionStats:
        """A snapshot of this connection's counters, buffer depths and compression ratio."""
        snapshot = replace(self._stats)
        snapshot.text_buffered = self._mailbox.qsize(KIND_TEXT)
        snapshot.binary_buffered = self._mailbox.qsize(KIND_BINARY)
        deflate = self._protocol.deflate
        if deflate is not None:
            snapshot.compression_ratio_in = _ratio(
                deflate.bytes_in_decompressed, deflate.bytes_in_compressed
            )
            snapshot.compression_ratio_out = _ratio(
                deflate.bytes_out_uncompressed, deflate.bytes_out_compressed
            )
        return snapshot

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        """The headers of the server's 101 response."""
        response = self._protocol.response
        return response.headers.items() if response is not None else []
