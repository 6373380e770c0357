"""The callbacks group: vaelab's callbacks by default, Lightning's added from the command line."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import hydra.utils
import torch

from tests.conftest import compose_train
from tests.test_logging import TINY_RUN
from vaelab.callbacks import (
    DisentanglementEvaluation,
    ImageLogging,
    InformationEvaluation,
    InterruptCheckpoint,
    PeriodicCheckpoint,
    RunProgress,
)


def test_default_callbacks_are_vaelabs_set_by_the_keys_users_type(tmp_path):
    cfg = compose_train(["checkpoint.every_n_steps=7", "periodic_metrics.every_n_steps=30", "images.num_images=3"], tmp_path)
    callbacks = [hydra.utils.instantiate(spec, _convert_="all") for spec in cfg.callbacks.values()]
    assert [type(callback) for callback in callbacks] == [
        InterruptCheckpoint, PeriodicCheckpoint, DisentanglementEvaluation, DisentanglementEvaluation,
        InformationEvaluation, ImageLogging,
    ]  # fmt: skip
    interrupt, periodic, final, during, information, images = callbacks
    assert interrupt.path == periodic.path == f"{tmp_path}/checkpoints/last.ckpt"
    assert periodic.every_n_steps == 7
    assert (final.every_n_steps, final.at_end) == (None, True) and "beta_vae" in final.suite  # metrics=full
    assert (during.every_n_steps, during.at_end) == (30, False) and "beta_vae" not in during.suite  # fast
    assert information.every_n_steps == images.every_n_steps == 30 and images.num_images == 3


def test_lightning_callbacks_join_from_the_command_line(tmp_path):
    from vaelab.train import train

    overrides = [
        *TINY_RUN, "logger=none", "trainer.max_steps=40",
        "callbacks=[default,early_stopping,model_checkpoint,lr_monitor]",
        # Patience 1 and a huge min_delta: the second validation (step 20) stops the run.
        "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=1e9",
    ]  # fmt: skip
    train(compose_train(overrides, tmp_path))
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 20
    (best,) = (tmp_path / "checkpoints").glob("best-step*.ckpt")
    assert best.name in ("best-step10.ckpt", "best-step20.ckpt")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "success" and metrics["final"]["lr-Adam"] == 5e-4


def test_run_eta_counts_the_steps_left_and_every_scheduled_evaluation():
    """ETA = steps left x seconds a step + each evaluation still to come x its last time; an
    evaluation that has not run yet (the final suite) is named, not guessed."""
    final = DisentanglementEvaluation({"mig": {}}, every_n_steps=None, at_end=True)
    periodic = DisentanglementEvaluation({"mig": {}}, every_n_steps=10, at_end=False)
    information = InformationEvaluation(every_n_steps=10)
    trainer = SimpleNamespace(global_step=25, max_steps=50, callbacks=[final, periodic, information])
    periodic.on_fit_start(trainer, None)  # the final suite owns step 50: the periodic one skips it
    periodic.seconds_per_evaluation, information.seconds_per_evaluation = 2.0, 1.0
    # steps 30, 40 for the periodic suite; 30, 40, 50 for information; 25 steps at 0.4 s.
    assert (periodic.upcoming_evaluations(25, 50), information.upcoming_evaluations(25, 50)) == (2, 3)
    assert RunProgress().remaining(trainer, 0.4) == "17 s + final metrics"
    final.seconds_per_evaluation = 60.0
    assert RunProgress().remaining(trainer, 0.4) == "1 min 17 s"
    final.last_evaluated_step, trainer.global_step = 50, 50  # the end: nothing left
    information.last_evaluated_step = 50
    assert RunProgress().remaining(trainer, 0.4) == "0 s"


def test_training_off_a_terminal_writes_step_rate_and_eta_lines(tmp_path, caplog):
    from vaelab.train import train

    caplog.set_level(logging.INFO, logger="vaelab")
    overrides = [*TINY_RUN, "logger=none", "trainer.max_steps=60", "progress.every_s=0.001",
                 "trainer.enable_progress_bar=false", "metrics=mig", "metrics.suite.mig.num_train=500"]  # fmt: skip
    train(compose_train(overrides, tmp_path))
    lines = [record.getMessage() for record in caplog.records if "steps/s, ETA" in record.getMessage()]
    assert len(lines) > 10  # one a step at this cadence
    assert lines[0].startswith("step 2/60 (3%), ") and lines[-1].startswith("step 60/60 (100%), ")
    # Until the end the final suite has never run: the ETA says it comes on top.
    assert all(line.endswith(" + final metrics") for line in lines)
