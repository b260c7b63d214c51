"""DVS128 Gesture: AEDAT 3.1 files written exactly as the format describes them, labels CSV, trial lists."""

from __future__ import annotations

import numpy as np
import pytest
from tdbn_data_writers import AEDAT31_HEADER, other_packet, polarity_packet, random_events, write_aedat31

from tdbn.data import DataFormatError, DataNotFoundError, DVSGesture, read_aedat31, read_gesture_labels


def test_round_trip_with_overflow_padding_and_foreign_packets(tmp_path):
    t = np.array([5, 6, 2**31 - 1, 2**31, 2**31 + 7, 3 * 2**31 + 1])  # crosses two overflow boundaries
    x, y, p = np.array([0, 127, 3, 4, 5, 6]), np.array([127, 0, 9, 8, 7, 6]), np.array([1, 0, 1, 0, 1, 0])
    extra = other_packet(0, 8, 3) + other_packet(2, 20, 2)  # a special-event and a frame-type packet first
    ev = read_aedat31(write_aedat31(tmp_path / "a.aedat", x, y, p, t, per_packet=2, extra=extra))
    assert ev.t.tolist() == t.tolist() and ev.x.tolist() == x.tolist()
    assert ev.y.tolist() == y.tolist() and ev.p.tolist() == p.tolist()


def test_capacity_padding_and_invalid_events(tmp_path):
    body = polarity_packet([1, 2, 3], [4, 5, 6], [1, 1, 0], [10, 20, 30], valid=[1, 0, 1], capacity_extra=4)
    path = tmp_path / "b.aedat"
    path.write_bytes(AEDAT31_HEADER + body)
    ev = read_aedat31(path)
    assert ev.x.tolist() == [1, 3] and ev.t.tolist() == [10, 30]  # the invalid middle event is dropped


def test_truncated_and_corrupt_packets_name_the_offset(tmp_path):
    path = write_aedat31(tmp_path / "c.aedat", [1, 2, 3], [1, 2, 3], [0, 1, 0], [1, 2, 3], per_packet=2)
    data = path.read_bytes()
    first_packet = len(AEDAT31_HEADER)
    second_packet = first_packet + 28 + 2 * 8
    path.write_bytes(data[: second_packet + 10])  # second packet header cut short
    with pytest.raises(DataFormatError, match="truncated packet header") as err:
        read_aedat31(path)
    assert err.value.offset == second_packet
    path.write_bytes(data[:-3])  # last event cut short
    with pytest.raises(DataFormatError, match="truncated packet") as err:
        read_aedat31(path)
    assert err.value.offset == second_packet + 28
    broken = bytearray(data)
    broken[first_packet + 20 : first_packet + 24] = (5).to_bytes(4, "little")  # eventCapacity 5
    broken[first_packet + 24 : first_packet + 28] = (9).to_bytes(4, "little")  # eventNumber 9 > capacity 5
    path.write_bytes(bytes(broken))
    with pytest.raises(DataFormatError, match="corrupt packet header") as err:
        read_aedat31(path)
    assert err.value.offset == first_packet


def test_header_must_be_aedat31_and_terminated(tmp_path):
    path = tmp_path / "d.aedat"
    path.write_bytes(b"#!AER-DAT2.0\r\n" + b"\x00" * 16)
    with pytest.raises(DataFormatError, match="AER-DAT3"):
        read_aedat31(path)
    path.write_bytes(b"#!AER-DAT3.1\r\n#Format: RAW\r\n")
    with pytest.raises(DataFormatError, match="END-HEADER"):
        read_aedat31(path)


def test_labels_csv(tmp_path):
    path = tmp_path / "user01_led_labels.csv"
    path.write_text("class,startTime_usec,endTime_usec\r\n1,100,200\r\n11,300,900\r\n\r\n")
    assert read_gesture_labels(path) == [(1, 100, 200), (11, 300, 900)]
    path.write_text("class,startTime_usec,endTime_usec\r\n1,100,200\r\n12,300,900\r\n")
    with pytest.raises(DataFormatError) as err:
        read_gesture_labels(path)
    assert err.value.offset == len("class,startTime_usec,endTime_usec\r\n1,100,200\r\n")


def _write_release(root):
    """Two trials in the official layout: user01 for training (3 gestures), user24 for testing (1 gesture)."""
    root.mkdir()
    t, x, y, p = random_events(30_000, size=128, duration_us=6_000_000, seed=5)
    t = t + 2**31 - 1_000_000  # the recording crosses a timestamp overflow
    write_aedat31(root / "user01_fluorescent.aedat", x, y, p, t, per_packet=4096)
    starts = [int(t[0]) + 500_000, int(t[0]) + 2_000_000, int(t[0]) + 4_000_000]
    rows = [(3, starts[0], starts[0] + 1_000_000), (11, starts[1], starts[1] + 1_500_000),
            (1, starts[2], starts[2] + 1_900_000)]
    (root / "user01_fluorescent_labels.csv").write_text(
        "class,startTime_usec,endTime_usec\n" + "".join(f"{c},{s},{e}\n" for c, s, e in rows)
    )
    write_aedat31(root / "user24_led.aedat", x[:100], y[:100], p[:100], t[:100])
    (root / "user24_led_labels.csv").write_text(f"class,startTime_usec,endTime_usec\n5,{int(t[0])},{int(t[99]) + 1}\n")
    (root / "trials_to_train.txt").write_text("user01_fluorescent.aedat\n\n")
    (root / "trials_to_test.txt").write_text("user24_led.aedat\n")
    return (t, x, y, p), rows


def test_dataset_paper_setting(tmp_path):
    (t, *_), rows = _write_release(tmp_path / "DvsGesture")
    train = DVSGesture(tmp_path)  # the folder that contains DvsGesture/ works too
    assert len(train) == 3 and train.labels == [2, 10, 0] and len(DVSGesture(tmp_path, train=False)) == 1
    for i, (_, start, end) in enumerate(rows):
        frames, _ = train[i]
        assert frames.shape == (40, 2, 32, 32)  # 30 ms x 40 from the gesture's start, 32x32
        want = np.count_nonzero((t >= start) & (t < min(end, start + 1_200_000)))
        assert frames.sum() == want
    short_gesture, _ = train[0]  # 1000 ms long: the last 200 ms of frames are empty
    assert short_gesture[34:].sum() == 0 and short_gesture[:33].sum() > 0


def test_dataset_caches_each_gesture_once(tmp_path):
    _write_release(tmp_path / "DvsGesture")
    ds = DVSGesture(tmp_path / "DvsGesture", cache_dir=tmp_path / "cache", window_ms=10.0, n_frames=5)
    report = ds.convert(workers=2)
    assert report.ok and report.converted == 3
    assert [ds[i][0].shape for i in range(3)] == [(5, 2, 32, 32)] * 3


def test_missing_release_names_layout(tmp_path):
    with pytest.raises(DataNotFoundError, match="trials_to_train.txt") as err:
        DVSGesture(tmp_path)
    assert "dvsgesture" in str(err.value).lower()
