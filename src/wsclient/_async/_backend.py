"""asyncio primitives behind the async flavor (hand-written; the sync twin uses threads).

Only this module imports asyncio. Every wait takes its timeout as a parameter, so the
code generated for the sync flavor never needs a wrapper around arbitrary code.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import errno
import heapq
import os
import socket
import ssl as ssl_module
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar, cast

from .._shared import MailboxClosed, add_to_box

__all__ = [
    "AsyncEvent",
    "AsyncLock",
    "AsyncMailbox",
    "AsyncStream",
    "StateLock",
    "TaskHandle",
    "TimerHandle",
    "call_later",
    "monotonic",
    "open_stream",
    "sleep",
    "spawn",
]

T = TypeVar("T")
monotonic = time.monotonic

# Reads land in one buffer per thread and are copied out at once: asyncio calls get_buffer,
# recv_into and buffer_updated back to back, so connections of one loop can share it, and
# an idle connection costs no buffer at all.
_RECEIVE_BUFFER_SIZE = 1024 * 1024
_thread_buffers = threading.local()
# Reading pauses once this much is read but not yet consumed (backpressure).
_READ_HIGH_WATER = 1024 * 1024
_READ_LOW_WATER = _READ_HIGH_WATER // 4
# After a read into a large message's own buffer, the next read takes at most this much.
_PROBE_READ_SIZE = 64 * 1024


def _shared_receive_buffer() -> memoryview:
    view: memoryview | None = getattr(_thread_buffers, "view", None)
    if view is None:
        view = _thread_buffers.view = memoryview(bytearray(_RECEIVE_BUFFER_SIZE))
    return view


class _StreamProtocol(asyncio.BufferedProtocol):
    # Slots (asyncio's protocols have no __dict__ either): each connection's state in one
    # block, which every read of every connection touches.
    __slots__ = (
        "transport",
        "chunks",
        "buffered",
        "eof",
        "error",
        "reading_paused",
        "writing_paused",
        "lost",
        "read_waiter",
        "read_target",
        "consumer",
        "consumer_declined",
        "parked_wake",
        "target_filled",
        "_filling_target",
        "_probe_next_read",
        "drain_waiters",
        "lost_waiters",
        "wrote_since_read",
        "_buffer",
    )

    def __init__(self) -> None:
        # This thread's receive buffer (the loop's thread: the protocol never leaves it),
        # shared by its connections, looked up once.
        self._buffer = _shared_receive_buffer()
        self.transport: asyncio.Transport | None = None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.eof = False
        self.error: BaseException | None = None
        self.reading_paused = False
        self.writing_paused = False
        self.lost = False
        # A direct write went out and nothing was read since: the next small write is
        # held back (see AsyncStream.write_nowait).
        self.wrote_since_read = False
        self.read_waiter: asyncio.Future[None] | None = None
        # Set by AsyncStream.read_into while it waits: the next read lands there directly.
        self.read_target: memoryview | None = None
        # Set by AsyncStream.consume while it waits: arriving bytes go to it at once.
        self.consumer: Callable[[bytes | memoryview], bool] | None = None
        self.consumer_declined = False
        # Set by AsyncStream.park: called, instead of waking a reader, once the consumer
        # declines or the stream ends while no task reads.
        self.parked_wake: Callable[[], None] | None = None
        self.target_filled = 0
        self._filling_target = False
        self._probe_next_read = False
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.lost_waiters: list[asyncio.Future[None]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports do not derive from asyncio's.
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        target = self.read_target
        # TLS may ask for a buffer and then fill none of it: the flag is reset every time.
        self._filling_target = target is not None
        if target is not None:
            self._probe_next_read = True
            return target
        if self._probe_next_read:
            # Large messages are arriving: read the next header and a little, so that the
            # rest of that message is read into place instead of copied out of this buffer.
            self._probe_next_read = False
            return self._buffer[:_PROBE_READ_SIZE]
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.wrote_since_read = False
        if self._filling_target:
            self._filling_target = False
            self.read_target = None
            self.target_filled = nbytes
            self._wake_reader()
            return
        consumer = self.consumer
        if consumer is not None:
            # Straight from the shared buffer: the consumer keeps nothing of it.
            if not consumer(self._buffer[:nbytes]):
                self.consumer = None
                self.consumer_declined = True
                self._wake_reader()
            return
        self.chunks.append(bytes(self._buffer[:nbytes]))
        self.buffered += nbytes
        if self.buffered > _READ_HIGH_WATER and not self.reading_paused:
            assert self.transport is not None
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.eof = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake_reader()
        for waiters in (self.drain_waiters, self.lost_waiters):
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            waiters.clear()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        for waiter in self.drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.drain_waiters.clear()

    def _wake_reader(self) -> None:
        waiter = self.read_waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
            return
        wake = self.parked_wake
        if wake is not None:
            self.parked_wake = None
            self.consumer = None
            wake()


async def _wait_future(future: asyncio.Future[Any], timeout: float | None) -> bool:
    """Wait for ``future``; return False on timeout (the future is then cancelled)."""
    if timeout is None:
        await future
        return True
    deadlines = _helpers_of(future.get_loop()).deadlines
    entry = deadlines.add(max(timeout, 0), future)
    try:
        await future
    except asyncio.CancelledError:
        if future.cancelled() and not _current_task_cancelling():
            return False
        raise
    finally:
        deadlines.discard(entry)
    return True


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


# A write that follows a stream's direct write with nothing read in between is held back
# and sent with the others at the end of the loop iteration, up to this many bytes (then
# at once): 64 messages of 1 KiB sent in a row cost one send() system call instead of 64
# (client CPU per message: 7.8 -> 5.2 us). A write that answers what was read, as in a
# request-response exchange, goes out at once, and schedules nothing.
_CORK_LIMIT = 64 * 1024


class _HeldWrites:
    """The streams of one event loop holding back writes, and the one callback that sends
    them when the iteration ends (one per iteration for all streams, and none at all in an
    iteration whose writes all went out at once: that callback would cost the loop an extra
    turn, a poll of the sockets included, per round trip)."""

    __slots__ = ("loop_ref", "streams")

    def __init__(self, loop_ref: weakref.ref[asyncio.AbstractEventLoop]) -> None:
        self.loop_ref = loop_ref
        self.streams: list[AsyncStream] = []

    def hold(self, stream: AsyncStream) -> None:
        """Send ``stream``'s held writes when this iteration ends."""
        if not self.streams:
            loop = self.loop_ref()
            assert loop is not None
            loop.call_soon(self._send_held)
        self.streams.append(stream)

    def _send_held(self) -> None:
        streams = self.streams
        self.streams = []
        for stream in streams:
            stream._protocol.wrote_since_read = False
            stream._uncork()


