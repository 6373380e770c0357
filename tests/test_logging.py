"""Figures are never lost: the metrics files get everything, whatever W&B does; the loggers combine."""

from __future__ import annotations

import json

import torch

from tests.conftest import call_vaelab, compose_train
from vaelab.runfiles import read_history

TINY_RUN = [
    "model=mlp", "model.hidden=[32]", "data.val_size=64", "metrics=none", "information.num_samples=0",
    "trainer.max_steps=20", "trainer.log_every_n_steps=5", "trainer.val_check_interval=10",
]  # fmt: skip


def test_wandb_failing_mid_run_neither_stops_training_nor_loses_figures(tmp_path, monkeypatch, caplog):
    import wandb.sdk.wandb_run

    from vaelab.train import train

    calls = []

    def broken_log(self, *args, **kwargs):
        calls.append(args)
        raise ConnectionError("W&B went away")

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", broken_log)
    # tags are given here because the compose API has no ${hydra:runtime.choices}
    train(compose_train([*TINY_RUN, "logger=wandb", "logger.wandb.tags=[test]"], tmp_path))

    assert len(calls) == 1  # tried, failed, said so once, then left alone
    assert sum("W&B failed (ConnectionError: W&B went away)" in r.getMessage() for r in caplog.records) == 1
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 20
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [entry["step"] for entry in read_history(tmp_path) if "train/loss" in entry] == [4, 9, 14, 19]
    assert {"train/loss", "val/loss"} <= metrics["final"].keys()


def test_wandb_that_cannot_start_leaves_training_running(tmp_path, monkeypatch, caplog):
    from vaelab.train import train

    monkeypatch.setenv("WANDB_MODE", "not-a-mode")  # wandb.init rejects it
    train(compose_train([*TINY_RUN, "logger=wandb", "logger.wandb.tags=[test]"], tmp_path))
    assert any("W&B could not start" in r.getMessage() for r in caplog.records)
    assert "train/loss" in json.loads((tmp_path / "metrics.json").read_text())["final"]


def test_diverging_run_stops_with_one_line_and_keeps_a_finite_checkpoint(tmp_path, monkeypatch, capfd):
    from tests.wandb_offline import read_offline_run

    run_dir = tmp_path / "run"
    # lr 1e30: the first Adam step leaves finite but enormous weights; the next loss is NaN.
    result = call_vaelab(
        "train", "experiment=quick", "optimizer.lr=1e30", "checkpoint.every_n_steps=1", "metrics=none",
        "information.num_samples=0", f"hydra.run.dir={run_dir}", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert result.returncode == 1
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("vaelab: error:")]
    assert "non-finite value at step 1" in error and "train/loss=nan" in error
    assert "Traceback" not in result.stderr
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 1
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())
    (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
    assert read_offline_run(wandb_dir).exit_code == 1  # the W&B run is marked failed
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"


def test_skip_mode_skips_and_counts_non_finite_steps(tmp_path):
    from vaelab.train import train

    cfg = compose_train([*TINY_RUN, "logger=none", "optimizer.lr=1e30", "on_non_finite=skip"], tmp_path)
    train(cfg)
    final = json.loads((tmp_path / "metrics.json").read_text())["final"]
    assert final["train/skipped_steps"] >= 1
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 20
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())


def test_periodic_suite_during_training_and_the_final_suite_once_at_the_end(tmp_path, caplog):
    """periodic_metrics every n steps; metrics (the full suite by default) at the end only,
    also when the last step falls on the periodic schedule."""
    from vaelab.train import train

    small_fast = [
        "metrics=fast", "metrics.suite.mig.num_train=300", "metrics.suite.factor_vae.num_train=50",
        "metrics.suite.factor_vae.num_eval=50", "metrics.suite.factor_vae.num_variance_estimate=300",
        "metrics.suite.modularity_explicitness.num_train=300", "metrics.suite.modularity_explicitness.num_test=100",
    ]  # fmt: skip
    periodic_mig = ["metrics@periodic_metrics=mig", "periodic_metrics.suite.mig.num_train=300", "periodic_metrics.every_n_steps=5"]
    cfg = compose_train([*TINY_RUN, "logger=none", *small_fast, *periodic_mig], tmp_path)
    with caplog.at_level("INFO", logger="vaelab"):
        train(cfg)
    history = read_history(tmp_path)
    evaluated = {entry["step"]: entry for entry in history if "metrics/mig" in entry}
    assert sorted(evaluated) == [5, 10, 15, 20]
    assert all("metrics/factor_vae" not in evaluated[step] for step in (5, 10, 15))
    assert "metrics/factor_vae" in evaluated[20]  # the final suite, not the periodic one
    assert sum("step 20: mig=" in message for message in caplog.messages) == 1


