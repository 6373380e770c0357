"""Shared fixtures: W&B kept offline and inside each test's tmp dir; CLI and config helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WANDB_DIR_VARS = ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR")


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs one worker per core), each worker keeps to its own
    share of the cores, as do the runs it starts: two workers' OpenMP threads on the same
    cores would spin against each other. A run in the worker and a run it starts then see
    the same cores, so tests that compare the two bit for bit (pictures redrawn by
    `vaelab eval`) compare runs of the same thread count, as in a plain `pytest`."""
    worker, workers = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not workers or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    index, count = int(worker.removeprefix("gw")), int(workers)
    if count > len(cores):
        return
    share = cores[index * len(cores) // count : (index + 1) * len(cores) // count]
    os.sched_setaffinity(0, share)
    import torch

    torch.set_num_threads(len(share))


def pytest_collection_modifyitems(config, items):
    """Modules with a slow test (marked ``slow``) first, each module's tests in their own
    order: under pytest-xdist a module is one unit of work, and a long one handed out last
    would leave the other workers idle at the end. Tests marked ``gpu`` are skipped where
    torch sees no CUDA GPU."""
    modules_with_slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in modules_with_slow)
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_tests:
        import torch

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs these where there is one)")
            for item in gpu_tests:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_wandb(tmp_path, monkeypatch):
    home = tmp_path / "wandb-home"
    for var in WANDB_DIR_VARS:
        monkeypatch.setenv(var, str(home))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    yield
    # Every path out of a run, errors included, finishes its W&B run: one left open would be
    # reused by the next run in this process (and is an unfinished run for the user).
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
        raise AssertionError("a W&B run was left open")


def cli_env(cwd: Path, env: dict | None = None) -> dict[str, str]:
    """The environment of a CLI process started by a test: this repository's vaelab first on
    the path, W&B offline with all its files under ``cwd``; an ``env`` value of None unsets
    that variable."""
    wandb_home = str(Path(cwd) / ".wandb-home")
    full_env = {
        **os.environ,
        **{var: wandb_home for var in WANDB_DIR_VARS},
        "WANDB_MODE": "offline",
        "PYTHONPATH": str(REPO),
        **(env or {}),
    }
    full_env.pop("WANDB_API_KEY", None)
    full_env.pop("WANDB_SERVICE", None)  # the test process's own W&B service, if it started one: not the child's
    return {key: value for key, value in full_env.items() if value is not None}


def run_vaelab(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real CLI (`python -m vaelab` is the console script's entry point) in ``cwd``,
    in the environment of `cli_env`."""
    return subprocess.run(
        [sys.executable, "-m", "vaelab", *args],
        cwd=cwd,
        env=cli_env(cwd, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def call_vaelab(*args: str, cwd: Path, monkeypatch, capfd, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI's own ``main`` in this process, as the console script calls it, and return
    what `run_vaelab` returns. It saves the seconds a fresh interpreter spends importing torch
    and Lightning, so the many error-path cases cost little; runs whose processes matter
    (signals, launchers, DDP, a whole training run) use `run_vaelab`."""
    import torch
    from hydra.core.hydra_config import HydraConfig
    from threadpoolctl import threadpool_limits

    from vaelab.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["vaelab"])
    for var in ("HYDRA_FULL_ERROR", "VAELAB_SHOW_TRACEBACKS"):  # main() sets them: restored afterwards
        monkeypatch.delenv(var, raising=False)
    for var, value in (env or {}).items():
        monkeypatch.setenv(var, value)
    capfd.readouterr()
    # A run sets this process's torch and BLAS threads (num_threads) and Hydra's run config:
    # restored afterwards, or every later test in the session would run under them.
    torch_threads = torch.get_num_threads()
    with threadpool_limits(limits=None):
        try:
            main(list(args))
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        except Exception:  # what the interpreter does with an uncaught exception: traceback, exit 1
            traceback.print_exc()
            code = 1
        finally:
            torch.set_num_threads(torch_threads)
            HydraConfig.instance().cfg = None  # the run's Hydra config outlives it too: forget it
    captured = capfd.readouterr()
    return subprocess.CompletedProcess(["vaelab", *args], code, captured.out, captured.err)


def compose_train(overrides: list[str], output_dir: Path):
    """The train config as the CLI would compose it (compose API: tests only)."""
    from hydra import compose, initialize_config_dir

    from vaelab.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir={output_dir}"])
