"""Where figures go: the run's metrics files, and the loggers ``logger=`` selects (conf/logger/).

Every scalar that reaches Lightning's loggers also lands in the run directory, in two files:

- ``metrics_history.jsonl``: one JSON line ``{"step": n, key: value, ...}`` per logging call,
  appended and flushed, so a call costs the same at step 10 and at step 10^6. One step
  can span several lines (train, val, metrics): :func:`read_history` merges them.
- ``metrics.json``: ``{"status": "running" | "success" | "failed" | "interrupted",
  "objective": {...}, "images_per_step": n, "images_to": {key: images or null},
  "final": {key: last value}}`` (images_to: the time to disentangle, vaelab/time_to_disentangle.py),
  small, rewritten atomically (write, then rename) after every logging call: a crash never
  leaves it half-written, and a killed run stays "running".

A run can thus be read without W&B (vaelab/history.py reads the two files).
"""

from __future__ import annotations

import json
import logging
import netrc
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from vaelab.errors import DiskFull, RunStatus, UserError, is_disk_full, one_line, write_atomically
# The files' readers live apart, free of Lightning (vaelab compare reads runs with them).
from vaelab.history import HISTORY_FILE, METRICS_FILE, read_history, saved_history  # noqa: F401 - read_history: for callers
from vaelab.provenance import code_state
from vaelab.time_to_disentangle import first_steps_reaching, images_to

log = logging.getLogger("vaelab")


@runtime_checkable
class RunLogger(Protocol):
    """What vaelab tells a run's loggers beyond Lightning's scalars and config. The run files
    (:class:`MetricsFileLogger`), W&B (:class:`GuardedWandbLogger`, the one adapter that touches
    Lightning's and W&B's private attributes) and CSV (:class:`CsvLogger`) implement it; another
    Lightning logger a config names gets the scalars and the config alone. Each method does
    what its logger can show and nothing otherwise (:class:`RunLoggerDefaults`), and never
    stops the run for its own failure."""

    def identity(self) -> dict[str, Any] | None:
        """The run's identity where the logger has one (W&B: id, group, name, project, entity),
        kept in the checkpoint so that a resume continues the run and an eval joins its group."""

    def log_picture(self, key: str, path: Path, step: int) -> None:
        """A picture written at ``path`` (PNG, or a GIF animation: shown as a video)."""

    def log_score_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence], step: int) -> None:
        """A metric's breakdown (vaelab/tables.py)."""

    def log_checkpoint(self, path: Path, step: int, final: bool) -> None:
        """A checkpoint vaelab wrote."""

    def link_checkpoint(self, name: str) -> None:
        """This run (an eval) scored the logged checkpoint ``name``."""

    def summary(self) -> dict[str, Any]:
        """Figures every logger's summary gets at the end (the run files: the time to disentangle)."""

    def finish(self, status: RunStatus, exit_code: int, summary: Mapping[str, Any]) -> None:
        """The run ended with ``status`` / ``exit_code``; ``summary``: every logger's :meth:`summary`."""


class RunLoggerDefaults:
    """Every :class:`RunLogger` method, doing nothing: a logger overrides what it shows."""

    def identity(self) -> dict[str, Any] | None:
        return None

    def log_picture(self, key: str, path: Path, step: int) -> None:
        pass

    def log_score_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence], step: int) -> None:
        pass

    def log_checkpoint(self, path: Path, step: int, final: bool) -> None:
        pass

    def link_checkpoint(self, name: str) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}

    def finish(self, status: RunStatus, exit_code: int, summary: Mapping[str, Any]) -> None:
        pass


def run_loggers(loggers: Iterable[Logger]) -> list[RunLogger]:
    """The loggers among ``loggers`` (a trainer's, or :func:`build_loggers`') that are told
    vaelab's events (:class:`RunLogger`); the others get Lightning's scalars and config only."""
    return [logger for logger in loggers if isinstance(logger, RunLogger)]


class CsvLogger(RunLoggerDefaults, CSVLogger):
    """Lightning's CSVLogger (``logger=csv``: <run dir>/csv/version_0/metrics.csv): the scalars;
    pictures and tables are in the run directory already."""


