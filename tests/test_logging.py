"""Figures are never lost: metrics.json gets everything, whatever W&B does."""

from __future__ import annotations

import json

import torch

from tests.conftest import compose_train

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
    train(compose_train([*TINY_RUN, "logger=wandb", "logger.tags=[test]"], tmp_path))

    assert len(calls) == 1  # tried, failed, said so once, then left alone
    assert sum("W&B failed (ConnectionError: W&B went away)" in r.getMessage() for r in caplog.records) == 1
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 20
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [entry["step"] for entry in metrics["history"] if "train/loss" in entry] == [4, 9, 14, 19]
    assert {"train/loss", "val/loss", "train/beta_effective"} <= metrics["final"].keys()


def test_wandb_that_cannot_start_leaves_training_running(tmp_path, monkeypatch, caplog):
    from vaelab.train import train

    monkeypatch.setenv("WANDB_MODE", "not-a-mode")  # wandb.init rejects it
    train(compose_train([*TINY_RUN, "logger=wandb", "logger.tags=[test]"], tmp_path))
    assert any("W&B could not start" in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / "metrics.json").read_text())["final"]["train/beta_effective"] == 1.0


def test_diverging_run_stops_with_one_line_and_keeps_a_finite_checkpoint(tmp_path, monkeypatch, capfd):
    from tests.conftest import call_vaelab
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
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
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
        train(compose_train([*TINY_RUN, "logger=wandb", "checkpoint.every_n_steps=10", f"logger.log_model={log_model}"], run_dir))
        (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
        artifacts = read_offline_run(wandb_dir).artifacts
        if log_model == "all":  # step 10's file as it was then, and the final one
            assert [(a["aliases"], a["metadata"]["global_step"]) for a in artifacts] == [
                ({"latest", "step-10"}, 10), ({"latest", "step-20"}, 20)
            ]  # fmt: skip
        else:
            assert artifacts == []
