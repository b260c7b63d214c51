"""to_frames: conservation, shapes, the paper's settings, agreement with a plain loop, and the real DVS clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tdbn_data_writers import random_events

from tdbn.data import Events, collate_time_first, read_bin_events, to_frames


def reference_frames(t, x, y, p, *, sensor, n_frames, window_us=None, start=None, out=None, split_by="time"):
    """The same binning as a plain Python loop over events, written from the docstring."""
    h, w = sensor
    oh, ow = out or sensor
    t0 = int(min(t)) if start is None else start
    frames = np.zeros((n_frames, 2, oh, ow))
    kept = [i for i in range(len(t)) if t[i] >= t0]
    for rank, i in enumerate(kept):
        if window_us is not None:
            k = (t[i] - t0) // window_us
        elif split_by == "time":
            k = (t[i] - t0) * n_frames // (max(t[j] for j in kept) - t0 + 1)
        else:
            k = rank * n_frames // len(kept)
        if 0 <= k < n_frames:
            frames[k, p[i], y[i] * oh // h, x[i] * ow // w] += 1
    return torch.tensor(frames, dtype=torch.float32)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(window_ms=30.0, n_frames=40, downsample_to=(32, 32)),  # DVS128 Gesture (paper)
        dict(window_ms=5.0, n_frames=10, downsample_to=(42, 42)),  # CIFAR10-DVS (paper)
        dict(n_frames=10, downsample_to=(42, 42)),  # whole recording, equal time
        dict(n_frames=7, split_by="events"),  # whole recording, equal counts
        dict(window_ms=0.25, n_frames=5, start_us=1000),
    ],
)
def test_matches_plain_loop(kwargs):
    t, x, y, p = random_events(400, size=128, duration_us=150_000, seed=1)
    got = to_frames(t, x, y, p, sensor_size=(128, 128), **kwargs)
    window = kwargs.get("window_ms")
    want = reference_frames(
        t, x, y, p, sensor=(128, 128), n_frames=kwargs["n_frames"],
        window_us=None if window is None else round(window * 1000), start=kwargs.get("start_us"),
        out=kwargs.get("downsample_to"), split_by=kwargs.get("split_by", "time"),
    )
    assert torch.equal(got, want)


def test_conservation_and_shapes_paper_settings():
    t, x, y, p = random_events(20_000, size=128, duration_us=3_000_000, seed=2)
    gesture = to_frames(t, x, y, p, sensor_size=(128, 128), window_ms=30, n_frames=40, downsample_to=(32, 32))
    assert gesture.shape == (40, 2, 32, 32) and gesture.dtype == torch.float32
    inside = ((t - t[0]) < 1_200_000).sum()  # T = 40 windows of 30 ms from the first event
    assert gesture.sum() == inside
    c10 = to_frames(t, x, y, p, sensor_size=(128, 128), window_ms=5, n_frames=10, downsample_to=(42, 42))
    assert c10.shape == (10, 2, 42, 42) and c10.sum() == ((t - t[0]) < 50_000).sum()
    whole = to_frames(t, x, y, p, sensor_size=(128, 128), n_frames=10, downsample_to=(42, 42))
    assert whole.sum() == len(t)
    counts = to_frames(t, x, y, p, sensor_size=(128, 128), n_frames=6, split_by="events").sum(dim=(1, 2, 3))
    assert counts.sum() == len(t) and counts.max() - counts.min() <= 1


def test_window_boundaries_and_polarity_channels():
    t = np.array([100, 100 + 9_999, 100 + 10_000, 100 + 30_000, 50])
    x, y, p = np.array([0, 1, 2, 3, 0]), np.array([0, 0, 0, 0, 0]), np.array([1, 0, 1, 1, 1])
    f = to_frames(t, x, y, p, sensor_size=(1, 4), window_ms=10, n_frames=3, start_us=100)
    # t=50 is before the start, t=30100 is in window 3 (dropped): 3 events remain
    assert f.sum() == 3
    assert f[0, 1, 0, 0] == 1 and f[0, 0, 0, 1] == 1 and f[1, 1, 0, 2] == 1


def test_downsampling_sums_whole_pixel_blocks():
    x = np.arange(128)
    ones = np.zeros(128, dtype=np.int64)
    f = to_frames(ones, x, ones, ones, sensor_size=(128, 128), n_frames=1, downsample_to=(42, 42))
    widths = f[0, 0, 0]
    assert widths.sum() == 128 and set(widths.tolist()) <= {3.0, 4.0}
    f32 = to_frames(ones, x, ones, ones, sensor_size=(128, 128), n_frames=1, downsample_to=(32, 32))
    assert (f32[0, 0, 0] == 4).all()


def test_binary_mode_and_empty_stream():
    t, x, y, p = random_events(5_000, size=8, duration_us=1000, seed=3)
    counts = to_frames(t, x, y, p, sensor_size=(8, 8), n_frames=2)
    binary = to_frames(t, x, y, p, sensor_size=(8, 8), n_frames=2, mode="binary")
    assert torch.equal(binary, (counts > 0).float())
    empty = np.zeros(0, dtype=np.int64)
    assert to_frames(empty, empty, empty, empty, sensor_size=(8, 8), n_frames=3).abs().sum() == 0


def test_rejects_bad_arguments():
    t, x, y, p = random_events(10, size=8, seed=4)
    with pytest.raises(ValueError, match="outside sensor_size"):
        to_frames(t, x + 8, y, p, sensor_size=(8, 8), n_frames=1)
    with pytest.raises(ValueError, match="window_ms"):
        to_frames(t, x, y, p, sensor_size=(8, 8))
    with pytest.raises(ValueError, match="mode"):
        to_frames(t, x, y, p, sensor_size=(8, 8), n_frames=1, mode="counts")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split_by"):
        to_frames(t, x, y, p, sensor_size=(8, 8), window_ms=1.0, split_by="events")


def test_collate_time_first():
    batch = [(torch.full((5, 2, 3, 3), float(i)), i) for i in range(4)]
    x, y = collate_time_first(batch)
    assert x.shape == (5, 4, 2, 3, 3) and x.is_contiguous()
    assert torch.equal(x[:, 2], batch[2][0]) and y.tolist() == [0, 1, 2, 3]


def test_real_dvs128_clip(shared_dvs128):
    ev = read_bin_events(shared_dvs128 / "dvs128-clips" / "clip3.bs2", sensor_size=(128, 128))
    assert isinstance(ev, Events) and ev.num_events == (shared_dvs128 / "dvs128-clips" / "clip3.bs2").stat().st_size // 5
    assert np.all(np.diff(ev.t) >= 0)
    frames = to_frames(*ev, sensor_size=(128, 128), window_ms=30, n_frames=40, downsample_to=(32, 32))
    assert frames.shape == (40, 2, 32, 32)
    assert frames.sum() == np.count_nonzero(ev.t - ev.t.min() < 1_200_000)
    assert frames[:, 0].sum() > 0 and frames[:, 1].sum() > 0  # both polarities present
    whole = to_frames(*ev, sensor_size=(128, 128), n_frames=10, downsample_to=(42, 42))
    assert whole.sum() == ev.num_events
