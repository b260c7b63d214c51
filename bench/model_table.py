"""Parameter count and ANN multiply-accumulates for one image of every registered model (README model table).

The MACs are those of the same architecture run as an ANN: one pass (T = 1), every conv / fc layer counted as
output elements x fan-in, shortcut projections included, normalization and pooling not counted
(``tdbn.analysis.ann_macs``), on the meta device (shapes only). Table 6 of the paper: ResNet-19 2.2e9,
ResNet-34 large 1.4e10.

    python bench/model_table.py
"""

from __future__ import annotations

import torch

from tdbn import models
from tdbn.analysis import ann_macs

# name -> (options, input channels, input size, paper MACs)
SETTINGS = {
    "resnet17": ({"num_classes": 11, "in_channels": 2}, 2, 32, None),
    "resnet19": ({"num_classes": 10}, 3, 32, 2.2e9),
    "resnet34": ({"num_classes": 1000}, 3, 224, None),
    "resnet34_large": ({"num_classes": 1000}, 3, 224, 1.4e10),
    "resnet50": ({"num_classes": 1000}, 3, 224, None),
    "plain": ({"num_classes": 10, "depth": 20}, 3, 32, None),
    "resnet": ({"num_classes": 10, "depth": 20}, 3, 32, None),
}


def main() -> None:
    missing = sorted(set(models.names()) - set(SETTINGS))
    if missing:
        raise SystemExit(f"no table settings for registered model(s) {missing}: add them to SETTINGS")
    print("| model | input | parameters | ANN MACs / image | paper (Table 6) | difference |")
    print("|---|---|---:|---:|---:|---:|")
    for name in models.names():
        options, channels, size, paper = SETTINGS[name]
        with torch.device("meta"):  # shapes only: no memory, no arithmetic
            net = models.create(name, **options)
            params = sum(p.numel() for p in net.parameters())
            macs = ann_macs(net, torch.zeros(1, 1, channels, size, size))  # [T=1, N=1, C, H, W]
        label = name + (f" (depth {options['depth']})" if "depth" in options else "")
        ref = f"{paper:.2g}" if paper else "-"
        diff = f"{100 * (macs / paper - 1):+.1f}%" if paper else "-"
        print(f"| {label} | {channels}x{size}x{size} | {params / 1e6:.2f} M | {macs:.3g} | {ref} | {diff} |")


if __name__ == "__main__":
    main()
