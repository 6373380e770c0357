"""A run killed with SIGKILL and resumed ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, WANDB_DIR_VARS, call_vaelab
from tests.wandb_offline import read_offline_run

pytestmark = pytest.mark.slow

RUN = (
    "data.batch_size=32", "data.val_size=64", "trainer.max_steps=60", "trainer.val_check_interval=20",
    "trainer.log_every_n_steps=10", "checkpoint.every_n_steps=20", "metrics=mig",
    "metrics.suite.mig.num_train=500", "metrics@periodic_metrics=mig", "periodic_metrics.every_n_steps=20",
    "periodic_metrics.suite.mig.num_train=500", "information.num_samples=200",
    # One thread each: the tests run two of these at once, and two processes of two OpenMP
    # threads on a 2-core machine spin against each other (and the resumed run must use the
    # same thread count as the run it reproduces, bit for bit).
    "num_threads=1",
)  # fmt: skip


def _history(run_dir: Path) -> list[dict]:
    from vaelab.runfiles import read_history

    return read_history(run_dir)


def _without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if not k.endswith("seconds")} for entry in history]


def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, capfd):
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    env |= {var: str(tmp_path / ".wandb-home") for var in WANDB_DIR_VARS}
    process = subprocess.Popen(
        [sys.executable, "-m", "vaelab", "train", *RUN, f"hydra.run.dir={killed}"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    process.stderr.close()
    # The uninterrupted run and the resumption run in this process: the same code path as a
    # fresh process (one thread, as RUN says), without its seconds of start-up.
    whole = call_vaelab("train", *RUN, f"hydra.run.dir={uninterrupted}", **cli)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed_at = torch.load(last, weights_only=False)["global_step"]
    assert killed_at in (20, 40)

    result = call_vaelab("train", *RUN, "resume=auto", f"hydra.run.dir={killed}", **cli)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"from step {killed_at}" in result.stderr

    expected = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=False)
    resumed = torch.load(last, weights_only=False)
    assert resumed["global_step"] == expected["global_step"] == 60
    for key, value in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key  # bit for bit
    # The same figures at the same steps: step k's checkpoint is written after step k-1's
    # train/ figures and step k's validation and evaluations are logged, so nothing is lost.
    assert _without_timings(_history(killed)) == _without_timings(_history(uninterrupted))
    resumed_history = {entry["step"]: entry for entry in _history(killed)}
    assert {20, 40, 60} <= {step for step, entry in resumed_history.items() if "metrics/mig" in entry}

    # W&B: the resumed run continues the killed run's id.
    run_ids = {path.name.rsplit("-", 1)[1] for path in (killed / "wandb").glob("offline-run-*")}
    assert len(run_ids) == 1 and len(list((killed / "wandb").glob("offline-run-*"))) == 2


def test_resume_refuses_a_checkpoint_from_another_model(tmp_path, monkeypatch, capfd):
    run_dir = tmp_path / "run"
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    first = call_vaelab(
        "train", "experiment=quick", "trainer.max_steps=5", "metrics=none", "information.num_samples=0",
        "logger=none", f"hydra.run.dir={run_dir}", **cli,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    again = call_vaelab(
        "train", "experiment=quick", "model.latent_dim=4", "logger=none", "resume=auto", f"hydra.run.dir={run_dir}", **cli
    )  # fmt: skip
    assert again.returncode == 2
    (error,) = [line for line in again.stderr.splitlines() if line.startswith("vaelab: error:")]
    assert "different model config" in error
    missing = call_vaelab("train", "logger=none", f"resume={tmp_path / 'nope.ckpt'}", **cli)
    assert missing.returncode == 2 and "resume=" in missing.stderr and "no such file" in missing.stderr


def test_sigint_and_sigterm_save_a_checkpoint_and_exit_130_143(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    env |= {var: str(tmp_path / ".wandb-home") for var in WANDB_DIR_VARS}
    signals = {signal.SIGINT: 130, signal.SIGTERM: 143}
    processes = {
        signum: subprocess.Popen(
            [sys.executable, "-m", "vaelab", "train", *RUN[:5], "num_threads=1", "checkpoint.every_n_steps=20", "metrics=none", "metrics@periodic_metrics=none",
             "trainer.max_steps=100000", "information.num_samples=0", f"hydra.run.dir={tmp_path / signum.name}"],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            # A test suite started in the background (`make test &`) inherits SIGINT ignored,
            # and Python then keeps ignoring it: give the run the disposition a terminal gives.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        for signum in signals
    }  # both at once: each is stopped by its own signal
    for signum, process in processes.items():
        last = tmp_path / signum.name / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 240
        while not last.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)  # now mid-way between two periodic checkpoints
        process.send_signal(signum)
    for signum, expected_code in signals.items():
        run_dir, process = tmp_path / signum.name, processes[signum]
        last = run_dir / "checkpoints" / "last.ckpt"
        stderr = process.communicate(timeout=120)[1]
        assert process.returncode == expected_code, stderr[-2000:]
        stopped_at = re.search(rf"{signum.name} at step (\d+): saved", stderr)
        assert stopped_at is not None and "Traceback" not in stderr, stderr[-2000:]
        # Written at the interrupt, at the step it names (usually past the periodic save at 20;
        # on a loaded machine the signal can arrive before step 21 begins).
        assert torch.load(last, weights_only=False)["global_step"] == int(stopped_at.group(1)) >= 20
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert _history(run_dir) and metrics["status"] == "interrupted"
        (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
        run = read_offline_run(wandb_dir)
        assert run.exit_code == expected_code and run.summary["status"] == "interrupted"


def test_a_save_that_dies_midway_leaves_the_previous_checkpoint_readable(tmp_path, monkeypatch):
    from tests.conftest import compose_train
    from vaelab.train import train

    real_save = torch.save
    saves = []

    def dying_save(obj, file, *args, **kwargs):
        saves.append(obj.get("global_step") if isinstance(obj, dict) else None)
        if len(saves) == 2:  # the second checkpoint: half the bytes, then the process "dies"
            real_save(obj, file, *args, **kwargs)
            if isinstance(file, (str, os.PathLike)):  # an implementation that writes in place
                Path(file).write_bytes(Path(file).read_bytes()[: Path(file).stat().st_size // 2])
            else:
                file.truncate(file.tell() // 2)
            raise RuntimeError("killed during the save")
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)
    cfg = compose_train(
        ["model=mlp", "model.hidden=[32]", "logger=none", "metrics=none", "information.num_samples=0",
         "data.val_size=64", "trainer.max_steps=20", "checkpoint.every_n_steps=5"],
        tmp_path,
    )  # fmt: skip
    try:
        train(cfg)
    except RuntimeError as error:
        assert "killed during the save" in str(error)
    else:
        raise AssertionError("the save did not die")
    monkeypatch.setattr(torch, "save", real_save)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saves[:2] == [5, 10] and checkpoint["global_step"] == 5  # the previous one, whole


