"""Writing analysis results: strict JSON (non-finite numbers become ``null``) with the producing version."""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str | Path, result: dict) -> Path:
    """Write ``result`` to ``path`` as strict JSON, adding ``tdbn_version``; NaN / inf become ``null``.

    The file is written beside ``path`` and renamed over it: a reader (or an interrupted run) never sees half a
    file. Its permissions are those of any new file (the umask decides: ``rw-r--r--`` under 022), like the PNG's.

    Example:
        >>> import tempfile, os
        >>> p = write_json(os.path.join(tempfile.mkdtemp(), "r.json"), {"ratio": float("inf")})
        >>> json.loads(p.read_text())["ratio"] is None
        True
    """
    from .. import __version__

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite({"tdbn_version": __version__, **result}), indent=1, allow_nan=False) + "\n"
    tmp = p.with_name(f".{p.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    # created with the mode of any new file (0644 under the usual umask 022), where mkstemp would give 0600
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def output_paths(prefix: str | Path) -> tuple[Path, Path]:
    """``(prefix.json, prefix.png)`` for an output prefix such as ``docs/figures/grad_norms``."""
    p = Path(prefix)
    if p.suffix in (".json", ".png"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".png")
