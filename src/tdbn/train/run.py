"""A whole training run: run folder, data, model, optimizer, the epoch loop, metrics and checkpoints.

Reads top-down like the torchvision classification reference: :func:`train` builds everything, then per epoch
calls :func:`~tdbn.train.engine.train_one_epoch`, :func:`~tdbn.train.engine.evaluate`, appends a line to
``metrics.jsonl`` and writes ``checkpoint.pt``. The same code runs in one process or under ``torchrun``
(DistributedDataParallel with tdBN statistics synchronized across processes, as the paper's sync-BN).

Run folder (``runs/<name>-<timestamp>`` by default)::

    config.yaml, config.json   the resolved configuration
    metrics.jsonl              one JSON object per epoch
    checkpoint.pt              the latest checkpoint (see tdbn.train.checkpoint)
    checkpoint.prev.pt         the one before it, kept in case the latest is damaged

Checkpoints are written at epoch ends and, with ``checkpoint_every_steps`` / ``checkpoint_every_minutes``, in
the middle of an epoch too, holding every process's position in the epoch's sample order, random states and
metrics so far, so that a run continued from any of them ends exactly as an uninterrupted run. Under torchrun, a
run folder given as ``run_dir`` that already holds a run of the same configuration is continued from its
latest verified checkpoint (what the workers that torchrun restarts after a failure do).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from ..layers import convert_sync_tdbn
from ..messages import warn
from ..operators import cpu as native_kernels
from .amp import Precision, precision_note, resolve_amp
from .build import check_model, create_model, model_kwargs, neuron_params
from .checkpoint import (
    CHECKPOINT, FORMAT, PREVIOUS, code_version, get_rng_state, load_checkpoint, load_latest, missing_checkpoint,
    remove_leftovers, run_folders, save_checkpoint, set_rng_state,
)
from .config import (
    RESUMABLE_KEYS, TrainConfig, config_from_dict, config_to_dict, diff_configs, save_config, validate,
)
from .data import DATASETS, build_data
from .distributed import (
    Context, broadcast_object, gather_objects, setup, teardown, torchrun_restart,
)
from .engine import EpochProgress, Objective, evaluate, train_one_epoch
from .errors import CheckpointWriteError, NonFiniteError, TrainingError
from .metrics_log import MetricsLog, require_tensorboard
from .optim import build_optimizer, build_scheduler

__all__ = ["CHECKPOINT", "make_run_dir", "saved_config", "train"]

TIME_KEYS = ("elapsed_s", "epoch_s", "images_per_s", "test_images_per_s")  # differ between identical runs


def _check_run_dir_free(cfg: TrainConfig) -> None:
    if cfg.run_dir is not None:
        path = Path(cfg.run_dir)
        if path.exists() and any(path.iterdir()):
            raise TrainingError(f"run folder {path} already holds files; continue it with --resume {path} "
                                "or choose another run_dir")


def make_run_dir(cfg: TrainConfig) -> Path:
    """Create the run folder: ``cfg.run_dir`` (absent or empty) or a new ``<out_dir>/<name>-<timestamp>``."""
    if cfg.run_dir is not None:
        _check_run_dir_free(cfg)
        path = Path(cfg.run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path(cfg.out_dir) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for k in range(1000):
        path = base if k == 0 else base.with_name(f"{base.name}-{k}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise TrainingError(f"cannot create a new run folder next to {base}")


def saved_config(path: str | Path) -> TrainConfig:
    """The resolved configuration of a run: from its checkpoint (file or run folder), else its ``config.json``.

    A run folder whose checkpoint is damaged falls back to ``checkpoint.prev.pt``; one killed before its first
    checkpoint has only ``config.json``.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT).exists() and not (path / PREVIOUS).exists() and (path / "config.json").is_file():
            return _config_json(path)
        return config_from_dict(load_latest(path, warn=lambda m: None)[0]["config"])
    return config_from_dict(load_checkpoint(path)["config"])


def _config_json(run_dir: Path) -> TrainConfig:
    try:
        return config_from_dict(json.loads((run_dir / "config.json").read_text()))
    except (OSError, ValueError) as err:
        raise TrainingError(f"{run_dir / 'config.json'}: unreadable run configuration ({err})") from None


