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


def test_ddp_jobs_of_a_multirun_train_like_one_process_of_the_global_batch(tmp_path, monkeypatch, capfd):
    """Two processes of 32 train like one of 64: each rank trains on its slice of the step's
    global batch and of its noise, the objective sees the gathered global batch, and DDP
    averages the gradients, so the parameters match the single-process run to float
    rounding. FactorVAE is the hardest case: batch-level terms (its shuffle of the codes) and
    parameters of its own (the discriminator, on every rank).

    Inside a multirun: Lightning re-launches workers with the command line; a worker must run
    its own job, not the whole sweep, and each job must get fresh workers (a stale one would
    train the other seed) and its own W&B run."""
    # Adam's eps at 1e-3, not 1e-8: in the first steps the encoder's gradients are near zero (the
    # model is on dSprites' all-background plateau), and Adam scales any gradient, round-off
    # included, to a step of lr. The conv kernels of batch 32 and of batch 64 round differently
    # (on AVX-512 CPUs enough to flip such gradients' signs), so the comparison would measure
    # that round-off, not DDP. At 1e-3 every weight still moves about 1e-3, 1,000 times the tolerance.
    objective = ("objective=factorvae", "objective.discriminator_hidden=32", "optimizer.eps=1e-3")
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    result = run_vaelab(
        "train", "-m", "seed=0,1", *SHORT, *objective, "trainer=ddp", "trainer.devices=2", "data.batch_size=32",
        "metrics=none", "metrics@periodic_metrics=mig", "periodic_metrics.every_n_steps=3",
        "periodic_metrics.suite.mig.num_train=500", "hydra.sweep.dir=sweep", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(path for path in (tmp_path / "sweep").iterdir() if path.is_dir() and path.name[0].isdigit())
    assert [job.name.split("_")[0] for job in jobs] == ["0", "1"]
    assert not (tmp_path / "outputs").exists()  # no worker started a run of its own

    for seed, ddp in enumerate(jobs):
        single = tmp_path / f"single-{seed}"
        result = call_vaelab(
            "train", *SHORT, *objective, f"seed={seed}", "data.batch_size=64", "metrics=none", "logger=none",
            f"hydra.run.dir={single}", **cli,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        expected, got = _state(single), _state(ddp)
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5, msg=f"seed {seed}: {key}")
        one, two = _final(single), _final(ddp)
        assert two["status"] == "success"
        # Logged figures are global-batch means (train) and whole-validation-set means (val).
        for key in ("train/loss", "train/kl_conditional", "val/loss", "val/reconstruction"):
            assert two["final"][key] == pytest.approx(one["final"][key], rel=5e-4), (seed, key)

        # Metrics run once, on rank 0 (steps 3 and 6), and rank 0 alone logs: one W&B run per job.
        assert "metrics/mig" in two["final"]
        assert (ddp / "train.log").read_text().count("step 3: mig=") == 1
        assert "mig=" not in (ddp / "train_rank1.log").read_text()
        (wandb_run,) = (ddp / "wandb").glob("offline-run-*")
        run = read_offline_run(wandb_run)
        assert run.exit_code == 0 and run.config["trainer"]["strategy"] == "ddp" and run.config["seed"] == seed
