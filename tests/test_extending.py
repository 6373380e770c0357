"""The extension examples of docs/extending.md (examples/): an objective, a dataset and a metric
written outside vaelab work as the page says: registered by importing them, or by installing
them (their entry points), and then used from the command line like vaelab's own."""

from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import examples.mcc  # noqa: F401 - importing it registers the metric mcc
from examples.bars import Bars
from examples.free_bits import FreeBitsVAE
from tests.conftest import REPO, run_vaelab
from tests.wandb_offline import read_offline_run
from vaelab import metrics
from vaelab.registry import DATASETS, OBJECTIVES


def test_free_bits_charges_each_latent_at_least_its_free_nats():
    kl = torch.tensor([[0.1, 2.0, 0.0], [0.3, 1.0, 0.0]])  # batch means: 0.2, 1.5, 0.0
    out = SimpleNamespace(reconstruction=torch.tensor([10.0, 20.0]), kl_conditional=kl)
    terms = FreeBitsVAE(free_nats=0.5)(out)
    assert terms["kl_charged"].item() == pytest.approx(0.5 + 1.5 + 0.5)
    assert terms["loss"].item() == pytest.approx(15.0 + 2.5)
    assert terms["kl_conditional"].item() == pytest.approx(1.7)


def test_bars_draws_each_factor_where_it_says():
    bars = Bars()
    assert len(bars) == 16 * 16 * 3
    (image,) = bars.images(np.array([[3, 10, 1]]))[:, 0]  # column 14, row 42, 2 pixels thick
    assert image[:, 14:16].all() and image[42:44, :].all()
    assert image.sum().item() == 2 * 64 + 2 * 64 - 4  # two bars, their crossing counted once
    index = np.array([0, 100, 767])
    torch.testing.assert_close(bars.images_at(index), bars.images(bars.index_to_factors(index)))


def test_importing_the_examples_registers_them():
    assert OBJECTIVES.get("free_bits") is FreeBitsVAE and DATASETS.get("bars") is Bars
    assert metrics.headline_keys(["mcc"]) == {"metrics/mcc": ("mcc", "mcc")}


def test_mcc_scores_an_ideal_code_near_one_and_noise_near_zero():
    bars = Bars()
    ideal = metrics.evaluate(bars, lambda f: np.asarray(f, dtype=float)[:, [2, 0, 1]] ** 3, {"mcc": {"num_train": 2000}}, 0)
    assert ideal["metrics/mcc"] == pytest.approx(1.0) and "metrics/mcc_mcc" not in ideal  # a headline, once
    noise = metrics.evaluate(bars, lambda f: np.random.default_rng(1).normal(size=(len(f), 3)), {"mcc": {}}, 0)
    assert noise["metrics/mcc"] < 0.05


def install_examples(site: Path) -> Path:
    """What ``pip install examples/`` leaves for importlib.metadata to find (a dist-info with the
    entry points of examples/pyproject.toml), without pip: ``site`` then goes on PYTHONPATH
    beside the repository, which holds the ``examples`` package itself."""
    project = tomllib.loads((REPO / "examples" / "pyproject.toml").read_text())["project"]
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = project["entry-points"]
    (info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items()) for group, points in groups.items())
    )
    return site


@pytest.mark.slow
def test_installed_examples_train_sweep_and_compare_from_the_cli_like_vaelabs_own(tmp_path):
    """objective=free_bits free_nats=…, dataset=bars, metrics=mcc, logger=[wandb,report]: plain
    overrides, no yaml, no hydra.searchpath; the sweep's runs are compared on free_nats with
    metrics/mcc beside MIG, W&B's summary has metrics/mcc, and each run has its report.md."""
    site = install_examples(tmp_path / "site")
    env = {"PYTHONPATH": f"{REPO}:{site}"}
    sweep = tmp_path / "sweep"
    result = run_vaelab(
        "train", "-m", "objective=free_bits", "free_nats=0.25,1", "dataset=bars", "metrics=mcc",
        "metrics.suite.mcc.num_train=500", "model=mlp", "model.hidden=[64]", "trainer.max_steps=20",
        "trainer.log_every_n_steps=10", "trainer.val_check_interval=20", "data.val_size=64", "logger=[wandb,report]",
        "metrics@periodic_metrics=none", "information.num_samples=0", "images.num_images=2", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(path.parent for path in sweep.glob("*/metrics.json"))
    assert len(runs) == 2
    for run, free_nats in zip(runs, (0.25, 1.0)):
        metrics_file = json.loads((run / "metrics.json").read_text())
        assert metrics_file["objective"]["knobs"] == {"free_nats": free_nats}
        assert {"train/kl_charged", "val/kl_charged", "metrics/mcc"} <= metrics_file["final"].keys()
        assert (run / "images").is_dir()
        report = (run / "report.md").read_text()  # examples/report.py: the logger from its entry point
        assert "status: **success**" in report and "| metrics/mcc |" in report
        assert "![images/reconstructions](images/reconstructions_step20.png)" in report
    (wandb_dir,) = (runs[0] / "wandb").glob("offline-run-*")
    logged = read_offline_run(wandb_dir)
    assert logged.config["free_nats"] == 0.25 and "metrics/mcc" in logged.summary

    compared = run_vaelab("compare", str(sweep), "--out", str(tmp_path / "out"), cwd=tmp_path, env=env)
    assert compared.returncode == 0, compared.stderr[-3000:]
    with open(tmp_path / "out" / "compare.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["objective"] for row in rows] == ["free_bits", "free_bits"]
    assert all(row["metrics/mcc"] for row in rows)
    assert (tmp_path / "out" / "compare_metrics_mcc.png").is_file()


def test_an_objective_that_is_not_registered_is_one_line(tmp_path):
    result = run_vaelab("train", "objective=free_bits", "logger=none", cwd=tmp_path)  # examples not installed
    errors = [line for line in result.stderr.splitlines() if line.startswith("vaelab: error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Could not find 'objective/free_bits'" in errors[0], result.stderr