def write_json_atomic(path: Path, payload: Any) -> None:
    """``payload`` as JSON at ``path``, all or nothing (a full disk: DiskFull, the old file whole)."""
    text = json.dumps(payload, indent=1, allow_nan=True).encode()
    write_atomically(path, lambda file: file.write(text))


class MetricsFileLogger(RunLoggerDefaults, Logger):
    """A Lightning logger that keeps every scalar in ``metrics_history.jsonl`` and the run's
    status and last values in ``metrics.json``. Each call writes a bounded number of bytes:
    its own line, and the summary, whose size depends on the keys, not on the steps."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        resume_step: int | None = None,
        objective: dict[str, Any] | None = None,
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        """``resume_step``: continue the files of a run resumed from that step, dropping what
        was logged after it (the resumed run logs those steps again, with the same values).
        ``objective``: the trained objective's description (``Objective.describe``), which
        ``vaelab compare`` reads; kept under "objective". ``thresholds``: the time to
        disentangle's {figure: threshold} (vaelab/time_to_disentangle.py), kept under
        "images_to" once :attr:`images_per_step` is set (the trainer knows its world size)."""
        super().__init__()
        self.path = Path(run_dir) / METRICS_FILE
        self.history_path = Path(run_dir) / HISTORY_FILE
        self.objective = objective
        self.thresholds = dict(thresholds or {})
        self.images_per_step: int | None = None
        self.reached: dict[str, int] = {}  # threshold key -> the first step at or above it
        self.final: dict[str, float] = {}
        self.last_step = 0  # where a figure logged without a step goes
        self.status = RunStatus.RUNNING
        self._history_file = None  # opened at the first figure
        # A new run in a directory that has a history (an earlier run's) starts it afresh, at its
        # first figure; a resumed run goes on with the history up to its checkpoint.
        self._history_mode = "ab" if resume_step is not None else "wb"
        self._saved = False  # metrics.json says what this logger holds
        if resume_step is not None and (self.history_path.is_file() or self.path.is_file()):
            kept = [(line, entry) for line, entry in saved_history(run_dir) if entry["step"] <= resume_step]
            for _, entry in kept:
                self.last_step = max(self.last_step, entry["step"])
                self.final.update({key: value for key, value in entry.items() if key != "step"})
            self.reached = first_steps_reaching((entry for _, entry in kept), self.thresholds)
            # The history up to the checkpoint, whole lines as they were; the run appends to it.
            lines = b"".join(line for line, _ in kept)
            write_atomically(self.history_path, lambda file: file.write(lines))

    @property
    def name(self) -> str:
        return "metrics_json"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the config lives in .hydra/config.yaml

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        values = {key: _as_float(value) for key, value in metrics.items() if key != "epoch"}
        if not values:
            return
        # One step arrives in several calls (train, val, metrics): read_history merges them.
        step = int(step) if step is not None else self.last_step
        self.last_step = max(self.last_step, step)
        self._append(json.dumps({"step": step, **values}, allow_nan=True).encode() + b"\n")
        self.final.update(values)
        self.reached = {**first_steps_reaching([{"step": step, **values}], self.thresholds), **self.reached}  # first stays
        self._saved = False
        self.save()

    def _append(self, line: bytes) -> None:
        """``line`` at the end of the history, whole or not at all (a full disk: DiskFull, the
        partial line removed, so the file still holds whole lines only)."""
        if self._history_file is None:
            self.history_path.parent.mkdir(parents=True, exist_ok=True)
            self._history_file = open(self.history_path, self._history_mode, buffering=0)
            self._history_mode = "ab"
        file = self._history_file
        start = file.seek(0, os.SEEK_END)
        try:
            written = 0
            while written < len(line):
                written += file.write(line[written:])
        except OSError as error:
            file.truncate(start)
            if is_disk_full(error):
                raise DiskFull(self.history_path) from error
            raise

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = {"objective": self.objective} if self.objective is not None else {}
        if self.thresholds and self.images_per_step is not None:
            header |= {"images_per_step": self.images_per_step, "images_to": self.images_to()}
        write_json_atomic(self.path, {"status": self.status.value, **header, "final": self.final})
        self._saved = True

    def images_to(self) -> dict[str, int | None]:
        """Each threshold's training images at its first logged value at or above it; None: not (yet) reached."""
        return images_to(self.thresholds, self.reached, self.images_per_step or 0)

    def finalize(self, status: str) -> None:
        """Lightning's end of training (:meth:`RunStatus.of_lightning`)."""
        self.end(RunStatus.of_lightning(status))

    def summary(self) -> dict[str, Any]:
        """The time to disentangle, null where not reached (metrics.json holds it too)."""
        return self.images_to() if self.images_per_step else {}

    def finish(self, status: RunStatus, exit_code: int, summary: Mapping[str, Any]) -> None:
        self.end(status)

    def end(self, status: RunStatus) -> None:
        """Record how the run ended in metrics.json and close the history."""
        if self._history_file is not None:
            self._history_file.close()
            self._history_file = None
        if status == self.status and self._saved:
            return
        self.status = status
        try:
            self.save()
        except DiskFull:
            if status == RunStatus.SUCCESS:
                raise
            # The run is already stopping with its own error (most likely this full disk);
            # the file keeps its last complete state, which says "running": resumable.


