"""Shared fixtures: W&B kept offline and inside each test's tmp dir; CLI and config helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WANDB_DIR_VARS = ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR")


@pytest.fixture(autouse=True)
def isolated_wandb(tmp_path, monkeypatch):
    home = tmp_path / "wandb-home"
    for var in WANDB_DIR_VARS:
        monkeypatch.setenv(var, str(home))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    yield


def run_vaelab(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real CLI (`python -m vaelab` is the console script's entry point) in ``cwd``.

    W&B is offline and keeps all its files under ``cwd``; an ``env`` value of None unsets
    that variable.
    """
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
    full_env = {key: value for key, value in full_env.items() if value is not None}
    return subprocess.run(
        [sys.executable, "-m", "vaelab", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def compose_train(overrides: list[str], output_dir: Path):
    """The train config as the CLI would compose it (compose API: tests only)."""
    from hydra import compose, initialize_config_dir

    from vaelab.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir={output_dir}"])
