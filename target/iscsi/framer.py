"""The incremental framer: bytes in, PDUs out, nothing touches a socket.

The I/O contract (h11's): the caller ``feed``\\s whatever it read, then calls
``next_pdu`` until it returns None (more bytes needed), then reads again.
``feed_eof`` says the peer closed; a PDU cut short by it is a FramingError.

Bounds. A header announcing a data segment longer than ``max_data_segment``
is refused as soon as its 48 bytes are in, before any of the data is
buffered; and ``feed`` refuses to hold more than ``max_buffer`` bytes, which
by default is one largest PDU plus 64 KiB: enough for a caller that drains
the PDUs before each read of at most 64 KiB, and nothing more.

Errors. A :class:`~target.iscsi.errors.FramingError` breaks the stream for
good: every later call raises again. A
:class:`~target.iscsi.errors.PDUError` only concerns the PDU it names, which
has been consumed; the stream is still framed (whether to carry on after
a Reject is the caller's policy).
"""

from __future__ import annotations

from .errors import FramingError
from .pdu import BHS_LEN, MAX_AHS_LEN, MAX_DATA_SEGMENT, PDU, Role, decode_parts, header_lengths

DEFAULT_MAX_DATA_SEGMENT = 64 * 1024
READ_SLACK = 64 * 1024


class Framer:
    def __init__(
        self,
        sender: Role,
        *,
        max_data_segment: int = DEFAULT_MAX_DATA_SEGMENT,
        max_buffer: int | None = None,
    ) -> None:
        if not 0 <= max_data_segment <= MAX_DATA_SEGMENT:
            raise ValueError("max_data_segment must be in [0, 2**24)")
        self.sender = sender
        self.max_data_segment = max_data_segment
        largest = BHS_LEN + MAX_AHS_LEN + max_data_segment + 3
        self.max_buffer = largest + READ_SLACK if max_buffer is None else max_buffer
        if self.max_buffer < BHS_LEN:
            raise ValueError("max_buffer must hold at least a basic header")
        self._buf = bytearray()
        self._eof = False
        self._broken: FramingError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def at_eof(self) -> bool:
        """The peer closed and every byte it sent has been framed."""
        return self._eof and not self._buf

    def feed(self, data: bytes) -> None:
        if self._broken is not None:
            raise self._fail(self._broken.message, self._broken.header)
        if self._eof:
            raise self._fail("bytes after the end of the stream")
        if len(self._buf) + len(data) > self.max_buffer:
            raise self._fail(f"more than {self.max_buffer} bytes buffered", bytes(self._buf[:48]))
        self._buf += data

    def feed_eof(self) -> None:
        self._eof = True

    def next_pdu(self) -> PDU | None:
        """The next whole PDU, or None until more bytes come. Raises ProtocolError."""
        if self._broken is not None:
            raise self._fail(self._broken.message, self._broken.header)
        buf = self._buf
        if len(buf) < BHS_LEN:
            if self._eof and buf:
                raise self._fail(f"stream ended {len(buf)} bytes into a header", bytes(buf))
            return None
        bhs = bytes(buf[:BHS_LEN])
        ahs_len, data_len = header_lengths(bhs)
        if data_len > self.max_data_segment:
            raise self._fail(
                f"data segment of {data_len} bytes, more than {self.max_data_segment}", bhs
            )
        data_at = BHS_LEN + ahs_len
        total = data_at + data_len + (-data_len % 4)
        if len(buf) < total:
            if self._eof:
                raise self._fail(f"stream ended inside a PDU of {total} bytes", bhs)
            return None
        ahs = bytes(buf[BHS_LEN:data_at])
        data = bytes(buf[data_at : data_at + data_len])
        del buf[:total]
        return decode_parts(bhs, ahs, data, self.sender)

    def _fail(self, message: str, header: bytes = b"") -> FramingError:
        self._broken = FramingError(message, header)
        self._buf.clear()
        return self._broken