def build_loggers(
    logger_cfg,
    run_dir: str | os.PathLike,
    resume_step: int | None = None,
    objective: dict[str, Any] | None = None,
    thresholds: Mapping[str, float] | None = None,
    **fill: Any,
) -> tuple[MetricsFileLogger, list[Logger]]:
    """The run's loggers: the metrics files always (with ``objective``, a training run's
    objective description, and ``thresholds``, its time to disentangle's), plus every one ``logger=`` selects, in its order: each
    conf/logger/<name>.yaml puts its settings under ``logger.<name>`` (``logger=[wandb,csv]``:
    both; ``logger=none``: none).

    ``fill`` supplies values for keys that a selected logger's config declares and leaves
    null (a resumed run's W&B ``run_id``, an eval run's ``group``); other loggers never
    see them.
    """
    import hydra.utils

    # Every entry checked before any is built: a W&B run started and then abandoned by a
    # bad entry after it would stay open.
    for name, spec in (logger_cfg or {}).items():
        if not isinstance(spec, Mapping) or "_target_" not in spec:
            owners = [other for other, settings in logger_cfg.items() if isinstance(settings, Mapping) and name in settings]
            hint = f"logger.{owners[0]}.{name}" if owners else f"logger.<name>.{name}"
            raise UserError(f"logger.{name}: not a logger; each logger's settings are under its name ({hint}=…)")
    metrics_file = MetricsFileLogger(run_dir, resume_step=resume_step, objective=objective, thresholds=thresholds)
    loggers: list[Logger] = [metrics_file]
    for name, spec in (logger_cfg or {}).items():
        extra = {key: value for key, value in fill.items() if value is not None and spec.get(key, 0) is None}
        external = hydra.utils.instantiate(spec, **extra)
        if external is not None:
            loggers.append(external)
    return metrics_file, loggers


def _as_float(value: Any) -> float:
    # NaN/inf are kept (JSON NaN/Infinity): a diverged run must show as diverged.
    return float(value.item() if hasattr(value, "item") else value)


