"""The WebSocket connection state machine, without I/O.

Theory of operation
-------------------
A :class:`ClientConnection` (or :class:`ServerConnection`) is a pure object: the I/O layer
hands it every byte it reads with :meth:`Connection.receive_data` (and
:meth:`Connection.receive_eof` at the end of the stream), then collects what happened with
:meth:`Connection.events_received` and what must be written with
:meth:`Connection.data_to_send`. The application sends with ``send_text``, ``send_binary``,
``send_continuation``, ``send_ping``, ``send_pong`` and ``send_close``; those only queue
bytes. Nothing here blocks, sleeps, reads a clock or touches a socket.

States follow RFC 6455 §4 and §7::

    CONNECTING --handshake ok--> OPEN --send_close--> CLOSING --peer Close--> CLOSED
                                   |                                             ^
                                   +--peer Close (answered at once)--------------+
                                   +--protocol error (Close sent, input ignored)-+
                                   +--EOF (abnormal, 1006)-----------------------+

When the peer breaks the protocol, ``receive_data`` queues a Close frame with the right
code, moves to CLOSED, and raises the :class:`~wsclient.exceptions.ProtocolError`; the events
parsed before the bad frame are still returned by ``events_received``. Once CLOSED, the
I/O layer flushes ``data_to_send`` and closes the transport (a client first gives the
server a moment to close TCP, RFC 6455 §7.1.1).

With ``defer_failure`` the failure waits for the I/O layer instead: ``receive_data`` raises
and ignores all further input, but queues nothing and stays OPEN, so that the application
can still answer the messages that came before the bad frame; the I/O layer then calls
:meth:`Connection.fail`, which queues the Close and moves to CLOSED. The peer thus sees its
frames answered in the order it sent them, the Close for the bad frame last.

Frames are parsed in place from the read buffer. A frame that is complete in the buffer is
handled in one step; a data frame whose payload is still arriving is consumed as it comes,
so memory and time stay linear in the message size and invalid UTF-8 is caught at the
first bad byte rather than at the end of the frame.
"""

from __future__ import annotations

import codecs
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from ..exceptions import (
    ConnectionDisconnected,
    HandshakeError,
    InvalidUTF8,
    MessageTooBig,
    ProtocolError,
)
from .deflate import DeflateOptions, PerMessageDeflate
from .frames import (
    CLOSE_ABNORMAL,
    CLOSE_NO_STATUS,
    MASKED_MEDIUM_HEADERS,
    MASKED_SMALL_HEADERS,
    MAX_CONTROL_PAYLOAD,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RSV1,
    SEND_BUFFER_MIN,
    build_close_payload,
    build_frame,
    build_frames,
    filled_bytes,
    mask,
    masked_frame,
    masking_keys,
    new_masking_key,
    parse_close_payload,
    unfilled_bytes,
)
from .handshake import (
    DEFAULT_USER_AGENT,
    ClientHandshake,
    HeadersLike,
    Request,
    Response,
    ServerHandshake,
    WebSocketURI,
)

DEFAULT_MAX_SIZE: Final = 4 * 1024 * 1024
# A binary message at least this large that is still arriving gets a buffer of its own: the
# rest of it is copied once, straight into place, instead of being gathered in pieces and
# joined. Smaller payloads are sliced out of the read as they are.
DIRECT_RECEIVE_MIN: Final = 4096
# When at least this much of that message is still to come, the I/O layer is offered the
# buffer to read into (Connection.receive_buffer), which saves the last copy too. For less,
# the extra read that costs would cost more than the copy.
READ_INTO_MIN: Final = 64 * 1024
# The buffer is allocated when the frame header arrives, before the payload: without a
# max_size, a header alone must not make us allocate more than this.
DIRECT_RECEIVE_MAX_UNLIMITED: Final = 16 * 1024 * 1024
_utf8_decoder_factory = codecs.getincrementaldecoder("utf-8")


class State(enum.Enum):
    """Connection state (RFC 6455 §4.1 and §7)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


# Events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextMessage:
    """A complete text message."""

    data: str


@dataclass(frozen=True, slots=True)
class BinaryMessage:
    """A complete binary message."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Fragment:
    """A piece of a message, delivered only when ``stream_messages`` is on.

    Attributes:
        text: Whether the message is a text message (``data`` is then ``str``).
        data: The piece (decoded for text, decompressed for compressed messages).
        first: This is the first piece of the message.
        last: This is the last piece of the message.
    """

    text: bool
    data: str | bytes
    first: bool
    last: bool


