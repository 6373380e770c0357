"""`vaelab train`: wiring only. Builds dataset, objective, model and trainer from the config."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra.utils
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from vaelab import objectives, validation
from vaelab.callbacks import InterruptCheckpoint, RunProgress, StepProgressBar
from vaelab.checkpoint import (
    LAST,
    atomic_checkpoint_io,
    check_compatible,
    load_checkpoint,
    resume_advice,
    resume_checkpoint_path,
    resume_trust,
    run_dir_of,
)
from vaelab.data.pairs import pair_sampling
from vaelab.data.stream import GroundTruthDataModule
from vaelab.device import lightning_placement, resolve_compile, resolve_training_precision, training_device
from vaelab.distributed import is_worker, launching_workers
from vaelab.errors import DiskFull, is_disk_full
from vaelab.loggers import build_loggers, finish_run, run_loggers
from vaelab.module import VAEModule
from vaelab.progress import on_terminal
from vaelab.rundir import lock_hint, run_dir_lock
from vaelab.runfiles import finished_figures
from vaelab.system import set_num_threads, tune_glibc_malloc
from vaelab.time_to_disentangle import CONFIG_KEY as TIME_TO_DISENTANGLE, check_thresholds, images_per_step

log = logging.getLogger("vaelab")


def run_config(cfg: DictConfig, objective, description: dict[str, Any]) -> dict[str, Any]:
    """The resolved config as logged once to W&B, with the objective's ``description`` (its knobs'
    values, beta_effective and kl_weight where it has them) at the top level, and each knob's
    value trained under ``objective`` too (what rebuilds it from a checkpoint)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config |= description["knobs"]
    for knob in objective.knobs:  # the value trained, not the null a knob left unset resolves to
        config["objective"][knob.attribute] = getattr(objective, knob.attribute)
    if "dataset_size" in config["objective"]:  # null in the yaml: filled in from the dataset, or unused
        size = getattr(objective, "dataset_size", None)
        if size is None:
            del config["objective"]["dataset_size"]
        else:
            config["objective"]["dataset_size"] = size
    config["objective_name"] = description["label"]
    config["beta_effective"] = description["beta_effective"]
    config["kl_weight"] = description["kl_weight"]
    return config


# Where a run's files and W&B identity go: recorded by the run itself, never settings of the model.
NOT_SETTINGS = ("paths", "logger", "wandb")


def logged_config(cfg: DictConfig, config: dict[str, Any], objective) -> dict[str, Any]:
    """The W&B config: each setting once, under the key a user types.

    A knob is recorded at the top level (not again under ``objective``), a value that follows
    another key (a callback's ``every_n_steps: ${checkpoint.every_n_steps}``) where it is set,
    and ``NOT_SETTINGS`` nowhere.
    """

    def settings(node: DictConfig, values: dict[str, Any]) -> dict[str, Any]:
        kept = {}
        for key, value in values.items():
            if key in node and OmegaConf.is_interpolation(node, key):
                continue
            child = node[key] if key in node else None
            kept[key] = settings(child, value) if isinstance(child, DictConfig) and isinstance(value, dict) else value
        return kept

    logged = settings(cfg, {k: v for k, v in config.items() if k not in NOT_SETTINGS})
    knob_attributes = {knob.attribute for knob in objective.knobs}
    logged["objective"] = {k: v for k, v in logged["objective"].items() if k not in knob_attributes}
    # optimized_metric: recorded when a search sets it, the metric its trials are scored by
    return {k: v for k, v in logged.items() if not (k == "optimized_metric" and v is None)}


