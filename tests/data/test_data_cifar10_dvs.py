"""CIFAR10-DVS: jAER AEDAT 2.0 files written as the format describes them, the stored split, the data set."""

from __future__ import annotations

import numpy as np
import pytest
from tdbn_data_writers import AEDAT2_HEADER, random_events, write_aedat2

from tdbn.data import CIFAR10_DVS_CLASSES, CIFAR10DVS, DataFormatError, DataNotFoundError, load_split, make_split
from tdbn.data import read_aedat2


def test_address_bits_orientation_and_polarity(tmp_path):
    # raw (x, y, polarity bit): bit 0 = 0 is ON in jAER's DVS128 convention
    path = write_aedat2(tmp_path / "a.aedat", [0, 127, 10], [0, 5, 127], [0, 1, 1], [1, 2, 3])
    upright = read_aedat2(path)
    assert upright.x.tolist() == [127, 122, 0]  # column = 127 - y_raw
    assert upright.y.tolist() == [127, 0, 117]  # row = 127 - x_raw
    assert upright.p.tolist() == [1, 0, 0]
    jaer = read_aedat2(path, orientation="jaer")
    assert jaer.x.tolist() == [127, 0, 117] and jaer.y.tolist() == [127, 122, 0] and jaer.p.tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="orientation"):
        read_aedat2(path, orientation="flipped")  # type: ignore[arg-type]


def test_timestamp_wrap_around_and_special_events(tmp_path):
    # two wraps (the file holds t modulo 2^32); consecutive events less than 2^31 us apart, as in any recording
    t = np.array([2**32 - 20, 2**32 - 1, 2**32 + 3, 2**32 + 3, 2**32 + 2**30, 2**32 + 3 * 2**30, 2 * 2**32 + 9])
    path = write_aedat2(tmp_path / "b.aedat", [1, 2, 3, 4, 5, 6, 7], [1] * 7, [0] * 7, t, special=[3])
    ev = read_aedat2(path)
    want = [0, 19, 23, 2**30 + 20, 3 * 2**30 + 20, 2**32 + 29]  # the bit-15 event is dropped
    assert (ev.t - ev.t[0]).tolist() == want
    assert np.all(np.diff(ev.t) >= 0)


def test_first_event_starting_with_hash_byte_is_data(tmp_path):
    # y_raw = 35 makes the first address byte 0x23 == '#': it must not be taken for a header line
    ev = read_aedat2(write_aedat2(tmp_path / "h.aedat", [7, 8], [35, 36], [0, 0], [1000, 2000]))
    assert ev.t.tolist() == [1000, 2000] and ev.x.tolist() == [127 - 35, 127 - 36]


def test_truncated_and_wrong_files_name_the_offset(tmp_path):
    path = write_aedat2(tmp_path / "c.aedat", [1, 2], [3, 4], [0, 1], [5, 6])
    path.write_bytes(path.read_bytes() + b"\x00\x01\x02")
    with pytest.raises(DataFormatError, match="truncated event") as err:
        read_aedat2(path)
    assert err.value.offset == len(AEDAT2_HEADER) + 16
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(DataFormatError, match="AER-DAT2") as err:
        read_aedat2(path)
    assert err.value.offset == 0
    path.write_bytes(b"#!AER-DAT1.0\r\n" + b"\x00" * 12)
    with pytest.raises(DataFormatError, match="version 1.0"):
        read_aedat2(path)


def test_stored_split_is_the_documented_procedure():
    stored = load_split()
    assert stored == make_split(seed=stored["seed"])
    for cls in CIFAR10_DVS_CLASSES:
        train, test = set(stored["train"][cls]), set(stored["test"][cls])
        assert len(train) == 900 and len(test) == 100 and not train & test and train | test == set(range(1000))
    assert stored["test"]["airplane"] != stored["test"]["truck"]  # classes are shuffled independently


def _write_release(root, per_split=1):
    """For every class, ``per_split`` files of the stored train split and of the test split (1.0 s recordings)."""
    split = load_split()
    files = {}
    for k, cls in enumerate(CIFAR10_DVS_CLASSES):
        (root / cls).mkdir(parents=True)
        for index in split["train"][cls][:per_split] + split["test"][cls][:per_split]:
            t, x, y, p = random_events(3000, size=128, duration_us=1_000_000, seed=100 * k + index)
            path = write_aedat2(root / cls / f"cifar10_{cls}_{index}.aedat", x, y, p, t + 123_456)
            files[path] = t
    return files


@pytest.mark.filterwarnings("ignore:.*partial copy")
def test_dataset_paper_setting_and_whole_recording(tmp_path):
    files = _write_release(tmp_path)
    with pytest.raises(DataNotFoundError, match="missing"):
        CIFAR10DVS(tmp_path)  # a partial copy is refused unless asked for
    train = CIFAR10DVS(tmp_path, require_complete=False)
    test = CIFAR10DVS(tmp_path, train=False, require_complete=False)
    assert len(train) == 10 and len(test) == 10 and train.labels == list(range(10))
    assert not {s.path for s in train.samples} & {s.path for s in test.samples}
    frames, label = train[3]
    t = files[train.samples[3].path]
    assert frames.shape == (10, 2, 42, 42) and label == 3
    assert frames.sum() == np.count_nonzero(t - t[0] < 50_000)  # paper text: 10 x 5 ms from the first event
    whole = CIFAR10DVS(tmp_path, require_complete=False, window_ms=None)
    frames, _ = whole[3]
    assert frames.shape == (10, 2, 42, 42) and frames.sum() == len(t)


def test_missing_root_names_layout(tmp_path):
    with pytest.raises(DataNotFoundError, match="cifar10_<class>_<index>.aedat") as err:
        CIFAR10DVS(tmp_path / "none")
    assert "figshare" in str(err.value)
