"""Depth study: accuracy of plain and residual spiking nets of increasing depth after a fixed training budget.

The paper's central claim is that tdBN lets directly-trained SNNs go deep (Tables 1-3, Fig. 2). This study
checks it at a scale a CPU can run: for each architecture (``plain``, ``resnet``), depth and normalization
(``tdbn``, ``bn`` = standard BN without the ``alpha * v_th`` scale, ``none``), a narrow network is trained for the
same number of SGD iterations on the same mini-batches, with the same learning-rate schedule, and evaluated on
held-out data.

Two test accuracies are kept: with the running normalization statistics accumulated during training (the usual
eval mode), and after recomputing them on 1024 training images with the current weights ("precise BN",
:func:`~tdbn.analysis.calibrate.calibrate_norm_stats`, on a copy: training is not affected). After a few hundred
iterations at lr 0.1 the running averages still lag the weights, and a spiking net is sensitive to that lag; the
second number measures what the network learned. With ``eval_every`` the net is also tested during training: the
final accuracy and the best over those evaluations are reported separately (the best is picked on the test set,
so it is an optimistic number).

A long study is resumable and parallel: with ``results_dir`` every net's result is written to its own JSON file
(atomically) as soon as it finishes, and a net whose file exists with the same settings is not trained again;
``jobs`` > 1 trains independent nets in that many worker processes (one torch thread each by default), with the
same numbers as one process.
"""

from __future__ import annotations

import copy
import json
import math
import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import models
from .calibrate import calibrate_norm_stats
from .datasets import batches
from .grad_norms import hidden_weight_layers, weight_grad_norms
from .report import write_json
from .training import accuracy, check_schedule, sgd_steps

ARCHS = ("plain", "resnet")
NORMS = ("tdbn", "bn", "none")


@dataclass(frozen=True)
class DepthRun:
    """One trained network: final training loss (mean of the last 10% of iterations) and final test accuracies
    (running statistics, and statistics recomputed after training; equal for ``norm="none"``).

    ``evaluations`` lists the tests made during training (``iteration``, ``test_accuracy``,
    ``test_accuracy_recalibrated``, ``train_loss`` = mean loss since the previous test); ``best_*`` are the
    largest of them (``None`` when the run was tested once). ``grad_norms`` holds, when requested, the mean
    ``||dL/dW||_2`` of every hidden weight layer over the first iterations (Fig. 2).
    """

    arch: str
    norm: str
    depth: int
    seed: int
    params: int
    iterations: int
    train_loss: float
    test_accuracy: float
    test_accuracy_recalibrated: float
    diverged: bool
    seconds: float
    best_test_accuracy: float | None = None
    best_test_accuracy_recalibrated: float | None = None
    evaluations: list[dict] = field(default_factory=list)
    grad_norms: dict | None = None

    @property
    def key(self) -> tuple[str, int, str, int]:
        return self.arch, self.depth, self.norm, self.seed


def run_name(arch: str, depth: int, norm: str, seed: int) -> str:
    """File stem of one net's result, e.g. ``resnet-50-tdbn-seed0``."""
    return f"{arch}-{depth}-{norm}-seed{seed}"


