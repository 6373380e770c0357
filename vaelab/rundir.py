"""One vaelab run per directory: a lock held for the life of the run (or sweep) that writes it.

Two runs given the same ``hydra.run.dir`` at once, or a sweep started again into the
``hydra.sweep.dir`` of one still running, would write over each other's checkpoints,
``metrics.json`` and ``.hydra/`` files. The directory's ``.vaelab.lock`` is therefore
``flock``-ed by the process that writes the directory; a second one is refused with one
line (exit 2), before it writes anything there.

``flock`` locks belong to the open file, so the kernel releases them when the holder
dies, however it dies (SIGKILL included): a crashed run never leaves a directory stuck,
and ``resume=auto`` into it works as soon as the first run is gone. The file itself
stays (it only names the last holder's pid); deleting it would race with a process
that has just opened it.

The lock is taken twice over, by the same process:

* by :class:`RunDirLockCallback` (a Hydra callback), when the run or sweep starts,
  before Hydra writes ``.hydra/`` and the log file into the directory, so that a refused
  run leaves the running one's files untouched;
* by ``train`` (:func:`run_dir_lock`) around the training itself, in the directory it
  really writes: a resumed run continues in its checkpoint's directory, and sweep jobs
  run by other launchers' processes never pass through the callback.

A process re-entering a lock it holds is let through. DDP workers (ranks > 0) write into
rank 0's directory under rank 0's lock and take none themselves.

Only the standard library and Hydra here: the callback runs before torch is imported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from vaelab.errors import Refused, UserError

log = logging.getLogger("vaelab")

LOCK_NAME = ".vaelab.lock"

# Directories whose lock this process holds: resolved path -> the open lock file's descriptor.
_held: dict[Path, int] = {}
_unlockable: set[Path] = set()  # directories on filesystems without flock: said once
# Run and sweep directories this process created -> the first of their parents it created too
# (outputs/<date>/ for outputs/<date>/<time>/), which remove_unused may remove.
created: dict[Path, Path] = {}

# What Hydra and the lock put in a run directory before the run itself writes anything.
BOOKKEEPING = (".hydra", LOCK_NAME, "train.log", "eval.log")


# What a refused run is told to do about a run directory in use (a sweep's says its own).
RUN_HINT = "give this run its own hydra.run.dir"


def lock_hint(resume_from: Path | None) -> str:
    """:data:`RUN_HINT`, or for a run that resumes ``resume_from`` in that directory: to wait."""
    return f"wait for it to end before resume={resume_from}" if resume_from else RUN_HINT


def lock_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / LOCK_NAME


def holder_pid(directory: str | os.PathLike) -> int | None:
    """The pid the lock file names (the last process that held it), if it names one."""
    try:
        return int(lock_path(directory).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def acquire(directory: str | os.PathLike, *, what: str = "run", hint: str = RUN_HINT) -> bool:
    """Lock ``directory`` for this process (creating it if needed); False if it already held it.

    Raises a one-line UserError naming the holder's pid when another process holds it, or
    saying so when the directory cannot be created or written.
    Where the filesystem cannot lock (some network mounts) the run goes on unlocked, said once.
    """
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no flock, no guard
        return False
    directory = Path(directory).resolve()
    if directory in _held:
        return False
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path(directory), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:  # /proc/…, a read-only mount, another user's directory
        reason = error.strerror or str(error)
        raise UserError(f"{directory}: cannot write the {what} directory ({reason}); give this {what} a writable hydra.{what}.dir") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise _in_use(directory, what, hint) from None
    except OSError as error:
        os.close(descriptor)
        if directory not in _unlockable:
            _unlockable.add(directory)
            log.warning("%s: cannot lock %s (%s); nothing stops a second run from writing here", directory, LOCK_NAME, error)
        return False
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    _held[directory] = descriptor
    return True


def _in_use(directory: Path, what: str, hint: str) -> UserError:
    pid = holder_pid(directory)
    holder = f" (pid {pid})" if pid is not None else ""
    return UserError(f"{directory} is in use by another vaelab {what}{holder}; {hint}")


def check_free(directory: str | os.PathLike, *, what: str = "run", hint: str = RUN_HINT) -> None:
    """Refuse, in :func:`acquire`'s line, a directory whose lock another process holds; creates,
    locks and writes nothing (a check before a run reads that directory's checkpoint)."""
    try:
        import fcntl
    except ImportError:
        return
    directory = Path(directory).resolve()
    if directory in _held:
        return
    try:
        descriptor = os.open(lock_path(directory), os.O_RDONLY)
    except OSError:  # no lock file: no run has held it
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)  # fails while a holder has LOCK_EX
    except BlockingIOError:
        raise _in_use(directory, what, hint) from None
    except OSError:  # a filesystem that cannot lock: acquire says so when the run starts
        return
    finally:
        os.close(descriptor)  # and with it the shared lock, if taken


