"""Sweeps through the launchers (optional extra vaelab[sweeps]): parallel jobs that do not
collide, one W&B run per job in one group, failures that leave the rest intact, compare."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import call_vaelab, run_vaelab
from tests.wandb_offline import read_offline_run

pytestmark = pytest.mark.slow

SHORT = (
    "trainer.max_steps=6", "trainer.val_check_interval=6", "data.batch_size=32", "data.val_size=64",
    "information.num_samples=0", "images.num_images=0", "num_threads=1",
    "metrics=mig", "metrics.suite.mig.num_train=300", "metrics@periodic_metrics=none",
)  # fmt: skip


def _job_dirs(sweep: Path) -> list[Path]:
    return sorted(path for path in sweep.iterdir() if path.is_dir() and path.name[0].isdigit())


def test_parallel_jobs_match_sequential_runs(tmp_path, monkeypatch, capfd):
    """Two seeds as two joblib jobs at once, one per core: each job's own dirs, W&B runs in
    one group, results identical to the same job run alone, and a row each in compare."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    result = run_vaelab(
        "train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "beta=4", "seed=0,1", *SHORT,
        "hydra.sweep.dir=sweep", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _job_dirs(tmp_path / "sweep")
    assert len(jobs) == 2

    runs = []
    for job in jobs:
        final = json.loads((job / "metrics.json").read_text())
        assert final["status"] == "success"
        (wandb_dir,) = (job / "wandb").glob("offline-run-*")  # each job its own W&B dir
        run = read_offline_run(wandb_dir)
        runs.append(run)
        assert run.exit_code == 0
        assert {"beta_effective", "objective_name", "seed"} <= set(run.config)
        # Final figures are the W&B summary too, so runs sort by them in the dashboard.
        assert run.summary["metrics/mig"] == pytest.approx(final["final"]["metrics/mig"])
    assert len({run.run_id for run in runs}) == 2
    assert len({run.group for run in runs}) == 1 and runs[0].group.endswith("sweep")
    assert sorted(run.name.split(",")[0] for run in runs) == ["beta=4", "beta=4"]

    # Nothing shared between parallel jobs: one of them, run alone, ends identically.
    alone = tmp_path / "alone"
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    result = call_vaelab("train", "beta=4", "seed=1", *SHORT, "logger=none", f"hydra.run.dir={alone}", **cli)
    assert result.returncode == 0, result.stderr[-3000:]
    configs = {job: OmegaConf.load(job / ".hydra" / "config.yaml") for job in jobs}
    (parallel,) = [job for job, config in configs.items() if config.beta == 4 and config.seed == 1]
    expected = torch.load(alone / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    got = torch.load(parallel / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for key, value in expected.items():
        assert torch.equal(got[key], value), key

    # One compare of the sweep and the lone run: to W&B, and without labels, UDR ranks the three
    # models from their checkpoints, each against the other runs of its beta (udr/) and against
    # every other run (udr_a2a/), and says how that ranking agrees with MIG's.
    result = call_vaelab("compare", "sweep", "alone", "--wandb", "--udr", **cli)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "sweep" / "compare.csv")))
    assert len(rows) == 3 and {row["status"] for row in rows} == {"success"}
    for row in rows:
        assert 0.0 <= float(row["udr/lasso"]) <= 1.0 and 0.0 <= float(row["udr_a2a/lasso"]) <= 1.0
    (compare_dir,) = (tmp_path / "sweep" / "wandb").glob("offline-run-*")
    compare_run = read_offline_run(compare_dir)
    assert compare_run.job_type == "compare" and compare_run.group == runs[0].group
    assert compare_run.summary["runs"] == 3
    assert "udr/lasso against metrics/mig: " in result.stdout  # a rank correlation, or why there is none


def test_a_failing_job_leaves_the_others_intact_submitit_local(tmp_path, monkeypatch, capfd):
    """The cluster code path (submitit), run locally, on the λ preset: one job fails, the
    other's results stay and compare lists the failure."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = run_vaelab(
        "train", "-m", "hydra/launcher=submitit_local", "experiment=sweep_lambda", "lambda=-0.75,-1", "seed=0", *SHORT,
        "logger=none", "hydra.sweep.dir=sweep", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert "lambda=-1: expected a number > -1" in result.stderr
    good, bad = _job_dirs(tmp_path / "sweep")
    assert json.loads((good / "metrics.json").read_text())["status"] == "success"
    assert (good / "checkpoints" / "last.ckpt").is_file()
    assert not (bad / "metrics.json").exists()

    result = call_vaelab("compare", "sweep", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {Path(row["run"]).name[0]: row for row in csv.DictReader(open(tmp_path / "sweep" / "compare.csv"))}
    assert {job: row["status"] for job, row in rows.items()} == {"0": "success", "1": "failed"}
    assert rows["0"]["objective"] == "infomax" and float(rows["0"]["beta_effective"]) == 4.0
    assert f"failed: {bad}" in result.stderr or "failed: " in result.stderr


def test_a_sweep_run_again_with_resume_auto_skips_finished_jobs_and_continues_the_rest(tmp_path, monkeypatch, capfd):
    """A long study cut short (a session's end, a kill): the same command with resume=auto and the
    same hydra.sweep.dir leaves finished jobs as they are and continues the unfinished one from
    its checkpoint (here, one killed while writing its final figures: metrics.json "running")."""
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    tiny = ("model=mlp", "model.hidden=[32]", "logger=none", *(arg for arg in SHORT if not arg.startswith("metrics")), "metrics=none")
    first = call_vaelab("train", "-m", "seed=0,1", *tiny, "hydra.sweep.dir=sweep", **cli)
    assert first.returncode == 0, first.stderr[-3000:]
    finished, cut_short = _job_dirs(tmp_path / "sweep")
    finished_checkpoint = (finished / "checkpoints" / "last.ckpt").read_bytes()
    metrics = json.loads((cut_short / "metrics.json").read_text())
    (cut_short / "metrics.json").write_text(json.dumps({**metrics, "status": "running"}))

    again = call_vaelab("train", "-m", "seed=0,1", *tiny, "resume=auto", "hydra.sweep.dir=sweep", **cli)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _job_dirs(tmp_path / "sweep") == [finished, cut_short]  # the same directories, no new ones
    assert f"{finished} finished at step 6 already: skipped (resume=auto)" in again.stderr
    assert (finished / "checkpoints" / "last.ckpt").read_bytes() == finished_checkpoint
    assert f"resuming {cut_short} from step 6" in again.stderr
    assert json.loads((cut_short / "metrics.json").read_text())["status"] == "success"