class _Deadlines:
    """The timeouts of one event loop's waits and its timers, on a single timer of the loop.

    A loop timer costs a few microseconds: its handle, its context, and comparisons in
    Python each time it enters and leaves the loop's heap, and a timeout that did not
    expire still leaves that heap only when its time comes. Most waits with a timeout end
    well before it (a receive with ``timeout=10`` that gets its message), and most
    keepalive timers are cancelled or far away, so these deadlines live in a heap of lists
    compared in C: adding one costs well under a microsecond, and one ended early is only
    marked, then swept out in bulk.
    """

    __slots__ = ("_loop_ref", "_heap", "_timer_at", "_timer_generation", "_ended", "_sequence")

    def __init__(self, loop_ref: weakref.ref[asyncio.AbstractEventLoop]) -> None:
        self._loop_ref = loop_ref
        # Entries are [when, sequence, target]: the sequence breaks ties, so targets are
        # never compared. The target is a future to cancel or a callback to run at that
        # time, and None once the entry no longer matters.
        self._heap: list[list[Any]] = []
        # The loop timer is not kept (it holds the loop, and this must not): one that an
        # earlier deadline replaced finds its generation outdated when it runs.
        self._timer_at = float("inf")
        self._timer_generation = 0
        self._ended = 0
        self._sequence = 0

    def add(self, delay: float, target: asyncio.Future[Any] | Callable[[], None]) -> list[Any]:
        """After ``delay`` seconds, cancel ``target`` (a future) or call it (a callback),
        unless :meth:`discard` comes first."""
        loop = self._loop_ref()
        assert loop is not None
        when = loop.time() + delay
        self._sequence += 1
        entry = [when, self._sequence, target]
        heapq.heappush(self._heap, entry)
        if when < self._timer_at:
            self._arm(loop, when)
        return entry

    def discard(self, entry: list[Any]) -> None:
        """The wait of ``entry`` is over: its deadline no longer matters."""
        if entry[2] is None:
            return  # it expired
        entry[2] = None
        if entry[1] < 0:
            return  # already out of the heap, due to run next: now it will not
        self._ended += 1
        heap = self._heap
        if self._ended > _SWEEP_MIN and self._ended * 2 > len(heap):
            heap[:] = [kept for kept in heap if kept[2] is not None]
            heapq.heapify(heap)
            self._ended = 0

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._timer_generation += 1
        self._timer_at = when
        loop.call_at(when, self._expire, self._timer_generation)

    def _expire(self, generation: int) -> None:
        loop = self._loop_ref()
        if generation != self._timer_generation or loop is None:
            return
        self._timer_at = float("inf")
        # The loop runs a timer up to its clock's resolution early.
        now = loop.time() + _CLOCK_RESOLUTION
        heap = self._heap
        due: list[Any] = []
        while heap:
            entry = heap[0]
            target = entry[2]
            if target is None:
                heapq.heappop(heap)
                self._ended -= 1
            elif entry[0] <= now:
                heapq.heappop(heap)
                entry[1] = -1  # out of the heap
                due.append(entry)
            else:
                self._arm(loop, entry[0])
                break
        # Run after the heap is settled: a callback may add deadlines of its own, or cancel
        # a timer due in this same batch.
        for entry in due:
            target = entry[2]
            if target is None:
                continue
            entry[2] = None
            if isinstance(target, asyncio.Future):
                if not target.done():
                    target.cancel()
                continue
            try:
                target()
            except Exception as exc:  # like a loop callback: reported, the others still run
                loop.call_exception_handler(
                    {"message": f"exception in timer callback {target!r}", "exception": exc}
                )


