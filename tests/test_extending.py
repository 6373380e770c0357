"""The extension examples of docs/extending.md (examples/): an objective, a dataset and a metric
written outside vaelab work as the page says."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import examples.mcc  # noqa: F401 - importing it registers the metric mcc
from examples.bars import Bars
from examples.free_bits import FreeBitsVAE
from tests.conftest import REPO, call_vaelab
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
    assert ideal["metrics/mcc_mcc"] == pytest.approx(1.0) and ideal["metrics/mcc"] == ideal["metrics/mcc_mcc"]
    noise = metrics.evaluate(bars, lambda f: np.random.default_rng(1).normal(size=(len(f), 3)), {"mcc": {}}, 0)
    assert noise["metrics/mcc_mcc"] < 0.05


def test_an_objective_and_a_dataset_from_outside_vaelab_train_through_the_cli(tmp_path, monkeypatch, capfd):
    run = tmp_path / "run"
    result = call_vaelab(
        "train", f"hydra.searchpath=[file://{REPO / 'examples' / 'conf'}]", "objective=free_bits", "+free_nats=0.25",
        "dataset=bars", "model=mlp", "model.hidden=[64]", "trainer.max_steps=20", "trainer.log_every_n_steps=10",
        "trainer.val_check_interval=20", "data.val_size=64", "logger=none", "metrics=mig",
        "metrics.suite.mig.num_train=500", "metrics@periodic_metrics=none", "information.num_samples=0",
        "images.num_images=2", f"hydra.run.dir={run}", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics_file = json.loads((run / "metrics.json").read_text())
    assert metrics_file["objective"]["knobs"] == {"free_nats": 0.25}
    assert {"train/kl_charged", "val/kl_charged", "metrics/mig"} <= metrics_file["final"].keys()
    assert (run / "images").is_dir()
