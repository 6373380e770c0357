"""A trained model in a notebook: load a checkpoint, encode images, draw a traversal, score the code.

Each ``# %%`` cell runs as a notebook cell (VS Code, Jupyter with jupytext) or the
whole file as a script:

    python examples/notebook.py outputs/<date>/<time>/checkpoints/last.ckpt pictures/

tests/test_notebook.py runs :func:`main` on a checkpoint it trains, so this stays true.
"""

# %%
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from vaelab import metrics
from vaelab.checkpoint import load_checkpoint
from vaelab.images import model_pictures
from vaelab.metrics.representation import encoder_representation
from vaelab.module import dataset_and_model_from_checkpoint


def main(checkpoint_path: str | Path, out_dir: str | Path) -> dict:
    # %% Load: the checkpoint holds the weights and the config that rebuilds the model and its
    # dataset. Loading is data, not code: a checkpoint naming parts vaelab does not ship is refused.
    checkpoint = load_checkpoint(checkpoint_path)
    dataset, model = dataset_and_model_from_checkpoint(checkpoint)
    model.eval()
    print(f"{type(model).__name__} with {model.latent_dim} latents, trained {checkpoint['global_step']} steps "
          f"on {type(dataset).__name__} (factors {dataset.factor_names}, sizes {dataset.factor_sizes})")  # fmt: skip

    # %% Encode: the posteriors of the first eight images of the dataset's factor grid.
    images = torch.as_tensor(dataset.images_at(np.arange(8)))
    codes, _ = model.posterior(images)  # means (8, D); and log-variances
    print("codes of 8 images:", codes.shape)

    # %% Traverse: each latent swept over [-2.5, 2.5] around the first image's code, the
    # most informative (largest KL) first; the same picture training logs.
    pictures = model_pictures(model, images)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pictures["traversals"].save(out_dir / "traversals.png")
    pictures["reconstructions"].save(out_dir / "reconstructions.png")

    # %% Score: any suite of conf/metrics/, as a dict; each image is encoded once. The
    # encoding precision of training's evaluations ("auto"), so scores match its metrics.json.
    represent = encoder_representation(model, dataset, precision="auto")
    scores = metrics.evaluate(dataset, represent, {"mig": {"num_train": 2000, "num_bins": 20}}, seed=0)
    print(f"MIG {scores['metrics/mig']:.3f} from {represent.num_encoded:,} encoded images")
    return {"codes": codes, "pictures": pictures, "scores": scores}


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python examples/notebook.py CHECKPOINT OUT_DIR")
    main(sys.argv[1], sys.argv[2])
