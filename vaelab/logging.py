"""Where figures go: W&B (online, offline, or not at all) and the run's ``metrics.json``.

Every scalar that reaches Lightning's loggers also lands in ``<run dir>/metrics.json``:

    {"status": "running" | "success" | "failed" | "interrupted",
     "final": {key: last value}, "history": [{"step": n, key: value, ...}, ...]}

so a run can be read without W&B (a killed run stays "running"). The file is rewritten atomically (write, then
rename) after every logging call: a crash never leaves it half-written.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger, WandbLogger

from vaelab.errors import DiskFull, UserError, write_atomically

log = logging.getLogger("vaelab")


def write_json_atomic(path: Path, payload: Any) -> None:
    """``payload`` as JSON at ``path``, all or nothing (a full disk: DiskFull, the old file whole)."""
    text = json.dumps(payload, indent=1, allow_nan=True).encode()
    write_atomically(path, lambda file: file.write(text))


class MetricsFileLogger(Logger):
    """A Lightning logger that keeps every scalar in ``metrics.json``."""

    def __init__(
        self, run_dir: str | os.PathLike, resume_step: int | None = None, objective: dict[str, Any] | None = None
    ) -> None:
        """``resume_step``: continue the file of a run resumed from that step, dropping what
        was logged after it (the resumed run logs those steps again, with the same values).
        ``objective``: the trained objective's description (``Objective.describe``), which
        ``vaelab compare`` reads; kept under "objective"."""
        super().__init__()
        self.path = Path(run_dir) / "metrics.json"
        self.objective = objective
        self.by_step: dict[int, dict[str, float]] = {}
        self.final: dict[str, float] = {}
        self.status = "running"
        if resume_step is not None and self.path.is_file():
            for entry in self._saved_history():
                step = entry.pop("step")
                if step <= resume_step:
                    self.by_step[step] = entry
                    self.final.update(entry)

    def _saved_history(self) -> list[dict[str, Any]]:
        """The history in the existing file, or a one-line UserError if the file is damaged
        (it is written atomically, so only a bad copy or a disk error damages it)."""
        try:
            history = json.loads(self.path.read_text())["history"]
            if not isinstance(history, list) or not all(isinstance(e, dict) and isinstance(e["step"], int) for e in history):
                raise ValueError("its history is not a list of {step: …} entries")
            return history
        except (OSError, ValueError, KeyError, TypeError) as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            if isinstance(error, KeyError):
                reason = f"no {reason} key"
            raise UserError(
                f"{self.path} is damaged ({reason}); restore it, or move it aside to resume without the figures logged so far"
            ) from None

    @property
    def name(self) -> str:
        return "metrics_json"

    @property
    def version(self) -> str:
        return "0"

    @property
    def history(self) -> list[dict[str, float]]:
        return [{"step": step, **self.by_step[step]} for step in sorted(self.by_step)]

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the config lives in .hydra/config.yaml

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        values = {key: _as_float(value) for key, value in metrics.items() if key != "epoch"}
        if not values:
            return
        step = int(step) if step is not None else max(self.by_step, default=0)
        # One step arrives in several calls (train, val, metrics): merge them.
        self.by_step.setdefault(step, {}).update(values)
        self.final.update(values)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = {"objective": self.objective} if self.objective is not None else {}
        write_json_atomic(self.path, {"status": self.status, **header, "final": self.final, "history": self.history})

    def finalize(self, status: str) -> None:
        # Lightning says "success", "failed" (an exception) or "finished" (a SIGTERM stop).
        self.status = {"success": "success", "finished": "interrupted"}.get(status, "failed")
        try:
            self.save()
        except DiskFull:
            if self.status == "success":
                raise
            # The run is already stopping with its own error (most likely this full disk);
            # the file keeps its last complete state, which says "running": resumable.


def build_loggers(
    logger_cfg,
    run_dir: str | os.PathLike,
    resume_step: int | None = None,
    objective: dict[str, Any] | None = None,
    **fill: Any,
) -> tuple[MetricsFileLogger, list[Logger]]:
    """The run's loggers: metrics.json always (with ``objective``, a training run's objective
    description), plus the one ``logger=`` selects (none: none).

    ``fill`` supplies values for keys that the selected logger's config declares and leaves
    null (a resumed run's W&B ``run_id``, an eval run's ``group``); other loggers never
    see them.
    """
    import hydra.utils

    metrics_file = MetricsFileLogger(run_dir, resume_step=resume_step, objective=objective)
    loggers: list[Logger] = [metrics_file]
    if logger_cfg and logger_cfg.get("_target_"):
        extra = {key: value for key, value in fill.items() if value is not None and logger_cfg.get(key, 0) is None}
        external = hydra.utils.instantiate(logger_cfg, **extra)
        if external is not None:
            loggers.append(external)
    return metrics_file, loggers


def _as_float(value: Any) -> float:
    # NaN/inf are kept (JSON NaN/Infinity): a diverged run must show as diverged.
    return float(value.item() if hasattr(value, "item") else value)


class GuardedWandbLogger(WandbLogger):
    """Lightning's WandbLogger, except that a W&B failure mid-run is reported once and then
    ignored: training goes on and every figure still reaches metrics.json."""

    _failed = False

    def _guarded(self, method, *args, **kwargs):
        if self._failed:
            return None
        try:
            return method(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - no W&B problem may stop training
            self._failed = True
            log.warning("W&B failed (%s); training continues, figures go to metrics.json", _one_line(error))
            return None

    def log_metrics(self, metrics, step=None) -> None:
        self._guarded(super().log_metrics, metrics, step)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        self._guarded(super().log_hyperparams, params, *args, **kwargs)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self._guarded(super().after_save_checkpoint, checkpoint_callback)

    def log_checkpoint(self, path: str | os.PathLike, step: int, final: bool) -> None:
        """A checkpoint vaelab wrote (``last.ckpt``: Lightning never sees it saved) as a version of
        the run's model artifact ``model-<run id>``, aliases ``latest`` and ``step-<N>``, as
        ``log_model`` says: true, the final one; "all", every one; false, none."""
        if self._log_model == "all" or (self._log_model is True and final):
            self._guarded(self._log_checkpoint, Path(path), step)

    def use_checkpoint_artifact(self, name: str) -> None:
        """Link this run (an eval) to the model artifact it scored, online; offline runs (which W&B
        cannot link) keep ``name`` in their config as ``checkpoint_artifact``."""
        if self._experiment is None or self.experiment.offline:
            return
        try:
            self.experiment.use_artifact(name, type="model")
        except Exception as error:  # noqa: BLE001 - e.g. a run that logged no artifact (log_model=false)
            log.info("W&B: %s not linked (%s); its name is in the config", name, _one_line(error))

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
        raise UserError(f"logger.mode={mode!r}: expected auto, online, offline or disabled")
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if wandb_api_key_configured():
        return "online"
    log.info("W&B: no API key configured, logging offline (upload later with `wandb sync <run dir>/wandb`)")
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
            settings=_wandb_settings(),
        )
        logger._wandb_init.pop("anonymous", None)  # Lightning passes a deprecated setting wandb warns about
        run = logger.experiment  # starts the run now, inside this try
        # The summary keeps the best validation loss beside the last. Every other key, the final
        # metrics/ scores included, keeps W&B's default, its last value as a plain number (an
        # explicit summary="last" on a glob nests some keys as {"last": v}, unpredictably).
        run.define_metric("val/loss", step_metric="trainer/global_step", step_sync=True, summary="min,last")
    except Exception as error:  # noqa: BLE001 - any W&B failure must not stop training
        log.warning("W&B could not start (%s); training continues, figures go to metrics.json", _one_line(error))
        return None
    return logger


def _hydra_run_identity() -> tuple[str | None, str | None, list[str] | None]:
    """(group, name, tags) defaults: the sweep directory in a multirun; the overrides as the
    name; the chosen objective and dataset as tags (an eval run: "eval").

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
    group = None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        group = sweep_group(hydra_cfg.sweep.dir)
    return group, name, tags


