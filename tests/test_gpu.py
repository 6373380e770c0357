"""On a CUDA GPU (skipped without one; benchmarks/gpu_check.sh runs these where there is one):
the CLI end to end, a step that never synchronises, and the device paths the CPU cannot take."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from tests.conftest import compose_train, run_vaelab

pytestmark = pytest.mark.gpu

QUICK = [
    "trainer.accelerator=cuda", "logger=none", "metrics@periodic_metrics=none", "information.num_samples=1000",
    "trainer.val_check_interval=100", "checkpoint.every_n_steps=100",
]  # fmt: skip


@pytest.mark.slow
def test_train_resume_and_eval_with_the_full_suite_end_to_end_on_the_gpu(tmp_path):
    run_dir = tmp_path / "run"
    trained = run_vaelab("train", *QUICK, "trainer.max_steps=200", "metrics=none", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert checkpoint["global_step"] == 200
    assert checkpoint["vaelab_config"]["trainer"]["accelerator"] == "cuda"
    resumed = run_vaelab("train", *QUICK, "trainer.max_steps=300", "metrics=none", "resume=auto", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")["global_step"] == 300
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["status"] == "success" and np.isfinite(final["final"]["val/loss"])
    evaluated = run_vaelab("eval", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", "device=cuda", "metrics=full",
                           "logger=none", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    scores = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert {"metrics/mig", "metrics/dci_disentanglement", "metrics/factor_vae"} <= scores.keys()


class NoSyncBetweenLogs(pl.Callback):
    """CUDA's own check: any synchronisation on a step that writes nothing raises (debug mode 2)."""

    def __init__(self) -> None:
        self.quiet_steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        torch.cuda.set_sync_debug_mode(0)
        step, every = trainer.global_step, trainer.log_every_n_steps
        if 0 < step < trainer.max_steps and (step + 1) % every and step % every:
            torch.cuda.set_sync_debug_mode(2)  # "error"
            self.quiet_steps += 1

    def on_validation_start(self, trainer, pl_module) -> None:
        torch.cuda.set_sync_debug_mode(0)

    def on_train_end(self, trainer, pl_module) -> None:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("objective", ["betavae", "factorvae", "adagvae"])
def test_steps_that_write_nothing_never_synchronise_with_the_gpu(tmp_path, objective):
    from vaelab.train import train

    watch = NoSyncBetweenLogs()
    run = [*QUICK, f"objective={objective}", "metrics=none", "information.num_samples=0", "images.num_images=0",
           "trainer.max_steps=40", "trainer.log_every_n_steps=10", "trainer.val_check_interval=20", "checkpoint.every_n_steps=20"]  # fmt: skip
    try:
        train(compose_train(run, tmp_path), extra_callbacks=[watch])
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert watch.quiet_steps == 32  # steps 1-39 but 10, 20, 30 and the logging steps 9, 19, 29, 39


def test_factorvae_shuffles_each_dimension_on_the_gpu_repeatably():
    from vaelab.objectives.factorvae import FactorVAE, shuffle_dimensions

    objective = FactorVAE(gamma=10.0, latent_dim=6)
    z = torch.arange(64 * 6, dtype=torch.float32, device="cuda").reshape(64, 6)
    shuffled = shuffle_dimensions(z, objective._generator(5, z.device))
    assert shuffled.device == z.device
    assert torch.equal(shuffled.sort(dim=0).values, z)  # every column a permutation of its own values
    assert not torch.equal(shuffled, z)
    assert torch.equal(shuffled, shuffle_dimensions(z, objective._generator(5, z.device)))  # (seed, step) decides


def test_the_compiled_step_trains_like_the_eager_one_on_the_gpu(tmp_path):
    from vaelab.train import train

    states = {}
    for setting in ("false", "true"):
        run = [*QUICK, "model=mlp", "metrics=none", "information.num_samples=0", "images.num_images=0",
               "trainer.max_steps=8", f"trainer.compile={setting}"]  # fmt: skip
        train(compose_train(run, tmp_path / setting))
        states[setting] = torch.load(tmp_path / setting / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for key, value in states["false"].items():
        torch.testing.assert_close(states["true"][key], value, rtol=1e-4, atol=1e-5)


def test_auto_precision_and_devices_on_this_gpu():
    from vaelab.device import native_bf16, resolve_device, resolve_training_precision

    gpu = resolve_device("auto")
    assert gpu.type == "cuda" and resolve_device("cuda:0") == torch.device("cuda", 0)
    expected = "bf16-mixed" if torch.cuda.get_device_capability(gpu) >= (8, 0) else "32-true"
    assert native_bf16(gpu) == (expected == "bf16-mixed")
    assert resolve_training_precision("auto", gpu) == expected