def remove_unused(directory: str | os.PathLike) -> bool:
    """Remove ``directory`` if this process created it and it holds only Hydra's and the lock's
    bookkeeping: a command refused before it wrote anything leaves no run behind (which
    ``vaelab compare`` would list as failed). Anything else in it, and any directory that was
    there before, is kept. True if removed."""
    import shutil

    directory = Path(directory).resolve()
    if directory not in created or not directory.is_dir():
        return False
    if any(entry.name not in BOOKKEEPING for entry in directory.iterdir()):
        return False
    release(directory)
    shutil.rmtree(directory, ignore_errors=True)
    first_new = created.pop(directory)
    for parent in directory.parents:  # the parents created with it, while nothing else is in them
        if not parent.is_relative_to(first_new):
            break
        try:
            parent.rmdir()
        except OSError:
            break
    return True


def release(directory: str | os.PathLike) -> None:
    """Let go of the lock on ``directory`` if this process holds it."""
    descriptor = _held.pop(Path(directory).resolve(), None)
    if descriptor is not None:
        os.close(descriptor)  # closing the last descriptor of the open file releases the flock


@contextmanager
def run_dir_lock(directory: str | os.PathLike, *, enabled: bool = True, hint: str | None = None) -> Iterator[None]:
    """Hold ``directory``'s lock for the ``with`` block (not at all when ``enabled`` is false);
    a lock this process already held is left held afterwards."""
    acquired = enabled and acquire(directory, hint=hint or RUN_HINT)
    try:
        yield
    finally:
        if acquired:
            release(directory)


def launched_as_worker() -> bool:
    """Whether this process is a rank > 0 of a multi-process job (from the environment alone:
    Lightning's DDP launcher, torchrun and SLURM set these before vaelab starts)."""
    return any(os.environ.get(key, "0") not in ("", "0") for key in ("LOCAL_RANK", "RANK", "SLURM_PROCID"))


class RunDirLockCallback(Callback):
    """Hydra callback (``hydra.callbacks`` in conf/train.yaml and conf/eval.yaml): locks the run
    directory when a run starts, or the sweep directory when a sweep starts, before Hydra writes
    into it (a directory that cannot be written is refused then, in one line)."""

    def __init__(self) -> None:
        super().__init__()
        self.directory: Path | None = None

    def _lock(self, config: Any, key: str, what: str, hint: str) -> None:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        if launched_as_worker():
            return
        # The directory may interpolate ${hydra:…}, which reads HydraConfig: set it for the
        # lookup (run_job sets it itself a moment later), and put back what was there.
        hydra_config = HydraConfig.instance()
        previous, readonly = hydra_config.cfg, config.hydra._get_node_flag("readonly")
        try:
            hydra_config.set_config(config)  # also makes config.hydra read-only
            directory = Path(os.path.abspath(str(OmegaConf.select(config, key))))
        finally:
            hydra_config.cfg = previous
            OmegaConf.set_readonly(config.hydra, readonly)
        first_new = next((d for d in reversed([directory, *directory.parents]) if not d.exists()), None)
        try:
            acquired = acquire(directory, what=what, hint=hint)
        except UserError as error:
            raise Refused(error) from None  # past Hydra, which would warn and run on
        if acquired:
            self.directory = directory
        if first_new is not None:
            created[directory] = first_new

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self._lock(config, "hydra.run.dir", "run", RUN_HINT)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._lock(config, "hydra.sweep.dir", "sweep", "give this sweep its own hydra.sweep.dir")

    def _unlock(self) -> None:
        if self.directory is not None:
            release(self.directory)
            self.directory = None

    def on_run_end(self, **kwargs: Any) -> None:
        self._unlock()

    def on_multirun_end(self, **kwargs: Any) -> None:
        self._unlock()