def _check_writable(folder: Path, key: str) -> None:
    """Fail before any work when ``folder`` (or the nearest existing folder above it) cannot be written."""
    probe = folder.resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise TrainingError(f"cannot write the run folder {folder}: {probe} is not a writable folder; "
                            f"choose another {key}=PATH")


def _absolute_paths(cfg: TrainConfig) -> None:
    """Data paths are stored absolute, so ``tdbn eval`` works from any working directory."""
    for section, key in (("data", "root"), ("data", "cache_dir")):
        obj = getattr(cfg, section)
        value = getattr(obj, key)
        if value is not None and value != "":
            setattr(obj, key, str(Path(value).expanduser().resolve()))


def _check_resumable(saved: TrainConfig, cfg: TrainConfig, run_dir: Path, *, auto: bool = False) -> None:
    changed = {k: v for k, v in diff_configs(saved, cfg).items() if k not in RESUMABLE_KEYS}
    if changed:
        lines = "\n".join(f"  {k}: {a!r} in the run, {b!r} now" for k, (a, b) in sorted(changed.items()))
        head = (f"run folder {run_dir} holds a run of another configuration (a run folder given as run_dir is "
                "continued under torchrun only with the same configuration)" if auto else
                f"cannot resume {run_dir}: the configuration differs from the run's")
        raise TrainingError(
            f"{head}\n{lines}\n"
            f"resume with the same preset and overrides (or none: `tdbn train --resume {run_dir}`), or choose "
            f"another run_dir; only {', '.join(sorted(RESUMABLE_KEYS))} may change"
        )


def _continuable(cfg: TrainConfig) -> bool:
    """Under torchrun: ``run_dir`` holds a run (a checkpoint or its configuration) to continue, not start."""
    if cfg.run_dir is None or torchrun_restart() is None:
        return False
    path = Path(cfg.run_dir)
    return any((path / name).is_file() for name in (CHECKPOINT, PREVIOUS, "config.json"))


def _position(epoch: int, step: int) -> str:
    """A checkpoint's place: ``epoch 3`` (its end) or ``epoch 4, step 10`` (10 steps into epoch 4)."""
    return f"epoch {epoch + 1}, step {step}" if step else f"epoch {epoch}"


class _Checkpoints:
    """Writes the run's checkpoints: at epoch ends, and in the middle of epochs when configured.

    A checkpoint is written by rank 0 but gathers every process's random states and, mid-epoch, its position in
    the epoch (step and the data generator's state) and its metric sums so far (:class:`EpochProgress`).
    """

    def __init__(self, cfg: TrainConfig, ctx: Context, run_dir: Path, state: Callable[[], dict[str, Any]],
                 loader: Any, elapsed: Callable[[], float]) -> None:
        self.cfg, self.ctx, self.path, self.state, self.loader, self.elapsed = cfg, ctx, run_dir / CHECKPOINT, \
            state, loader, elapsed
        self.epoch = 0  # completed epochs
        self.written: tuple[int, int] | None = None  # (epoch, step) of the last checkpoint written or resumed
        self.since = time.monotonic()

    def due(self, steps_done: int) -> bool:
        every, minutes = self.cfg.checkpoint_every_steps, self.cfg.checkpoint_every_minutes
        return (every is not None and steps_done % every == 0) or \
            (minutes is not None and time.monotonic() - self.since >= 60 * minutes)

    def save(self, progress: EpochProgress | None = None) -> None:
        """Write one: at the end of epoch ``self.epoch`` (``progress=None``), or within the next epoch."""
        mine = {"rng": get_rng_state(), "progress": progress.to_dict() if progress is not None else None,
                "generator": self.loader.generator_state() if progress is not None else None}
        ranks = gather_objects(mine, self.ctx)
        step = progress.step if progress is not None else 0
        failed = None
        if self.ctx.is_main:
            try:
                save_checkpoint(self.path, {**self.state(), "epoch": self.epoch, "step": step, "ranks": ranks,
                                            "rng": mine["rng"], "elapsed_s": self.elapsed(),
                                            "world_size": self.ctx.shard.world})
            except CheckpointWriteError as err:
                failed = str(err)
        failed = broadcast_object(failed, self.ctx)  # every process stops, not only the writer
        if failed is not None:
            raise CheckpointWriteError(failed)
        self.written = (self.epoch, step)
        self.since = time.monotonic()

    def kept(self) -> str:
        if self.written is None or not self.path.exists():
            return "no checkpoint had been written yet"
        return f"the last good checkpoint {self.path} ({_position(*self.written)}) is kept"


