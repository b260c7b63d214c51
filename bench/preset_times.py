"""Expected training time of each preset on this CPU, from a few timed batches (what ``tdbn presets`` quotes).

    .venv/bin/python bench/preset_times.py [PRESET ...] [--batches N] [--threads N] [--data ../shared/data]

Each preset trains two short epochs of ``--batches`` batches each on its real data (a fixed random subset); the
second epoch, after the warm-up of the first, gives the CPU seconds per batch (process time: what the run needs
from the cores, not what other jobs on a shared machine take from it), extrapolated to the preset's whole
training split and all its epochs. With ``--threads 1`` (the default) CPU time is the wall time of one idle core;
two threads shorten the wall time by 1.2-1.9x (docs/benchmarks.md, "Speed and memory"). Evaluation is not
included (it adds a fraction of an epoch each time).
``image_folder_64`` runs on a synthetic folder of random 64x64 JPEG images (its epoch time depends on the
folder: quoted per 100,000 images, the size of Tiny-ImageNet). Presets whose data is not here (DVS128 Gesture,
CIFAR10-DVS, ImageNet) are listed as not timed. Prints one row per preset.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle threads must not spin

import numpy as np  # noqa: E402
import torch  # noqa: E402

import tdbn.train.run as run_module  # noqa: E402
from tdbn.train import load_config, train  # noqa: E402

one_epoch = run_module.train_one_epoch

REPO = Path(__file__).resolve().parents[1]
# training samples of each data set's full split (the readers' own counts; train_limit subsets them here)
TRAIN_SIZE = {"digits": 1437, "mnist": 60_000, "cifar10": 50_000, "nmnist": 1_000, "imagenet": 100_000}
ROOTS = {"mnist": "mnist/mnist.npz", "cifar10": "cifar10-jpeg", "nmnist": "nmnist-small"}
TIMED = ["(none)", "mnist", "nmnist", "cifar10_resnet19_cpu", "image_folder_64", "cifar10_resnet19_t2",
         "cifar10_resnet19_t4", "cifar10_resnet19_t6"]


def _image_folder(root: Path, per_class: int, classes: int = 10) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 4)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.JPEG")
    return root


def time_preset(name: str, *, batches: int, data: Path, work: Path) -> dict:
    preset = None if name == "(none)" else name
    cfg = load_config(preset)
    bs = cfg.optim.batch_size
    overrides = [f"data.train_limit={batches * bs}", "data.test_limit=8", "optim.epochs=2", "eval_interval=2",
                 "progress=false", f"run_dir={work / name.strip('()')}"]
    if cfg.data.name in ROOTS:
        overrides.append(f"data.root={data / ROOTS[cfg.data.name]}")
    if name == "image_folder_64":
        overrides.append(f"data.root={_image_folder(work / 'images', per_class=-(-batches * bs // 10))}")
    cpu: list[float] = []

    def timed(*a, **kw):
        t0 = time.process_time()
        out = one_epoch(*a, **kw)
        cpu.append(time.process_time() - t0)
        return out

    start = time.perf_counter()
    run_module.train_one_epoch = timed
    try:
        train(load_config(preset, overrides), log=lambda s: None)
    finally:
        run_module.train_one_epoch = one_epoch
    per_batch = cpu[1] / batches  # the second epoch: after the first one's warm-up
    full = TRAIN_SIZE[cfg.data.name]
    epoch_s = per_batch * math.ceil(full / bs)
    return {"preset": name, "batch": bs, "s_per_batch": per_batch, "train_samples": full, "epoch_min": epoch_s / 60,
            "epochs": cfg.optim.epochs, "total_h": epoch_s * cfg.optim.epochs / 3600,
            "wall_s": time.perf_counter() - start}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("presets", nargs="*", default=TIMED)
    p.add_argument("--batches", type=int, default=4, help="timed batches per epoch (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; {args.batches} timed batches per preset, extrapolated")
    print("| preset | batch | CPU s / batch | train samples | CPU min / epoch | epochs | all epochs (h) | "
          "bench wall (s) |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            r = time_preset(name, batches=args.batches, data=args.data, work=Path(tmp))
            print(f"| {r['preset']} | {r['batch']} | {r['s_per_batch']:.2f} | {r['train_samples']:,} | "
                  f"{r['epoch_min']:.1f} | {r['epochs']} | {r['total_h']:.2f} | {r['wall_s']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
