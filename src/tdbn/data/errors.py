"""Exceptions raised by the data readers.

Every reader raises one of these, never a bare ``ValueError`` from deep inside numpy, so that a user sees which
file is wrong, where, and what layout was expected.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DataError", "DataNotFoundError", "DataFormatError"]


class DataError(Exception):
    """Base class of every data-loading error in :mod:`tdbn.data`."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set folder or file is missing; the message names the expected layout and where to get the data.

    ``problem`` says what is wrong with ``path``; by default ``not found (no such file or folder)`` when it does not
    exist, ``a file, not a folder`` for a file, else ``not found or incomplete``.

    >>> str(DataNotFoundError("no/such/dir", expected="  <root>/a.bin", source="...")).splitlines()[0]
    'no/such/dir: not found (no such file or folder).'
    """

    def __init__(self, path: str | Path, *, expected: str, source: str, problem: str | None = None) -> None:
        self.path = Path(path)
        self.expected = expected
        self.source = source
        if problem is None:
            problem = ("a file, not a folder" if self.path.is_file() else "not found or incomplete") \
                if self.path.exists() else "not found (no such file or folder)"
        self.problem = problem
        super().__init__(f"{self.path}: {problem}.\nExpected layout:\n{expected}\nGet the data: {source}")

    def __str__(self) -> str:  # FileNotFoundError would otherwise format (errno, strerror)
        return self.args[0]


class DataFormatError(DataError, ValueError):
    """A file is truncated or corrupt. ``path`` and ``offset`` (in bytes from the start of the file) say where.

    >>> str(DataFormatError("a.aedat", 28, "truncated packet header"))
    'a.aedat: at byte offset 28: truncated packet header'
    """

    def __init__(self, path: str | Path, offset: int | None, msg: str) -> None:
        self.path = Path(path)
        self.offset = offset
        self.msg = msg
        where = f"at byte offset {offset}: " if offset is not None else ""
        super().__init__(f"{path}: {where}{msg}")