def _format(record: dict[str, Any], epochs: int) -> str:
    text = (f"epoch {record['epoch']}/{epochs}  lr {record['lr']:.3g}  loss {record['train_loss']:.4f}  "
            f"train {100 * record['train_top1']:.2f}%")
    if "test_top1" in record:
        text += f"  test {100 * record['test_top1']:.2f}% (top-5 {100 * record['test_top5']:.2f}%)"
    return text + (f"  firing {record['train_firing_rate']:.3f}  {record['images_per_s']:.0f} img/s  "
                   f"{record['elapsed_s']:.0f}s")


def train(cfg: TrainConfig, *, resume: str | Path | None = None,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or, with ``resume=RUN_DIR``, continue) a run; returns the last epoch's metrics record.

    Resuming loads ``RUN_DIR/checkpoint.pt`` and continues after its epoch with the same data order and random
    states, so the result equals that of an uninterrupted run. ``cfg`` must then equal the run's configuration
    except for :data:`~tdbn.train.config.RESUMABLE_KEYS`.
    """
    _check_config(cfg)  # before any data is read, any folder made or any process group joined
    ctx = setup(cfg.device)
    try:
        return _train(cfg, resume, ctx, log)
    finally:
        teardown(ctx)


def _check_config(cfg: TrainConfig) -> None:
    """Every check of a configuration that needs no data: ranges and finite numbers, the model (name, options,
    values), the data set's name and root."""
    validate(cfg)  # also for a TrainConfig built in Python rather than by load_config / override
    if cfg.data.name not in DATASETS:
        raise ValueError(f"unknown data set {cfg.data.name!r} (data.name); valid: {', '.join(DATASETS)}")
    if cfg.data.name != "digits" and not cfg.data.root:
        raise ValueError(f"data set {cfg.data.name!r} needs data.root (e.g. data.root=../shared/data/{cfg.data.name})")
    check_model(cfg.model)


@dataclass
class _Start:
    """Where a training run starts: its folder (None: a new one, made once data and model work), the checkpoint it
    continues (None: from scratch), and, for a run already complete, its last metrics (nothing to train)."""

    run_dir: Path | None
    checkpoint: dict[str, Any] | None
    finished: dict[str, Any] | None = None


