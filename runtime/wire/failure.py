"""A user's exception as the error a caller can diagnose: its type, its message and a trimmed
traceback of the user's own frames.

A handler, an executor or a partition that raises anything but a :class:`ShoalError` becomes a
:class:`FunctionError` (:func:`function_error`): the message is ``Type: message``, ``cause``
names the type, and ``traceback`` holds the frames of the user's code only (Shoal's own, the
standard library's and anyio's are left out: they say how the call got there, which is the
same for every call), last frame last, then the exception line. Answers and stored results
carry it unless ``SHOAL_ERROR_TRACEBACKS=0`` (:func:`without_traceback`).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.errors import FunctionError, Reject, Retry, ShoalError

if TYPE_CHECKING:
    from types import TracebackType

MAX_FRAMES = 30  # innermost frames kept

_RUNTIME = str(Path(__file__).resolve().parent.parent) + "/"  # Shoal's runtime package


def _machinery() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Folders whose frames are not the user's: Shoal's runtime and anyio; the standard
    library (where installed packages may lie below it)."""
    import sysconfig  # at the first failure, not on a worker's cold start

    ours = [_RUNTIME]
    anyio = sys.modules.get("anyio")
    if anyio is not None and anyio.__file__:
        ours.append(str(Path(anyio.__file__).resolve().parent) + "/")
    stdlib = []
    for key in ("stdlib", "platstdlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            stdlib.append(str(Path(path).resolve()) + "/")
    return tuple(ours), tuple(stdlib)


_SKIP: tuple[tuple[str, ...], tuple[str, ...]] | None = None


def _is_user(filename: str) -> bool:
    global _SKIP
    if _SKIP is None:
        _SKIP = _machinery()
    if filename.startswith("<"):  # <string>, <frozen ...>: not a file of the user's
        return False
    try:
        resolved = str(Path(filename).resolve())
    except OSError:
        resolved = filename
    ours, stdlib = _SKIP
    if resolved.startswith(ours):
        return False
    # Installed packages may lie below the standard library's prefix: they are kept.
    if "site-packages" in resolved or "dist-packages" in resolved:
        return True
    return not resolved.startswith(stdlib)


def user_traceback(e: BaseException, tb: TracebackType | None = None) -> str:
    """``e``'s traceback in the user's frames only (innermost ``MAX_FRAMES``), then its line."""
    frames = [f for f in traceback.extract_tb(tb or e.__traceback__) if _is_user(f.filename)]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(traceback.StackSummary.from_list(frames[-MAX_FRAMES:]))
    lines += traceback.format_exception_only(type(e), e)
    return "".join(lines).rstrip("\n")


def describe(e: BaseException) -> str:
    """``Type: message``, even for an exception whose ``__str__`` itself raises."""
    try:
        return f"{type(e).__name__}: {e}"
    except Exception:
        return f"{type(e).__name__}: <its message could not be printed>"


def function_error(
    e: BaseException, *, request_id: str | None = None, prefix: str = ""
) -> FunctionError:
    """The :class:`FunctionError` a user's exception ``e`` is answered with."""
    err = FunctionError(prefix + describe(e), request_id=request_id)
    err.cause_type = type(e).__name__
    try:
        err.traceback = user_traceback(e)
    except Exception:  # a traceback that cannot be printed must not lose the error
        err.traceback = None
    return err


def with_user_frames(e: ShoalError) -> ShoalError:
    """A :class:`ShoalError` the user's code raised (or let through, from an executor), with
    a traceback: its own if it came with one from elsewhere, else where the user raised it.
    ``Retry`` and ``Reject`` are decisions, not failures: they go as they are."""
    if isinstance(e, Retry | Reject):
        return e
    if e.traceback is None and e.__traceback__ is not None:
        try:
            frames = [f for f in traceback.extract_tb(e.__traceback__) if _is_user(f.filename)]
            if frames:
                e.traceback = user_traceback(e)
        except Exception:
            pass
    return e


def without_traceback(e: ShoalError, keep: bool) -> ShoalError:
    """``e`` as answered: its traceback dropped unless ``keep``."""
    if not keep:
        e.traceback = None
    return e
