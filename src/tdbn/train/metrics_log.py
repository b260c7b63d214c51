"""Per-epoch metrics: one JSON object per line in ``<run>/metrics.jsonl``, optionally TensorBoard too."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "read_metrics", "require_tensorboard"]


def require_tensorboard() -> None:
    """Raise ``ImportError`` with the install command unless TensorBoard can be used."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as err:
        raise ImportError("tensorboard=true needs TensorBoard: pip install 'tdbn[tensorboard]'") from err


class MetricsLog:
    """Appends records to ``metrics.jsonl``; ``tensorboard=True`` also writes scalars to ``<run>/tensorboard``."""

    def __init__(self, run_dir: Path, *, tensorboard: bool = False) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            require_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the file by ``records`` (on resume: drop lines written after the checkpoint)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        os.replace(tmp, self.path)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key.replace("_", "/", 1), value, record["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``<run_dir>/metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
