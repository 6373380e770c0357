"""`vaelab eval`: the metric suite on a checkpoint (``ckpt=``) or on precomputed codes (``codes=``).

Prints the scores as one JSON object on stdout (for scripts) and a table on stderr
(for people), writes ``metrics.json`` in the eval run directory and logs a W&B run
with job_type ``eval`` (in the training run's group, for a checkpoint).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vaelab.checkpoint import load_checkpoint
from vaelab.errors import UserError
from vaelab.loggers import build_loggers, finish_run, run_loggers
from vaelab.progress import SuiteProgress, on_terminal
from vaelab.tables import save_and_log_tables
from vaelab.validation import check_job

log = logging.getLogger("vaelab")


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, float]:
    from vaelab import metrics
    from vaelab.device import resolve_device
    from vaelab.metrics.representation import encoder_representation, load_codes_file
    from vaelab.module import dataset_and_model_from_checkpoint

    from vaelab.system import tune_glibc_malloc

    if cfg.get("tune_malloc", True):
        tune_glibc_malloc()
    check_job(cfg, "eval")
    if cfg.get("artifact") is not None:
        wandb_cfg = (cfg.get("logger") or {}).get("wandb")  # the project and entity to look in, if W&B is selected
        cfg.ckpt = str(download_checkpoint_artifact(cfg.artifact, wandb_cfg, Path(cfg.paths.output_dir)))
    device = resolve_device(cfg.device)  # a bad name fails before anything is read
    suite = OmegaConf.to_container(cfg.metrics.suite)
    run_dir = Path(cfg.paths.output_dir)
    started = time.perf_counter()
    group = None
    if cfg.ckpt is not None:
        checkpoint = load_checkpoint(cfg.ckpt, trust=bool(cfg.get("trust_checkpoint", False)))
        dataset, model = dataset_and_model_from_checkpoint(checkpoint, cfg.get("dataset_path"))
        represent = encoder_representation(
            model, dataset, device, batch_size=cfg.encode_batch_size, precision=cfg.metrics.encode_precision
        )
        source = {"ckpt": str(Path(cfg.ckpt).resolve()), "global_step": checkpoint.get("global_step")}
        trained_by = checkpoint["vaelab_config"].get("wandb") or {}
        group = trained_by.get("group")
        if cfg.get("artifact") is not None:
            source["checkpoint_artifact"] = cfg.artifact
        elif trained_by.get("id"):  # the artifact this checkpoint is, if its run logged it (logger.wandb.log_model)
            source["checkpoint_artifact"] = artifact_path(trained_by, source["global_step"])
    else:
        dataset, represent = load_codes_file(cfg.codes)
        source = {"codes": str(Path(cfg.codes).resolve())}

    encoded = (lambda: represent.num_encoded) if cfg.ckpt is not None else None  # a codes file encodes nothing
    tables = {}
    with SuiteProgress("metrics", list(suite), cfg.progress.every_s, on_terminal(), encoded) as progress:
        scores = metrics.evaluate(dataset, represent, suite, seed=cfg.metrics.seed, progress=progress, tables=tables)
    scores["metrics/seconds"] = time.perf_counter() - started
    log.info("metrics done in %.1f s: %s", scores["metrics/seconds"], progress.timings())

    _, loggers = build_loggers(cfg.get("logger"), run_dir, group=group)
    config = {**OmegaConf.to_container(cfg, resolve=True), **source}
    exit_code = 1
    try:
        step = source.get("global_step") or 0
        for logger in loggers:
            logger.log_hyperparams({k: v for k, v in config.items() if k not in ("paths", "logger")})
            logger.log_metrics(scores, step=step)
        if "checkpoint_artifact" in source:
            for logger in run_loggers(loggers):
                logger.link_checkpoint(source["checkpoint_artifact"])
        save_and_log_tables(tables, run_dir, step, loggers)
        if cfg.ckpt is not None and cfg.images.num_images > 0:
            save_pictures(checkpoint, dataset, model, cfg.images, run_dir / "images", step, loggers)
        exit_code = 0
    finally:
        finish_run(loggers, exit_code)
    print_table(scores)
    print(json.dumps(scores))
    return scores


def artifact_path(trained_by: dict[str, Any], step: int) -> str:
    """``[entity/]project/model-<run id>:step-<N>``: the model artifact version of a checkpoint
    written at step N by the W&B run ``trained_by`` (a checkpoint's ``vaelab_config.wandb``)."""
    from vaelab.loggers import checkpoint_artifact_name

    where = "/".join(part for part in (trained_by.get("entity"), trained_by.get("project")) if part)
    name = f"{checkpoint_artifact_name(trained_by['id'])}:step-{step}"
    return f"{where}/{name}" if where else name


def download_checkpoint_artifact(name: str, wandb_cfg, run_dir: Path) -> Path:
    """The .ckpt file of W&B model artifact ``name`` (``model-<run id>:latest``, ``step-<N>``, or
    with ``entity/project/`` first), downloaded into the eval run directory."""
    from vaelab.loggers import resolve_wandb_mode

    wandb_cfg = wandb_cfg or {}
    mode = resolve_wandb_mode(wandb_cfg.get("mode", "auto"))
    if mode != "online":
        raise UserError(f"artifact={name}: W&B is {mode} here, and artifacts come from the W&B server; "
                        "log in (wandb login) or give ckpt=PATH")  # fmt: skip
    import wandb

    if name.count("/") == 0:  # like the training run: logger.wandb's project (and entity)
        name = "/".join(part for part in (wandb_cfg.get("entity"), wandb_cfg.get("project", "vaelab"), name) if part)
    try:
        directory = Path(wandb.Api().artifact(name, type="model").download(root=str(run_dir / "artifact")))
    except Exception as error:  # noqa: BLE001 - any failure to fetch is reported in one line
        raise UserError(f"artifact={name}: cannot be fetched from W&B ({type(error).__name__}: {error})") from error
    checkpoints = sorted(directory.glob("*.ckpt"))
    if not checkpoints:
        raise UserError(f"artifact={name}: holds no .ckpt file")
    return checkpoints[0]


def save_pictures(checkpoint, dataset, model, images_cfg, directory: Path, step: int, loggers) -> None:
    """The training run's pictures (same validation images) for the checkpoint's weights."""
    from vaelab.data.stream import GroundTruthDataModule
    from vaelab.images import model_pictures, save_and_log

    from vaelab.system import check_fits_in_memory

    # Pictures are of single images: the pairs a weakly-supervised run trained on play no part.
    settings = {k: v for k, v in checkpoint["vaelab_config"].get("data", {}).items() if k != "pairs"}
    data = GroundTruthDataModule(dataset, **settings)
    # The pictures' images are the first of the validation set, rendered whole: a size stored in
    # a checkpoint from elsewhere must fit like the training run's own did.
    check_fits_in_memory("the checkpoint's data.val_size", data.val_size, dataset.image_shape, "its validation set", "cpu")
    parameter = next(model.parameters())
    images = data.val_images[: images_cfg.num_images].to(device=parameter.device, dtype=parameter.dtype)
    pictures = model_pictures(model, images, images_cfg.steps, images_cfg.extent)
    paths = save_and_log(pictures, directory, step, loggers)
    log.info("pictures: %s", ", ".join(str(path) for path in paths.values()))


def print_table(scores: dict[str, float]) -> None:
    """The scores as a table on stderr (stdout carries the JSON for scripts)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="vaelab eval", show_lines=False)
    table.add_column("score")
    table.add_column("value", justify="right")
    for key, value in scores.items():
        table.add_row(key.removeprefix("metrics/"), f"{value:.4f}")
    Console(file=sys.stderr).print(table)