def _starting_point(cfg: TrainConfig, resume: str | Path | None, ctx: Context,
                    log: Callable[[str], None]) -> _Start:
    """The resume policy: a new run, ``--resume RUN`` (its latest good checkpoint, or its configuration alone when
    it stopped before the first one), or under torchrun the continuation of ``run_dir`` after a restart. Checks
    that the run may be continued with ``cfg`` (only the keys of ``RESUMABLE_KEYS`` may differ) and completes
    ``cfg`` from the saved run (its input normalization, its folder); refuses with the fix otherwise.
    """
    checkpoint = None
    auto = resume is None and bool(broadcast_object(_continuable(cfg) if ctx.is_main else None, ctx))
    if auto:  # decided by rank 0 alone, so that no process sees a folder rank 0 is just creating
        resume = cfg.run_dir
        if ctx.is_main:
            log(f"continuing the run in {resume} (torchrun restart count {torchrun_restart()})")
    run_dir = Path(resume) if resume is not None else None
    if run_dir is not None:
        if not run_dir.is_dir():
            raise TrainingError(f"--resume {run_dir}: no such run folder")
        _check_writable(run_dir, "run_dir")
        if ctx.is_main:
            remove_leftovers(run_dir)  # temporary files of a write that was killed
        if (run_dir / CHECKPOINT).exists() or (run_dir / PREVIOUS).exists():
            # a fallback to checkpoint.prev.pt is a warning (one line under the tdbn program), from one process
            checkpoint, _ = load_latest(run_dir, warn=warn if ctx.is_main else lambda m: None)
            if checkpoint.get("fused"):  # a run of tdbn finetune: no training state of the unfused model
                raise TrainingError(f"--resume {run_dir}: this run is a quantization-aware fine-tuning (tdbn "
                                    "finetune) and holds a fused network, which tdbn train cannot continue; "
                                    f"fine-tune it further with tdbn finetune {run_dir} --bits K --out NEW_RUN")
            saved = config_from_dict(checkpoint["config"])
        elif (run_dir / "config.json").is_file():
            saved = _config_json(run_dir)
            if ctx.is_main:
                log(f"{run_dir} has no checkpoint yet (the run stopped before its first one): "
                    "starting it again from scratch with its configuration")
        elif run_folders(run_dir):  # e.g. runs/ itself: name the runs it holds
            raise TrainingError(f"--resume {run_dir}: {missing_checkpoint(run_dir)}")
        else:
            raise TrainingError(f"--resume {run_dir}: neither a checkpoint nor config.json there; start a new run "
                                "with run_dir=PATH or out_dir=PATH")
        for key in ("mean", "std"):  # computed at the start of the run: inherited, not a change
            if key in saved.data.options and key not in cfg.data.options:
                cfg.data.options[key] = saved.data.options[key]
        cfg.run_dir = saved.run_dir  # the folder may have moved: its checkpoint decides
        _check_resumable(saved, cfg, run_dir, auto=auto)
        if checkpoint is not None and int(checkpoint["epoch"]) >= cfg.optim.epochs:
            if auto:  # e.g. restarted by torchrun after the last checkpoint: the run is complete
                if ctx.is_main:
                    log(f"the run in {run_dir} has completed its {checkpoint['epoch']} epochs; nothing to do")
                return _Start(run_dir, checkpoint, dict(checkpoint["metrics"][-1]) if checkpoint["metrics"] else {})
            raise TrainingError(
                f"cannot resume {run_dir}: it has completed {checkpoint['epoch']} epochs and optim.epochs="
                f"{cfg.optim.epochs}; nothing to do (to train longer: --resume {run_dir} "
                f"optim.epochs={int(checkpoint['epoch']) + 1} or more)")
    else:
        _check_run_dir_free(cfg)  # fail before loading any data
        _check_writable(Path(cfg.run_dir) if cfg.run_dir is not None else Path(cfg.out_dir),
                        "run_dir" if cfg.run_dir is not None else "out_dir")
    return _Start(run_dir, checkpoint)


def _data_and_model(cfg: TrainConfig, ctx: Context, log: Callable[[str], None]) -> tuple[Any, torch.nn.Module,
                                                                                   dict[str, Any]]:
    """The data loaders, the initialized model on its device, and the model's description that every checkpoint
    holds (``model_name``, ``model_kwargs``, ``input``); refuses a batch larger than the data or an input size
    the data does not have."""
    torch.manual_seed(cfg.seed)  # the initialization
    bs = cfg.optim.batch_size
    data = build_data(cfg.data, batch_size=bs, timesteps=cfg.model.timesteps, seed=cfg.seed, shard=ctx.shard,
                      device=ctx.device, eval_batch_size=2 * bs, log=log if ctx.is_main else None)
    _absolute_paths(cfg)  # only now: the data's messages name the paths as they were given
    if len(data.train) == 0:
        raise TrainingError(f"{data.train.num_samples} training samples make no batch of {bs} x {ctx.shard.world} "
                            "processes; lower optim.batch_size")
    kwargs = model_kwargs(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                          input_size=data.input_size)
    if kwargs.get("input_size", data.input_size) != data.input_size:
        raise TrainingError(f"model.options.input_size={kwargs['input_size']}, but the {cfg.data.name} inputs are "
                            f"{data.input_size}x{data.input_size}; drop model.options.input_size (it comes from the "
                            "data set) or resize the data")
    model = create_model(cfg.model.name, kwargs)
    model.to(ctx.device, getattr(torch, cfg.dtype))
    spec = {"model_name": cfg.model.name, "model_kwargs": kwargs,
            "input": {"events": data.events, "shape": [data.in_channels, data.input_size, data.input_size]}}
    return data, model, spec