@dataclass(frozen=True, slots=True)
class PingReceived:
    """The peer sent a Ping (already answered with a Pong)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PongReceived:
    """The peer sent a Pong."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer sent a Close frame (code 1005 when it carried no code)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """The opening handshake succeeded; the connection is OPEN."""

    response: Response
    subprotocol: str | None


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """Server role: an upgrade request arrived; answer with ``accept`` or ``reject``."""

    request: Request


Event = (
    TextMessage
    | BinaryMessage
    | Fragment
    | PingReceived
    | PongReceived
    | CloseReceived
    | HandshakeComplete
    | RequestReceived
)

# Module globals, not State.X: an enum member read through its class costs about 850
# instructions on Python 3.11 (EnumType has a __getattr__), and receive_data asks on every
# read.
_CONNECTING, _OPEN, _CLOSING, _CLOSED = State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED
_CLIENT, _SERVER = Role.CLIENT, Role.SERVER

# The parser's tight loop builds message events without calling their __init__: a frozen
# dataclass sets each field through object.__setattr__, which costs about as much as
# parsing the rest of a small message. The slot descriptors set the same field.
_new_event = object.__new__
_set_text_data = vars(TextMessage)["data"].__set__
_set_binary_data = vars(BinaryMessage)["data"].__set__
# Once per connection, but the same saving (about 2,000 instructions).
_set_complete_response = vars(HandshakeComplete)["response"].__set__
_set_complete_subprotocol = vars(HandshakeComplete)["subprotocol"].__set__


_FIN_TEXT: Final = 0x80 | OP_TEXT
_FIN_BINARY: Final = 0x80 | OP_BINARY
_FIN_RSV1_TEXT: Final = 0x80 | RSV1 | OP_TEXT
_FIN_RSV1_BINARY: Final = 0x80 | RSV1 | OP_BINARY
_WHOLE_COMPRESSED: Final = (_FIN_RSV1_TEXT, _FIN_RSV1_BINARY)
#: What the tight loop calls to inflate a whole compressed message:
#: ``(payload, is_text, limit) -> data`` (see PerMessageDeflate.inflate_message).
_Inflate = Callable[[bytes, bool, int], str | bytes]


def _py_parse_messages(
    buffer: bytes | bytearray | memoryview,
    position: int,
    limit: int,
    events: list[Event],
    inflate: _Inflate | None = None,
) -> int:
    """Parse the common case in a tight loop: whole, unfragmented, uncompressed text and
    binary frames from a server, shorter than 64 KiB and, unless ``limit`` is negative, no
    longer than ``limit``; append their events to ``events``. With ``inflate``, whole
    compressed (RSV1) ones too: ``inflate(payload, is_text, limit)`` returns their data,
    enforcing ``limit`` on the inflated size. Returns where it stopped: at the end, or at
    anything else (another kind of frame, an incomplete one, or text that is not valid
    UTF-8), which :meth:`Connection._parse` then handles or rejects.

    The pure-Python twin of the compiled ``parse_messages``; both take the same frames.
    """
    end = len(buffer)
    size_limit = end if limit < 0 else limit
    append = events.append
    # Slicing bytes gives bytes; slicing a bytearray or a view needs a copy into bytes.
    copy = type(buffer) is not bytes
    event: TextMessage | BinaryMessage
    while end - position >= 2:
        first = buffer[position]
        length = buffer[position + 1]  # the mask bit is clear, or the frame is left over
        if length < 126:
            start = position + 2
        elif length == 126 and end - position >= 4:
            length = (buffer[position + 2] << 8) | buffer[position + 3]
            start = position + 4
        else:
            break
        stop = start + length
        # A compressed payload's limit applies once inflated: inflate enforces it.
        compressed = inflate is not None and first in _WHOLE_COMPRESSED
        if stop > end or (length > size_limit and not compressed):
            break
        if compressed:
            assert inflate is not None
            if first == _FIN_RSV1_TEXT:
                event = _new_event(TextMessage)
                _set_text_data(event, inflate(bytes(buffer[start:stop]), True, limit))
            else:
                event = _new_event(BinaryMessage)
                _set_binary_data(event, inflate(bytes(buffer[start:stop]), False, limit))
        elif first == _FIN_BINARY:
            event = _new_event(BinaryMessage)
            _set_binary_data(event, bytes(buffer[start:stop]) if copy else buffer[start:stop])
        elif first == _FIN_TEXT:
            try:
                if copy:
                    text = str(buffer[start:stop], "utf-8")
                else:  # bytes: its decode() is the quickest way to text
                    text = buffer[start:stop].decode()  # type: ignore[union-attr]
            except UnicodeDecodeError:
                break
            event = _new_event(TextMessage)
            _set_text_data(event, text)
        else:
            break
        append(event)
        position = stop
    return position


class _ParseMessages(Protocol):
    def __call__(
        self,
        buffer: bytes | bytearray | memoryview,
        position: int,
        limit: int,
        events: list[Event],
        inflate: _Inflate | None = None,
        /,
    ) -> int: ...


_c_parse_messages: _ParseMessages | None
try:
    from ._speedups import configure_messages as _configure_messages
    from ._speedups import parse_messages as _c_parse_messages
except ImportError:  # built without a C compiler: the pure-Python parser is used
    _c_parse_messages = None
else:
    _configure_messages(
        TextMessage, vars(TextMessage)["data"], BinaryMessage, vars(BinaryMessage)["data"]
    )

#: ``parse_messages(buffer, position, limit, events, inflate=None)``: see
#: :func:`_py_parse_messages`.
parse_messages: _ParseMessages = _c_parse_messages or _py_parse_messages
#: Which parser takes the common frames: "c" (the optional compiled module) or "python".
PARSE_IMPLEMENTATION = "c" if _c_parse_messages is not None else "python"


def _small_frame_first(data: memoryview) -> bool:
    """Whether the frame at the start of ``data`` carries fewer than 4 KiB of payload."""
    if len(data) < 4:
        return True
    length = data[1] & 0x7F
    return length < 126 or (length == 126 and (data[2] << 8 | data[3]) < DIRECT_RECEIVE_MIN)


class Connection:
    """Frame-level state shared by both roles; use :class:`ClientConnection` or
    :class:`ServerConnection`.

    Args:
        role: Which side this is; decides masking in each direction.
        max_size: Largest message accepted, in bytes (after decompression); ``None`` for no
            limit. Larger messages fail the connection with 1009.
        max_frame_size: Outgoing messages longer than this are split into frames of at most
            this many payload bytes; ``None`` never splits.
        stream_messages: Deliver :class:`Fragment` events as data arrives instead of whole
            messages.
        defer_failure: On a protocol error, leave queuing the Close to :meth:`fail` (see
            the module docstring).
    """

    # Slots, not a __dict__: with this many attributes the dict would not share its keys
    # between instances, and would cost about 1.5 KiB per connection.
    __slots__ = (
        "_direct",
        "_direct_filled",
        "_direct_view",
        "_events",
        "in_place_message",
        "_expect_masked",
        "_frame_fin",
        "_frame_key",
        "_frame_offset",
        "_frame_remaining",
        "_mask_outgoing",
        "_message_compressed",
        "_message_opcode",
        "_message_parts",
        "_message_size",
        "_message_started",
        "_out_compressed",
        "_out_opcode",
        "_output",
        "_pending",
        "_utf8",
        "close_code_received",
        "close_code_sent",
        "close_reason_received",
        "close_reason_sent",
        "defer_failure",
        "deflate",
        "eof_received",
        "failure",
        "max_frame_size",
        "max_size",
        "reuse_send_buffer",
        "role",
        "state",
        "stream_messages",
    )

    def __init__(
        self,
        role: Role,
        *,
        max_size: int | None = DEFAULT_MAX_SIZE,
        max_frame_size: int | None = None,
        stream_messages: bool = False,
        state: State = State.OPEN,
        deflate: PerMessageDeflate | None = None,
        defer_failure: bool = False,
    ) -> None:
        if max_size is not None and max_size <= 0:
            raise ValueError("max_size must be positive or None")
        if max_frame_size is not None and max_frame_size <= 0:
            raise ValueError("max_frame_size must be positive or None")
        self.role = role
        self.max_size = max_size
        self.max_frame_size = max_frame_size
        self.stream_messages = stream_messages
        self.state = state
        self.deflate = deflate
        self.close_code_received: int | None = None
        self.close_reason_received: str | None = None
        self.close_code_sent: int | None = None
        self.close_reason_sent: str | None = None
        self.failure: ProtocolError | None = None
        self.defer_failure = defer_failure
        self.eof_received = False
        #: Build large masked frames in the thread's reusable send buffer, for an I/O layer
        #: that takes them with :meth:`data_to_write`. (:meth:`data_to_send` copies them.)
        self.reuse_send_buffer = False

        self._mask_outgoing = role is _CLIENT
        self._expect_masked = role is _SERVER
        self._events: list[Event] = []
        self._output: list[bytes | bytearray | memoryview] = []
        self._pending = bytearray()
        # The data frame whose payload is still arriving, if any.
        self._frame_remaining = 0
        self._frame_fin = False
        self._frame_key: bytes | None = None
        self._frame_offset = 0
        # The message being reassembled, if any.
        self._message_opcode: int | None = None
        self._message_compressed = False
        self._message_size = 0
        self._message_parts: list[bytes] | list[str] = []
        self._message_started = False
        self._utf8: codecs.IncrementalDecoder | None = None
        # The large binary message being read straight into its own buffer, if any.
        self._direct: bytes | bytearray | None = None
        self._direct_view: memoryview | None = None
        self._direct_filled = 0
        #: A large binary message is being received into its own buffer. A plain attribute,
        #: cheap to read on every read: only while it is true can :attr:`receiving_in_place`
        #: be.
        self.in_place_message = False
        # The outgoing fragmented message, if any.
        self._out_opcode: int | None = None
        self._out_compressed = False

    # Input ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Process bytes read from the transport.

        ``data`` may be a view of the I/O layer's read buffer: nothing of it is kept after
        the call returns, so the buffer can be reused at once.

        Raises:
            ProtocolError: The peer violated the protocol; a Close frame with
                ``exc.close_code`` is queued and the state is CLOSED (with
                ``defer_failure``: nothing is queued until :meth:`fail`).
            HandshakeError: Client role, CONNECTING: the handshake failed.
        """
        if self.state is _CONNECTING:
            data = self._receive_handshake_data(bytes(data))
            if not data or self.state is _CONNECTING:
                return
        if self.state is _CLOSED or not data or self.failure is not None:
            return
        if self._direct is not None:
            taken = self._fill_direct(data)
            if taken == len(data):
                return
            data = data[taken:]
        pending = self._pending
        if pending:
            pending += data
            buffer: bytes | bytearray | memoryview = pending
        elif (
            _c_parse_messages is None
            and type(data) is memoryview
            and not self._frame_remaining
            and _small_frame_first(data)
        ):
            # In Python, slicing a small payload out of a view costs more than copying the
            # whole read once; large payloads are sliced out of the view, saving that copy.
            buffer = bytes(data)
        else:
            buffer = data
        try:
            if (
                self._message_opcode is None
                and not self._frame_remaining
                and not self.stream_messages
                and not self._expect_masked
            ):
                # Most reads hold whole small messages and nothing else: the tight loop
                # takes them all, and _parse (which starts with it too) is not needed.
                max_size = self.max_size
                deflate = self.deflate
                consumed = parse_messages(
                    buffer,
                    0,
                    -1 if max_size is None else max_size,
                    self._events,
                    # Whole compressed messages are inflated from the tight loop too.
                    None if deflate is None else deflate.inflate_message,
                )
                if consumed < len(buffer):
                    consumed = self._parse(buffer, consumed)
            else:
                consumed = self._parse(buffer, 0)
        except ProtocolError as exc:
            if self.defer_failure:
                self.failure = exc
                self._pending.clear()
                self._abandon_message()
            else:
                self._fail(exc)
            raise
        if buffer is pending:
            del pending[:consumed]
        elif consumed < len(buffer):
            pending += memoryview(buffer)[consumed:]

    def receive_buffer(self) -> memoryview | None:
        """Where the next bytes read should go, when reading into place saves a copy.

        While a large binary message is arriving (at least ``READ_INTO_MIN`` bytes still to
        come) this is the unfilled part of the buffer that becomes the message: the I/O
        layer may read into it and then call :meth:`receive_buffer_filled`. ``None``
        otherwise (use :meth:`receive_data`).
        """
        if not self.receiving_in_place:
            return None
        assert self._direct_view is not None
        return self._direct_view[self._direct_filled :]

    @property
    def receiving_in_place(self) -> bool:
        """Whether :meth:`receive_buffer` has a buffer to read into."""
        view = self._direct_view
        return (
            view is not None
            and len(view) - self._direct_filled >= READ_INTO_MIN
            and self.state is not _CLOSED
        )

    def receive_buffer_filled(self, nbytes: int) -> None:
        """Record that ``nbytes`` were read into the view from :meth:`receive_buffer`.

        Does nothing if the message was abandoned meanwhile (the connection failed).
        """
        view = self._direct_view
        if view is None or self.state is _CLOSED:
            return
        if not 0 <= nbytes <= len(view) - self._direct_filled:
            raise ValueError(f"{nbytes} bytes cannot have been read into the receive buffer")
        self._direct_filled += nbytes
        if self._direct_filled == len(view):
            self._finish_direct()

    def _fill_direct(self, data: bytes | bytearray | memoryview) -> int:
        view = self._direct_view
        assert view is not None
        filled = self._direct_filled
        taken = min(len(view) - filled, len(data))
        view[filled : filled + taken] = memoryview(data)[:taken]
        self._direct_filled = filled + taken
        if self._direct_filled == len(view):
            self._finish_direct()
        return taken

    def _finish_direct(self) -> None:
        direct, view = self._direct, self._direct_view
        assert direct is not None and view is not None
        self._direct = self._direct_view = None
        self.in_place_message = False
        self._events.append(BinaryMessage(filled_bytes(direct, view)))

    def receive_eof(self) -> None:
        """The transport reached end of stream (the peer closed TCP)."""
        self.eof_received = True
        if self.state is _CONNECTING:
            self.state = _CLOSED
            self._receive_handshake_eof()
        if self.state is not _CLOSED:
            self.state = _CLOSED
            self._pending.clear()
            self._abandon_message()

    def events_received(self) -> list[Event]:
        """Return and forget the events parsed so far."""
        events = self._events
        if events:
            self._events = []
        return events

    def data_to_send(self) -> bytes:
        """Return and forget the bytes queued for the transport."""
        if not self._output:
            return b""
        data = self.data_to_write()
        return data if isinstance(data, bytes) else bytes(data)

    def data_to_write(self) -> bytes | memoryview:
        """:meth:`data_to_send`, without copying a view of the send buffer.

        With :attr:`reuse_send_buffer`, the result may be a view of the calling thread's
        send buffer (see :func:`~wsclient.protocol.frames.build_frames`): write or copy it
        before this thread queues the next data frame, or call
        :func:`~wsclient.protocol.frames.release_send_buffer` if the transport keeps it.
        """
        output = self._output
        if not output:
            return b""
        self._output = []
        if len(output) == 1:
            data = output[0]
            return bytes(data) if isinstance(data, bytearray) else data
        return b"".join(output)

    def _receive_handshake_data(self, data: bytes | bytearray) -> bytes:
        raise NotImplementedError

    def _receive_handshake_eof(self) -> None:
        raise NotImplementedError

    # Parsing -------------------------------------------------------------------------------

    def _parse(self, buffer: bytes | bytearray | memoryview, position: int) -> int:
        """Consume as many frames (or payload bytes) as possible from ``position`` on; return
        where it stopped."""
        end = len(buffer)
        events = self._events
        # Payloads of whole continuation frames of the current message, handed on together
        # (one inflate or UTF-8 step for a run of small fragments instead of one per frame)
        # before anything else is processed, so the outcome is the same as frame by frame.
        batch: list[bytes | bytearray | memoryview] = []
        batched = 0
        # Constant during one call; locals are cheaper than attribute loads per frame.
        expect_masked = self._expect_masked
        stream_messages = self.stream_messages
        max_size = self.max_size
        inflate = None if self.deflate is None else self.deflate.inflate_message
        while position < end and self.state is not _CLOSED:
            if self._frame_remaining:
                position = self._consume_payload(buffer, position, end)
                continue
            if self._message_opcode is None and not stream_messages and not expect_masked:
                position = parse_messages(
                    buffer, position, -1 if max_size is None else max_size, events, inflate
                )
                if position == end:
                    break
            if end - position < 2:
                break
            first = buffer[position]
            second = buffer[position + 1]
            length = second & 0x7F
            header = 2
            if length == 126:
                if end - position < 4:
                    break
                length = (buffer[position + 2] << 8) | buffer[position + 3]
                header = 4
            elif length == 127:
                if end - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                header = 10
                if length >> 63:
                    raise ProtocolError("frame length has the most significant bit set")
            if (
                not first & 0x7F  # a continuation frame without RSV bits
                and not second & 0x80
                and position + header + length <= end
                and self._message_opcode is not None
                and not self._expect_masked
                and not self.stream_messages
                and (
                    self._message_compressed
                    or self.max_size is None
                    or self._message_size + batched + length <= self.max_size
                )
            ):
                stop = position + header + length
                batch.append(buffer[position + header : stop])
                batched += length
                position = stop
                if first & 0x80:
                    self._message_payload(b"".join(batch), True)
                    batch = []
                    batched = 0
                continue
            if batch:
                self._message_payload(b"".join(batch), False)
                batch = []
                batched = 0
            masked = second & 0x80
            if masked:
                header += 4
            if end - position < header:
                break
            if bool(masked) is not expect_masked:
                raise ProtocolError(
                    "masked frame from the server" if masked else "unmasked frame from client"
                )
            opcode = first & 0x0F
            fin = first & 0x80
            if first & 0x70:
                self._check_rsv(first, opcode)
            if opcode > OP_BINARY:
                if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                    raise ProtocolError(f"reserved opcode {opcode:#x}")
                if not fin:
                    raise ProtocolError("fragmented control frame")
                if length > MAX_CONTROL_PAYLOAD:
                    raise ProtocolError(f"control frame payload of {length} bytes (limit 125)")
                stop = position + header + length
                if stop > end:
                    break
                payload = bytes(buffer[position + header : stop])
                if masked:
                    payload = mask(
                        payload, bytes(buffer[position + header - 4 : position + header])
                    )
                position = stop
                self._control_frame(opcode, payload)
                continue

            stop = position + header + length
            compressed = first & 0x40
            if (
                stop <= end
                and fin
                and opcode
                and not masked
                and self._message_opcode is None
                and not stream_messages
                and (compressed or max_size is None or length <= max_size)
            ):
                # Fast path: a whole, unfragmented message in the buffer (the checks of
                # _start_data_frame all pass for it, so that call is skipped). A compressed
                # one (_check_rsv let RSV1 through: deflate is on, and this is a text or
                # binary frame; 64 KiB or more, or the tight loop would have taken it) is
                # inflated as the tight loop inflates, max_size bounding the inflated size.
                body = buffer[position + header : stop]
                if compressed:
                    assert inflate is not None
                    data = inflate(
                        bytes(body), opcode == OP_TEXT, -1 if max_size is None else max_size
                    )
                    if isinstance(data, str):
                        events.append(TextMessage(data))
                    else:
                        events.append(BinaryMessage(data))
                elif opcode == OP_TEXT:
                    try:
                        text = str(body, "utf-8")
                    except UnicodeDecodeError:
                        raise InvalidUTF8("invalid UTF-8 in text message") from None
                    events.append(TextMessage(text))
                else:
                    events.append(BinaryMessage(bytes(body)))
                position = stop
                continue
            if (
                opcode == OP_BINARY
                and fin
                and length >= DIRECT_RECEIVE_MIN
                and not masked
                and not compressed
                and self._message_opcode is None
                and not stream_messages
                and length <= (DIRECT_RECEIVE_MAX_UNLIMITED if max_size is None else max_size)
            ):
                # Incomplete (the fast path above took it otherwise): the rest of the
                # payload goes straight into the message's own buffer.
                start = position + header
                self._direct, view = unfilled_bytes(length)
                view[: end - start] = memoryview(buffer)[start:end]
                self._direct_view = view
                self._direct_filled = end - start
                self.in_place_message = True
                position = end
                break
            self._start_data_frame(opcode, fin, first & 0x40, length)
            self._frame_fin = bool(fin)
            self._frame_key = (
                bytes(buffer[position + header - 4 : position + header]) if masked else None
            )
            self._frame_offset = 0
            position += header
            if length == 0:
                self._message_payload(b"", bool(fin))
            else:
                self._frame_remaining = length
        if batch:
            self._message_payload(b"".join(batch), False)
        return position

    def _check_rsv(self, first: int, opcode: int) -> None:
        if first & 0x30:
            raise ProtocolError("RSV2 or RSV3 set without a negotiated extension")
        if self.deflate is None:
            raise ProtocolError("RSV1 set without a negotiated extension")
        if opcode not in (OP_TEXT, OP_BINARY):
            raise ProtocolError("RSV1 set on a control or continuation frame")

    def _start_data_frame(self, opcode: int, fin: int, rsv1: int, length: int) -> None:
        if opcode == OP_CONTINUATION:
            if self._message_opcode is None:
                raise ProtocolError("continuation frame without a message in progress")
        else:
            if self._message_opcode is not None:
                raise ProtocolError("new data frame while a fragmented message is in progress")
            self._message_opcode = opcode
            self._message_compressed = bool(rsv1)
            self._message_size = 0
            self._message_parts = []
            self._message_started = False
            self._utf8 = None
        if not self._message_compressed and self.max_size is not None:
            if self._message_size + length > self.max_size:
                raise MessageTooBig(
                    f"message of at least {self._message_size + length} bytes exceeds "
                    f"max_size={self.max_size}"
                )

    def _consume_payload(
        self, buffer: bytes | bytearray | memoryview, position: int, end: int
    ) -> int:
        take = min(self._frame_remaining, end - position)
        chunk = bytes(buffer[position : position + take])
        key = self._frame_key
        if key is not None:
            offset = self._frame_offset % 4
            chunk = mask(chunk, key[offset:] + key[:offset])
            self._frame_offset += take
        self._frame_remaining -= take
        self._message_payload(chunk, self._frame_fin and not self._frame_remaining)
        return position + take

    def _message_payload(self, chunk: bytes, last: bool) -> None:
        """Add payload bytes to the current message; ``last`` ends the message."""
        if self._message_compressed:
            assert self.deflate is not None
            limit = None if self.max_size is None else self.max_size - self._message_size
            chunk = self.deflate.decompress(chunk, final=last, limit=limit)
        self._message_size += len(chunk)
        text = self._message_opcode == OP_TEXT
        piece: str | bytes = chunk
        if text:
            decoder = self._utf8
            if decoder is None:
                decoder = self._utf8 = _utf8_decoder_factory()
            try:
                piece = decoder.decode(chunk, last)
            except UnicodeDecodeError:
                raise InvalidUTF8("invalid UTF-8 in text message") from None
            if not last and chunk and 0xA0 <= chunk[-1] <= 0xBF:
                # CPython's decoder holds ED A0-BF (a UTF-16 surrogate, never valid) until a
                # third byte arrives; fail at the fragment that made the text invalid.
                held = decoder.getstate()[0]
                if len(held) == 2 and held[0] == 0xED:
                    raise InvalidUTF8("invalid UTF-8 in text message")
        if self.stream_messages:
            if piece or last:
                self._events.append(Fragment(text, piece, not self._message_started, last))
                self._message_started = True
        elif piece:
            self._message_parts.append(piece)  # type: ignore[arg-type]
        if last:
            if not self.stream_messages:
                parts = self._message_parts
                if text:
                    self._events.append(TextMessage("".join(parts)))  # type: ignore[arg-type]
                else:
                    self._events.append(BinaryMessage(b"".join(parts)))  # type: ignore[arg-type]
            self._message_opcode = None
            self._message_parts = []
            self._utf8 = None

    def _abandon_message(self) -> None:
        if self._message_opcode is not None and self._message_compressed and self.deflate:
            self.deflate.reset_decompressor()
        if self._direct_view is not None:
            self._direct_view.release()
        self._direct = self._direct_view = None
        self.in_place_message = False
        self._message_opcode = None
        self._message_parts = []
        self._utf8 = None
        self._frame_remaining = 0

    def _control_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._events.append(PingReceived(payload))
            if self.state is _OPEN:
                self._output.append(build_frame(OP_PONG, payload, masked=self._mask_outgoing))
        elif opcode == OP_PONG:
            self._events.append(PongReceived(payload))
        else:
            code, reason = parse_close_payload(payload)
            self.close_code_received = code
            self.close_reason_received = reason
            self._events.append(CloseReceived(code, reason))
            if self.state is _OPEN:
                # Echo the code (RFC 6455 §5.5.1); a Close without a code gets an empty one.
                echo = None if code == CLOSE_NO_STATUS else code
                self._queue_close(echo, "")
            self.state = _CLOSED
            self._abandon_message()

    def fail(self) -> None:
        """Fail the connection for the protocol error deferred by ``defer_failure``.

        Queues the Close (unless closing had started) and moves to CLOSED; does nothing
        when no failure is pending.
        """
        if self.failure is not None and self.state is not _CLOSED:
            self._fail(self.failure)

    def _fail(self, exc: ProtocolError) -> None:
        """Fail the WebSocket connection (RFC 6455 §7.1.7)."""
        self.failure = exc
        if self.state is _OPEN:
            reason = str(exc).encode("utf-8")[:123].decode("utf-8", "ignore")
            self._queue_close(exc.close_code, reason)
        self.state = _CLOSED
        self._pending.clear()
        self._abandon_message()

    # Output --------------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self.state is not _OPEN:
            raise ConnectionDisconnected(self.close_code, self.close_reason or "")

    def _send_data(
        self, opcode: int, payload: bytes | bytearray | memoryview, fin: bool, compress: bool
    ) -> None:
        self._require_open()
        if opcode != OP_CONTINUATION:
            if self._out_opcode is not None:
                raise ValueError("a fragmented message is in progress; finish it first")
            deflate = self.deflate
            limit = self.max_frame_size
            if deflate is None and fin and (limit is None or len(payload) <= limit):
                # The common case: one uncompressed frame.
                self._out_compressed = False
                if self.reuse_send_buffer and len(payload) >= SEND_BUFFER_MIN:
                    if self._output:
                        self._keep_queued_views()
                    self._output.append(
                        build_frames(
                            opcode,
                            payload,
                            max_frame_size=None,
                            masked=self._mask_outgoing,
                            reuse_buffer=True,
                        )
                    )
                else:
                    self._output.append(build_frame(opcode, payload, masked=self._mask_outgoing))
                return
            self._out_compressed = bool(
                compress
                and deflate is not None
                and deflate.can_compress
                and (not fin or len(payload) >= deflate.min_size)
            )
            if not fin:
                self._out_opcode = opcode
        else:
            if self._out_opcode is None:
                raise ValueError("no fragmented message in progress")
            if fin:
                self._out_opcode = None
        rsv1 = self._out_compressed and opcode != OP_CONTINUATION
        if self.reuse_send_buffer and self._output:
            self._keep_queued_views()
        if self._out_compressed:
            assert self.deflate is not None
            payload = self.deflate.compress(payload, final=fin)
        self._output.append(
            build_frames(
                opcode,
                payload,
                max_frame_size=self.max_frame_size,
                fin=fin,
                rsv1=rsv1,
                masked=self._mask_outgoing,
                reuse_buffer=self.reuse_send_buffer,
            )
        )

    def _keep_queued_views(self) -> None:
        # Frames still queued may be views of the send buffer about to be reused.
        output = self._output
        for index, data in enumerate(output):
            if type(data) is memoryview:
                output[index] = bytes(data)

    def frame_now(
        self, opcode: int, payload: bytes | bytearray | memoryview, compress: bool = True
    ) -> bytes | None:
        """The frame of a whole message, for the caller to write at once.

        The short way to send a message: nothing is queued, so the frame must be written
        before anything this connection queues later. With permessage-deflate, the message
        is compressed as :meth:`send_text` / :meth:`send_binary` would (``compress`` as
        theirs). Returns ``None`` when the message must take the queue instead: something
        is queued already, a fragmented message is in progress, or the message is to be
        split (``max_frame_size``) or built in the reusable send buffer.

        Raises:
            ConnectionDisconnected: The connection is not open.
        """
        if self.state is not _OPEN:
            raise ConnectionDisconnected(self.close_code, self.close_reason or "")
        if self._output or self._out_opcode is not None:
            return None
        size = len(payload)
        limit = self.max_frame_size
        if (limit is not None and size > limit) or (
            self.reuse_send_buffer and size >= SEND_BUFFER_MIN
        ):
            return None
        kind = opcode
        deflate = self.deflate
        if deflate is not None and compress and deflate.can_compress and size >= deflate.min_size:
            if limit is not None and size + (size >> 3) + (size >> 5) + 64 > limit:
                # Compressed, the message might not fit in one frame after all, and a
                # compression cannot be taken back. The margin is zlib's bound for any
                # memory level (deflateBound: 1/8 + 1/64 + 5 bytes; a low level stores
                # incompressible data in small blocks), plus the flush.
                return None
            payload = deflate.compress(payload)
            size = len(payload)
            kind = RSV1 | opcode
        if size < 65536 and self._mask_outgoing:
            # build_frame's work for the most common frames, without its calls.
            try:
                key = masking_keys.popleft()
            except IndexError:
                key = new_masking_key()
            if size < 126:
                return masked_frame(MASKED_SMALL_HEADERS[kind][size] + key, payload, key)
            header = MASKED_MEDIUM_HEADERS[kind] + size.to_bytes(2, "big") + key
            return masked_frame(header, payload, key)
        return build_frame(opcode, payload, rsv1=kind != opcode, masked=self._mask_outgoing)

    @property
    def sending_fragmented_message(self) -> bool:
        """Whether a message sent with ``fin=False`` still awaits its final fragment."""
        return self._out_opcode is not None

    def send_text(
        self, data: str | bytes | bytearray | memoryview, *, fin: bool = True, compress: bool = True
    ) -> None:
        """Queue a text message (or its first fragment when ``fin`` is false).

        ``data`` may be given already encoded as UTF-8 (a fragment may end inside a
        character; the message as a whole must be valid UTF-8).
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        self._send_data(OP_TEXT, data, fin, compress)

    def send_binary(
        self, data: bytes | bytearray | memoryview, *, fin: bool = True, compress: bool = True
    ) -> None:
        """Queue a binary message (or its first fragment when ``fin`` is false)."""
        self._send_data(OP_BINARY, data, fin, compress)

    def send_continuation(self, data: bytes | bytearray | memoryview | str, *, fin: bool) -> None:
        """Queue the next fragment of the message started with ``fin=False``."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        self._send_data(OP_CONTINUATION, data, fin, True)

    def send_ping(self, data: bytes = b"") -> None:
        """Queue a Ping (at most 125 bytes of payload)."""
        self._send_control(OP_PING, data)

    def send_pong(self, data: bytes = b"") -> None:
        """Queue an unsolicited Pong (at most 125 bytes of payload)."""
        self._send_control(OP_PONG, data)

    def _send_control(self, opcode: int, data: bytes) -> None:
        if len(data) > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"control frame payload is {len(data)} bytes; the limit is 125")
        self._require_open()
        self._output.append(build_frame(opcode, data, masked=self._mask_outgoing))

    def send_close(self, code: int | None = 1000, reason: str = "") -> None:
        """Start the closing handshake; does nothing once closing has started.

        Raises:
            ValueError: The code may not be sent (use 1000-1003, 1007-1014 or 3000-4999)
                or the reason is longer than 123 UTF-8 bytes.
        """
        payload = build_close_payload(code, reason)
        if self.state is not _OPEN:
            return
        self._output.append(build_frame(OP_CLOSE, payload, masked=self._mask_outgoing))
        self.close_code_sent = CLOSE_NO_STATUS if code is None else code
        self.close_reason_sent = reason
        self.state = _CLOSING

    def _queue_close(self, code: int | None, reason: str) -> None:
        payload = build_close_payload(code, reason)
        self._output.append(build_frame(OP_CLOSE, payload, masked=self._mask_outgoing))
        self.close_code_sent = CLOSE_NO_STATUS if code is None else code
        self.close_reason_sent = reason

    # Reporting -----------------------------------------------------------------------------

    @property
    def close_code(self) -> int:
        """The code that describes how the connection ended (or is ending).

        The peer's code when it sent a Close, else the code wsclient sent when it failed or
        closed the connection, else 1006 (abnormal closure).
        """
        if self.close_code_received is not None:
            return self.close_code_received
        if self.close_code_sent is not None:
            return self.close_code_sent
        return CLOSE_ABNORMAL

    @property
    def close_reason(self) -> str:
        if self.close_code_received is not None:
            return self.close_reason_received or ""
        return self.close_reason_sent or ""

    @property
    def close_handshake_done(self) -> bool:
        """Both Close frames were exchanged (the closure was clean)."""
        return self.close_code_received is not None and self.close_code_sent is not None


