"""The op layer's fingerprint in torch.compile's cache keys.

Inductor and AOTAutograd keep compiled graphs on disk (``/tmp/torchinductor_<user>`` by default) and find them again
by a key computed from the traced graph. A graph that calls tdbn's operators records their calls, not their code:
after an upgrade of tdbn that changes an operator's implementation or the arguments its backward operator takes, a
cached backward graph can call it the old way and compute wrong values without any error (seen in development: a
float64 compiled unit 20x off its eager result until the cache was cleared). So importing the op layer appends
``tdbn-ops-<hash of the op layer's sources>`` to ``torch.compiler.config.cache_key_tag``, which every one of those
keys includes: other operator code, other keys; a user's own tag is kept in front of it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

__all__ = ["TAG_PREFIX", "fingerprint", "install"]

TAG_PREFIX = "tdbn-ops-"
SOURCES = Path(__file__).resolve().parent


def fingerprint(folder: Path = SOURCES) -> str:
    """``tdbn-ops-`` and 16 hex digits of SHA-256 over the op layer's Python and C sources (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted([*folder.glob("*.py"), *folder.glob("*.c")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return TAG_PREFIX + digest.hexdigest()[:16]


def install(tag: str | None = None) -> str:
    """Put ``tag`` (default: :func:`fingerprint`) into ``torch.compiler.config.cache_key_tag``, replacing an earlier
    tdbn tag and keeping anything else there; returns the new value."""
    tag = tag or fingerprint()
    kept = [part for part in torch.compiler.config.cache_key_tag.split(",") if part and not part.startswith(TAG_PREFIX)]
    torch.compiler.config.cache_key_tag = ",".join([*kept, tag])
    return torch.compiler.config.cache_key_tag