def _train(cfg: TrainConfig, resume: str | Path | None, ctx: Context, log: Callable[[str], None]) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    cfg.device = str(ctx.device)
    amp_asked, cfg.amp = cfg.amp, resolve_amp(cfg.amp, ctx.device)
    if cfg.tensorboard:
        require_tensorboard()  # before anything is written
    start_from = _starting_point(cfg, resume, ctx, log)
    if start_from.finished is not None:
        return start_from.finished
    run_dir, checkpoint = start_from.run_dir, start_from.checkpoint
    data, model, spec = _data_and_model(cfg, ctx, log)
    bs = cfg.optim.batch_size
    if run_dir is None:  # created only now that data and model are known to work
        run_dir = broadcast_object(make_run_dir(cfg) if ctx.is_main else None, ctx)
    assert run_dir is not None
    cfg.run_dir = str(run_dir)
    if ctx.is_main:
        save_config(cfg, run_dir)
    net: torch.nn.Module = model
    if ctx.distributed:
        if cfg.sync_bn:
            convert_sync_tdbn(model)
        net = DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
    optimizer = build_optimizer(model, cfg.optim)
    precision = Precision.create(cfg.amp, ctx.device)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    partial: EpochProgress | None = None  # the interrupted epoch of a mid-epoch checkpoint
    step_reached = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        precision.scaler.load_state_dict(checkpoint["scaler"])
        step_reached = int(checkpoint["scheduler"]["last_epoch"])
    # the schedule of this run's optim.epochs (which a resumed run may have extended), at the step reached
    scheduler = build_scheduler(optimizer, cfg.optim, len(data.train), start_step=step_reached)
    if checkpoint is not None:
        start_epoch = int(checkpoint["epoch"])
        history = list(checkpoint["metrics"])
        partial = _restore_ranks(checkpoint, run_dir, ctx, data.train, start_epoch)
    metrics = MetricsLog(run_dir, tensorboard=cfg.tensorboard) if ctx.is_main else None
    if metrics is not None:
        metrics.rewrite(history)  # drop lines of epochs after the checkpoint (all of them when starting over)
    version = code_version()
    if ctx.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        log(f"run folder: {run_dir}")
        log(f"{cfg.model.name} (width {cfg.model.width}, T={cfg.model.timesteps}, {n_params / 1e6:.2f}M parameters) "
            f"on {cfg.data.name}: {data.train.num_samples} train / {data.test.num_samples} test samples; "
            f"{ctx.device}, {cfg.amp}, {ctx.shard.world} process(es) x batch {bs}"
            + (f"; resuming after epoch {start_epoch}" if checkpoint is not None else "")
            + (f", at step {partial.step} of epoch {start_epoch + 1}" if partial is not None else ""))
        amp_line, amp_warning = precision_note(amp_asked, cfg.amp, ctx.device)
        log(amp_line)
        if amp_warning is not None:
            warn(amp_warning, RuntimeWarning)
        if ctx.device.type == "cpu":
            log(f"compiled CPU kernels (LIF, tdBN): {native_kernels.status()}")

    elapsed_before = float(history[-1]["elapsed_s"]) if history else 0.0
    if checkpoint is not None:
        elapsed_before = float(checkpoint.get("elapsed_s", elapsed_before))
    start = time.perf_counter()
    epochs = cfg.optim.epochs
    run_state = lambda: {  # noqa: E731 - what every checkpoint holds besides positions and random states
        "format": FORMAT, "model": model.state_dict(), **spec, "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": precision.scaler.state_dict(), "config": config_to_dict(cfg),
        "neuron": neuron_params(model), "metrics": history, "version": version,
    }
    checkpoints = _Checkpoints(cfg, ctx, run_dir, run_state, data.train,
                               elapsed=lambda: elapsed_before + time.perf_counter() - start)
    checkpoints.epoch = start_epoch
    if checkpoint is not None:
        checkpoints.written = (start_epoch, int(checkpoint.get("step", 0)))
    mid_epoch = cfg.checkpoint_every_steps is not None or cfg.checkpoint_every_minutes is not None
    for epoch in range(start_epoch, epochs):
        if partial is None:
            data.train.set_epoch(epoch)  # (a resumed epoch was positioned by _restore_ranks)
        try:
            tr = train_one_epoch(net, data.train, optimizer, scheduler, precision, ctx, epoch=epoch, epochs=epochs,
                                 progress=cfg.progress and ctx.is_main, resume=partial,
                                 checkpoints=checkpoints if mid_epoch else None,
                                 objective=Objective(cfg.optim.loss, cfg.optim.tet_lambda, cfg.optim.tet_phi,
                                                     cfg.optim.label_smoothing))
        except NonFiniteError as err:
            kept = checkpoints.kept()
            hint = "check the data" if err.what == "input" else "lower optim.lr or use amp=fp32"
            raise type(err)(**_error_fields(err), detail=f"; training stopped before applying it, {kept}. "
                                                         f"{hint[0].upper()}{hint[1:]}") from None
        over_budget = cfg.budget_minutes is not None and \
            elapsed_before + time.perf_counter() - start > 60 * cfg.budget_minutes
        over_budget = bool(broadcast_object(over_budget, ctx))
        last = epoch + 1 == epochs or over_budget
        te = evaluate(model, data.test, ctx, precision=precision) \
            if (epoch + 1) % cfg.eval_interval == 0 or last else None
        record = _epoch_record(epoch, tr, te)
        record["elapsed_s"] = elapsed_before + time.perf_counter() - start
        history.append(record)
        partial = None
        checkpoints.epoch = epoch + 1
        if ctx.is_main:
            assert metrics is not None
            metrics.append(record)
        if (epoch + 1) % cfg.checkpoint_interval == 0 or last:
            checkpoints.save()
        if ctx.is_main:
            log(_format(record, epochs))
        if over_budget:
            if ctx.is_main:
                log(f"time budget of {cfg.budget_minutes} min reached after epoch {epoch + 1}")
            break
    if metrics is not None:
        metrics.close()
    final = history[-1] if history else {}
    if ctx.is_main and "test_top1" in final:
        log(f"test accuracy: {100 * final['test_top1']:.2f}% top-1, {100 * final['test_top5']:.2f}% top-5 "
            f"({data.test.num_samples} test samples, epoch {final['epoch']}); run folder: {run_dir}")
    return final


