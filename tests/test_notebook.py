"""The notebook example (examples/notebook.py) run end to end on a checkpoint trained here."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from examples import notebook
from tests.conftest import compose_train
from tests.test_logging import TINY_RUN


def test_notebook_loads_encodes_traverses_and_scores_a_checkpoint(tmp_path, capsys):
    from vaelab.train import train

    # The training run's own final suite: MIG on 2,000 points, so the notebook's score has a twin.
    suite = ["metrics=mig", "metrics.suite.mig.num_train=2000", "model.latent_dim=4"]
    train(compose_train([*TINY_RUN, "logger=none", *suite], tmp_path / "run"))
    result = notebook.main(tmp_path / "run" / "checkpoints" / "last.ckpt", tmp_path / "pictures")

    trained = json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]
    assert result["scores"]["metrics/mig"] == trained["metrics/mig"]
    assert result["codes"].shape == (8, 4) and np.isfinite(result["codes"]).all()
    with Image.open(tmp_path / "pictures" / "traversals.png") as traversals:
        assert traversals.height > traversals.width / 9  # one row per latent under nine columns
    assert "trained 20 steps" in capsys.readouterr().out
    assert len(result["pictures"]["traversal_animation"]) == 16  # nine values out and seven back
