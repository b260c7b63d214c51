"""``tdbn train`` for torchrun with a fault on the first start (used by test_train_elastic.py).

On the first start (``TORCHELASTIC_RESTART_COUNT=0``), the worker of rank 1 waits for the second mid-epoch
checkpoint to be written, damages ``checkpoint.pt`` (one flipped byte) and kills itself with SIGKILL, so that
the workers torchrun restarts must fall back to ``checkpoint.prev.pt``. Usage:
``torchrun ... tests/train/elastic_faults.py train [PRESET] key=value ...``.
"""

from __future__ import annotations

import os
import signal
import sys

import tdbn.train.run as run_module
from tdbn.cli import main


def arm() -> None:
    original = run_module._Checkpoints.save
    seen = {"mid_epoch": 0}

    def save(self, progress=None):
        original(self, progress)  # returns on every rank only once rank 0 has written the file
        if progress is not None:
            seen["mid_epoch"] += 1
            if seen["mid_epoch"] == 2:
                data = bytearray(self.path.read_bytes())
                data[len(data) // 2] ^= 0x10
                self.path.write_bytes(bytes(data))
                os.kill(os.getpid(), signal.SIGKILL)

    run_module._Checkpoints.save = save


if __name__ == "__main__":
    if os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0" and os.environ.get("RANK") == "1":
        arm()
    sys.exit(main(sys.argv[1:]))