_CLOCK_RESOLUTION = time.get_clock_info("monotonic").resolution
# _Deadlines sweeps the entries of waits that ended once they are more than half of its
# heap and more than this many.
_SWEEP_MIN = 64


class _LoopHelpers:
    """What the streams and waits of one event loop share.

    Holds the loop only weakly, and is found through the loop's id: a loop that closes
    and is dropped is freed with everything it held, and its helpers with it.
    """

    __slots__ = ("deadlines", "held_writes")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop_id = id(loop)
        # The callback runs as the loop is freed, before its id can be reused.
        loop_ref = weakref.ref(loop, lambda _ref: _loop_helpers.pop(loop_id, None))
        self.held_writes = _HeldWrites(loop_ref)
        self.deadlines = _Deadlines(loop_ref)


_loop_helpers: dict[int, _LoopHelpers] = {}


def _helpers_of(loop: asyncio.AbstractEventLoop) -> _LoopHelpers:
    helpers = _loop_helpers.get(id(loop))
    if helpers is None:
        helpers = _loop_helpers[id(loop)] = _LoopHelpers(loop)
    return helpers


class AsyncStream:
    """A byte stream over a connected socket (TCP or TLS)."""

    __slots__ = (
        "_transport",
        "_protocol",
        "_loop",
        "_held_writes",
        "_corked",
        "_corked_size",
    )

    def __init__(self, transport: asyncio.Transport, protocol: _StreamProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        # Cached: on Python 3.11 get_running_loop() costs a getpid() system call.
        self._loop = asyncio.get_running_loop()
        self._held_writes = _helpers_of(self._loop).held_writes
        # Small writes held back (see write_nowait), sent when the loop iteration ends.
        self._corked: list[bytes] = []
        self._corked_size = 0

    async def read(self, timeout: float | None = None) -> bytes:
        """Return the next bytes available; ``b""`` at end of stream.

        Raises:
            TimeoutError: Nothing arrived within ``timeout`` seconds.
            OSError: The connection failed (reset, TLS error).
        """
        protocol = self._protocol
        if not protocol.chunks and not protocol.eof:
            await self._wait_for_bytes(timeout)
        chunks = protocol.chunks
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self._taken(protocol.buffered)
            return data
        self._raise_connection_error()
        return b""

    async def consume(
        self,
        consumer: Callable[[bytes | memoryview], bool],
        timeout: float | None = None,
        when_idle: Callable[[], None] | None = None,
    ) -> bool | None:
        """Hand the bytes that arrive to ``consumer`` until it returns False.

        ``consumer`` runs as soon as bytes arrive (here, inside the loop's read callback,
        so it must not raise) and takes them, whatever it returns; it may get a view of
        a buffer that is reused once it returns. Returns True once
        ``consumer`` has returned False, False at end of stream.

        ``when_idle`` is never called here: a waiting task holds no thread, so the stream
        never hands an idle socket over (see the sync twin), and None is never returned.

        Raises:
            TimeoutError: ``consumer`` still wanted more after ``timeout`` seconds.
            OSError: The connection failed (reset, TLS error).
        """
        protocol = self._protocol
        chunks = protocol.chunks
        while chunks:
            # Bytes that arrived while nobody was reading come first, one read at a time
            # (joining them would copy them all once more).
            data = chunks.pop(0)
            self._taken(len(data))
            if not consumer(data):
                return True
        if not protocol.eof:
            protocol.consumer = consumer
            protocol.consumer_declined = False
            if timeout is None:
                # _wait_for_bytes, inlined: the reader of every idle connection waits here,
                # and each coroutine frame it holds costs about 250 bytes.
                protocol.read_waiter = waiter = self._loop.create_future()
                try:
                    await waiter
                finally:
                    protocol.read_waiter = None
                    protocol.consumer = None
            else:
                await self._wait_for_bytes(timeout)
            if protocol.consumer_declined:
                return True
            if protocol.chunks:
                # Filled into a read target meanwhile (never with a consumer waiting).
                raise AssertionError("bytes buffered while a consumer waited")
        self._raise_connection_error()
        return False

    def park(
        self,
        consumer: Callable[[bytes | memoryview], bool],
        when_woken: Callable[[], None],
    ) -> bool:
        """Hand the bytes that arrive to ``consumer`` with no task waiting to read.

        As in :meth:`consume`, ``consumer`` runs inside the loop's read callback. Once it
        returns False, or the stream ends, ``when_woken()`` runs there too, once (it must
        not raise); the caller then reads again (with :meth:`consume`, say) or parks
        again. Returns False, parking nothing, when bytes or the end are already waiting
        to be read: the caller reads them instead.

        A connection waiting for its next message this way holds no task and no
        coroutine frame, and starting one costs the loop no extra turn.
        """
        protocol = self._protocol
        if protocol.chunks or protocol.eof or protocol.read_waiter is not None:
            return False
        protocol.consumer = consumer
        protocol.consumer_declined = False
        protocol.parked_wake = when_woken
        return True

    def read_for_receiver(
        self,
        consumer: Callable[[bytes | memoryview], bool],
        timeout: float | None = None,
        receive_target: Callable[[], memoryview | None] | None = None,
        target_filled: Callable[[int], bool] | None = None,
    ) -> bool:
        """Never reads: the event loop reads as soon as bytes arrive (see the sync twin)."""
        return False

    def _taken(self, nbytes: int) -> None:
        """``nbytes`` of the buffered chunks were handed out: resume reading once low."""
        protocol = self._protocol
        protocol.buffered -= nbytes
        if protocol.reading_paused and protocol.buffered <= _READ_LOW_WATER:
            protocol.reading_paused = False
            self._transport.resume_reading()

    def _raise_connection_error(self) -> None:
        """At the end of the stream: raise what ended it, unless it was closed on purpose."""
        error = self._protocol.error
        if error is not None and not isinstance(error, ConnectionAbortedError):
            raise error

    async def _wait_for_bytes(self, timeout: float | None) -> None:
        """Wait for the protocol's next read event (bytes, a consumer declining, the end).

        The consumer or read target set up by the caller is removed when it ends.
        """
        protocol = self._protocol
        waiter = protocol.read_waiter = self._loop.create_future()
        try:
            if timeout is None:
                # Awaited here, not in _wait_future: a reader parked on an idle connection
                # then holds one coroutine frame less (about 250 bytes).
                await waiter
            elif not await _wait_future(waiter, timeout):
                raise TimeoutError("read timed out")
        finally:
            protocol.read_waiter = None
            protocol.consumer = None
            protocol.read_target = None

    async def read_into(self, target: memoryview, timeout: float | None = None) -> int:
        """Read up to ``len(target)`` bytes into ``target``; return how many (0: end of stream).

        Raises:
            TimeoutError: Nothing arrived within ``timeout`` seconds.
            OSError: The connection failed (reset, TLS error).
        """
        protocol = self._protocol
        if not protocol.chunks and not protocol.eof:
            protocol.read_target = target
            protocol.target_filled = 0
            await self._wait_for_bytes(timeout)
            if protocol.target_filled:
                return protocol.target_filled
        chunks = protocol.chunks
        if chunks:
            # Bytes that arrived while nobody was reading: copy what fits.
            filled = 0
            wanted = len(target)
            while chunks and filled < wanted:
                chunk = chunks[0]
                taken = min(len(chunk), wanted - filled)
                target[filled : filled + taken] = memoryview(chunk)[:taken]
                filled += taken
                if taken == len(chunk):
                    del chunks[0]
                else:
                    chunks[0] = chunk[taken:]
            self._taken(filled)
            return filled
        self._raise_connection_error()
        return 0

    def write_nowait(self, data: bytes | memoryview) -> bool:
        """Queue ``data`` for sending without waiting (order is kept across callers).

        Returns whether ``data`` may change now: it is ``bytes``, or it was sent or copied.
        If not, the transport may still read it later. Small writes that follow a direct
        one with nothing read in between go out together when the loop iteration ends.
        """
        protocol = self._protocol
        if data and not protocol.lost:
            if protocol.wrote_since_read:
                size = len(data)
                if size <= _CORK_LIMIT - self._corked_size:
                    corked = self._corked
                    if not corked:
                        self._held_writes.hold(self)
                    corked.append(data if type(data) is bytes else bytes(data))
                    self._corked_size += size
                    return True
                self._uncork()
            self._transport.write(data)
            protocol.wrote_since_read = True
            # Some transports keep a reference to what they could not send at once; that
            # matters only for a buffer that may change (bytes cannot).
            return type(data) is bytes or not self._transport.get_write_buffer_size()
        return True

    def _uncork(self) -> None:
        """Send the writes held back in this loop iteration."""
        corked = self._corked
        if corked:
            self._corked = []
            self._corked_size = 0
            if not self._protocol.lost:
                self._transport.write(corked[0] if len(corked) == 1 else b"".join(corked))

    def must_drain(self) -> bool:
        """Whether :meth:`drain` has anything to wait for or report (cheap to ask)."""
        protocol = self._protocol
        return protocol.writing_paused or protocol.lost

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until the outgoing buffer is below its high-water mark.

        Raises:
            TimeoutError: The peer did not read enough within ``timeout`` seconds.
            ConnectionResetError: The connection was lost.
        """
        protocol = self._protocol
        if protocol.lost:
            raise ConnectionResetError("connection lost")
        if not protocol.writing_paused:
            return
        waiter = self._loop.create_future()
        protocol.drain_waiters.append(waiter)
        try:
            if not await _wait_future(waiter, timeout):
                raise TimeoutError("write timed out")
        finally:
            if waiter in protocol.drain_waiters:
                protocol.drain_waiters.remove(waiter)
        if protocol.lost:
            raise ConnectionResetError("connection lost")

    def write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._corked_size

    def set_write_limits(self, high: int, low: int) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def close(self) -> None:
        """Close after flushing what is buffered; the reader then sees end of stream."""
        if not self._transport.is_closing():
            self._uncork()
            self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping buffered output; wakes the reader and any drain."""
        self._protocol.error = self._protocol.error or ConnectionAbortedError("aborted")
        self._corked = []
        self._corked_size = 0
        self._transport.abort()

    async def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the connection is fully closed; False on timeout."""
        protocol = self._protocol
        if protocol.lost:
            return True
        waiter = self._loop.create_future()
        protocol.lost_waiters.append(waiter)
        return await _wait_future(waiter, timeout)

    @property
    def at_eof(self) -> bool:
        return self._protocol.eof and not self._protocol.chunks

    def get_extra_info(self, name: str) -> Any:
        return self._transport.get_extra_info(name)


class _SocketTransport(asyncio.Transport):
    """A plain TCP transport on the loop's ``add_reader`` and ``add_writer``.

    What asyncio's selector transport does for a protocol like ours, without what we do not
    use: no connection_made callback and waiter to a later loop turn (the stream is ready
    when :func:`open_stream` returns), no peer and socket names asked of the kernel for
    every connection, fewer layers and checks per read. A connect and close costs a fifth
    fewer instructions (890,000 -> 700,000); it is used on asyncio's selector loops only
    (uvloop's transports are compiled, the proactor loop has no readers).
    """

    __slots__ = (
        "_loop",
        "_sock",
        "_fd",
        "_protocol",
        "_buffer",
        "_high_water",
        "_low_water",
        "_closing",
        "_lost",
        "_reading_paused",
        "_protocol_paused",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: _StreamProtocol
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._buffer = bytearray()
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024
        self._closing = False
        self._lost = False
        self._reading_paused = False
        self._protocol_paused = False
        protocol.connection_made(self)
        loop.add_reader(self._fd, self._read_ready)

    def _read_ready(self) -> None:
        protocol = self._protocol
        try:
            nbytes = self._sock.recv_into(protocol.get_buffer(-1))
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc)
            return
        try:
            if nbytes:
                protocol.buffer_updated(nbytes)
            elif not protocol.eof_received():
                self.close()
            else:
                self._loop.remove_reader(self._fd)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # As asyncio's: after close(), what is written still goes out before the end.
        if not data or self._lost:
            return
        buffer = self._buffer
        if not buffer:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc)
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
            self._loop.add_writer(self._fd, self._write_ready)
        buffer += data
        self._maybe_pause_protocol()

    def _write_ready(self) -> None:
        if self._lost:
            return
        buffer = self._buffer
        try:
            sent = self._sock.send(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.remove_writer(self._fd)
            buffer.clear()
            self._fatal_error(exc)
            return
        del buffer[:sent]
        self._maybe_resume_protocol()
        if not buffer:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._call_connection_lost(None)

    def _maybe_pause_protocol(self) -> None:
        if len(self._buffer) > self._high_water and not self._protocol_paused:
            self._protocol_paused = True
            self._protocol.pause_writing()

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and len(self._buffer) <= self._low_water:
            self._protocol_paused = False
            self._protocol.resume_writing()

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low
        self._maybe_pause_protocol()

    def pause_reading(self) -> None:
        if not self._closing and not self._reading_paused:
            self._reading_paused = True
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._closing and self._reading_paused:
            self._reading_paused = False
            self._loop.add_reader(self._fd, self._read_ready)

    def is_reading(self) -> bool:
        return not self._closing and not self._reading_paused

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close once the buffered output is sent; connection_lost follows."""
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if not self._buffer:
            self._lost = True
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        self._force_close(None)

    def can_write_eof(self) -> bool:
        return False

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sock = self._sock
        if name == "socket":
            return sock
        try:
            if name == "peername":
                return sock.getpeername()
            if name == "sockname":
                return sock.getsockname()
        except OSError:
            return default
        return default

    def _fatal_error(self, exc: BaseException) -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler(
                {
                    "message": "fatal error on a wsclient socket transport",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        if self._buffer:
            self._buffer.clear()
            self._loop.remove_writer(self._fd)
        if not self._closing:
            self._closing = True
            self._loop.remove_reader(self._fd)
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        self._lost = True
        try:
            self._protocol.connection_lost(exc if isinstance(exc, Exception) else None)
        finally:
            self._sock.close()


def _numeric_address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]] | None:
    """The family and address of a numeric IPv4 or IPv6 host, without a resolver thread."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family, ((host, port) if family == socket.AF_INET else (host, port, 0, 0))
    return None


async def _connect_socket(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to ``host``, trying each address in turn."""
    numeric = _numeric_address(host, port)
    if numeric is not None:
        addresses = [numeric]
    else:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned an empty list")
        addresses = [(family, address) for family, _, _, _, address in infos]
    errors: list[OSError] = []
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            error = sock.connect_ex(address)
            if error in _CONNECT_IN_PROGRESS:
                if _connected(sock):
                    # Over loopback the TCP handshake completes within connect(): no wait,
                    # and no loop turn, then. (Elsewhere this costs one failing system call.)
                    error = 0
                else:
                    fd = sock.fileno()
                    connected = loop.create_future()
                    loop.add_writer(fd, _set_once, connected)
                    try:
                        await connected
                    finally:
                        loop.remove_writer(fd)
                    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, f"Connect call failed {address}: {os.strerror(error)}")
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    if len(errors) == 1 or len({str(error) for error in errors}) == 1:
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(error) for error in errors)}")


