"""Reading vaelab checkpoints: for `vaelab eval ckpt=…` and for resuming a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaelab.errors import UserError, write_atomically

LAST = Path("checkpoints") / "last.ckpt"


def load_checkpoint(path: str | Path, key: str = "ckpt") -> dict[str, Any]:
    """A vaelab checkpoint as a dict, or a one-line UserError (naming ``key``) saying why not."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{key}={path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
        reason = (str(error).strip().splitlines() or [""])[0]
        raise UserError(
            f"{key}={path}: not a readable checkpoint, or truncated ({type(error).__name__}: {reason})"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "vaelab_config" not in checkpoint:
        raise UserError(f"{key}={path}: not a vaelab checkpoint (no state_dict / vaelab_config)")
    return checkpoint


def resume_checkpoint_path(resume: str | None, run_dir: Path) -> Path | None:
    """Where `resume=` points: None (start afresh), auto (this run dir's last.ckpt, if any) or a path."""
    if resume is None:
        return None
    if resume == "auto":
        last = run_dir / LAST
        return last if last.is_file() else None
    return Path(resume)


def run_dir_of(checkpoint_path: Path) -> Path:
    """The run directory a checkpoint belongs to (<run dir>/checkpoints/<name>.ckpt)."""
    return checkpoint_path.resolve().parent.parent


# Dataset settings that change where or how pixels are read, never which pixels: a resume
# may change them (a moved file, a cache elsewhere, loading into memory).
STORAGE_KEYS = ("path", "in_memory", "cache_dir")


def _without_storage(dataset: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(dataset, dict):
        return dataset
    # correlation: null is the default (and absent from checkpoints written before it existed).
    return {k: v for k, v in dataset.items() if k not in STORAGE_KEYS and not (k == "correlation" and v is None)}


def _without_dataset_size(objective: dict[str, Any] | None) -> dict[str, Any] | None:
    # Follows from the dataset, compared on its own (checkpoints written before it was
    # recorded hold null).
    if not isinstance(objective, dict):
        return objective
    return {k: v for k, v in objective.items() if k != "dataset_size"}


def check_compatible(checkpoint: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """A resumed run must rebuild the same model and data stream as the run that saved it."""
    saved = checkpoint["vaelab_config"]
    for key in ("model", "dataset", "objective", "seed", "data"):
        before, now = saved.get(key), config.get(key)
        if key == "dataset":
            before, now = _without_storage(before), _without_storage(now)
        if key == "objective":
            before, now = _without_dataset_size(before), _without_dataset_size(now)
        if before != now:
            raise UserError(
                f"resume={path}: the checkpoint was trained with a different {key} config "
                f"({before!r}, now {now!r}); resume with the original settings"
            )


def atomic_checkpoint_io():
    """Lightning CheckpointIO that writes ``<name>.tmp`` beside the target, fsyncs, then renames
    (:func:`~vaelab.errors.write_atomically`; a full disk is a :class:`~vaelab.errors.DiskFull`).

    A kill during a save leaves the previous checkpoint intact and readable. (Lightning's
    default writes through a temporary file in the system temp directory, and moving
    that onto another filesystem is a copy, not an atomic rename.)
    """
    import torch
    from pytorch_lightning.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, lambda file: torch.save(checkpoint, file), fsync=True)

    return AtomicCheckpointIO()


def saved_step(path: Path) -> int | None:
    """The global step of the checkpoint at ``path`` (None if there is none, or it is unreadable),
    read without loading its tensors."""
    import torch

    if not path.is_file():
        return None
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["global_step"])
    except Exception:  # noqa: BLE001 - only used to word a message
        return None


def resume_advice(last: Path) -> str:
    """What a run stopped by a full disk tells the user: the checkpoint it can resume from."""
    step = saved_step(last)
    if step is None:
        return "no checkpoint was written yet: free space and run again"
    return f"the last complete checkpoint is {last} (step {step}): free space and run again with resume=auto"
