"""Writers of small files in the exact published binary formats, for testing the readers.

Written from the format descriptions (see ``tdbn.data.aedat`` and ``docs/data.md``), independently of the reader
code, so a test that writes and reads back checks the reader against the format, not against itself.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

AEDAT31_HEADER = (
    b"#!AER-DAT3.1\r\n"
    b"#Format: RAW\r\n"
    b"#Source 1: DVS128\r\n"
    b"#Start-Time: 2017-01-01 12:00:00 (TZ+0000)\r\n"
    b"#!END-HEADER\r\n"
)
AEDAT2_HEADER = (
    b"#!AER-DAT2.0\r\n"
    b"# This is a raw AE data file - do not edit\r\n"
    b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n"
    b"# Timestamps tick is 1 us\r\n"
    b"# created Mon Jan 01 12:00:00 CET 2017\r\n"
)


def polarity_packet(
    x, y, p, t64, *, valid=None, capacity_extra: int = 0, source: int = 1
) -> bytes:
    """One AEDAT 3.1 polarity packet; all events must share ``t64 >> 31`` (the packet's overflow counter)."""
    x, y, p, t64 = (np.asarray(a, dtype=np.int64) for a in (x, y, p, t64))
    valid = np.ones_like(x) if valid is None else np.asarray(valid, dtype=np.int64)
    overflow = int(t64[0] >> 31) if len(t64) else 0
    assert (t64 >> 31 == overflow).all()
    data = (x << 17) | (y << 2) | (p << 1) | valid
    stamp = t64 & 0x7FFFFFFF
    number = len(x)
    capacity = number + capacity_extra
    header = struct.pack("<hhiiiiii", 1, source, 8, 4, overflow, capacity, number, int(valid.sum()))
    body = b"".join(struct.pack("<Ii", int(d), int(s)) for d, s in zip(data, stamp))
    return header + body + b"\x00" * (8 * capacity_extra)


def other_packet(event_type: int, event_size: int, n: int, *, overflow: int = 0) -> bytes:
    """A packet of a non-polarity type (special, frame, IMU...), filled with 0xAB bytes: to be skipped."""
    header = struct.pack("<hhiiiiii", event_type, 1, event_size, event_size - 4, overflow, n, n, n)
    return header + b"\xab" * (event_size * n)


def write_aedat31(path: Path, x, y, p, t64, *, per_packet: int = 7, extra: bytes = b"") -> Path:
    """A full AEDAT 3.1 file: polarity packets of at most ``per_packet`` events, split at overflow changes."""
    x, y, p, t64 = (np.asarray(a, dtype=np.int64) for a in (x, y, p, t64))
    packets = [extra]
    start = 0
    while start < len(x):
        stop = min(start + per_packet, len(x))
        same = np.flatnonzero((t64[start:stop] >> 31) != (t64[start] >> 31))
        if len(same):
            stop = start + int(same[0])
        packets.append(polarity_packet(x[start:stop], y[start:stop], p[start:stop], t64[start:stop]))
        start = stop
    path.write_bytes(AEDAT31_HEADER + b"".join(packets))
    return path


def write_aedat2(path: Path, x_raw, y_raw, raw_pol, t, *, special=()) -> Path:
    """A jAER AEDAT 2.0 file of DVS128 events: address ``y << 8 | x << 1 | raw_pol`` (raw 0 = ON), big-endian;
    timestamps taken modulo 2^32 (so a long recording wraps). ``special`` = indices whose address gets bit 15."""
    x_raw, y_raw, raw_pol, t = (np.asarray(a, dtype=np.int64) for a in (x_raw, y_raw, raw_pol, t))
    address = (y_raw << 8) | (x_raw << 1) | raw_pol
    address[list(special)] |= 0x8000
    words = np.stack([address, t % 2**32], axis=1).astype(">u4")
    path.write_bytes(AEDAT2_HEADER + words.tobytes())
    return path


def write_nmnist_bin(path: Path, x, y, p, t) -> Path:
    """The N-MNIST 5-byte format: x, y, then polarity in bit 7 and a 23-bit big-endian timestamp."""
    x, y, p, t = (np.asarray(a, dtype=np.int64) for a in (x, y, p, t))
    b = np.stack([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF], axis=1).astype(np.uint8)
    path.write_bytes(b.tobytes())
    return path


def random_events(n: int, *, size: int = 128, duration_us: int = 2_000_000, seed: int = 0):
    """Sorted random events ``(t, x, y, p)`` on a ``size x size`` sensor."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, duration_us, n))
    return t, rng.integers(0, size, n), rng.integers(0, size, n), rng.integers(0, 2, n)