def _epoch_record(epoch: int, tr: dict[str, Any], te: dict[str, Any] | None) -> dict[str, Any]:
    """One line of ``metrics.jsonl``: epoch ``epoch`` (from 0) trained (``tr``) and, when it was, evaluated."""
    record: dict[str, Any] = {
        "epoch": epoch + 1, "lr": tr["lr"], "train_loss": tr["loss"], "train_top1": tr["top1"],
        "train_top5": tr["top5"], "train_firing_rate": tr["firing_rate"], "images_per_s": tr["images_per_s"],
        "epoch_s": tr["seconds"],
    }
    if te is not None:
        record.update(test_loss=te["loss"], test_top1=te["top1"], test_top5=te["top5"],
                      test_firing_rate=te["firing_rate"], test_images_per_s=te["images_per_s"])
    return record


def _restore_ranks(checkpoint: dict[str, Any], run_dir: Path, ctx: Context, loader: Any,
                   epoch: int) -> EpochProgress | None:
    """This process's random states and, for a mid-epoch checkpoint, its place in the interrupted epoch.

    Returns the interrupted epoch's progress (None for an epoch-end checkpoint) and positions ``loader`` there.
    """
    step = int(checkpoint.get("step", 0))
    ranks = checkpoint.get("ranks")
    world = int(checkpoint.get("world_size", 1))
    if step and world != ctx.shard.world:
        raise TrainingError(
            f"{run_dir}: the checkpoint was written at step {step} of epoch {epoch + 1} by {world} process(es); "
            f"continue it with {world} process(es) (the order within an epoch depends on their number), or "
            "from a checkpoint written at an epoch's end")
    if isinstance(ranks, list) and len(ranks) == ctx.shard.world:
        mine = ranks[ctx.shard.rank]
        set_rng_state(mine["rng"])
    else:  # an epoch-end checkpoint of another number of processes (or of an earlier version): rank 0's states
        mine = None
        set_rng_state(checkpoint["rng"])
    if not step:
        return None
    assert mine is not None and mine["progress"] is not None
    loader.set_epoch(epoch, start=step, generator_state=mine["generator"])
    return EpochProgress.from_dict(mine["progress"])


def _error_fields(err: NonFiniteError) -> dict[str, Any]:
    fields = {"epoch": err.epoch, "iteration": err.iteration, "value": err.value}
    if type(err) is NonFiniteError:
        fields["what"] = err.what
    return fields