_CONNECT_IN_PROGRESS = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR)


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def open_stream(
    host: str,
    port: int,
    *,
    ssl_context: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float | None = None,
) -> AsyncStream:
    """Open a TCP connection (with TLS when ``ssl_context`` is given), TCP_NODELAY set.

    Raises:
        TimeoutError: TCP connect and TLS handshake took longer than ``timeout``.
        OSError: The connection or the TLS handshake failed.
    """
    loop = asyncio.get_running_loop()
    if ssl_context is None and isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
        opening = _open_socket_transport(loop, host, port)
    else:
        opening = _create_connection(loop, host, port, ssl_context, server_hostname, timeout)
    transport, protocol = await (opening if timeout is None else _cancel_after(timeout, opening))
    return AsyncStream(transport, protocol)


async def _open_socket_transport(
    loop: asyncio.AbstractEventLoop, host: str, port: int
) -> tuple[asyncio.Transport, _StreamProtocol]:
    sock = await _connect_socket(loop, host, port)
    protocol = _StreamProtocol()
    return _SocketTransport(loop, sock, protocol), protocol


async def _create_connection(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    ssl_context: ssl_module.SSLContext | None,
    server_hostname: str | None,
    timeout: float | None,
) -> tuple[asyncio.Transport, _StreamProtocol]:
    kwargs: dict[str, Any] = {}
    if ssl_context is not None:
        kwargs["ssl"] = ssl_context
        kwargs["server_hostname"] = server_hostname or host
        if timeout is not None:
            kwargs["ssl_handshake_timeout"] = max(timeout, 0.001)
    # (No isinstance check on the transport: uvloop's do not derive from asyncio's.)
    transport, protocol = await loop.create_connection(_StreamProtocol, host, port, **kwargs)
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # asyncio and uvloop set it already; another loop may not.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return transport, protocol


