"""A non-editable install carries the config tree: `vaelab train` composes from any directory."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


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