def sweep_group(sweep_dir: str | os.PathLike) -> str:
    """The W&B group of a sweep: the last three parts of its directory, e.g.
    multirun/<date>/<time> (unique per sweep); `vaelab compare --wandb` joins it."""
    return "/".join(Path(sweep_dir).resolve().parts[-3:])


def _hydra_job_name() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().job.name if HydraConfig.initialized() else None


def _wandb_settings():
    import wandb

    # No console capture (Hydra already writes the log file) and no code/git scraping.
    return wandb.Settings(console="off", save_code=False, disable_git=True, quiet=True)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


INTERRUPTED_EXIT_CODES = (130, 143, DiskFull.exit_code)  # SIGINT, SIGTERM, a full disk: the run can be resumed


def finish_wandb(loggers: list[Logger], exit_code: int = 0) -> None:
    """``wandb.finish()`` after every job: without it a multirun logs all jobs into one run.

    The run's summary gets ``status`` (success, failed or interrupted, as in metrics.json);
    an interrupted run is also marked preempting, W&B's state for a run that will resume.
    """
    status = "success" if exit_code == 0 else "interrupted" if exit_code in INTERRUPTED_EXIT_CODES else "failed"
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            try:
                run = logger.experiment
                run.summary["status"] = status
                if status == "interrupted":
                    run.mark_preempting()
                run.finish(exit_code=exit_code)
            except Exception as error:  # noqa: BLE001
                log.warning("W&B finish failed (%s); the offline run files are kept", _one_line(error))