class GuardedWandbLogger(RunLoggerDefaults, WandbLogger):
    """Lightning's WandbLogger, except that a W&B failure mid-run is reported once and then
    ignored: training goes on and every figure still reaches metrics.json. The one place that
    reads Lightning's and W&B's private attributes (``_experiment``, ``_log_model``,
    ``_wandb_init``; tests/test_logging.py fails when they change)."""

    _failed = False

    def _guarded(self, method, *args, **kwargs):
        if self._failed:
            return None
        try:
            return method(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - no W&B problem may stop training
            self._failed = True
            log.warning("W&B failed (%s); training continues, figures go to metrics.json", one_line(error))
            return None

    def log_metrics(self, metrics, step=None) -> None:
        self._guarded(super().log_metrics, metrics, step)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        self._guarded(super().log_hyperparams, params, *args, **kwargs)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self._guarded(super().after_save_checkpoint, checkpoint_callback)

    def identity(self) -> dict[str, Any] | None:
        if self._experiment is None or self._failed:
            return None
        run = self.experiment
        return {"id": run.id, "group": run.group or None, "name": run.name, "project": run.project, "entity": run.entity or None}

    def log_picture(self, key: str, path: Path, step: int) -> None:
        # An animation is a video in W&B: as an image it would show its first frame.
        if Path(path).suffix == ".gif":
            self._guarded(self.log_video, key=key, videos=[str(path)], step=step)
        else:
            self._guarded(self.log_image, key=key, images=[str(path)], step=step)

    def log_score_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence], step: int) -> None:
        self._guarded(self.log_table, key=key, columns=list(columns), data=[list(row) for row in rows], step=step)

    def finish(self, status: RunStatus, exit_code: int, summary: Mapping[str, Any]) -> None:
        """The status and ``summary`` into the W&B summary; an interrupted run is marked preempting
        (W&B's state for a run that will resume); finished with the same exit code: without
        ``finish()`` a multirun logs all its jobs into one run."""
        if self._experiment is None:
            return
        try:
            run = self.experiment
            run.summary.update({"status": status.value, **summary})
            if status == RunStatus.INTERRUPTED:
                run.mark_preempting()
            run.finish(exit_code=exit_code)
        except Exception as error:  # noqa: BLE001
            log.warning("W&B finish failed (%s); the offline run files are kept", one_line(error))

    def log_checkpoint(self, path: str | os.PathLike, step: int, final: bool) -> None:
        """A checkpoint vaelab wrote (``last.ckpt``: Lightning never sees it saved) as a version of
        the run's model artifact ``model-<run id>``, aliases ``latest`` and ``step-<N>``, as
        ``log_model`` says: true, the final one; "all", every one; false, none."""
        if self._log_model == "all" or (self._log_model is True and final):
            self._guarded(self._log_checkpoint, Path(path), step)

    def link_checkpoint(self, name: str) -> None:
        """Link this run (an eval) to the model artifact it scored, online; offline runs (which W&B
        cannot link) keep ``name`` in their config as ``checkpoint_artifact``."""
        if self._experiment is None or self.experiment.offline:
            return
        try:
            self.experiment.use_artifact(name, type="model")
        except Exception as error:  # noqa: BLE001 - e.g. a run that logged no artifact (log_model=false)
            log.info("W&B: %s not linked (%s); its name is in the config", name, one_line(error))

    def _log_checkpoint(self, path: Path, step: int) -> None:
        import wandb

        run = self.experiment
        artifact = wandb.Artifact(checkpoint_artifact_name(run.id), type="model", metadata={"global_step": step})
        artifact.add_file(str(path), name=path.name)  # copied now: the next save replaces the file
        run.log_artifact(artifact, aliases=["latest", f"step-{step}"])

    def finalize(self, status: str) -> None:
        self._guarded(super().finalize, status)


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """``auto`` -> WANDB_MODE if set, else online with an API key, else offline (said once)."""
    if mode not in ("auto", "online", "offline", "disabled"):
        raise UserError(f"logger.wandb.mode={mode!r}: expected auto, online, offline or disabled")
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if wandb_api_key_configured():
        return "online"
    log.info("W&B: no API key configured, logging offline")
    return "offline"


def checkpoint_artifact_name(run_id: str) -> str:
    """The W&B model artifact of a run's checkpoints (Lightning's name for it too)."""
    return f"model-{run_id}"