def _chain(error: BaseException | None):
    """``error`` and the exceptions it was raised from or while handling."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def train(cfg: DictConfig, extra_callbacks: list[pl.Callback] | None = None) -> dict[str, float]:
    """Train one model; returns the final figures (also in <run dir>/metrics.json).

    ``extra_callbacks`` lets programs (benchmarks, notebooks) watch a run without a config.
    """
    validation.check_job(cfg, "train")  # a sweep's job, a program's config (a single run: checked already)
    thresholds = _time_to_disentangle_thresholds(cfg)
    optimizer = hydra.utils.instantiate(cfg.optimizer)  # a factory: params -> torch.optim.Optimizer
    if cfg.get("tune_malloc", True):
        tune_glibc_malloc()
    # cuda:N becomes Lightning's accelerator and device index; a name that is no device here, one line.
    cfg.trainer.accelerator, cfg.trainer.devices = lightning_placement(cfg.trainer)
    set_num_threads(cfg.get("num_threads", "auto"), cfg.trainer)
    # Recorded resolved (checkpoint, W&B config), so a run says what it trained in.
    device = training_device(cfg.trainer)
    cfg.trainer.precision = resolve_training_precision(cfg.trainer.precision, device)
    with open_dict(cfg.trainer):  # a trainer config of one's own may lack vaelab's keys
        cfg.trainer.compile = resolve_compile(cfg.trainer.get("compile", "auto"), device, cfg.trainer.get("compile_mode", "default"))
    run_dir = Path(cfg.paths.output_dir)
    resume_from = resume_checkpoint_path(cfg.resume, run_dir)
    if resume_from is not None and resume_from.is_file():
        run_dir = run_dir_of(resume_from)  # a resumed run continues in its own directory
        cfg.paths.output_dir = str(run_dir)  # and so do its loggers
    # Held before the checkpoint is read (its run may be writing it). Rank 0 alone: DDP
    # workers write into rank 0's directory, under its lock.
    with run_dir_lock(run_dir, enabled=not is_worker(), hint=lock_hint(resume_from)):
        checkpoint = load_checkpoint(resume_from, key="resume", **resume_trust(cfg)) if resume_from else None
        return _train_in(cfg, run_dir, resume_from, checkpoint, optimizer, thresholds, extra_callbacks)


def _time_to_disentangle_thresholds(cfg: DictConfig) -> dict[str, float]:
    value = cfg.get(TIME_TO_DISENTANGLE)
    return check_thresholds(OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value)


def _train_in(
    cfg: DictConfig,
    run_dir: Path,
    resume_from: Path | None,
    checkpoint: dict[str, Any] | None,
    optimizer,
    thresholds: dict[str, float],
    extra_callbacks: list[pl.Callback] | None,
) -> dict[str, float]:
    """``train`` once the run directory is known and held."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    if cfg.dataset.get("path"):
        # Recorded absolute, so `vaelab eval ckpt=…` finds the file from any directory.
        cfg.dataset.path = str(Path(cfg.dataset.path).expanduser().resolve())
    dataset = hydra.utils.instantiate(cfg.dataset)
    objective = objectives.build(cfg, dataset_size=len(dataset))
    model_inputs = {"image_shape": list(dataset.image_shape), "binary_data": bool(dataset.binary)}
    model = hydra.utils.instantiate(cfg.model, image_shape=tuple(dataset.image_shape), binary_data=dataset.binary)
    data = {key: value for key, value in cfg.data.items() if key != "pairs"}
    datamodule = GroundTruthDataModule(dataset, seed=cfg.seed, pairs=pair_sampling(cfg.data.get("pairs"), dataset.factor_sizes, objective), **data)
    description = objective.describe()
    config = run_config(cfg, objective, description)
    resume_step, wandb_id = None, None
    if checkpoint is not None:
        check_compatible(checkpoint, config, resume_from)
        resume_step = checkpoint["global_step"]
        finished = finished_figures(run_dir) if cfg.resume == "auto" and resume_step >= cfg.trainer.max_steps else None
        if finished is not None:
            # A sweep run again with resume=auto goes on with the jobs it had not finished.
            log.info("%s finished at step %d already: skipped (resume=auto)", run_dir, resume_step)
            return finished
        wandb_id = (checkpoint["vaelab_config"].get("wandb") or {}).get("id")
        log.info("resuming %s from step %d (%s)", run_dir, resume_step, resume_from)
    # A resumed run continues its W&B run (same id) unless one is given. DDP workers
    # (ranks > 0) log nothing and touch no file: rank 0 writes the metrics files and the one W&B run.
    metrics_file, loggers = None, []
    if not is_worker():
        metrics_file, loggers = build_loggers(
            cfg.get("logger"), run_dir, resume_step, description, thresholds=thresholds, run_id=wandb_id
        )
    for logger in run_loggers(loggers):
        if (identity := logger.identity()) is not None:  # kept in the checkpoint: `vaelab eval` joins the group, a resume the run
            config["wandb"] = identity
    for logger in loggers:
        logger.log_hyperparams(logged_config(cfg, config, objective))
    # The config is complete now: the module keeps it (in each checkpoint) as it is.
    module = VAEModule(model, objective, optimizer, cfg.seed, config, cfg.on_non_finite, model_inputs,
                       compile_step=cfg.trainer.compile, compile_mode=cfg.trainer.get("compile_mode", "default"))  # fmt: skip

    # The callbacks group (conf/callbacks/), in its order; each resolves paths now, so a resumed
    # run's callbacks write into its own directory.
    callbacks = [hydra.utils.instantiate(spec, _convert_="all") for spec in cfg.callbacks.values() if spec]
    callbacks += extra_callbacks or []
    interrupts = [callback for callback in callbacks if isinstance(callback, InterruptCheckpoint)]
    trainer_kwargs = {}
    if cfg.trainer.get("enable_progress_bar") is None:
        trainer_kwargs["enable_progress_bar"] = on_terminal()
    progress_bar = bool(trainer_kwargs.get("enable_progress_bar", cfg.trainer.get("enable_progress_bar")))
    if progress_bar:
        callbacks.append(StepProgressBar())
    callbacks.append(RunProgress(cfg.progress.every_s, terminal=progress_bar))  # off a terminal: a line every every_s
    # The user's trainer.plugins (one or a list: precision, cluster environment...) beside
    # vaelab's checkpoint writer. A spec with _target_ is built; a name Lightning knows goes as it is.
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    specs = trainer_cfg.pop("plugins", None) or []
    for vaelab_setting in ("compile", "compile_mode"):  # the module's (above), not Lightning's
        trainer_cfg.pop(vaelab_setting, None)
    plugins = [hydra.utils.instantiate(spec) if isinstance(spec, dict) else spec for spec in (specs if isinstance(specs, list) else [specs])]
    trainer: pl.Trainer = hydra.utils.instantiate(
        trainer_cfg,
        logger=loggers,
        callbacks=callbacks,
        plugins=[*plugins, atomic_checkpoint_io(**resume_trust(cfg))],
        default_root_dir=str(run_dir),
        **trainer_kwargs,
    )
    if metrics_file is not None:  # the time to disentangle counts images, across every process
        metrics_file.images_per_step = images_per_step(cfg, trainer.world_size, pairs=objective.trains_on_pairs)

    log.info(
        "training %s (%s) on %s for %d steps -> %s",
        objective.label, ", ".join(f"{key}={value:.4g}" for key, value in objective.knob_values.items()), type(dataset).__name__, cfg.trainer.max_steps, run_dir,
    )  # fmt: skip
    exit_code = 1
    try:
        with launching_workers():
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        exit_code = 0
    except Exception as error:
        full = next((e for e in _chain(error) if isinstance(e, DiskFull) or is_disk_full(e)), None)
        if full is None:
            raise
        # Every file is written whole or not at all: the previous checkpoint and metrics.json
        # are intact, so the run can go on from the checkpoint once there is space.
        where = full.path if isinstance(full, DiskFull) else (full.filename or run_dir)
        disk_full = DiskFull(where, resume_advice(run_dir / LAST))
        exit_code = disk_full.exit_code  # resumable, like a SIGTERM stop (if the disk lets metrics.json say so)
        raise disk_full from error
    except (KeyboardInterrupt, SystemExit):
        signalled = next((i.exit_code for i in interrupts if i.exit_code is not None), None)
        if signalled is None:
            raise
        exit_code = signalled  # Lightning finalised the loggers as "failed" on Ctrl-C: resumable, not failed
        raise SystemExit(exit_code) from None
    finally:
        finish_run(loggers, exit_code=exit_code)
    return metrics_file.final if metrics_file is not None else {}
