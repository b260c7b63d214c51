"""Frames built on the fly equal ``to_frames``; event files replayed as streams give the multi-step scores."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tdbn
from tdbn.data import Events, read_bin_events, to_frames
from tdbn.stream import FrameBinner, read_events, run_events
from tdbn.stream.binning import chunks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from tdbn_data_writers import random_events, write_aedat2, write_aedat31, write_nmnist_bin  # noqa: E402


def _stream_frames(events: Events, *, chunk_sizes, **settings) -> torch.Tensor:
    """Push ``events`` in chunks of the given sizes (cycled), then finish; the frames stacked ``[T, 2, H, W]``."""
    binner = FrameBinner(**settings)
    frames, i, k = [], 0, 0
    while i < events.num_events:
        n = chunk_sizes[k % len(chunk_sizes)]
        frames += binner.push(events.t[i:i + n], events.x[i:i + n], events.y[i:i + n], events.p[i:i + n])
        i, k = i + n, k + 1
    frames += binner.finish()
    assert binner.late == 0
    return torch.stack(frames)


SETTINGS = [
    dict(window_ms=30.0, n_frames=40, downsample_to=(32, 32)),  # DVS128 Gesture
    dict(window_ms=5.0, n_frames=10, downsample_to=(42, 42)),  # CIFAR10-DVS
    dict(window_ms=50.0, n_frames=None, downsample_to=None, mode="binary"),  # the whole stream, binary
    dict(window_ms=None, n_frames=7, downsample_to=(32, 32)),  # whole recording in 7 equal time slices
    dict(window_ms=None, n_frames=6, downsample_to=None, split_by="events"),  # equal event counts
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("start", [None, 400_000])
def test_frames_on_the_fly_equal_to_frames(settings, start):
    t, x, y, p = random_events(30_000, size=128, duration_us=1_500_000, seed=1)
    ev = Events(t, x, y, p)
    ref = to_frames(t, x, y, p, sensor_size=(128, 128), start_us=start, **settings)
    origin = int(t.min()) if start is None else start
    got = _stream_frames(ev, chunk_sizes=[1, 997, 3, 5000, 64], sensor_size=(128, 128), start_us=origin,
                         last_us=int(t.max()), num_events=int((t >= origin).sum()), **settings)
    assert got.shape == ref.shape and torch.equal(got, ref)
    assert ref.sum() > 0


def test_real_recordings_binned_on_the_fly(shared_nmnist, shared_dvs128):
    nm = read_bin_events(shared_nmnist / "nmnist-small" / "60001.bs2")
    ref = to_frames(*nm, sensor_size=(34, 34), n_frames=10)
    got = _stream_frames(nm, chunk_sizes=[257], sensor_size=(34, 34), start_us=int(nm.t.min()), n_frames=10,
                         last_us=int(nm.t.max()))
    assert torch.equal(got, ref) and ref.sum() == nm.num_events
    clip = read_bin_events(shared_dvs128 / "dvs128-clips" / "clip1.bs2", sensor_size=(128, 128))
    ref = to_frames(*clip, sensor_size=(128, 128), window_ms=30.0, downsample_to=(32, 32))
    binner = FrameBinner(sensor_size=(128, 128), start_us=int(clip.t.min()), window_ms=30.0, downsample_to=(32, 32))
    frames = [f for c in chunks(clip, 1000) for f in binner.push(*c)] + binner.finish()
    assert torch.equal(torch.stack(frames), ref) and len(frames) > 40


def test_time_passing_and_late_events():
    b = FrameBinner(sensor_size=(4, 4), start_us=0, window_ms=1.0, n_frames=5)
    assert b.push([10, 20], [0, 1], [0, 0], [1, 0]) == []
    done = b.advance_to(2_500)  # 2.5 ms without events: windows 0 and 1 are over
    assert [float(f.sum()) for f in done] == [2.0, 0.0]
    assert b.push([500], [0], [0], [1]) == [] and b.late == 1  # belonged to window 0, already returned
    assert [float(f.sum()) for f in b.push([9_000], [2], [2], [1])] == [0.0, 0.0, 0.0]  # past the 5th window
    assert b.finish() == []
    with pytest.raises(ValueError, match="last_us"):
        FrameBinner(sensor_size=(4, 4), start_us=0, n_frames=3)
    with pytest.raises(ValueError, match="sensor_size"):
        FrameBinner(sensor_size=(4, 4), start_us=0, window_ms=1.0).push([0], [4], [0], [0])


def test_read_events_by_format(tmp_path):
    t, x, y, p = random_events(500, size=34, duration_us=300_000, seed=2)
    a = read_events(write_nmnist_bin(tmp_path / "s.bs2", x, y, p, t))
    np.savez(tmp_path / "s.npz", t=t, x=x, y=y, p=p)
    b = read_events(tmp_path / "s.npz")
    c = read_events(write_aedat31(tmp_path / "g.aedat", x, y, p, t), sensor_size=(128, 128))
    for ev in (a, b, c):
        assert all(np.array_equal(np.asarray(u, dtype=np.int64), v) for u, v in zip(ev, (t, x, y, p)))
    d = read_events(write_aedat2(tmp_path / "c.aedat", x, y, 1 - p, t))  # raw 0 = ON
    assert d.num_events == 500 and np.array_equal(d.p, p)
    (tmp_path / "bad.dat").write_bytes(b"hello")
    with pytest.raises(ValueError, match="unknown event file format"):
        read_events(tmp_path / "bad.dat")
    with pytest.raises(FileNotFoundError):
        read_events(tmp_path / "missing.bs2")


def test_a_replayed_recording_gives_the_multi_step_scores(shared_nmnist):
    torch.manual_seed(0)
    model = tdbn.models.create("resnet17", num_classes=10, in_channels=2, width=1 / 16, timesteps=10,
                               input_size=34)
    with torch.no_grad():
        model.train()(torch.poisson(torch.full((10, 4, 2, 34, 34), 0.3)))
    model.eval()
    ev = read_bin_events(shared_nmnist / "nmnist-small" / "60002.bs2")
    frames = to_frames(*ev, sensor_size=(34, 34), n_frames=10)
    seen = []
    report = run_events(model, ev, sensor_size=(34, 34), n_frames=10, on_step=seen.append)
    assert len(report.steps) == 10 and seen == report.steps
    assert [s["events"] for s in report.steps] == frames.sum(dim=(1, 2, 3)).int().tolist()
    with torch.no_grad():
        ref = model(frames.unsqueeze(1))
    assert report.steps[-1]["prediction"] == int(ref.argmax()) and report.steps[-1]["score"] == float(ref.max())
    s = report.summary()
    assert s["events"] == ev.num_events and s["realtime_factor"] > 0 and s["ms_per_step"] > 0


def test_the_first_step_is_reported_as_warm_up_apart_from_the_steady_state(monkeypatch):
    """A first step 0.4 s long (as one-time allocations make it) moves the warm-up figure, not the steady-state
    ms/step, events/s and real-time factor of the summary. The runner's clock is replaced by one that only the
    steps advance (0.4 s, then 2 ms each), so the figures are exact on any machine under any load."""
    import types

    from tdbn.stream import runner
    from tdbn.stream.runner import Stream

    model = tdbn.models.create("resnet17", num_classes=10, in_channels=2, width=1 / 16, timesteps=4,
                               input_size=16).eval()
    ev = Events(*random_events(4000, size=16, duration_us=400_000))
    push = Stream.push
    now = [100.0]  # seconds on the fake clock

    def timed_push(self, x_t):
        now[0] += 0.4 if not calls else 0.002
        calls.append(1)
        return push(self, x_t)

    calls: list[int] = []
    monkeypatch.setattr(Stream, "push", timed_push)
    monkeypatch.setattr(runner, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    s = run_events(model, ev, sensor_size=(16, 16), window_ms=20.0, chunk_us=5000).summary()
    assert s["steps"] == 20 and len(calls) == 20
    assert s["warmup_ms"] == pytest.approx(400) and s["warmup_model_ms"] == pytest.approx(400)
    assert s["ms_per_step"] == pytest.approx(2) and s["model_ms_per_step"] == pytest.approx(2)
    assert s["wall_s"] == pytest.approx(0.4 + 19 * 0.002)
    assert s["realtime_factor"] == pytest.approx(20.0 / 2)
    assert s["events_per_s"] > ev.num_events / s["wall_s"]


def test_a_live_dvs_stream_restarts_every_window(shared_dvs128):
    """A 128x128 recording in 30 ms windows at 32x32, the network state restarted every T = 8 steps: each
    sequence's last scores equal the multi-step forward over those 8 frames of ``to_frames``."""
    torch.manual_seed(0)
    model = tdbn.models.create("resnet17", num_classes=11, in_channels=2, width=1 / 16, timesteps=8, input_size=32)
    with torch.no_grad():
        model.train()(torch.poisson(torch.full((8, 4, 2, 32, 32), 0.5)))
    model.eval()
    clip = read_bin_events(shared_dvs128 / "dvs128-clips" / "clip2.bs2", sensor_size=(128, 128))
    frames = to_frames(*clip, sensor_size=(128, 128), window_ms=30.0, downsample_to=(32, 32))
    report = run_events(model, clip, sensor_size=(128, 128), window_ms=30.0, downsample_to=(32, 32), window=8,
                        chunk_us=700)
    assert len(report.steps) == frames.shape[0] and report.late_events == 0
    assert report.window_us == 30_000 and report.steps[2]["end_ms"] == 90.0
    for k in range(frames.shape[0] // 8):
        with torch.no_grad():
            ref = model(frames[8 * k:8 * k + 8].unsqueeze(1))
        assert report.steps[8 * k + 7]["score"] == float(ref.max())