class ClientConnection(Connection):
    """The client role, starting in CONNECTING with the upgrade request queued.

    Args:
        uri: The server's parsed URL.
        headers: Extra request headers; they replace the defaults (Host, Origin,
            User-Agent) case-insensitively.
        subprotocols: Subprotocols to offer, in order of preference.
        origin: Value of the Origin header.
        user_agent: Value of the User-Agent header; ``None`` sends none.
        deflate_options: permessage-deflate offer; ``None`` disables compression.
        max_size, max_frame_size, stream_messages, defer_failure: See :class:`Connection`.
    """

    __slots__ = (
        "handshake",
        "response",
        "subprotocol",
    )

    def __init__(
        self,
        uri: WebSocketURI,
        *,
        headers: HeadersLike | None = None,
        subprotocols: Iterable[str] | None = None,
        origin: str | None = None,
        user_agent: str | None = DEFAULT_USER_AGENT,
        deflate_options: DeflateOptions | None = None,
        max_size: int | None = DEFAULT_MAX_SIZE,
        max_frame_size: int | None = None,
        stream_messages: bool = False,
        defer_failure: bool = False,
    ) -> None:
        # Not super(): its object and lookup cost about 800 instructions per connection.
        Connection.__init__(
            self,
            _CLIENT,
            max_size=max_size,
            max_frame_size=max_frame_size,
            stream_messages=stream_messages,
            state=_CONNECTING,
            defer_failure=defer_failure,
        )
        # Positional: calling a class with keywords builds a dict.
        self.handshake = ClientHandshake(
            uri,
            headers,
            list(subprotocols) if subprotocols is not None else None,
            origin,
            user_agent,
            deflate_options,
        )
        self.response: Response | None = None
        self.subprotocol: str | None = None
        self._output.append(self.handshake.request_bytes())

    def _receive_handshake_data(self, data: bytes | bytearray) -> bytes:
        handshake = self.handshake
        try:
            # bytes already (receive_data made them so): bytes() would only cost a call.
            leftover = handshake.receive_data(data if type(data) is bytes else bytes(data))
        except HandshakeError:
            self.state = _CLOSED
            raise
        if leftover is None:
            return b""
        self.response = response = handshake.response
        self.subprotocol = subprotocol = handshake.subprotocol
        self.deflate = handshake.deflate
        self.state = _OPEN
        assert response is not None
        event = _new_event(HandshakeComplete)
        _set_complete_response(event, response)
        _set_complete_subprotocol(event, subprotocol)
        self._events.append(event)
        return leftover

    def _receive_handshake_eof(self) -> None:
        self.handshake.receive_eof()


