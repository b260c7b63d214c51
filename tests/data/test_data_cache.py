"""The frame cache: round trip, compact storage, and atomic writes (no half file is ever read as valid)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tdbn.data import FrameCache
from tdbn.data.cache import atomic_save_npy


def test_round_trip_is_exact_for_large_counts(tmp_path):
    cache = FrameCache(tmp_path)
    frames = torch.randint(0, 1000, (4, 2, 8, 8)).float()
    key = cache.key({"file": "x", "n_frames": 4})
    cache.save(key, frames)
    assert torch.equal(cache.load(key), frames)
    assert np.load(cache.path(key)).dtype == np.uint16  # counts stored compactly


def test_key_depends_on_every_parameter():
    base = {"file": "a", "window_ms": 5.0, "n_frames": 10, "size": [42, 42]}
    keys = {FrameCache.key(base)}
    for name, value in [("file", "b"), ("window_ms", 30.0), ("n_frames", 11), ("size", [32, 32])]:
        keys.add(FrameCache.key({**base, name: value}))
    assert len(keys) == 5
    assert FrameCache.key(dict(reversed(list(base.items())))) == FrameCache.key(base)


def test_interrupted_write_leaves_no_entry(tmp_path, monkeypatch):
    cache = FrameCache(tmp_path)
    key = cache.key({"file": "a"})

    def dies_half_way(f, array, allow_pickle):
        f.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        cache.save(key, torch.ones(2, 2, 2, 2))
    monkeypatch.undo()
    assert cache.load(key) is None
    assert list(tmp_path.rglob("*")) == [cache.path(key).parent]  # no entry, no stray temporary file


def test_damaged_entry_reads_as_missing(tmp_path):
    cache = FrameCache(tmp_path)
    key = cache.key({"file": "a"})
    cache.save(key, torch.ones(3, 2, 4, 4))
    path = cache.path(key)
    path.write_bytes(path.read_bytes()[:-10])
    assert cache.load(key) is None


def test_atomic_save_replaces_existing_file(tmp_path):
    path = tmp_path / "sub" / "a.npy"
    atomic_save_npy(path, np.zeros(3))
    atomic_save_npy(path, np.ones(3))
    assert np.load(path).tolist() == [1.0, 1.0, 1.0]
