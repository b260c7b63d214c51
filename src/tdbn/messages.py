"""How the ``tdbn`` command prints errors and warnings, and how the library raises warnings.

The command prints a problem as one line ``tdbn COMMAND: error: ...`` (:func:`error`; an expected folder layout
may follow it) or ``tdbn COMMAND: warning: ...`` (:func:`line`). :func:`show_warnings_as_lines` routes Python
warnings through the same format, without the file name and echoed source line of Python's default display.
Library code warns with :func:`warn`, which attributes the warning to the first caller outside the ``tdbn``
package (and outside torch, whose module-call machinery sits between ``model(x)`` and tdbn's ``forward``): a
script calling ``tdbn.train.train(...)`` or ``model(x)`` sees the line of its own call, not a line inside tdbn or
torch.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import TextIO

__all__ = ["error", "line", "show_warnings_as_lines", "warn"]

_PACKAGE = str(Path(__file__).resolve().parent)


def line(command: str, kind: str, message: object) -> str:
    """``tdbn COMMAND: KIND: MESSAGE`` on one line: the message's lines joined by ``"; "`` (for logs and grep).

    >>> line("train", "warning", "run/checkpoint.pt: corrupted\\nresuming from run/checkpoint.prev.pt")
    'tdbn train: warning: run/checkpoint.pt: corrupted; resuming from run/checkpoint.prev.pt'
    """
    text = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return f"tdbn {command}: {kind}: {text}"


def error(command: str, err: object) -> str:
    """``tdbn COMMAND: error: MESSAGE``; lines after the first (an expected folder layout, a list of differing
    settings) follow unchanged, since their layout carries meaning."""
    first, _, rest = str(err).partition("\n")
    return line(command, "error", first) + (f"\n{rest}" if rest else "")


def _inside(filename: str, *folders: str) -> bool:
    path = str(Path(filename).resolve())
    return any(path.startswith(folder + os.sep) for folder in (folders or (_PACKAGE,)))


def _library_folders() -> tuple[str, ...]:
    """tdbn's package folder and, once imported, torch's: the frames a warning is not attributed to."""
    torch = sys.modules.get("torch")
    where = getattr(torch, "__file__", None)
    return (_PACKAGE,) if where is None else (_PACKAGE, str(Path(where).resolve().parent))


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """:func:`warnings.warn` attributed to the user's code: the first frame outside the tdbn and torch packages."""
    folders = _library_folders()
    frame, level = sys._getframe(1), 2  # stacklevel 2: the caller of warn()
    while frame is not None and _inside(frame.f_code.co_filename, *folders):
        frame, level = frame.f_back, level + 1
    if frame is None or frame.f_globals.get("__name__") == "runpy":  # the tdbn program itself: no user code
        level = 2
    warnings.warn(message, category, stacklevel=level)


def show_warnings_as_lines(command: str, stream: TextIO | None = None) -> None:
    """Print every warning from now on as one line ``tdbn COMMAND: warning: ...`` (the ``tdbn`` program only).

    Warnings of other packages keep their category and origin module in brackets, as the one hint they carry.
    """

    def show(message, category, filename, lineno, file=None, source=None) -> None:  # noqa: ARG001
        text = str(message)
        if category is not UserWarning:
            text += f" [{category.__name__} from {'tdbn' if _inside(filename) else Path(filename).stem}]"
        print(line(command, "warning", text), file=stream or sys.stderr, flush=True)

    warnings.showwarning = show
