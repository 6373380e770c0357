"""`trainer=ddp` through the real CLI on CPU (gloo, 2 processes), alone and inside a multirun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import call_vaelab, run_vaelab
from tests.wandb_offline import read_offline_run

pytestmark = pytest.mark.slow

SHORT = (
    "trainer.max_steps=6", "trainer.val_check_interval=3", "trainer.log_every_n_steps=1", "data.val_size=64",
    "information.num_samples=0", "images.num_images=0",
)  # fmt: skip


def _state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


def _final(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_two_processes_of_32_train_like_one_of_64(tmp_path, monkeypatch, capfd):
    """Each rank trains on its slice of the step's global batch and of its noise, the objective
    sees the gathered global batch, and DDP averages the gradients: the parameters match the
    single-process run to float rounding. FactorVAE is the hardest case: batch-level terms (its
    shuffle of the codes) and parameters of its own (the discriminator, on every rank)."""
    objective = ("objective=factorvae", "objective.discriminator_hidden=32")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    result = call_vaelab("train", *SHORT, *objective, "data.batch_size=64", "metrics=none", f"hydra.run.dir={single}", **cli)
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_vaelab(
        "train", *SHORT, *objective, "trainer=ddp", "trainer.devices=2", "data.batch_size=32",
        "metrics=none", "metrics@periodic_metrics=mig", "periodic_metrics.every_n_steps=3",
        "periodic_metrics.suite.mig.num_train=500", f"hydra.run.dir={ddp}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    expected, got = _state(single), _state(ddp)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5, msg=key)
    one, two = _final(single), _final(ddp)
    assert two["status"] == "success"
    # Logged figures are global-batch means (train) and whole-validation-set means (val).
    for key in ("train/loss", "train/kl_conditional", "val/loss", "val/reconstruction"):
        assert two["final"][key] == pytest.approx(one["final"][key], rel=1e-4), key

    # Metrics run once, on rank 0 (steps 3 and 6), and rank 0 alone logs: one W&B run.
    assert "metrics/mig" in two["final"]
    assert (ddp / "train.log").read_text().count("step 3: mig=") == 1
    assert "mig=" not in (ddp / "train_rank1.log").read_text()
    (wandb_run,) = (ddp / "wandb").glob("offline-run-*")
    run = read_offline_run(wandb_run)
    assert run.exit_code == 0 and run.config["trainer"]["strategy"] == "ddp"


def test_ddp_inside_a_multirun_runs_each_job_once(tmp_path):
    """Lightning re-launches workers with the command line; a worker must run its own job,
    not the whole sweep, and each job must get fresh workers and its own W&B run."""
    result = run_vaelab(
        "train", "-m", "beta=1,2", "trainer=ddp", *SHORT, "data.batch_size=16", "metrics=none",
        "hydra.sweep.dir=sweep", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(path for path in (tmp_path / "sweep").iterdir() if path.is_dir() and path.name[0].isdigit())
    assert [run.name.split("_")[0] for run in runs] == ["0", "1"]
    for run_dir, beta in zip(runs, (1, 2)):
        assert _final(run_dir)["status"] == "success"
        assert _final(run_dir)["final"]["train/beta_effective"] == beta
        assert (run_dir / "train_rank1.log").is_file()
        (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
        assert read_offline_run(wandb_run).config["beta"] == beta
    assert not (tmp_path / "outputs").exists()  # no worker started a run of its own
