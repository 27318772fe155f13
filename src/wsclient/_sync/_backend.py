"""Blocking-socket and thread primitives behind the sync flavor (hand-written, never generated).

Mirrors ``wsclient/_async/_backend.py`` name for name. The socket is non-blocking and every
wait is a ``poll`` with a deadline, so a reader thread and writers can share it: a writer
that waits for a slow peer never holds a lock the reader or the keepalive needs, and
``abort`` (a ``shutdown``) wakes every thread waiting on the socket.
"""

from __future__ import annotations

import heapq
import itertools
import os
import select
import selectors
import socket
import ssl as ssl_module
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from .._shared import MailboxClosed, add_to_box, logger

__all__ = [
    "StateLock",
    "SyncEvent",
    "SyncLock",
    "SyncMailbox",
    "SyncStream",
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

_RECEIVE_SIZE = 256 * 1024
# Receive buffers are lent for one read and its consumer, never across a wait: an idle
# connection holds none, and a connect does not pay for zero-filling one (about 50 us).
_free_buffers: list[memoryview] = []
_MAX_FREE_BUFFERS = 8
# How long the reader thread stays back after a receiving thread read for itself: while
# the application keeps receiving, it does the reading; once it stops for this long, the
# reader thread reads again (so pings are answered between the application's receives).
_HANDOVER_GRACE = 0.02
# The timer thread ends after this long with no timer, so a process whose connections are
# all closed keeps no thread, while back-to-back connections reuse one.
_TIMER_THREAD_LINGER = 1.0
# Output left queued with nobody draining it (a send that timed out, a keepalive ping behind
# a full socket) is flushed by a worker thread, started if it is still there this much
# later: a sender drains right after it writes, and usually needs no help.
_UNATTENDED_OUTPUT_DELAY = 0.01
# The flusher looks again this often whether the stream was closed meanwhile.
_FLUSHER_POLL_INTERVAL = 1.0
# A reader that has seen nothing arrive for this long hands its socket to the watcher
# thread, so that an idle connection holds no thread (see consume()). The hand-over and
# the wake-up cost some tens of microseconds: nothing against a quarter second of silence.
# Much longer, and a burst of connects leaves a thread per connection alive at once, whose
# freed memory fragments the heap (1,000 connects within a second: 6.8 KiB of RSS per idle
# connection with 0.25 s, 10.9 KiB with 1 s).
_IDLE_AFTER = 0.25
# The watcher thread ends after this long with no socket to watch.
_WATCHER_LINGER = 1.0
_WOULD_BLOCK = (BlockingIOError, ssl_module.SSLWantReadError, ssl_module.SSLWantWriteError)
_ERROR_EVENTS = select.POLLERR | select.POLLHUP | select.POLLNVAL


_NO_BUFFER = memoryview(b"")


class _WentIdle(Exception):
    """Nothing arrived within the idle limit of a wait."""


def _take_buffer() -> memoryview:
    try:
        # One call, so that two threads never both see the last free buffer.
        return _free_buffers.pop()
    except IndexError:
        return memoryview(bytearray(_RECEIVE_SIZE))


def _give_back(buffer: memoryview) -> None:
    if len(_free_buffers) < _MAX_FREE_BUFFERS:
        _free_buffers.append(buffer)


def _consume_lent(
    consumer: Callable[[bytes | memoryview], bool], buffer: memoryview, received: int
) -> bool:
    try:
        return consumer(buffer[:received])
    finally:
        _give_back(buffer)


def _poll(sock_fd: int, events: int, timeout: float | None) -> int:
    poller = select.poll()
    poller.register(sock_fd, events)
    result = poller.poll(None if timeout is None else max(timeout, 0) * 1000)
    return result[0][1] if result else 0


class SyncStream:
    """A byte stream over a connected socket (TCP or TLS), shared by several threads."""

    __slots__ = (
        "_aborted",
        "_closed",
        "_consuming",
        "_draining",
        "_eof",
        "_fd",
        "_flusher_running",
        "_handed_back",
        "_high_water",
        "_low_water",
        "_output",
        "_output_check_scheduled",
        "_output_lock",
        "_plain",
        "_read_poller",
        "_read_role",
        "_reader_wakeup",
        "_receiver_read_at",
        "_sock",
        "_wait_before_reading",
        "_when_readable",
        "_write_error",
    )

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._output = bytearray()
        self._output_lock = threading.Lock()
        self._aborted = False
        self._write_error: OSError | None = None
        self._closed = False
        self._eof = False
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024
        self._read_poller = select.poll()
        self._read_poller.register(self._fd, select.POLLIN)
        self._plain = not isinstance(sock, ssl_module.SSLSocket)
        self._wait_before_reading = False
        # Reading is a role. The reader thread holds it in consume(); a thread that
        # receives while its buffer is empty takes it when free and reads for itself, so a
        # request-response loop never switches threads. Meanwhile the reader steps back.
        self._read_role = threading.Lock()
        # Released to wake the reader while it stays back; a release nobody has waited
        # for yet makes its next wait return at once, so no wake-up is lost. (A lock, not
        # a condition: that would cost about 1 KiB per connection.)
        self._reader_wakeup = threading.Lock()
        self._reader_wakeup.acquire()
        self._consuming = False
        self._receiver_read_at = -_HANDOVER_GRACE
        # A receiver's read ended what consume() waits for: the consumer declined, or EOF.
        self._handed_back = False
        # A thread that waits in poll() for input does not see output queued meanwhile by
        # another thread; these make sure queued output is never left unattended.
        self._draining = 0
        self._output_check_scheduled = False
        self._flusher_running = False
        # Called by the watcher once this idle stream is readable (see consume()).
        self._when_readable: Callable[[], None] | None = None

    def read(self, timeout: float | None = None) -> bytes:
        """Return the next bytes available; ``b""`` at end of stream.

        While waiting it also flushes output that other threads could not write without
        blocking, so replies queued by the reader go out as soon as the peer can take them.

        Raises:
            TimeoutError: Nothing arrived within ``timeout`` seconds.
            OSError: The connection failed (reset, TLS error).
        """
        buffer, received = self._read_lent(timeout)
        if not received:
            return b""
        try:
            return buffer[:received].tobytes()
        finally:
            _give_back(buffer)

    def consume(
        self,
        consumer: Callable[[bytes | memoryview], bool],
        timeout: float | None = None,
        when_idle: Callable[[], None] | None = None,
    ) -> bool | None:
        """Hand the bytes that arrive to ``consumer`` until it returns False.

        ``consumer`` runs in the calling thread as soon as bytes arrive and takes them,
        whatever it returns; it gets a view of a buffer that is reused once it returns.
        Returns True once ``consumer`` has returned False, False at end of stream.

        With ``when_idle``, once nothing has arrived for ``_IDLE_AFTER`` seconds (and no
        output waits), the socket is handed to the process's watcher thread and this
        returns None; ``when_idle()`` then runs in the watcher thread as soon as the socket
        is readable (bytes, end of stream, abort). An idle connection holds no thread.

        Raises:
            TimeoutError: ``consumer`` still wanted more after ``timeout`` seconds.
            OSError: The connection failed (reset, TLS error).
        """
        deadline = None if timeout is None else monotonic() + timeout
        idle_limit = _IDLE_AFTER if when_idle is not None else None
        while True:
            outcome = self._consume_until_idle(consumer, deadline, idle_limit)
            if outcome is not None:
                return outcome
            # After _consuming was reset: a reader started by the watcher sets it again.
            assert when_idle is not None
            if self._hand_to_watcher(when_idle):
                return None

    def _consume_until_idle(
        self,
        consumer: Callable[[bytes | memoryview], bool],
        deadline: float | None,
        idle_limit: float | None,
    ) -> bool | None:
        """:meth:`consume`, but None once idle for ``idle_limit`` seconds."""
        self._consuming = True
        try:
            while True:
                if self._handed_back:
                    return not self._eof
                if self._aborted:
                    return False
                remaining = None if deadline is None else deadline - monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("read timed out")
                if (
                    monotonic() - self._receiver_read_at < _HANDOVER_GRACE
                    or self._read_role.locked()
                ):
                    # A receiving thread reads (or just did): stay back, look again soon.
                    pause = (
                        _HANDOVER_GRACE if remaining is None else min(_HANDOVER_GRACE, remaining)
                    )
                    self._reader_wakeup.acquire(timeout=pause)
                    continue
                if not self._read_role.acquire(blocking=False):
                    continue
                try:
                    buffer, received = self._read_lent(remaining, idle_limit)
                    if received > 0 and _consume_lent(consumer, buffer, received):
                        continue
                finally:
                    self._read_role.release()
                if received < 0:
                    return None
                return bool(received)
        finally:
            # Once this returns no receiving thread reads: the caller may read() again.
            with self._read_role:
                self._consuming = False
                self._handed_back = False

    def _hand_to_watcher(self, when_idle: Callable[[], None]) -> bool:
        """Let the watcher thread wait for input; False if this stream must not go idle."""
        with self._output_lock:
            # Queued output is flushed by whoever waits on the socket: the reader keeps it.
            if self._output or self._aborted:
                return False
            self._when_readable = when_idle
            _watcher.watch(self._fd, self._became_readable)
        return True

    def _became_readable(self) -> None:
        when_readable, self._when_readable = self._when_readable, None
        if when_readable is not None:
            when_readable()

    def park(
        self,
        consumer: Callable[[bytes | memoryview], bool],
        when_woken: Callable[[], None],
    ) -> bool:
        """Never parks (see the async twin): here nothing runs when bytes arrive unless a
        thread waits for them. The reader thread reads, and hands an idle socket over to
        the watcher by itself (see :meth:`consume`)."""
        return False

    def read_for_receiver(
        self,
        consumer: Callable[[bytes | memoryview], bool],
        timeout: float | None = None,
        receive_target: Callable[[], memoryview | None] | None = None,
        target_filled: Callable[[int], bool] | None = None,
    ) -> bool:
        """Read in the calling thread, for a receive that found nothing to take.

        Only while the reader thread is in :meth:`consume` and nobody else reads; the
        bytes go to ``consumer`` as they would there. When ``consumer`` stops because a
        large message is being read into place, the reads go on into
        ``receive_target()`` (each count is reported to ``target_filled``, which says
        whether reading may go on) until the message is complete: the receiver waits for
        those bytes anyway, and the reader thread would only have to wake it.
        Returns whether it read (the caller then looks for its message again); False
        means: wait for the reader thread.

        Raises:
            TimeoutError: Nothing arrived within ``timeout`` seconds.
            OSError: The connection failed (reset, TLS error).
        """
        if self._handed_back or not self._consuming:
            # No reader in consume() yet (a new connection, or one the watcher is waking
            # up): this receiver waits for it, so it must not make it stay back.
            return False
        # Also when the reader holds the role: it steps back after its read, and the next
        # receive reads for itself.
        self._receiver_read_at = monotonic()
        if not self._read_role.acquire(blocking=False):
            return False
        try:
            if self._handed_back or not self._consuming or self._aborted:
                return False
            deadline = None if timeout is None else monotonic() + timeout
            reading_on = False
            try:
                buffer, received = self._read_lent(timeout)
                reading_on = bool(received) and _consume_lent(consumer, buffer, received)
                if received and not reading_on and receive_target and target_filled:
                    reading_on = self._fill_targets(receive_target, target_filled, deadline)
            finally:
                if not reading_on:
                    # The end, or something that needs the reader loop (a full buffer, a
                    # failure, the close, a timeout within a message): hand back to the
                    # reader thread at once.
                    self._handed_back = True
                    self._wake_reader()
            return True
        finally:
            self._receiver_read_at = monotonic()
            self._read_role.release()

    def _fill_targets(
        self,
        receive_target: Callable[[], memoryview | None],
        target_filled: Callable[[int], bool],
        deadline: float | None,
    ) -> bool:
        """Read into place until the message is complete; whether reading may go on after.

        False when there is nothing to fill (the consumer stopped for another reason) or
        when the reader loop must take over.
        """
        target = receive_target()
        if target is None:
            return False
        while target is not None:
            try:
                remaining = None if deadline is None else deadline - monotonic()
                received = self.read_into(target, remaining)
            finally:
                target.release()
            if not target_filled(received) or not received:
                return False
            target = receive_target()
        return True

    def _read_lent(
        self, timeout: float | None, idle_limit: float | None = None
    ) -> tuple[memoryview, int]:
        """Read into a lent buffer: ``(buffer, count)``; give it back when count is above 0.

        Like :meth:`read_into`, but the buffer is taken only once bytes are there. Count
        -1: nothing arrived for ``idle_limit`` seconds (within ``timeout``).
        """
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            if self._aborted:
                return _NO_BUFFER, 0
            if not self._wait_before_reading:
                buffer = _take_buffer()
                received = self._try_recv_into(buffer)
                if received > 0:
                    return buffer, received
                _give_back(buffer)
                if received == 0:
                    return _NO_BUFFER, 0
            self._wait_before_reading = False
            try:
                if not self._wait_readable(deadline, idle_limit):
                    return _NO_BUFFER, 0
            except _WentIdle:
                return _NO_BUFFER, -1

    def read_into(self, target: memoryview, timeout: float | None = None) -> int:
        """Read up to ``len(target)`` bytes into ``target``; return how many (0: end of stream).

        Raises:
            TimeoutError: Nothing arrived within ``timeout`` seconds.
            OSError: The connection failed (reset, TLS error).
        """
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            if self._aborted:
                return 0
            if not self._wait_before_reading:
                received = self._try_recv_into(target)
                if received >= 0:
                    return received
            self._wait_before_reading = False
            if not self._wait_readable(deadline):
                return 0

    def _try_recv_into(self, target: memoryview) -> int:
        """One ``recv_into``: the count, 0 at end of stream, -1 when nothing is there yet."""
        try:
            received = self._sock.recv_into(target)
        except _WOULD_BLOCK:
            return -1
        except OSError:
            if self._aborted:
                return 0
            raise
        if not received:
            self._eof = True
            return 0
        # A short read drained the kernel buffer: next time, wait first instead of a read
        # that would fail. (TLS may hold decrypted bytes: always read.)
        self._wait_before_reading = self._plain and received < len(target)
        return received

    def _wait_readable(self, deadline: float | None, idle_limit: float | None = None) -> bool:
        """Wait until the socket may be read, flushing queued output meanwhile.

        Returns False when the descriptor is gone (read as end of stream).

        Raises:
            TimeoutError: ``deadline`` passed.
            _WentIdle: Nothing happened for ``idle_limit`` seconds, before ``deadline``.
        """
        remaining = None if deadline is None else deadline - monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError("read timed out")
        until_idle = idle_limit is not None and (remaining is None or idle_limit < remaining)
        wait = idle_limit if until_idle else remaining
        poller = self._read_poller
        if self._output:
            poller.modify(self._fd, select.POLLIN | select.POLLOUT)
        ready = poller.poll(None if wait is None else wait * 1000)
        revents = ready[0][1] if ready else 0
        if self._output:
            poller.modify(self._fd, select.POLLIN)
        if not ready and until_idle:
            raise _WentIdle
        if revents & select.POLLOUT and not self._aborted:
            self._flush()
        return not revents & select.POLLNVAL

    def _flush(self) -> None:
        """Send what the socket takes now without blocking; keep the rest."""
        with self._output_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        output = self._output
        while output and not self._aborted:
            try:
                sent = self._sock.send(output)
            except _WOULD_BLOCK:
                return
            except OSError as exc:
                self._fail_writes(exc)
                return
            del output[:sent]

    def _fail_writes(self, exc: OSError) -> None:
        # As the asyncio transport does, a failed write does not raise to the writer: the
        # stream is aborted, so the reader ends the connection and drain() reports it.
        self._write_error = exc
        self.abort()

    def write_nowait(self, data: bytes | memoryview) -> bool:
        """Queue ``data`` and send what the socket takes now (order is kept across threads).

        Returns whether ``data`` may change now: always here, as what the socket does not
        take at once is copied. A connection that fails meanwhile is aborted;
        :meth:`drain` then raises.
        """
        if not data or self._aborted:
            return True
        with self._output_lock:
            output = self._output
            if not output:
                try:
                    sent = self._sock.send(data)
                except _WOULD_BLOCK:
                    sent = 0
                except OSError as exc:
                    self._fail_writes(exc)
                    return True
                if sent == len(data):
                    return True
                output += memoryview(data)[sent:]
            else:
                output += data
                self._flush_locked()
            if output and not self._draining:
                self._check_output_later()
        return True

    def _check_output_later(self) -> None:
        """Make sure output still queued soon is flushed by someone (output lock held)."""
        if not self._output_check_scheduled and not self._flusher_running:
            self._output_check_scheduled = True
            call_later(_UNATTENDED_OUTPUT_DELAY, self._check_output)

    def _check_output(self) -> None:
        # In the timer thread: only hand the wait to a worker.
        with self._output_lock:
            self._output_check_scheduled = False
            if not self._output or self._aborted or self._draining or self._flusher_running:
                return
            self._flusher_running = True
        spawn(self._flush_in_background, name="wsclient-flusher")

    def _flush_in_background(self) -> None:
        while True:
            with self._output_lock:
                if not self._output or self._aborted or self._draining:
                    # A draining thread waits for the socket itself: it takes over.
                    self._flusher_running = False
                    return
            _poll(self._fd, select.POLLOUT, _FLUSHER_POLL_INTERVAL)
            self._flush()

    def must_drain(self) -> bool:
        """Whether :meth:`drain` has anything to wait for or report (cheap to ask)."""
        return bool(self._output) or self._aborted

    def drain(self, timeout: float | None = None) -> None:
        """Wait until everything queued has been handed to the kernel.

        Raises:
            TimeoutError: The peer did not read enough within ``timeout`` seconds.
            ConnectionResetError: The connection was aborted or lost.
        """
        deadline = None if timeout is None else monotonic() + timeout
        with self._output_lock:
            self._draining += 1
        try:
            while True:
                if self._aborted:
                    raise ConnectionResetError("connection aborted") from self._write_error
                self._flush()
                if not self._output:
                    return
                remaining = None if deadline is None else deadline - monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("write timed out")
                revents = _poll(self._fd, select.POLLOUT, remaining)
                if revents & _ERROR_EVENTS and not revents & select.POLLOUT:
                    raise ConnectionResetError("connection lost")
        finally:
            with self._output_lock:
                self._draining -= 1
                if self._output and not self._draining and not self._aborted:
                    # Timed out: what is queued still goes out when the peer reads again.
                    self._check_output_later()

    def write_buffer_size(self) -> int:
        return len(self._output)

    def set_write_limits(self, high: int, low: int) -> None:
        self._high_water = high
        self._low_water = low

    def close(self) -> None:
        """Close the socket; a thread blocked in :meth:`read` sees end of stream."""
        if self._closed:
            return
        self._closed = True
        self._aborted = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._wake_reader()
        # A receiving thread woken by the shutdown lets go of the descriptor first.
        with self._read_role:
            if self._when_readable is not None:
                # Never left in the watcher's set, where it would outlive the descriptor.
                _watcher.unwatch(self._fd)
                self._when_readable = None
            self._sock.close()

    def abort(self) -> None:
        """Stop all I/O at once: wakes the reader (end of stream) and any drain (error).

        The descriptor itself is closed by :meth:`close`, called by the reader when it
        exits, so no other thread ever polls a reused descriptor.
        """
        self._aborted = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._wake_reader()

    def _wake_reader(self) -> None:
        try:
            self._reader_wakeup.release()
        except RuntimeError:
            # Already released: a wake-up is pending.
            pass

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._closed

    @property
    def at_eof(self) -> bool:
        return self._eof

    def get_extra_info(self, name: str) -> Any:
        if name == "socket":
            return self._sock
        if name == "peername":
            try:
                return self._sock.getpeername()
            except OSError:
                return None
        if name == "sslobject" and isinstance(self._sock, ssl_module.SSLSocket):
            return self._sock
        return None


def open_stream(
    host: str,
    port: int,
    *,
    ssl_context: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float | None = None,
) -> SyncStream:
    """Open a TCP connection (with TLS when ``ssl_context`` is given), TCP_NODELAY set.

    Raises:
        TimeoutError: TCP connect and TLS handshake took longer than ``timeout``.
        OSError: The connection or the TLS handshake failed.
    """
    deadline = None if timeout is None else monotonic() + timeout
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            remaining = None if deadline is None else max(deadline - monotonic(), 0.001)
            sock.settimeout(remaining)
            sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
    except BaseException:
        sock.close()
        raise
    return SyncStream(sock)


# Guards state shared with background threads; held only for short, non-blocking work. The
# C lock itself: its `with` costs no Python call (the async twin is a no-op class).
StateLock = threading.Lock


class SyncLock:
    """A mutual-exclusion lock held across waits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


class SyncEvent:
    """A flag that threads can wait on.

    Waiters pass through a lock held while the flag is down: a ``threading.Event`` costs a
    condition and its deque (about 1 KiB), and every connection has one.
    """

    __slots__ = ("_flag", "_gate")

    def __init__(self) -> None:
        self._flag = False
        self._gate = threading.Lock()
        self._gate.acquire()

    def set(self) -> None:
        if not self._flag:
            self._flag = True
            try:
                self._gate.release()
            except RuntimeError:
                # Another thread set it at the same moment.
                pass

    def clear(self) -> None:
        if self._flag:
            self._flag = False
            self._gate.acquire()

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set; return whether it is set (False after ``timeout`` seconds)."""
        if self._flag:
            return True
        if self._gate.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            self._gate.release()
        return self._flag


class SyncMailbox(Generic[T]):
    """Bounded FIFO boxes (one per kind) read by kind or by arrival order across kinds.

    ``close`` wakes every waiter; items already in a box are still delivered, then ``get``
    raises :class:`MailboxClosed`.
    """

    __slots__ = (
        "_blocked_gets",
        "_boxes",
        "_condition",
        "_idle_condition",
        "_lock",
        "_maxsizes",
        "_read_for_receiver",
        "_sequence",
        "_sleepers",
        "closed",
        "puts_never_wait",
    )

    def __init__(self, maxsizes: Sequence[int]) -> None:
        # Created on first use: an idle connection then costs no deque at all.
        self._boxes: list[deque[tuple[int, T]] | None] = [None] * len(maxsizes)
        self._maxsizes = [size if size > 0 else 0 for size in maxsizes]
        self._sequence = 0
        self._lock = threading.Lock()
        # Made by the first get() or put() that has to wait, dropped by shrink().
        self._condition: threading.Condition | None = None
        # The kinds of each get() blocked right now, and a condition for wait_idle().
        self._blocked_gets: list[Sequence[int]] = []
        # Made by the first wait_idle() (at a close): a condition costs about 1 KiB.
        self._idle_condition: threading.Condition | None = None
        # Threads asleep on self._condition: notifying nobody still costs a Python call.
        self._sleepers = 0
        self.closed = False
        self.puts_never_wait = False
        self._read_for_receiver: Callable[[float | None], bool] | None = None

    def read_when_empty(
        self,
        stream: SyncStream,
        consumer: Callable[[bytes | memoryview], bool],
        receive_target: Callable[[], memoryview | None],
        target_filled: Callable[[int], bool],
    ) -> None:
        """Let a ``get`` that finds nothing read ``stream`` itself, through ``consumer``.

        A thread that waits for a message would otherwise sleep until the reader thread
        reads it and wakes it up: two thread switches per message. See
        :meth:`SyncStream.read_for_receiver`.
        """

        def read_for_receiver(timeout: float | None) -> bool:
            return stream.read_for_receiver(consumer, timeout, receive_target, target_filled)

        self._read_for_receiver = read_for_receiver

    def _sleep(self, timeout: float | None) -> None:
        condition = self._condition
        if condition is None:
            condition = self._condition = threading.Condition(self._lock)
        self._sleepers += 1
        try:
            condition.wait(timeout)
        finally:
            self._sleepers -= 1

    def _wake(self) -> None:
        if self._sleepers:
            assert self._condition is not None
            self._condition.notify_all()

    def shrink(self) -> None:
        """Drop what an idle connection does not need: empty boxes, an unused condition.

        A deque costs about 760 bytes even when empty; they are made again on first use.
        """
        with self._lock:
            boxes = self._boxes
            for kind, box in enumerate(boxes):
                if box is not None and not box:
                    boxes[kind] = None
            if not self._sleepers:
                self._condition = None

    def _idle_locked(self) -> bool:
        boxes = self._boxes
        return self.closed or any(
            all(not boxes[kind] for kind in kinds) for kinds in self._blocked_gets
        )

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until a ``get`` is blocked with nothing to take, or the mailbox is closed.

        A ``get`` that blocks shows that its caller has handled every item it took before
        and is asking for more. Returns False after ``timeout`` seconds.
        """
        deadline = None if timeout is None else monotonic() + timeout
        with self._lock:
            if self._idle_condition is None:
                self._idle_condition = threading.Condition(self._lock)
            while not self._idle_locked():
                remaining = None if deadline is None else deadline - monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle_condition.wait(remaining)
            return True

    def qsize(self, kind: int) -> int:
        box = self._boxes[kind]
        return len(box) if box else 0

    def full(self, kind: int) -> bool:
        maxsize = self._maxsizes[kind]
        box = self._boxes[kind]
        return 0 < maxsize <= (len(box) if box else 0)

    def _put_locked(self, kind: int, item: T) -> bool:
        if self.closed:
            return False
        box = self._boxes[kind]
        if box is None:
            box = self._boxes[kind] = deque()
        elif 0 < self._maxsizes[kind] <= len(box):
            return False
        self._sequence += 1
        box.append((self._sequence, item))
        self._wake()
        return True

    def put_nowait(self, kind: int, item: T) -> bool:
        """Add ``item`` unless the box is full or the mailbox closed; return whether added."""
        with self._lock:
            return self._put_locked(kind, item)

    def put_many_nowait(self, kind: int, items: Sequence[T]) -> int:
        """Add the first ``items`` that fit, in order; return how many were added."""
        with self._lock:
            if self.closed:
                return 0
            box = self._boxes[kind]
            if box is None:
                box = self._boxes[kind] = deque()
            count = add_to_box(box, self._maxsizes[kind], self._sequence, items)
            self._sequence += count
            if count:
                self._wake()
            return count

    def put(self, kind: int, item: T) -> bool:
        """Add ``item``, waiting while the box is full.

        Returns False, without adding it, when the mailbox is closed or stops waiting
        first (see :meth:`stop_waiting_puts`).
        """
        with self._lock:
            while self.full(kind) and not self.closed and not self.puts_never_wait:
                self._sleep(None)
            return self._put_locked(kind, item)

    def stop_waiting_puts(self) -> None:
        """From now on ``put`` into a full box returns False at once; ``get`` is unchanged."""
        with self._lock:
            self.puts_never_wait = True
            self._wake()

    def drop_oldest(self, kind: int) -> T | None:
        return self.take_nowait(kind)

    def _get_locked(self, kinds: Sequence[int]) -> tuple[int, T] | None:
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
        self._wake()
        return best_kind, item

    def take_nowait(self, kind: int) -> T | None:
        """Take the oldest item of one kind, or ``None`` if there is none."""
        with self._lock:
            box = self._boxes[kind]
            if not box:
                return None
            item = box.popleft()[1]
            self._wake()
            return item

    def get_nowait(self, kinds: Sequence[int]) -> tuple[int, T] | None:
        """Take the earliest-arrived item among ``kinds``, or ``None`` if all are empty."""
        with self._lock:
            return self._get_locked(kinds)

    def get(
        self, kinds: Sequence[int], timeout: float | None = None, *, known_empty: bool = False
    ) -> tuple[int, T]:
        """Take the earliest-arrived item among ``kinds``, waiting up to ``timeout``.

        ``known_empty`` (the caller has just found nothing) is the asyncio twin's hint; here
        the first look is under the lock anyway and costs little.

        Raises:
            TimeoutError: Nothing arrived in time.
            MailboxClosed: The mailbox is closed and those boxes are empty.
        """
        deadline = None if timeout is None else monotonic() + timeout
        read_for_receiver = self._read_for_receiver
        while True:
            if read_for_receiver is not None:
                with self._lock:
                    found, remaining = self._take_locked(kinds, deadline)
                    if found is not None:
                        return found
                # Outside the lock: what is read goes into this mailbox.
                if read_for_receiver(remaining):
                    continue
            with self._lock:
                found, remaining = self._take_locked(kinds, deadline)
                if found is not None:
                    return found
                self._blocked_gets.append(kinds)
                if self._idle_condition is not None:
                    self._idle_condition.notify_all()
                try:
                    self._sleep(remaining)
                finally:
                    self._blocked_gets.remove(kinds)

    def _take_locked(
        self, kinds: Sequence[int], deadline: float | None
    ) -> tuple[tuple[int, T] | None, float | None]:
        """The earliest item among ``kinds`` if any, else the time left to wait for one.

        Raises:
            MailboxClosed: Nothing to take, and nothing will come.
            TimeoutError: Nothing to take, and no time left.
        """
        found = self._get_locked(kinds)
        if found is not None:
            return found, None
        if self.closed:
            raise MailboxClosed
        remaining = None if deadline is None else deadline - monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError("receive timed out")
        return None, remaining

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._wake()
            if self._idle_condition is not None:
                self._idle_condition.notify_all()


class TaskHandle:
    """A function started by :func:`spawn`, running in a thread of the worker pool."""

    __slots__ = ("_done", "_thread")

    def __init__(self) -> None:
        self._done = SyncEvent()
        # Only while it runs: a connection keeps its reader's handle, not the thread.
        self._thread: threading.Thread | None = None

    def done(self) -> bool:
        return self._done.is_set()

    def is_current(self) -> bool:
        return threading.current_thread() is self._thread

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the function to return; False on timeout."""
        if self.is_current():
            return False
        return self._done.wait(timeout)


_Job = tuple[Callable[..., None], tuple[Any, ...], str, TaskHandle]


class _Worker:
    """A daemon thread that runs spawned functions one after the other.

    A connection's reader is a thread, and starting one costs about 50 us of CPU (clone,
    stack, exit): a connect-and-close loop would pay it every time. A worker whose
    function returned waits up to ``_WORKER_LINGER`` for the next one, then ends.
    """

    __slots__ = ("_job", "_thread", "_wakeup")

    def __init__(self, job: _Job) -> None:
        self._job: _Job | None = job
        # Released by spawn() when it hands this idle worker a job.
        self._wakeup = threading.Lock()
        self._wakeup.acquire()
        self._thread = threading.Thread(target=self._run, name=job[2], daemon=True)
        job[3]._thread = self._thread
        self._thread.start()

    def hand(self, job: _Job) -> None:
        self._job = job
        job[3]._thread = self._thread
        self._thread.name = job[2]
        self._wakeup.release()

    def _run(self) -> None:
        thread = self._thread
        while True:
            job = self._job
            assert job is not None
            self._job = None
            function, args, _, handle = job
            try:
                function(*args)
            except Exception:
                logger.exception("background function failed")
            finally:
                thread.name = _IDLE_WORKER_NAME
                handle._thread = None
                handle._done.set()
                # An idle worker must not keep the finished function's connection alive.
                del job, function, args, handle
            with _workers_lock:
                _idle_workers.append(self)
            if not self._wakeup.acquire(timeout=_WORKER_LINGER):
                with _workers_lock:
                    if self in _idle_workers:
                        _idle_workers.remove(self)
                        return
                # spawn() took this worker just now: its job is on the way.
                self._wakeup.acquire()


_WORKER_LINGER = 1.0
_IDLE_WORKER_NAME = "wsclient-idle"
_workers_lock = threading.Lock()
_idle_workers: list[_Worker] = []


def _forget_workers_after_fork() -> None:
    global _workers_lock
    _workers_lock = threading.Lock()
    _idle_workers.clear()


def spawn(function: Callable[..., None], *args: Any, name: str) -> TaskHandle:
    """Run ``function(*args)`` in a daemon thread (a pooled one); it must catch its own errors."""
    handle = TaskHandle()
    job: _Job = (function, args, name, handle)
    with _workers_lock:
        worker = _idle_workers.pop() if _idle_workers else None
    if worker is None:
        _Worker(job)
    else:
        worker.hand(job)
    return handle


class TimerHandle:
    """A callback scheduled by :func:`call_later`."""

    __slots__ = ("callback", "when")

    def __init__(self, when: float, callback: Callable[[], None] | None) -> None:
        self.when = when
        # None once the callback ran or was cancelled: a cancelled timer that waits in the
        # heap for its turn must not keep its connection alive.
        self.callback = callback

    def cancel(self) -> None:
        """Make sure the callback does not run, and drop the reference to it."""
        if self.callback is not None:
            _timers.cancel(self)


class _TimerThread:
    """One thread that runs the timers of every connection of the process.

    A keepalive is a ping every half minute: a thread of its own per connection would cost
    a thread start and stop per connect (about 140 us of CPU here) and a stack per idle
    connection, to sleep.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._sequence = itertools.count()
        self._live = 0
        self._thread: threading.Thread | None = None
        # When the thread wakes up by itself; 0 while it is awake (it looks at the heap
        # before it sleeps again). A wake-up is a thread switch: only when needed.
        self._sleeping_until = 0.0

    def schedule(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(monotonic() + max(delay, 0.0), callback)
        with self._lock:
            heapq.heappush(self._heap, (handle.when, next(self._sequence), handle))
            self._live += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="wsclient-keepalive", daemon=True
                )
                self._thread.start()
            elif handle.when < self._sleeping_until:
                self._changed.notify()
        return handle

    def cancel(self, handle: TimerHandle) -> None:
        with self._lock:
            if handle.callback is None:
                return
            handle.callback = None
            self._live -= 1
            cancelled = len(self._heap) - self._live
            # Purge when nothing is live (so the thread can end) or when cancelled entries
            # outnumber live ones: amortized O(1) per cancel, as asyncio does.
            if self._live == 0 or (cancelled > 64 and cancelled > self._live):
                self._heap = [entry for entry in self._heap if entry[2].callback is not None]
                heapq.heapify(self._heap)
                # Waking up early is harmless, but with nothing left to run the thread
                # should end after the linger time, not at a cancelled deadline.
                if not self._heap and self._sleeping_until > monotonic() + _TIMER_THREAD_LINGER:
                    self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                callback = self._next_due()
            if callback is None:
                return
            try:
                callback()
            except Exception:
                logger.exception("timer callback failed")

    def _next_due(self) -> Callable[[], None] | None:
        """Wait for the next due callback (lock held); None once idle for the linger time."""
        idle_since: float | None = None
        while True:
            heap = self._heap
            while heap and heap[0][2].callback is None:
                heapq.heappop(heap)
            now = monotonic()
            if heap:
                idle_since = None
                handle = heap[0][2]
                if handle.when <= now:
                    heapq.heappop(heap)
                    callback, handle.callback = handle.callback, None
                    self._live -= 1
                    return callback
                wake_at = handle.when
            else:
                if idle_since is None:
                    idle_since = now
                wake_at = idle_since + _TIMER_THREAD_LINGER
                if wake_at <= now:
                    self._thread = None
                    return None
            self._sleeping_until = wake_at
            self._changed.wait(wake_at - now)
            self._sleeping_until = 0.0


_timers = _TimerThread()
if hasattr(os, "register_at_fork"):
    # A forked child has none of these threads, and the parent's connections are not its own.
    os.register_at_fork(after_in_child=_timers._reset)
    os.register_at_fork(after_in_child=_forget_workers_after_fork)


class _Watcher:
    """One thread that waits for input on the sockets of every idle connection of the process.

    A reader thread blocked on an idle socket holds about 16 KiB of RSS (its stack pages and
    thread state), most of what an idle connection costs: a reader that has seen nothing
    arrive for ``_IDLE_AFTER`` seconds hands its socket to this thread instead, and its
    thread goes back to the pool. The first byte (or the end of the stream) starts a reader
    again. Each socket is watched once: it leaves the set when it becomes readable.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._selector: selectors.BaseSelector | None = None
        self._wake_sender: socket.socket | None = None
        # Selectors that build their descriptor set when a wait starts do not see a socket
        # added during the wait: the watcher is woken up to look again.
        self._needs_wakeup = False

    def watch(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (in the watcher thread, once) when ``fd`` is readable."""
        with self._lock:
            selector = self._selector
            if selector is None:
                selector = self._start()
            elif fd in selector.get_map():
                # Left by a socket closed while watched; this descriptor is a new one.
                selector.unregister(fd)
            selector.register(fd, selectors.EVENT_READ, callback)
            if self._needs_wakeup:
                self._wake_up()

    def unwatch(self, fd: int) -> None:
        with self._lock:
            selector = self._selector
            if selector is not None and fd in selector.get_map():
                selector.unregister(fd)

    def _start(self) -> selectors.BaseSelector:
        selector = selectors.DefaultSelector()
        self._needs_wakeup = isinstance(
            selector, (selectors.SelectSelector, selectors.PollSelector)
        )
        wake_receiver, wake_sender = socket.socketpair()
        wake_receiver.setblocking(False)
        wake_sender.setblocking(False)
        selector.register(wake_receiver, selectors.EVENT_READ, None)
        self._selector = selector
        self._wake_sender = wake_sender
        threading.Thread(
            target=self._run,
            args=(selector, wake_receiver, wake_sender),
            name="wsclient-watcher",
            daemon=True,
        ).start()
        return selector

    def _wake_up(self) -> None:
        assert self._wake_sender is not None
        try:
            self._wake_sender.send(b"\0")
        except OSError:
            # Full: a wake-up is pending anyway.
            pass

    def _run(
        self,
        selector: selectors.BaseSelector,
        wake_receiver: socket.socket,
        wake_sender: socket.socket,
    ) -> None:
        idle_since: float | None = None
        while True:
            with self._lock:
                if selector is not self._selector:
                    # Reset after a fork: another thread may own the new set.
                    return
                if len(selector.get_map()) > 1:
                    idle_since = None
                    wait = None
                else:
                    now = monotonic()
                    if idle_since is None:
                        idle_since = now
                    wait = idle_since + _WATCHER_LINGER - now
                    if wait <= 0:
                        self._selector = None
                        self._wake_sender = None
                        break
            ready = selector.select(wait)
            callbacks = []
            with self._lock:
                watched = selector.get_map()
                for key, _ in ready:
                    if key.data is None:
                        try:
                            wake_receiver.recv(4096)
                        except OSError:
                            pass
                    elif watched.get(key.fd) is key:
                        # Not a stale event of a socket unwatched meanwhile.
                        selector.unregister(key.fd)
                        callbacks.append(key.data)
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    logger.exception("resuming an idle connection failed")
            del callbacks
        selector.close()
        wake_receiver.close()
        wake_sender.close()


_watcher = _Watcher()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watcher._reset)


def call_later(delay: float, callback: Callable[[], None]) -> TimerHandle:
    """Run ``callback()`` after ``delay`` seconds in the shared timer thread.

    ``callback`` must return promptly (it delays every other timer) and catch its own
    errors.
    """
    return _timers.schedule(delay, callback)


def sleep(seconds: float) -> None:
    time.sleep(seconds)
