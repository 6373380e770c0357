"""The callbacks group: vaelab's callbacks by default, Lightning's added from the command line."""

from __future__ import annotations

import json

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
