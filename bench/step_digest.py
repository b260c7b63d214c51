"""Digests of whole-model training steps, for checking that a change of code leaves the numbers bit-identical.

For each case (ResNet-19 and the residual depth-8 net at width 1/8, with both kinds of identity shortcut; float32, float64, bfloat16 autocast; contiguous and channels-last) it runs two SGD steps
from a fixed seed and prints one SHA-256 over the loss, every parameter, gradient and buffer, as bytes. Run it
in two checkouts and compare the lines:

    python bench/step_digest.py > after.txt
    (cd ../old-checkout && python bench/step_digest.py) > before.txt && diff before.txt after.txt
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

import tdbn  # noqa: E402

CASES = [
    # (model, kwargs, dtype, autocast, channels_last); shortcut_norm "all": identity shortcuts through a tdBN,
    # "projection": identity shortcuts of spikes without one (the junction stores their bits)
    ("resnet19", {"width": 0.125}, torch.float32, False, False),
    ("resnet19", {"width": 0.125}, torch.float64, False, False),
    ("resnet19", {"width": 0.125}, torch.float32, True, False),
    ("resnet19", {"width": 0.125}, torch.float32, False, True),
    ("resnet", {"depth": 8, "width": 0.125, "shortcut_norm": "all"}, torch.float32, False, False),
    ("resnet", {"depth": 8, "width": 0.125, "shortcut_norm": "all"}, torch.float64, False, False),
    ("resnet", {"depth": 8, "width": 0.125, "shortcut_norm": "projection"}, torch.float32, False, False),
    ("resnet", {"depth": 8, "width": 0.125}, torch.float32, True, False),
]


def _bytes(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def digest(name: str, kwargs: dict, dtype: torch.dtype, amp: bool, channels_last: bool) -> str:
    torch.manual_seed(0)
    model = tdbn.models.create(name, num_classes=10, timesteps=2, **kwargs).to(dtype)
    x = torch.randn(4, 3, 32, 32, dtype=dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.tensor([1, 3, 5, 7])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    h = hashlib.sha256()
    for _ in range(2):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        h.update(loss.detach().double().numpy().tobytes())
        for p in model.parameters():
            h.update(_bytes(p.grad))
        opt.step()
    for t in list(model.parameters()) + list(model.buffers()):
        h.update(_bytes(t))
    return h.hexdigest()[:16]


def main() -> int:
    torch.set_num_threads(1)
    for name, kwargs, dtype, amp, cl in CASES:
        label = f"{name} {kwargs} {str(dtype)[6:]}{' bf16-autocast' if amp else ''}{' channels-last' if cl else ''}"
        print(f"{label}: {digest(name, kwargs, dtype, amp, cl)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
