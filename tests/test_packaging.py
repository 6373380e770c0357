"""Installing vaelab: a non-editable install carries the config tree; `make install` takes the torch index."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_non_editable_install_finds_its_configs(tmp_path):
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    assert (site / "vaelab" / "conf" / "train.yaml").is_file()
    assert (site / "vaelab" / "conf" / "objective" / "infomax.yaml").is_file()

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy, not the checkout
    code = (
        "import os, sys, vaelab.cli;"
        "assert vaelab.cli.__file__.startswith(os.environ['PYTHONPATH']), vaelab.cli.__file__;"
        "vaelab.cli.main(sys.argv[1:])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "train", "--cfg", "job", "objective=infomax", "lambda=3"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "vaelab.objectives.infomax.InfoMax" in result.stdout and "lambda: 3" in result.stdout
    # The console script the install writes (what `vaelab …` and the W&B agent's `/usr/bin/env vaelab` run).
    script = subprocess.run([str(site / "bin" / "vaelab"), "--help"], cwd=outside, env=env, capture_output=True, text=True, timeout=120)
    assert script.returncode == 0, script.stderr[-2000:]
    assert "train" in script.stdout and "eval" in script.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_install_takes_the_torch_index():
    def plan(*args: str) -> list[list[str]]:
        # Run from `make test` too: the outer make's variables would make this one chatty.
        env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        dry_run = subprocess.run(
            ["make", "--no-print-directory", "-n", "install", *args], cwd=REPO, env=env, capture_output=True, text=True, check=True
        )  # fmt: skip
        return [line.split() for line in dry_run.stdout.splitlines() if "pip install" in line]

    torch_line, vaelab_line = plan()
    assert torch_line[-1] == "torch==2.13.0" and "--index-url" not in torch_line  # pip's own settings
    cpu = "https://download.pytorch.org/whl/cpu"
    torch_line, vaelab_line = plan(f"TORCH_INDEX={cpu}")
    assert torch_line[-3:] == ["torch==2.13.0", "--index-url", cpu]
    assert "--index-url" not in vaelab_line and "constraints.txt" in vaelab_line  # the rest keeps that torch


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    import vaelab
    from vaelab.cli import main

    assert vaelab.__version__ == version("vaelab")
    main(["--version"])
    assert capsys.readouterr().out == f"vaelab {version('vaelab')}\n"