def test_log_model_all_logs_every_checkpoint_and_false_none(tmp_path):
    from tests.wandb_offline import read_offline_run
    from vaelab.train import train

    for log_model in ("all", "false"):
        run_dir = tmp_path / log_model
        train(compose_train([*TINY_RUN, "logger=wandb", "checkpoint.every_n_steps=10", f"logger.wandb.log_model={log_model}"], run_dir))
        (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
        artifacts = read_offline_run(wandb_dir).artifacts
        if log_model == "all":  # step 10's file as it was then, and the final one
            assert [(a["aliases"], a["metadata"]["global_step"]) for a in artifacts] == [
                ({"latest", "step-10"}, 10), ({"latest", "step-20"}, 20)
            ]  # fmt: skip
        else:
            assert artifacts == []


def test_several_loggers_at_once_each_write_their_files(tmp_path):
    """logger=[wandb,csv]: each conf/logger/<name>.yaml under logger.<name>, every one instantiated."""
    import csv

    from tests.wandb_offline import read_offline_run
    from vaelab.train import train

    train(compose_train([*TINY_RUN, "logger=[wandb,csv]", "logger.wandb.tags=[test]", "logger.csv.name=table"], tmp_path))
    (wandb_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    run = read_offline_run(wandb_dir)
    assert run.exit_code == 0 and run.summary["status"] == "success"
    assert [entry["trainer/global_step"] for entry in run.history if "train/loss" in entry] == [4, 9, 14, 19]
    rows = list(csv.DictReader(open(tmp_path / "table" / "version_0" / "metrics.csv")))
    assert [int(row["step"]) for row in rows if row.get("train/loss")] == [4, 9, 14, 19]
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "success"


def test_a_logger_setting_outside_its_logger_is_one_line(tmp_path, monkeypatch, capfd):
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    for override, message in (
        ("logger.project=mine", "logger.project: each logger's settings are under its name: logger.wandb.project=…"),
        ("+logger.project=mine", "logger.project: not a logger; each logger's settings are under its name (logger.wandb.project=…)"),
    ):  # fmt: skip
        result = call_vaelab("train", *TINY_RUN, override, "hydra.run.dir=run", **cli)
        assert result.returncode == 2, result.stderr[-2000:]
        assert [line for line in result.stderr.splitlines() if "error" in line] == [f"vaelab: error: {message}"]
        assert not (tmp_path / "run" / "metrics.json").exists()


def test_logging_writes_a_bounded_number_of_bytes_per_call_however_long_the_run(tmp_path):
    """metrics.json (status, objective, last values) is rewritten and the history appended to:
    the bytes a call writes depend on its figures, not on how many steps came before."""
    import random

    from vaelab.errors import RunStatus
    from vaelab.loggers import MetricsFileLogger

    rng = random.Random(0)
    logger = MetricsFileLogger(tmp_path, objective={"name": "betavae"})
    keys = [f"train/term_{k}" for k in range(10)]
    written = []
    for step in range(5000):
        before = (tmp_path / "metrics_history.jsonl").stat().st_size if step else 0
        logger.log_metrics({key: rng.random() for key in keys}, step=step)
        appended = (tmp_path / "metrics_history.jsonl").stat().st_size - before
        written.append(appended + (tmp_path / "metrics.json").stat().st_size)
    logger.end(RunStatus.SUCCESS)
    # The last hundred calls write what the first hundred did (give or take digits), never more.
    assert max(written[-100:]) <= max(written[:100]) + 16
    history = read_history(tmp_path)
    assert len(history) == 5000 and history[-1]["step"] == 4999
    assert json.loads((tmp_path / "metrics.json").read_text())["final"] == {k: history[-1][k] for k in keys}
    # A new run in the same directory (no resume=) starts its own history; a resumed one keeps
    # the lines up to its checkpoint.
    MetricsFileLogger(tmp_path).log_metrics({"val/loss": 1.0}, step=7)
    assert read_history(tmp_path) == [{"step": 7, "val/loss": 1.0}]
    MetricsFileLogger(tmp_path, resume_step=7).log_metrics({"val/loss": 2.0}, step=8)
    assert read_history(tmp_path) == [{"step": 7, "val/loss": 1.0}, {"step": 8, "val/loss": 2.0}]


def test_the_wandb_config_records_the_dataset_size_an_objective_uses_and_none_it_does_not(tmp_path):
    from vaelab import objectives
    from vaelab.train import logged_config, run_config

    for overrides, expected in (
        (["objective=infomax_native"], 737280), (["objective=betatcvae"], 737280),
        (["objective=infomax", "lambda=3"], None), (["objective=betavae"], None),
    ):  # fmt: skip
        cfg = compose_train(overrides, tmp_path)
        objective = objectives.build(cfg, dataset_size=737280)
        logged = logged_config(cfg, run_config(cfg, objective, objective.describe()), objective)
        assert logged["objective"].get("dataset_size") == expected, overrides


def test_a_notebook_loads_a_checkpoint_without_hydra_and_encodes_as_the_run_did(tmp_path, monkeypatch):
    """VAEModule.load_from_checkpoint(path), as a notebook calls it: no Hydra context, not in the
    run directory; the module is in eval mode and encodes as the trained one did at the end."""
    import pytorch_lightning as pl
    from hydra.core.hydra_config import HydraConfig

    from vaelab.module import dataset_and_model_from_checkpoint
    from vaelab.module import VAEModule
    from vaelab.train import train

    class EncodeAtTheEnd(pl.Callback):
        def on_train_end(self, trainer, pl_module):
            self.images = trainer.datamodule.val_images[:16]
            self.codes = pl_module.encode_means(self.images)

    seen = EncodeAtTheEnd()
    run_dir = tmp_path / "run"
    train(compose_train([*TINY_RUN, "logger=none", "objective=factorvae"], run_dir), extra_callbacks=[seen])
    elsewhere = tmp_path / "notebook"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert not HydraConfig.initialized()

    module = VAEModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert not module.training and not module.model.training
    assert type(module.objective).__name__ == "FactorVAE"  # its discriminator's weights loaded too
    codes = module.encode_means(seen.images)
    assert codes.shape == (16, 10) and torch.equal(codes, seen.codes)
    # `vaelab eval`'s model of the same checkpoint encodes the same.
    _, model = dataset_and_model_from_checkpoint(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False))
    with torch.no_grad():
        assert torch.equal(model.encode(seen.images)[0], codes)


def test_run_loggers_share_one_interface_and_the_wandb_adapter_finds_what_it_reads(tmp_path, monkeypatch):
    """The run files, W&B and CSV are told vaelab's events through one interface (RunLogger);
    a Lightning logger vaelab does not adapt gets scalars and config only. GuardedWandbLogger
    is the one place that reads Lightning's and W&B's private attributes: if a new Lightning or
    W&B renames them, this fails here rather than in a user's run."""
    from pytorch_lightning.loggers import CSVLogger

    from vaelab.errors import RunStatus
    from vaelab.loggers import CsvLogger, GuardedWandbLogger, MetricsFileLogger, run_loggers, wandb_logger

    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    files, csv, plain = MetricsFileLogger(tmp_path), CsvLogger(save_dir=tmp_path), CSVLogger(save_dir=tmp_path)
    wandb = wandb_logger(save_dir=str(tmp_path), project="vaelab-test", log_model=False)
    assert isinstance(wandb, GuardedWandbLogger)
    assert run_loggers([files, csv, plain, wandb]) == [files, csv, wandb]
    for private in ("_experiment", "_log_model", "_wandb_init"):
        assert hasattr(wandb, private), f"WandbLogger.{private} is gone: update GuardedWandbLogger"
    identity = wandb.identity()
    assert identity["id"] == wandb.experiment.id and identity["project"] == "vaelab-test"
    assert files.identity() is None and csv.identity() is None
    picture = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (4, 4)).save(picture)
    for logger in run_loggers([files, csv, wandb]):
        logger.log_picture("images/p", picture, step=1)
        logger.log_score_table("tables/t", ["factor", "mig"], [["shape", 0.5]], step=1)
    from vaelab.loggers import finish_run

    finish_run([files, csv, plain, wandb], exit_code=0)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == RunStatus.SUCCESS.value
    from tests.wandb_offline import read_offline_run

    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    logged = read_offline_run(run_dir)
    assert logged.exit_code == 0 and logged.summary["status"] == "success"
    assert {"images/p/_type", "tables/t/_type"} <= set().union(*(entry.keys() for entry in logged.history))
