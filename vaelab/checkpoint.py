"""Reading vaelab checkpoints: for `vaelab eval ckpt=…`, resuming a run, the notebook API
(:meth:`VAEModule.load_from_checkpoint`) and `vaelab compare --udr`.

A checkpoint is data, never code. :func:`load_checkpoint`, the one reader, unpickles with
``torch.load(weights_only=True)``: tensors and plain values only, so a pickle that asks for
anything else (a ``__reduce__`` calling ``os.system``, any class) is refused, naming what it
asked for, before any of it runs. The config stored in it names the model, dataset and
objective that the loaders build (``hydra.utils.instantiate``): each ``_target_`` there must
be one that vaelab's config groups (conf/model, conf/dataset, conf/objective) name, unless the
user trusts the checkpoint (``trust_checkpoint=true``), and the pickle stays weights-only even then.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from vaelab import CONFIG_DIR
from vaelab.errors import UserError, one_line, write_atomically

LAST = Path("checkpoints") / "last.ckpt"

# Types a vaelab checkpoint holds beyond what torch's weights-only unpickler reads anyway
# (tensors, dicts, lists, tuples, OrderedDict, str, numbers, bool, None, dtypes): none. vaelab
# writes its own entries as plain containers (:func:`plain`), and Lightning's loop, optimiser,
# callback (EarlyStopping, ModelCheckpoint) and precision states are plain too. A type vaelab
# starts to save goes here, and nowhere else.
SAVED_TYPES: tuple[type, ...] = ()

# The config groups whose entries the loaders instantiate from a checkpoint's ``vaelab_config``.
INSTANTIATED_GROUPS = ("model", "dataset", "objective")


def plain(value: Any) -> Any:
    """``value`` as plain containers a weights-only load reads back (dicts, lists, str, numbers,
    bool, None): OmegaConf nodes resolved, numpy scalars and arrays as numbers and lists, paths
    as strings."""
    import numpy as np
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {plain(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


@functools.cache
def shipped_targets(group: str) -> frozenset[str]:
    """Every ``_target_`` in vaelab's config group ``group`` (conf/<group>/*.yaml, nested ones too):
    the yaml files are the registry, so an objective added there is allowed with no list edited."""
    from omegaconf import OmegaConf

    return frozenset(
        target for path in sorted((Path(CONFIG_DIR) / group).glob("*.yaml")) for _, target in _targets(OmegaConf.to_container(OmegaConf.load(path)), group)
    )


def _targets(node: Any, where: str):
    """(where, value) of every ``_target_`` under ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                yield where, value
            else:
                yield from _targets(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _targets(value, f"{where}[{index}]")


def _interpolations(node: Any, where: str):
    """(where, value) of every string under ``node`` that OmegaConf would resolve."""
    if isinstance(node, str) and "${" in node:
        yield where, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _interpolations(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _interpolations(value, f"{where}[{index}]")


def config_targets(config: dict[str, Any]) -> set[str]:
    """The ``_target_``s of the instantiated groups of a run config (a resumed run's own)."""
    return {target for group in INSTANTIATED_GROUPS for _, target in _targets(config.get(group), group) if isinstance(target, str)}


def resume_trust(cfg) -> dict[str, Any]:
    """:func:`load_checkpoint`'s ``trust`` and ``allowed`` for a run's ``resume=`` checkpoint:
    vaelab's parts and those of the run's own config (which a resume must match anyway), or
    anything with ``trust_checkpoint=true``. ``cfg``: the run's config (a DictConfig); only its
    instantiated groups are resolved."""
    from omegaconf import OmegaConf

    own = {group: OmegaConf.to_container(cfg[group], resolve=True) for group in INSTANTIATED_GROUPS if group in cfg}
    return {"trust": bool(cfg.get("trust_checkpoint", False)), "allowed": config_targets(own)}


def check_stored_config(
    config: Any, where: str, *, trust: bool = False, allowed: Collection[str] = (), trust_option: str = "trust_checkpoint=true"
) -> None:
    """Refuse (one line) a stored config that would have the loaders build anything but vaelab's
    own parts: a ``_target_`` in an instantiated group that conf/<group>/ does not name (nor
    ``allowed``; any, with ``trust``), or an interpolation there (vaelab stores its configs
    resolved; ``${oc.decode:…}`` could make a ``_target_`` appear after this check).
    ``trust_option``: how the caller's user says they trust it, for the message."""
    if not isinstance(config, dict):
        raise UserError(f"{where}: not a vaelab checkpoint (its vaelab_config is not a config)")
    for group in INSTANTIATED_GROUPS:
        node = config.get(group)
        if not isinstance(node, dict) or not isinstance(node.get("_target_"), str):
            raise UserError(f"{where}: not a vaelab checkpoint (vaelab_config.{group} has no _target_)")
        for key, value in _interpolations(node, f"vaelab_config.{group}"):
            raise UserError(f"{where}: refused: {key} is an interpolation ({value}); vaelab stores its configs resolved")
        if trust:
            continue
        for key, target in _targets(node, f"vaelab_config.{group}"):
            if not isinstance(target, str) or (target not in shipped_targets(group) and target not in allowed):
                raise UserError(
                    f"{where}: refused: {key}._target_ is {target!r}, which vaelab does not ship (conf/{group}/); "
                    f"if you trust this checkpoint, load it with {trust_option}"
                )


def _refused_global(error: Exception) -> str | None:
    """The global (module.name) a weights-only unpickling refused, if that is why it failed."""
    match = re.search(r"GLOBAL ([\w.]+)", str(error))
    return match.group(1) if match else None


def load_checkpoint(
    path: str | Path,
    key: str = "ckpt",
    *,
    trust: bool = False,
    allowed: Collection[str] = (),
    trust_option: str = "trust_checkpoint=true",
    mmap: bool = False,
) -> dict[str, Any]:
    """A vaelab checkpoint as a dict, or a one-line UserError (naming ``key``) saying why not.

    Weights-only: tensors and plain values (and :data:`SAVED_TYPES`); a pickle that needs any
    other global is refused, naming it, before anything runs. Its stored config must name
    vaelab's own parts (:func:`check_stored_config`; ``trust``: any, ``allowed``: these too;
    ``trust_option``: how the message says to trust it).
    ``mmap``: map the tensors from the file instead of reading them."""
    import pickle
    import warnings

    import torch

    path = Path(path)
    where = f"{key}={path}"
    if not path.is_file():
        raise UserError(f"{where}: no such file")
    try:
        with torch.serialization.safe_globals(list(SAVED_TYPES)), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on an unusual pickle protocol: the error says it all
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        refused = _refused_global(error)
        if refused is not None:
            raise UserError(
                f"{where}: refused: its pickle needs {refused}, which vaelab never saves (loading it could run code); "
                "vaelab reads tensors and plain values only"
            ) from None
        reason = next((line.strip() for line in str(error).splitlines() if line.strip().startswith("Unsupported")), "not a checkpoint's pickle")
        raise UserError(f"{where}: not a readable checkpoint, or truncated (UnpicklingError: {reason})") from None
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"{where}: not a readable checkpoint, or truncated ({one_line(error)})") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "vaelab_config" not in checkpoint:
        raise UserError(f"{where}: not a vaelab checkpoint (no state_dict / vaelab_config)")
    check_stored_config(checkpoint["vaelab_config"], where, trust=trust, allowed=allowed, trust_option=trust_option)
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
    return {k: v for k, v in dataset.items() if k not in STORAGE_KEYS}


def _without_dataset_size(objective: dict[str, Any] | None) -> dict[str, Any] | None:
    # Follows from the dataset, compared on its own.
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


def atomic_checkpoint_io(trust: bool = False, allowed: Collection[str] = ()):
    """Lightning CheckpointIO that writes ``<name>.tmp`` beside the target, fsyncs, then renames
    (:func:`~vaelab.errors.write_atomically`; a full disk is a :class:`~vaelab.errors.DiskFull`),
    and reads through :func:`load_checkpoint` (weights-only; ``trust``, ``allowed``: as there),
    so Lightning's own resume (``trainer.fit(ckpt_path=…)``) never unpickles code either.

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

        def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
            # Tensors come to the CPU; Lightning moves the state onto the module's device.
            return load_checkpoint(path, key="resume", trust=trust, allowed=allowed)

    return AtomicCheckpointIO()


def saved_step(path: Path) -> int | None:
    """The global step of the checkpoint at ``path`` (None if there is none, or it is unreadable),
    read without loading its tensors."""
    try:  # trust: its stored config is not built here, only its step read
        return int(load_checkpoint(path, trust=True, mmap=True)["global_step"])
    except (UserError, KeyError, TypeError, ValueError):  # only used to word a message
        return None


def resume_advice(last: Path) -> str:
    """What a run stopped by a full disk tells the user: the checkpoint it can resume from."""
    step = saved_step(last)
    if step is None:
        return "no checkpoint was written yet: free space and run again"
    return f"the last complete checkpoint is {last} (step {step}): free space and run again with resume=auto"
