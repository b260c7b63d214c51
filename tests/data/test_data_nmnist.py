"""N-MNIST: the real files in ../shared/data/nmnist-small (flat layout), the official layout, bad files, the cache."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from tdbn_data_writers import write_nmnist_bin

from tdbn.data import NMNIST, DataFormatError, DataNotFoundError, collate_time_first, read_bin_events
from tdbn.train.loaders import DatasetBatches, ShardedBatchSampler


def test_reads_real_file(shared_nmnist):
    path = shared_nmnist / "nmnist-small" / "1.bs2"
    ev = read_bin_events(path)
    assert ev.num_events == path.stat().st_size // 5
    assert ev.x.max() < 34 and ev.y.max() < 34 and set(np.unique(ev.p)) == {0, 1}
    assert np.all(np.diff(ev.t) >= 0) and 250_000 < ev.t.max() < 400_000  # three saccades, ~300 ms


def test_flat_layout_real_subset(shared_nmnist):
    root = shared_nmnist / "nmnist-small"
    train, test = NMNIST(root, train=True), NMNIST(root, train=False)
    assert len(train) == 1000 and len(test) == 100
    assert train.labels[:4] == [5, 0, 4, 1] and test.labels[:3] == [7, 2, 1]  # train1K.txt / test100.txt
    assert sorted(set(train.labels)) == list(range(10))
    frames, label = train[0]
    assert frames.shape == (10, 2, 34, 34) and label == 5
    assert frames.sum() == read_bin_events(root / "1.bs2").num_events  # whole recording: every event kept


def test_official_layout(shared_nmnist, tmp_path):
    for i, (sample_id, digit) in enumerate([(1, 5), (2, 0), (3, 4)]):
        folder = tmp_path / "Train" / str(digit)
        folder.mkdir(parents=True)
        shutil.copy(shared_nmnist / "nmnist-small" / f"{sample_id}.bs2", folder / f"{i:05d}.bin")
    (tmp_path / "Test" / "7").mkdir(parents=True)
    shutil.copy(shared_nmnist / "nmnist-small" / "60001.bs2", tmp_path / "Test" / "7" / "00001.bin")
    train = NMNIST(tmp_path, train=True, n_frames=5, window_ms=60.0, size=(17, 17))
    assert sorted(train.labels) == [0, 4, 5] and len(NMNIST(tmp_path, train=False)) == 1
    frames, _ = train[0]
    assert frames.shape == (5, 2, 17, 17)


def test_missing_folder_names_layout_and_source(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        NMNIST(tmp_path / "nowhere")
    text = str(err.value)
    assert "Train/<digit" in text and "train*.txt" in text and "garrickorchard" in text


def test_truncated_and_corrupt_files_name_the_offset(tmp_path):
    path = write_nmnist_bin(tmp_path / "a.bin", [1, 2, 3], [4, 5, 6], [0, 1, 1], [10, 20, 30])
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DataFormatError) as err:
        read_bin_events(path)
    assert err.value.offset == 10 and err.value.path == path and "byte offset 10" in str(err.value)
    write_nmnist_bin(path, [1, 40, 3], [4, 5, 6], [0, 1, 1], [10, 20, 30])
    with pytest.raises(DataFormatError) as err:
        read_bin_events(path)
    assert err.value.offset == 5


def test_written_file_round_trip(tmp_path):
    t = np.array([0, 1, 70_000, 2**23 - 1])
    ev = read_bin_events(write_nmnist_bin(tmp_path / "b.bin", [0, 33, 5, 7], [33, 0, 9, 1], [1, 0, 1, 0], t))
    assert ev.t.tolist() == t.tolist() and ev.x.tolist() == [0, 33, 5, 7] and ev.p.tolist() == [1, 0, 1, 0]


def _flat_copy(shared_nmnist, tmp_path, ids):
    lines = ["#sample #class"]
    labels = dict(line.split() for line in (shared_nmnist / "nmnist-small" / "train1K.txt").read_text().splitlines()[1:])
    for i in ids:
        shutil.copy(shared_nmnist / "nmnist-small" / f"{i}.bs2", tmp_path / f"{i}.bs2")
        lines.append(f"{i}\t{labels[str(i)]}")
    (tmp_path / "train_small.txt").write_text("\r\n".join(lines) + "\r\n")


def test_convert_reports_bad_files_and_never_caches_them(shared_nmnist, tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    _flat_copy(shared_nmnist, data, [1, 2, 3])
    bad = data / "2.bs2"
    bad.write_bytes(bad.read_bytes()[:-1])
    ds = NMNIST(data, train=True, cache_dir=cache)
    report = ds.convert()
    assert report.converted == 2 and list(report.bad) == [bad] and "byte offset" in report.bad[bad]
    assert len(list(cache.rglob("*.npy"))) == 2 and not list(cache.rglob(".tmp-*"))
    assert ds.convert().cached == 2  # second pass: everything good is already there
    with pytest.raises(DataFormatError):
        ds[1]
    good = ds.exclude(report.bad)
    assert len(good) == 2
    loader = DatasetBatches(good, ShardedBatchSampler(len(good), batch_size=2, shuffle=False),
                            collate_fn=collate_time_first)
    x, y = next(iter(loader))
    assert x.shape == (10, 2, 2, 34, 34) and y.shape == (2,)


def test_cache_hit_equals_fresh_conversion_and_keys_on_parameters(shared_nmnist, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _flat_copy(shared_nmnist, data, [1])
    fresh, _ = NMNIST(data)[0]
    cached_ds = NMNIST(data, cache_dir=tmp_path / "cache")
    first, _ = cached_ds[0]
    second, _ = cached_ds[0]
    assert torch.equal(first, fresh) and torch.equal(second, fresh)
    other, _ = NMNIST(data, n_frames=5, cache_dir=tmp_path / "cache")[0]  # another key, not the cached entry
    assert other.shape == (5, 2, 34, 34)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2
