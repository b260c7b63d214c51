"""A trained run folder as a streamable model plus what streaming needs to know about its inputs.

The model is rebuilt by :func:`tdbn.train.restore` (the path ``tdbn.load``, ``tdbn eval`` and ``tdbn export``
share: verified checkpoint, stored constructor arguments, ``weights_only=True``). For event data the frame
settings, sensor size, classes and event reader come from the run's test data set, constructed from the recorded
data folder (its files listed, none converted).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.event_dataset import EventFrameDataset, FrameSettings
from ..data.events import Events

__all__ = ["LoadedRun", "eval_batches", "load_run"]


@dataclass
class LoadedRun:
    """A trained network in eval mode, its configuration and, for event data, its test data set."""

    model: nn.Module
    checkpoint: Path
    epoch: int
    config: Any  # the run's TrainConfig (data.root as given to load_run)
    dataset: EventFrameDataset | None  # event data: frame settings, sensor size, classes, file reader

    def _events_dataset(self) -> EventFrameDataset:
        if self.dataset is None:
            raise ValueError(f"{self.checkpoint}: trained on {self.config.data.name!r}, not on event data")
        return self.dataset

    @property
    def frames(self) -> FrameSettings:
        return self._events_dataset().frames

    @property
    def sensor_size(self) -> tuple[int, int]:
        return tuple(self._events_dataset().sensor_size)  # type: ignore[return-value]

    @property
    def classes(self) -> list[str]:
        return list(self._events_dataset().classes)

    def read_events(self, path: str | Path) -> Events:
        """An event file in the data set's own format (e.g. AEDAT 2.0 with the run's orientation)."""
        return self._events_dataset().read_file(Path(path))


def load_run(path: str | Path, *, fuse: bool = False, data_root: str | None = None) -> LoadedRun:
    """The model of a ``tdbn train`` run folder (or checkpoint file) in eval mode, ``tdbn.fuse``-d if ``fuse``.

    ``data_root`` replaces the data folder recorded in the run. Raises the data set's ``DataNotFoundError``
    (naming the folder and the layout) when the data folder is missing.
    """
    from ..train.data import EVENT_DATASETS, _event_dataset
    from ..train.restore import restore

    restored = restore(path, fuse=fuse)  # the one rebuild path: verified checkpoint, stored constructor arguments
    cfg = restored.config
    if data_root is not None:
        cfg.data.root = data_root
    dataset = _event_dataset(cfg.data, False, cfg.model.timesteps) if cfg.data.name in EVENT_DATASETS else None
    model, ckpt_path, checkpoint = restored.model, restored.path, restored.checkpoint
    return LoadedRun(model=model, checkpoint=ckpt_path, epoch=int(checkpoint["epoch"]), config=cfg, dataset=dataset)


def eval_batches(run: LoadedRun, *, batch_size: int | None = None, limit: int | None = None):
    """The run's test batches as ``tdbn eval`` reads them (same subset, same default batch size)."""
    from ..train.data import build_data

    cfg = run.config
    data_cfg = copy.deepcopy(cfg.data)
    if limit is not None:
        data_cfg.test_limit = limit
    bs = batch_size or 2 * cfg.optim.batch_size
    return build_data(data_cfg, batch_size=bs, timesteps=cfg.model.timesteps, seed=cfg.seed, train=False).test