async def _cancel_after(timeout: float, awaitable: Coroutine[Any, Any, T]) -> T:
    """Await ``awaitable`` in the current task, cancelled after ``timeout`` seconds.

    What ``asyncio.timeout`` does, on the loop's shared deadline heap instead of a loop
    timer of its own (a few microseconds less in every connect).

    Raises:
        TimeoutError: ``timeout`` passed first.
    """
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("a timeout needs to run in a task")
    cancelling = task.cancelling()
    deadlines = _helpers_of(task.get_loop()).deadlines
    entry = deadlines.add(max(timeout, 0), task)
    try:
        result = await awaitable
    except asyncio.CancelledError as exc:
        # Our deadline cancelled the task, and nobody else did: a timeout.
        if entry[2] is None and task.uncancel() <= cancelling:
            raise TimeoutError from exc
        raise
    else:
        if entry[2] is None and task.cancelling() > cancelling:
            # Expired, but what was awaited swallowed the cancellation and returned.
            task.uncancel()
    finally:
        deadlines.discard(entry)
    return result


class StateLock:
    """Guards state shared with background work; a no-op here (one thread, no awaits inside)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        return None


class AsyncLock:
    """A mutual-exclusion lock held across waits."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        # Made on first use: most connections never take their send lock (see
        # WebSocketConnection._write_whole_message), and an idle one saves its 100 bytes.
        self._lock: asyncio.Lock | None = None

    async def __aenter__(self) -> None:
        lock = self._lock
        if lock is None:
            lock = self._lock = asyncio.Lock()
        await lock.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._lock is not None
        self._lock.release()

    def locked(self) -> bool:
        return self._lock is not None and self._lock.locked()