def depth_run(
    arch: str,
    depth: int,
    norm: str,
    *,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    width: float,
    timesteps: int,
    batch_size: int,
    iterations: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    tau: float,
    seed: int,
    schedule: str = "constant",
    eval_every: int = 0,
    grad_norm_iterations: int = 0,
) -> DepthRun:
    """Train ``arch`` (``"plain"`` or ``"resnet"``) of ``depth`` layers with ``norm`` and test it.

    ``schedule``: the training stack's learning-rate schedule over the iterations (``"constant"``, ``"cosine"``,
    ``"multistep"``; :func:`~tdbn.analysis.training.optim_config`); ``eval_every``: test every that many
    iterations too (0: at the end only); ``grad_norm_iterations``: record the hidden layers' weight-gradient norms
    averaged over that many first iterations (0: none).
    """
    x, y = train
    torch.manual_seed(seed)
    net = models.create(
        arch, num_classes=int(y.max()) + 1, in_channels=int(x.shape[1]), depth=depth, width=width,
        timesteps=timesteps, tau=tau, norm=norm,
    )
    chance = 1.0 / (int(y.max()) + 1)
    calib = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:1024]]

    def test_now() -> tuple[float, float]:
        acc = accuracy(net, *test)
        if norm == "none":
            return acc, acc
        copied = copy.deepcopy(net)
        calibrate_norm_stats(copied, calib)
        return acc, accuracy(copied, *test)

    evaluations: list[dict] = []
    last = [0]

    def after_step(step: int, losses: list[float]) -> None:
        done = step + 1
        if done == iterations or (eval_every > 0 and done % eval_every == 0):
            acc, recal = test_now()
            seg = losses[last[0]:]
            evaluations.append(dict(iteration=done, test_accuracy=acc, test_accuracy_recalibrated=recal,
                                    train_loss=sum(seg) / len(seg)))
            last[0] = len(losses)

    grad_layers = hidden_weight_layers(net) if grad_norm_iterations > 0 else []
    sums = [0.0] * len(grad_layers)
    recorded = [0]

    def after_backward(_: torch.nn.Module) -> None:
        if recorded[0] < grad_norm_iterations:
            for i, g in enumerate(weight_grad_norms(grad_layers)):
                sums[i] += g
            recorded[0] += 1

    start = time.perf_counter()
    losses = sgd_steps(
        net, batches(x, y, batch_size=batch_size, seed=seed), iterations=iterations, lr=lr, momentum=momentum,
        weight_decay=weight_decay, schedule=schedule, after_step=after_step,
        after_backward=after_backward if grad_layers else None,
    )
    diverged = not math.isfinite(losses[-1])
    tail = losses[-max(1, len(losses) // 10):]
    if diverged:
        acc = recal = chance
    else:
        acc, recal = evaluations[-1]["test_accuracy"], evaluations[-1]["test_accuracy_recalibrated"]
    several = len(evaluations) > 1
    grad_norms = None
    if grad_layers:
        n = max(recorded[0], 1)
        grad_norms = dict(iterations=recorded[0], layers=[name for name, _ in grad_layers],
                          mean_norms=[s / n for s in sums])
    return DepthRun(
        arch=arch, norm=norm, depth=depth, seed=seed, params=sum(p.numel() for p in net.parameters()),
        iterations=len(losses), train_loss=sum(tail) / len(tail), test_accuracy=acc,
        test_accuracy_recalibrated=recal, diverged=diverged, seconds=time.perf_counter() - start,
        best_test_accuracy=max(e["test_accuracy"] for e in evaluations) if several else None,
        best_test_accuracy_recalibrated=max(e["test_accuracy_recalibrated"] for e in evaluations) if several
        else None,
        evaluations=evaluations, grad_norms=grad_norms,
    )


@dataclass
class DepthStudy:
    """Runs of a depth study and the settings that produced them; ``planned`` counts the nets of the grid."""

    config: dict
    runs: list[DepthRun] = field(default_factory=list)
    planned: int | None = None

    def accuracy(
        self, arch: str, norm: str, depth: int, *, recalibrated: bool = True, best: bool = False
    ) -> tuple[float, float, int]:
        """Mean and standard deviation (over seeds) of the test accuracy, and the number of runs.

        ``best``: the best over the evaluations during training instead of the final accuracy.
        """
        runs = [r for r in self.runs if (r.arch, r.norm, r.depth) == (arch, norm, depth)]
        accs = [_pick(r, recalibrated=recalibrated, best=best) for r in runs]
        if not accs:
            return math.nan, math.nan, 0
        return statistics.fmean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0, len(accs)

    def markdown_table(self, *, recalibrated: bool = True, best: bool = False) -> str:
        """Test accuracy (%) per architecture and norm (rows) and depth (columns), mean ± std over seeds.

        A cell shows ``(n=1)`` when fewer seeds than planned are done, ``-`` when none is.
        """
        depths = sorted(set(self.config.get("depths", [])) | {r.depth for r in self.runs})
        keys = list(dict.fromkeys((r.arch, r.norm) for r in self.runs))
        seeds = len(self.config.get("seeds", [])) or 1
        lines = ["| net | norm | " + " | ".join(f"depth {d}" for d in depths) + " |",
                 "|---|---|" + "---:|" * len(depths)]
        for arch, norm in keys:
            cells = []
            for d in depths:
                mean, std, n = self.accuracy(arch, norm, d, recalibrated=recalibrated, best=best)
                cell = "-" if n == 0 else f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if n > 1 else "")
                cells.append(cell + (f" (n={n})" if 0 < n < seeds else ""))
            lines.append(f"| {arch} | {norm} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def progress(self) -> str:
        """``"12 of 48 nets done"``."""
        return f"{len(self.runs)} of {self.planned if self.planned is not None else len(self.runs)} nets done"

    def to_dict(self) -> dict:
        return {"config": self.config, "planned": self.planned, "done": len(self.runs),
                "runs": [asdict(r) for r in self.runs]}


def _pick(run: DepthRun, *, recalibrated: bool, best: bool) -> float:
    if best:
        value = run.best_test_accuracy_recalibrated if recalibrated else run.best_test_accuracy
        if value is not None:
            return value
    return run.test_accuracy_recalibrated if recalibrated else run.test_accuracy


def study_order(
    archs: Sequence[str], depths: Sequence[int], norms: Sequence[str], seeds: Sequence[int]
) -> list[tuple[str, int, str, int]]:
    """The nets of a study in the order they are trained: seed by seed; within a seed the normalized nets
    (``tdbn``, ``bn``) before the unnormalized ones, architectures in the order given, depths ascending.

    Example:
        >>> study_order(["resnet", "plain"], [8, 50], ["tdbn", "none"], [0])[:3]
        [('resnet', 8, 'tdbn', 0), ('resnet', 50, 'tdbn', 0), ('plain', 8, 'tdbn', 0)]
    """
    groups = [[n for n in norms if n != "none"], [n for n in norms if n == "none"]]
    return [(a, d, n, s) for s in seeds for group in groups if group
            for a in archs for d in sorted(depths) for n in group]


def load_run(path: Path, settings: dict) -> DepthRun | None:
    """The run saved at ``path``, or ``None`` if there is none; an error if it was made with other settings."""
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        row = saved["run"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path} is not a depth-study result ({err}); move it away to rerun that net") from err
    if saved.get("settings") != settings:
        old = saved.get("settings") or {}
        keys = dict.fromkeys([*settings, *old])
        diff = ", ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in keys
                         if old.get(k) != settings.get(k))
        raise ValueError(f"{path} was made with other settings ({diff}); use another results folder "
                         "(--results-dir) or move that file away")
    return run_from_dict(row)


def run_from_dict(row: dict) -> DepthRun:
    """A :class:`DepthRun` from its JSON form (``null`` back to NaN for the float fields)."""
    floats = ("train_loss", "test_accuracy", "test_accuracy_recalibrated", "seconds")
    return DepthRun(**{k: (math.nan if v is None and k in floats else v) for k, v in row.items()})

_DATA: dict = {}


def _worker_init(train, test, threads: int) -> None:
    torch.set_num_threads(threads)
    _DATA.update(train=train, test=test)


def _worker_run(kwargs: dict) -> DepthRun:
    return depth_run(train=_DATA["train"], test=_DATA["test"], **kwargs)


def depth_study(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    archs: Sequence[str] = ARCHS,
    depths: Sequence[int] = (8, 14, 20, 34, 50),
    norms: Sequence[str] = NORMS,
    seeds: Sequence[int] = (0,),
    width: float = 0.125,
    timesteps: int = 2,
    batch_size: int = 32,
    iterations: int = 300,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    tau: float = 0.25,
    schedule: str = "constant",
    eval_every: int = 0,
    grad_norm_nets: Iterable[tuple[str, int, str]] = (),
    grad_norm_iterations: int = 0,
    results_dir: str | Path | None = None,
    jobs: int = 1,
    threads: int | None = None,
    data_info: dict | None = None,
    train_missing: bool = True,
    log: Callable[[str], None] = lambda s: None,
    on_run: Callable[[DepthStudy], None] = lambda s: None,
) -> DepthStudy:
    """Train and test every ``(arch, depth, norm, seed)`` in :func:`study_order`; ``on_run(study)`` after each
    run (to save progress).

    ``resnet`` needs even depths (``2 + 2 x blocks``). Every run sees the same mini-batches for a given seed.
    ``grad_norm_nets``: ``(arch, depth, norm)`` whose first ``grad_norm_iterations`` gradient norms are recorded.
    ``results_dir``: one JSON file per net (:func:`run_name`), written when it finishes; nets already there with
    the same settings are loaded, not retrained. ``jobs``: worker processes (``threads`` torch threads each,
    default 1 when ``jobs > 1``). ``data_info`` is recorded in every net's settings (e.g. the data set's name).
    ``train_missing=False`` trains nothing: the study holds the nets found in ``results_dir`` (a report on a
    study that is still running or was interrupted).
    """
    bad = [d for d in depths if "resnet" in archs and d % 2]
    if bad:
        raise ValueError(f"resnet depths must be even (2 + 2 x blocks), got {bad}; use nearby even depths")
    for name, given, valid in (("archs", archs, ARCHS), ("norms", norms, NORMS)):
        if unknown := [v for v in given if v not in valid]:
            raise ValueError(f"unknown {name} {unknown}; valid: {', '.join(valid)}")
    check_schedule(schedule)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1 (worker processes), got {jobs}")
    grad_norm_nets = {tuple(n) for n in grad_norm_nets}
    config = dict(
        archs=list(archs), depths=list(depths), norms=list(norms), seeds=list(seeds), width=width,
        timesteps=timesteps, batch_size=batch_size, iterations=iterations, lr=lr, momentum=momentum,
        weight_decay=weight_decay, tau=tau, schedule=schedule, eval_every=eval_every,
        grad_norm_nets=[list(n) for n in sorted(grad_norm_nets)], grad_norm_iterations=grad_norm_iterations,
        train_examples=len(train[0]), test_examples=len(test[0]), input_shape=list(train[0].shape[1:]),
        **(data_info or {}),
    )
    shared = {k: config[k] for k in ("width", "timesteps", "batch_size", "iterations", "lr", "momentum",
                                      "weight_decay", "tau", "schedule", "eval_every")}
    order = study_order(archs, depths, norms, seeds)
    study = DepthStudy(config, planned=len(order))
    folder = Path(results_dir) if results_dir is not None else None

    def settings_of(key) -> dict:
        arch, depth, norm, seed = key
        gn = grad_norm_iterations if (arch, depth, norm) in grad_norm_nets else 0
        return dict(arch=arch, depth=depth, norm=norm, seed=seed, **shared, grad_norm_iterations=gn,
                    train_examples=config["train_examples"], test_examples=config["test_examples"],
                    input_shape=config["input_shape"], **(data_info or {}))

    def describe(run: DepthRun) -> str:
        best = (f", best {100 * run.best_test_accuracy_recalibrated:.1f}%"
                if run.best_test_accuracy_recalibrated is not None else "")
        return (f"{run_name(*run.key)}: loss {run.train_loss:.3f}, test acc {100 * run.test_accuracy:.1f}% "
                f"(recalibrated {100 * run.test_accuracy_recalibrated:.1f}%{best})"
                f"{' (diverged)' if run.diverged else ''}, {run.seconds:.0f}s")

    done: dict[tuple, DepthRun] = {}
    todo = []
    for key in order:
        run = load_run(folder / f"{run_name(*key)}.json", settings_of(key)) if folder is not None else None
        if run is not None:
            done[key] = run
        else:
            todo.append(key)
    if done:
        log(f"{len(done)} of {len(order)} nets already in {folder}: not retrained")

    def finished(key, run: DepthRun) -> None:
        done[key] = run
        if folder is not None:
            write_json(folder / f"{run_name(*key)}.json", {"settings": settings_of(key), "run": asdict(run)})
        study.runs[:] = [done[k] for k in order if k in done]
        log(describe(run) + f" [{len(done)}/{len(order)}]")
        on_run(study)

    def kwargs_of(key) -> dict:
        s = settings_of(key)
        return dict(arch=key[0], depth=key[1], norm=key[2], seed=key[3], **shared,
                    grad_norm_iterations=s["grad_norm_iterations"])

    study.runs[:] = [done[k] for k in order if k in done]
    if not train_missing:
        return study
    if jobs == 1 or len(todo) <= 1:
        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            for key in todo:
                finished(key, depth_run(train=train, test=test, **kwargs_of(key)))
        finally:
            torch.set_num_threads(before)
        return study
    ctx = multiprocessing.get_context("spawn")  # no fork of a process whose OpenMP threads are running
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx, initializer=_worker_init,
                             initargs=(train, test, threads or 1)) as pool:
        pending = {pool.submit(_worker_run, kwargs_of(key)): key for key in todo}
        try:
            while pending:
                ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in ready:
                    finished(pending.pop(fut), fut.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return study