def wandb_logger(
    save_dir: str,
    project: str = "vaelab",
    mode: str = "auto",
    group: str | None = None,
    name: str | None = None,
    job_type: str | None = None,
    tags: list[str] | None = None,
    entity: str | None = None,
    run_id: str | None = None,
    log_model: bool | str = True,
) -> Logger | None:
    """A :class:`GuardedWandbLogger`, started now so that a failure is seen (and survived) here.

    Returns None, after saying so in one line, if W&B cannot start: training goes on
    and every figure still reaches metrics.json.
    """
    mode = resolve_wandb_mode(mode)
    if mode == "disabled":
        return None
    sweep_group, overrides_name, default_tags = _hydra_run_identity()
    group = group or sweep_group
    name = name or overrides_name
    tags = list(dict.fromkeys([*(default_tags or []), *(tags or [])]))  # the user's tags add to the defaults
    job_type = job_type or _hydra_job_name() or "train"
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    try:
        logger = GuardedWandbLogger(
            save_dir=save_dir,
            project=project,
            entity=entity,
            group=group,
            name=name,
            job_type=job_type,
            tags=tags,
            mode=mode,
            log_model=log_model,
            id=run_id,
            resume="allow" if run_id else None,
            settings=wandb_settings(),
        )
        logger._wandb_init.pop("anonymous", None)  # Lightning passes a deprecated setting wandb warns about
        run = logger.experiment  # starts the run now, inside this try
        # The summary keeps the best validation loss beside the last. Every other key, the final
        # metrics/ scores included, keeps W&B's default, its last value as a plain number (an
        # explicit summary="last" on a glob nests some keys as {"last": v}, unpredictably).
        run.define_metric("val/loss", step_metric="trainer/global_step", step_sync=True, summary="min,last")
        run.config.update(code_state(), allow_val_change=True)  # which code made it
        if run.offline:
            where = Path(run.dir).parent  # wandb/offline-run-<time>-<id>
            log.info("W&B: run %s saved offline in %s; upload it with `wandb sync %s`", run.id, where, where)
        else:
            log.info("W&B: %s", run.url)
    except Exception as error:  # noqa: BLE001 - any W&B failure must not stop training
        log.warning("W&B could not start (%s); training continues, figures go to metrics.json", one_line(error))
        return None
    return logger


def _hydra_run_identity() -> tuple[str | None, str | None, list[str] | None]:
    """(group, name, tags) defaults: the sweep directory in a multirun, the run directory
    otherwise (so that `vaelab compare --wandb` over a sweep or over one run joins the group of
    the runs it compares); the overrides as the name; the chosen objective and dataset as tags
    (an eval run: "eval").

    e.g. group "multirun/2026-01-31/12-00-00", name "beta=4,objective=infomax".
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None, None
    hydra_cfg = HydraConfig.get()
    name = hydra_cfg.job.override_dirname or None
    choices = hydra_cfg.runtime.choices
    tags = [choices[g] for g in ("objective", "dataset") if choices.get(g)] or [hydra_cfg.job.name]
    if hydra_cfg.mode == RunMode.MULTIRUN:
        group = sweep_group(hydra_cfg.sweep.dir)
    else:
        group = sweep_group(hydra_cfg.runtime.output_dir)
    return group, name, tags


def sweep_group(sweep_dir: str | os.PathLike) -> str:
    """The W&B group of a sweep (or a single run): the last three parts of its directory, e.g.
    multirun/<date>/<time> (unique per sweep); `vaelab compare --wandb` joins it."""
    return "/".join(Path(sweep_dir).resolve().parts[-3:])


def _hydra_job_name() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().job.name if HydraConfig.initialized() else None


def wandb_settings():
    import wandb

    # No console capture (Hydra already writes the log file) and no copy of the code; W&B records
    # the working directory's git commit as it does by default (vaelab's own: vaelab/provenance.py).
    return wandb.Settings(console="off", save_code=False, quiet=True)


def finish_run(loggers: list[Logger], exit_code: int = 0) -> None:
    """End every logger as a run ending with ``exit_code`` ends (:meth:`RunStatus.of_exit_code`):
    each gets the status and the summary figures all of them contribute (:meth:`RunLogger.finish`)."""
    status = RunStatus.of_exit_code(exit_code)
    told = run_loggers(loggers)
    summary = {key: value for logger in told for key, value in logger.summary().items()}
    for logger in told:
        logger.finish(status, exit_code, summary)