class AsyncEvent:
    """A flag that tasks can wait on (futures only: no task per wait, little memory)."""

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        self._flag = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until set; return whether it is set (False after ``timeout`` seconds)."""
        if self._flag:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await _wait_future(waiter, timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return self._flag


class AsyncMailbox(Generic[T]):
    """Bounded FIFO boxes (one per kind) read by kind or by arrival order across kinds.

    A ``get`` removes an item only once it has it in hand, so a cancelled or timed-out
    ``get`` never loses an item. ``close`` wakes every waiter; items already in a box are
    still delivered, then ``get`` raises :class:`MailboxClosed`.
    """

    __slots__ = (
        "_boxes",
        "_maxsizes",
        "_sequence",
        "_waiters",
        "_blocked_gets",
        "_idle_waiters",
        "_loop",
        "closed",
        "puts_never_wait",
    )

    def __init__(self, maxsizes: Sequence[int]) -> None:
        # Created on first use: an idle connection then costs no deque at all.
        self._boxes: list[deque[tuple[int, T]] | None] = [None] * len(maxsizes)
        self._maxsizes = [size if size > 0 else 0 for size in maxsizes]
        self._sequence = 0
        self._waiters: list[asyncio.Future[Any]] = []
        # The kinds of each get() blocked right now, and the wait_idle() callers.
        self._blocked_gets: list[tuple[Sequence[int], asyncio.Future[Any]]] = []
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self.puts_never_wait = False

    def read_when_empty(
        self,
        stream: AsyncStream,
        consumer: Callable[[bytes | memoryview], bool],
        receive_target: Callable[[], memoryview | None],
        target_filled: Callable[[int], bool],
    ) -> None:
        """Nothing to do here: the event loop reads as soon as bytes arrive.

        (The sync twin lets a waiting ``get`` read the stream itself.)
        """

    def shrink(self) -> None:
        """Nothing to do: here a box is dropped as soon as it is empty (see get_nowait)."""

    def _new_future(self) -> asyncio.Future[Any]:
        # The loop is cached: on Python 3.11 get_running_loop() costs a getpid() call.
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.create_future()

    def _wake_waiters(self) -> None:
        """Wake the puts waiting for room and the ``wait_idle`` callers, to look again."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        if self._idle_waiters:
            self._wake_idle_waiters()

    def _wake_all(self) -> None:
        """Wake every waiter, blocked gets included (a get woken with ``None`` looks again)."""
        for _, waiter in self._blocked_gets:
            if not waiter.done():
                waiter.set_result(None)
        self._wake_waiters()

    def _wake_idle_waiters(self) -> None:
        for waiter in self._idle_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._idle_waiters.clear()

    def _idle(self) -> bool:
        boxes = self._boxes
        # A get whose waiter is done has an item on its way (or is about to look again).
        return self.closed or any(
            not waiter.done() and all(not boxes[kind] for kind in kinds)
            for kinds, waiter in self._blocked_gets
        )

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until a ``get`` is blocked with nothing to take, or the mailbox is closed.

        A ``get`` that blocks shows that its caller has handled every item it took before
        and is asking for more. Returns False after ``timeout`` seconds.
        """
        deadline = None if timeout is None else monotonic() + timeout
        while not self._idle():
            remaining = None if deadline is None else deadline - monotonic()
            if remaining is not None and remaining <= 0:
                return False
            waiter = self._new_future()
            self._idle_waiters.append(waiter)
            try:
                await _wait_future(waiter, remaining)
            finally:
                if waiter in self._idle_waiters:
                    self._idle_waiters.remove(waiter)
        return True

    async def _wait(self, timeout: float | None) -> bool:
        waiter = self._new_future()
        self._waiters.append(waiter)
        try:
            return await _wait_future(waiter, timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def qsize(self, kind: int) -> int:
        box = self._boxes[kind]
        return len(box) if box else 0

    def full(self, kind: int) -> bool:
        maxsize = self._maxsizes[kind]
        box = self._boxes[kind]
        return 0 < maxsize <= (len(box) if box else 0)

    def put_nowait(self, kind: int, item: T) -> bool:
        """Add ``item`` unless the box is full or the mailbox closed; return whether added."""
        if self.closed:
            return False
        box = self._boxes[kind]
        if box is None:
            # A get blocked on an empty box takes the item straight from its wake-up: no
            # box to make and empty again, no second look (a round trip's every message).
            for kinds, waiter in self._blocked_gets:
                if kind in kinds and not waiter.done():
                    self._sequence += 1
                    waiter.set_result((kind, item, self._sequence))
                    return True
            box = self._boxes[kind] = deque()
        elif 0 < self._maxsizes[kind] <= len(box):
            return False
        self._sequence += 1
        box.append((self._sequence, item))
        # No get is blocked on this kind: one would have taken the item above (or holds
        # one already and is on its way).
        if self._waiters or self._idle_waiters:
            self._wake_waiters()
        return True

    def put_many_nowait(self, kind: int, items: Sequence[T]) -> int:
        """Add the first ``items`` that fit, in order; return how many were added."""
        if self.closed:
            return 0
        box = self._boxes[kind]
        if box is None:
            box = self._boxes[kind] = deque()
        count = add_to_box(box, self._maxsizes[kind], self._sequence, items)
        self._sequence += count
        if count and (self._blocked_gets or self._waiters or self._idle_waiters):
            self._wake_all()
        return count

    async def put(self, kind: int, item: T) -> bool:
        """Add ``item``, waiting while the box is full.

        Returns False, without adding it, when the mailbox is closed or stops waiting
        first (see :meth:`stop_waiting_puts`).
        """
        while self.full(kind) and not self.closed and not self.puts_never_wait:
            await self._wait(None)
        return self.put_nowait(kind, item)

    def stop_waiting_puts(self) -> None:
        """From now on ``put`` into a full box returns False at once; ``get`` is unchanged."""
        self.puts_never_wait = True
        self._wake_waiters()

    def drop_oldest(self, kind: int) -> T | None:
        return self.take_nowait(kind)

    def take_nowait(self, kind: int) -> T | None:
        """Take the oldest item of one kind, or ``None`` if there is none."""
        box = self._boxes[kind]
        if not box:
            return None
        item = box.popleft()[1]
        if not box:
            self._boxes[kind] = None
        if self._waiters:
            self._wake_waiters()
        return item

    def get_nowait(self, kinds: Sequence[int]) -> tuple[int, T] | None:
        """Take the earliest-arrived item among ``kinds``, or ``None`` if all are empty."""
        best: deque[tuple[int, T]] | None = None
        best_kind = -1
        boxes = self._boxes
        for kind in kinds:
            box = boxes[kind]
            if box and (best is None or box[0][0] < best[0][0]):
                best, best_kind = box, kind
        if best is None:
            return None
        item = best.popleft()[1]
        if not best:
            # An empty deque still costs about 760 bytes, for as long as the connection
            # stays idle; making one again costs about 50 ns.
            boxes[best_kind] = None
        if self._waiters:
            self._wake_waiters()
        return best_kind, item

    async def get(
        self, kinds: Sequence[int], timeout: float | None = None, *, known_empty: bool = False
    ) -> tuple[int, T]:
        """Take the earliest-arrived item among ``kinds``, waiting up to ``timeout``.

        ``known_empty``: the caller has just found nothing (``take_nowait``), so the first
        look is skipped.

        Raises:
            TimeoutError: Nothing arrived in time.
            MailboxClosed: The mailbox is closed and those boxes are empty.
        """
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            if known_empty:
                known_empty = False
            else:
                found = self.get_nowait(kinds)
                if found is not None:
                    return found
            if self.closed:
                raise MailboxClosed
            remaining = None if deadline is None else deadline - monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("receive timed out")
            # The wait of _wait(), inlined: this is the path of every receive that finds
            # nothing waiting, and each call level costs about as much as the rest. A
            # blocked get is woken by a put of its kinds (with the item) or by _wake_all.
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            waiter: asyncio.Future[tuple[int, T, int] | None] = loop.create_future()
            blocked = (kinds, waiter)
            self._blocked_gets.append(blocked)
            if self._idle_waiters:
                self._wake_idle_waiters()
            try:
                if remaining is None:
                    handed = await waiter
                else:
                    # False: timed out, the waiter cancelled (the loop then raises).
                    handed = waiter.result() if await _wait_future(waiter, remaining) else None
            except BaseException:
                # Done with None: only woken to look again, nothing was handed over.
                if waiter.done() and not waiter.cancelled():
                    unclaimed = waiter.result()
                    if unclaimed is not None:
                        self._put_back(unclaimed)
                raise
            finally:
                self._blocked_gets.remove(blocked)
            if handed is not None:
                return handed[0], handed[1]

    def _put_back(self, handed: tuple[int, T, int]) -> None:
        """Return an item handed to a get that was cancelled before it could take it."""
        kind, item, sequence = handed
        box = self._boxes[kind]
        if box is None:
            box = self._boxes[kind] = deque()
        # Everything in its box came after it.
        box.appendleft((sequence, item))
        self._wake_all()

    def close(self) -> None:
        self.closed = True
        self._wake_all()


class TaskHandle:
    """A background task started by :func:`spawn`."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        self._task = task

    def done(self) -> bool:
        return self._task.done()

    def is_current(self) -> bool:
        return asyncio.current_task() is self._task

    async def join(self, timeout: float | None = None) -> bool:
        """Wait for the task to finish; False on timeout. The task is never cancelled."""
        if self._task.done() or self.is_current():
            return self._task.done()
        await asyncio.wait({self._task}, timeout=timeout)
        return self._task.done()


def spawn(function: Callable[..., Coroutine[Any, Any, None]], *args: Any, name: str) -> TaskHandle:
    """Run ``function(*args)`` in the background; it must catch its own errors."""
    return TaskHandle(asyncio.get_running_loop().create_task(function(*args), name=name))


class TimerHandle:
    """A callback scheduled by :func:`call_later`."""

    __slots__ = ("_deadlines", "_entry")

    def __init__(self, deadlines: _Deadlines, entry: list[Any]) -> None:
        self._deadlines = deadlines
        self._entry = entry

    def cancel(self) -> None:
        """Make sure the callback does not run, and drop the reference to it."""
        self._deadlines.discard(self._entry)


def call_later(delay: float, callback: Callable[[], None]) -> TimerHandle:
    """Run ``callback()`` on the running loop after ``delay`` seconds.

    A timer costs no task, and no handle in the loop's own heap: an idle connection's
    keepalive is one small list in the loop's deadline heap (see ``_Deadlines``).
    ``callback`` must return promptly and catch its own errors.
    """
    deadlines = _helpers_of(asyncio.get_running_loop()).deadlines
    return TimerHandle(deadlines, deadlines.add(max(delay, 0), callback))


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)
