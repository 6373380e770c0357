"""Where figures go: the run files, always, and the loggers ``logger=`` selects (conf/logger/).

Every scalar that reaches Lightning's loggers also lands in the run directory
(:class:`MetricsFileLogger`, vaelab/runfiles.py describes the files), so a run can be read
without W&B. vaelab's own events (pictures, score tables, checkpoints, the run's end) reach
the loggers through one interface, :class:`RunLogger`.
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from vaelab.errors import RunStatus, UserError, one_line
from vaelab.provenance import code_state
from vaelab.runfiles import RunFiles

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


def tell_run_loggers(loggers: Iterable[Logger], what: str, event: Callable[[RunLogger], None]) -> None:
    """``event(logger)`` for each run logger; one that fails is said in a warning naming ``what``,
    and the others are still told: a picture or a table never stops training or eval."""
    for logger in run_loggers(loggers):
        try:
            event(logger)
        except Exception as error:  # noqa: BLE001
            log.warning("could not log %s to %s (%s)", what, type(logger).__name__, one_line(error))


class CsvLogger(RunLoggerDefaults, CSVLogger):
    """Lightning's CSVLogger (``logger=csv``: <run dir>/csv/version_0/metrics.csv): the scalars;
    pictures and tables are in the run directory already."""


class MetricsFileLogger(RunLoggerDefaults, RunFiles, Logger):
    """The run files (vaelab/runfiles.py: RunFiles) as a Lightning logger, always among a run's
    loggers: Lightning's figures go to ``metrics_history.jsonl`` and ``metrics.json``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """RunFiles' arguments: the run directory, ``resume_step``, ``objective``, ``thresholds``."""
        Logger.__init__(self)
        RunFiles.__init__(self, *args, **kwargs)

    @property
    def name(self) -> str:
        return "metrics_json"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the config lives in .hydra/config.yaml

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.log(metrics, step)

    def summary(self) -> dict[str, Any]:
        """The time to disentangle, null where not reached (metrics.json holds it too)."""
        return self.images_to() if self.images_per_step else {}

    def finish(self, status: RunStatus, exit_code: int, summary: Mapping[str, Any]) -> None:
        self.end(status)

    def finalize(self, status: str) -> None:
        """Lightning's end of training (:meth:`RunStatus.of_lightning`)."""
        self.end(RunStatus.of_lightning(status))


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
