"""User-facing errors (bad configuration, bad files, bad paths) and how a run ends.

A :class:`UserError` is reported by the CLI as one line on stderr and exit code 2,
without a traceback (set ``HYDRA_FULL_ERROR=1`` to see one). Raise it for anything
the user can fix by changing their command or their files; let genuine bugs raise
ordinary exceptions.

Files a run must not lose (checkpoints, metrics.json, pictures) are written with
:func:`write_atomically`, which turns a full disk into a :class:`DiskFull` error.

:class:`RunStatus` is the one place a run's end is named: its exit code, the status
metrics.json and W&B record, and what Lightning's loggers are told.
"""

import errno
import os
from collections.abc import Callable
from enum import Enum
from numbers import Real
from pathlib import Path
from typing import IO


class UserError(Exception):
    """Something the user asked for cannot be done; the message says what and how to fix it."""

    exit_code = 2


class TrainingDiverged(UserError):
    """The loss or a gradient became NaN/inf: the run stops, its last checkpoint stays finite."""

    exit_code = 1


class DiskFull(UserError):
    """The disk (or the user's quota) filled up while vaelab wrote ``path``. Files are written
    under a temporary name and renamed (:func:`write_atomically`), so what was written before
    stays whole; a training run stops resumable."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, run again once space is freed

    def __init__(self, path: str | os.PathLike, advice: str = "") -> None:
        self.path = Path(path)
        super().__init__(f"no space left on device while writing {self.path}" + (f"; {advice}" if advice else ""))


# A run stopped part-way that can go on with resume=auto: Ctrl-C and SIGTERM (the shell's
# codes for those signals) save a checkpoint first; a full disk keeps the last one whole.
INTERRUPTED_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, "DiskFull": DiskFull.exit_code}


class RunStatus(str, Enum):
    """How a run stands: ``status`` in metrics.json and in the W&B run's summary.

    A run is ``running`` until it ends; one killed outright (SIGKILL) stays ``running``.
    """

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # resumable: INTERRUPTED_EXIT_CODES

    @classmethod
    def of_exit_code(cls, exit_code: int) -> "RunStatus":
        """The status of a run that ends with ``exit_code`` (W&B gets the same code)."""
        if exit_code == 0:
            return cls.SUCCESS
        return cls.INTERRUPTED if exit_code in INTERRUPTED_EXIT_CODES.values() else cls.FAILED

    @classmethod
    def of_lightning(cls, status: str) -> "RunStatus":
        """The status of Lightning's ``Logger.finalize(status)``: "success", "failed" (an
        exception) or "finished" (stopped by a SIGTERM)."""
        return {"success": cls.SUCCESS, "finished": cls.INTERRUPTED}.get(status, cls.FAILED)


def user_error_in(error: BaseException | None) -> UserError | None:
    """The UserError (or Lightning configuration error) behind ``error``, if any.

    Hydra's instantiate wraps exceptions raised by a ``_target_``; follow the chain.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, UserError):
            return error
        if type(error).__name__ == "MisconfigurationException":  # Lightning's "bad trainer argument"
            return UserError(f"trainer: {error}")
        error = error.__cause__ or error.__context__
    return None


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``: an error reported in passing (W&B failures and the like)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def first_line(error: BaseException) -> str:
    """The first line of the message (the type's name when there is none): a parser's complaint
    quoted inside a message of vaelab's own, e.g. why a file is damaged."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def is_disk_full(error: BaseException) -> bool:
    """An OSError saying the disk or the quota is full."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], None], *, fsync: bool = False) -> None:
    """``write(file)`` into ``<path>.tmp``, then rename it onto ``path``: a reader, or a crash,
    sees the old file or the new one, never a mix. ``fsync``: flush to the disk before the
    rename (a power cut then keeps one of the two as well). Whatever goes wrong, the partial
    file is removed (on a full disk that frees its space) and ``path`` is left as it was; a
    full disk is raised as :class:`DiskFull`."""
    path = Path(path)
    partial = path.with_name(path.name + ".tmp")
    try:
        with open(partial, "wb") as file:
            write(file)
            file.flush()
            if fsync:
                os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        if is_disk_full(error):
            raise DiskFull(path) from error
        raise


def check_int(key: str, value, *, minimum: int, optional: bool = False) -> int | None:
    """``value`` as an int, or a one-line UserError naming ``key`` and the valid range.

    ``optional``: None is allowed (e.g. "no periodic evaluation").
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = " or null" if optional else ""
        raise UserError(f"{key}={value!r}: expected an integer >= {minimum}{allowed}")
    return value


def check_real(key: str, value, *, above: float) -> float:
    """``value`` as a float, or a one-line UserError naming ``key`` and the valid range."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise UserError(f"{key}={value!r}: expected a number > {above:g}")
    if not value > above:
        raise UserError(f"{key}={value}: expected a number > {above:g}")
    return float(value)
