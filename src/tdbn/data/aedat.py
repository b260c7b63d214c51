"""Readers of the two AEDAT event-file formats of the paper's DVS data sets, written from the published layouts.

**AEDAT 3.1** (DVS128 Gesture; cAER / libcaer), all integers little-endian:

- An ASCII header of lines starting with ``#``: the first is ``#!AER-DAT3.1``, the last ``#!END-HEADER``.
- Then packets, each a 28-byte header ``int16 eventType, int16 eventSource, int32 eventSize, int32 eventTSOffset,
  int32 eventTSOverflow, int32 eventCapacity, int32 eventNumber, int32 eventValid`` followed by
  ``eventCapacity * eventSize`` bytes of events, of which the first ``eventNumber`` are used.
- Polarity events (``eventType == 1``, 8 bytes, timestamp at byte 4): ``uint32 data`` with bit 0 = valid mark,
  bit 1 = polarity (1 = ON), bits 2..16 = y, bits 17..31 = x ((0, 0) is the top-left pixel); then ``int32``
  timestamp in microseconds (31 bits). The full timestamp is ``eventTSOverflow << 31 | timestamp``, which keeps
  recordings longer than 2^31 us (~36 min) monotonic. Invalid events (valid mark 0) are dropped; packets of
  other types (special, frame, IMU...) are skipped by their declared size.

**AEDAT 2.0** (CIFAR10-DVS; jAER):

- ASCII header lines starting with ``#``, the first ``#!AER-DAT2.0``. The header has no end marker; a "line"
  that starts with ``#`` but holds control bytes is binary data whose first address byte is 0x23, not header;
- then events of 8 bytes, big-endian: ``uint32 address``, ``uint32 timestamp`` (microseconds). The timestamp
  wraps around at 2^32 us (~71.6 min); the reader unwraps it so times stay monotonic.
- DVS128 address (jAER ``DVS128.Extractor``): bit 0 = polarity, raw 0 = ON and raw 1 = OFF (jAER flips it);
  bits 1..7 = x, bits 8..14 = y; bit 15 (and anything above) marks a special / sync event, which is dropped.
  jAER itself draws ``column = 127 - x_raw`` and ``y_raw`` up from the bottom. ``orientation`` chooses one of
  two conventions in which DVS128 recordings (CIFAR10-DVS in particular) are decoded:

  - ``"upright"`` (default; the convention of SpikingJelly's CIFAR10-DVS loader, which shows the objects
    upright): ``column = 127 - y_raw``, ``row = 127 - x_raw``, i.e. jAER's picture transposed;
  - ``"jaer"``: jAER's own picture, ``column = 127 - x_raw``, ``row = 127 - y_raw`` (row 0 at the top).

  Both give ``p = 1 - (address & 1)`` (1 = ON). A network trained in one convention must be tested in the same.

Every malformed input raises :class:`~tdbn.data.errors.DataFormatError` with the file and the byte offset.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Literal

import numpy as np

from tdbn.data.errors import DataFormatError
from tdbn.data.events import Events

__all__ = ["read_aedat31", "read_aedat2"]

_PACKET_HEADER = struct.Struct("<hhiiiiii")  # 28 bytes
_POLARITY_EVENT = 1
_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")  # bytes that never occur in a text header line


def _skip_header(raw: bytes, path: Path, magic: bytes) -> int:
    """Byte offset of the first byte after the '#' header lines; checks the first line starts with ``magic``."""
    if not raw.startswith(magic):
        raise DataFormatError(path, 0, f"not an {magic.decode()[2:]} file: it does not start with {magic.decode()!r}")
    pos = 0
    while pos < len(raw) and raw[pos : pos + 1] == b"#":
        nl = raw.find(b"\n", pos)
        line = raw[pos : nl if nl >= 0 else len(raw)].rstrip(b"\r")
        if pos > 0 and _CONTROL.search(line):
            break  # binary data whose first byte happens to be '#' (0x23), not a header line
        if nl < 0:
            raise DataFormatError(path, pos, "unterminated header line")
        pos = nl + 1
        if line == b"#!END-HEADER":
            return pos
    if magic.startswith(b"#!AER-DAT3"):
        raise DataFormatError(path, pos, "header has no '#!END-HEADER' line")
    return pos


def read_aedat31(path: str | Path, *, sensor_size: tuple[int, int] = (128, 128)) -> Events:
    """Read the polarity events of an AEDAT 3.1 file (layout in the module docstring).

    Raises :class:`DataFormatError` with the byte offset of a truncated or inconsistent packet, or of the first
    event outside ``sensor_size`` (H, W).
    """
    path = Path(path)
    raw = path.read_bytes()
    pos = _skip_header(raw, path, b"#!AER-DAT3")
    chunks: list[np.ndarray] = []  # [n, 2] uint32 (data, timestamp) per polarity packet
    overflows: list[int] = []
    offsets: list[int] = []  # byte offset of each chunk's first event
    while pos < len(raw):
        if len(raw) - pos < _PACKET_HEADER.size:
            raise DataFormatError(path, pos, f"truncated packet header: {len(raw) - pos} of 28 bytes")
        etype, _source, size, ts_offset, ts_overflow, capacity, number, valid = _PACKET_HEADER.unpack_from(raw, pos)
        if size <= 0 or capacity < 0 or not 0 <= number <= capacity or not 0 <= valid <= number or ts_overflow < 0:
            raise DataFormatError(
                path,
                pos,
                f"corrupt packet header (type {etype}, size {size}, capacity {capacity}, number {number}, "
                f"valid {valid}, overflow {ts_overflow})",
            )
        body = pos + _PACKET_HEADER.size
        end = body + capacity * size
        if end > len(raw):
            raise DataFormatError(path, body, f"truncated packet: {capacity * size} bytes of events declared, "
                                  f"{len(raw) - body} present")
        if etype == _POLARITY_EVENT:
            if size != 8 or ts_offset != 4:
                raise DataFormatError(path, pos, f"polarity packet with event size {size} and timestamp offset "
                                      f"{ts_offset}; AEDAT 3.1 polarity events are 8 bytes, timestamp at 4")
            chunks.append(np.frombuffer(raw, dtype="<u4", count=2 * number, offset=body).reshape(number, 2))
            overflows.append(ts_overflow)
            offsets.append(body)
        pos = end
    if not chunks:
        empty = np.zeros(0, np.int64)
        return Events(empty, empty.astype(np.int16), empty.astype(np.int16), empty.astype(np.uint8))
    words = np.concatenate(chunks)
    counts = np.array([len(c) for c in chunks])
    overflow = np.repeat(np.asarray(overflows, dtype=np.int64), counts)
    data, stamp = words[:, 0], words[:, 1]
    valid = (data & 1).astype(bool)
    x = ((data >> 17) & 0x7FFF).astype(np.int16)
    y = ((data >> 2) & 0x7FFF).astype(np.int16)
    p = ((data >> 1) & 1).astype(np.uint8)
    t = (overflow << 31) | stamp.astype(np.int64)
    height, width = sensor_size
    bad = valid & ((stamp >= 2**31) | (x >= width) | (y >= height))
    if bad.any():
        i = int(np.argmax(bad))
        chunk = int(np.searchsorted(np.cumsum(counts), i, side="right"))
        offset = offsets[chunk] + 8 * (i - int(counts[:chunk].sum()))
        raise DataFormatError(path, offset, f"event at x={x[i]}, y={y[i]}, timestamp {stamp[i]} outside the "
                              f"{width}x{height} sensor or the 31-bit timestamp range")
    return Events(t[valid], x[valid], y[valid], p[valid])


def read_aedat2(path: str | Path, *, orientation: Literal["upright", "jaer"] = "upright") -> Events:
    """Read a jAER AEDAT 2.0 file of a DVS128 camera (layout and ``orientation`` in the module docstring).

    Raises :class:`DataFormatError` naming the byte offset of a truncated tail, or a missing header.
    """
    if orientation not in ("upright", "jaer"):
        raise ValueError(f"orientation must be 'upright' or 'jaer', got {orientation!r}")
    path = Path(path)
    raw = path.read_bytes()
    if raw.startswith(b"#!AER-DAT") and not raw.startswith(b"#!AER-DAT2"):
        version = raw[9 : raw.find(b"\n")].strip().decode(errors="replace")
        raise DataFormatError(path, 0, f"AEDAT version {version} is not supported; expected 2.0")
    start = _skip_header(raw, path, b"#!AER-DAT2")
    tail = (len(raw) - start) % 8
    if tail:
        raise DataFormatError(path, len(raw) - tail, f"truncated event: {tail} trailing byte(s), events are 8 bytes")
    words = np.frombuffer(raw, dtype=">u4", offset=start).reshape(-1, 2)
    address = words[:, 0]
    stamp = words[:, 1].astype(np.int64)
    # Unwrap the 32-bit timestamp: a drop by more than half the range is a wrap, not jitter.
    wraps = np.concatenate([[0], np.cumsum(np.diff(stamp) < -(2**31))]) if len(stamp) else np.zeros(0, np.int64)
    t = stamp + (wraps.astype(np.int64) << 32)
    keep = address < 0x8000  # bit 15 and above: special / sync events
    address, t = address[keep], t[keep]
    x_raw = ((address >> 1) & 0x7F).astype(np.int16)
    y_raw = ((address >> 8) & 0x7F).astype(np.int16)
    p = (1 - (address & 1)).astype(np.uint8)
    if orientation == "upright":
        x, y = 127 - y_raw, 127 - x_raw
    else:
        x, y = 127 - x_raw, 127 - y_raw
    return Events(t, x, y, p)