class ServerConnection(Connection):
    """The server role, used by :mod:`wsclient.testing`.

    After a :class:`RequestReceived` event, call :meth:`accept` or :meth:`reject`.
    """

    __slots__ = (
        "_early_data",
        "handshake",
        "request",
        "subprotocol",
    )

    def __init__(
        self,
        *,
        max_size: int | None = DEFAULT_MAX_SIZE,
        max_frame_size: int | None = None,
        deflate: bool = True,
        deflate_settings: dict[str, object] | None = None,
    ) -> None:
        super().__init__(
            _SERVER, max_size=max_size, max_frame_size=max_frame_size, state=_CONNECTING
        )
        self.handshake = ServerHandshake(deflate, dict(deflate_settings or {}))
        self.request: Request | None = None
        self.subprotocol: str | None = None
        self._early_data = b""

    def _receive_handshake_data(self, data: bytes | bytearray) -> bytes:
        if self.request is not None:
            # Frames sent before our answer: keep them until accept().
            self._early_data += data
            return b""
        request = self.handshake.receive_data(bytes(data))
        if request is not None:
            self.request = request
            self._early_data = self.handshake.leftover
            self._events.append(RequestReceived(request))
        return b""

    def _receive_handshake_eof(self) -> None:
        return None

    def accept(self, subprotocol: str | None = None, headers: HeadersLike | None = None) -> None:
        """Answer the request with 101 and move to OPEN.

        Raises:
            HandshakeError: The request is not a valid WebSocket upgrade (answer with
                :meth:`reject` instead).
        """
        problem = self.handshake.validate()
        if problem is not None:
            raise HandshakeError(problem)
        response, self.deflate = self.handshake.accept(subprotocol, headers)
        self.subprotocol = subprotocol
        self._output.append(response)
        self.state = _OPEN
        early, self._early_data = self._early_data, b""
        if early:
            self.receive_data(early)

    def reject(
        self, status: int, reason: str = "", body: bytes = b"", headers: HeadersLike | None = None
    ) -> None:
        """Answer the request with an HTTP error; the connection is then CLOSED."""
        self._output.append(ServerHandshake.reject(status, reason, body, headers))
        self.state = _CLOSED
