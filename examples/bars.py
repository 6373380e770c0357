"""`dataset=bars`: a vertical and a horizontal bar on a black 64x64 canvas, the extension example
of docs/extending.md for a dataset (this module and its entry point, examples/pyproject.toml).

Factors (a full grid, last factor fastest, as every vaelab dataset):

    bar_x       16  the vertical bar's column, 4 pixels apart
    bar_y       16  the horizontal bar's row, 4 pixels apart
    thickness    3  1, 2 or 3 pixels, both bars

768 binary images, rendered on demand from the factors alone.
"""

from __future__ import annotations

import numpy as np
import torch

from vaelab.data.grid import FactorGrid, GroundTruthDataset

SIZE = 64
POSITIONS = 16


class Bars(GroundTruthDataset):
    name = "bars"
    image_shape = (1, SIZE, SIZE)
    binary = True

    def __init__(self, correlation=None) -> None:
        self.grid = FactorGrid(
            factor_names=("bar_x", "bar_y", "thickness"),
            factor_sizes=(POSITIONS, POSITIONS, 3),
            factor_values=(np.arange(POSITIONS) * 4.0, np.arange(POSITIONS) * 4.0, np.array([1.0, 2.0, 3.0])),
        )
        self.configure_correlation(correlation)

    def images(self, factors: np.ndarray) -> torch.Tensor:
        factors = np.asarray(factors, dtype=np.int64)
        pixels = np.arange(SIZE)
        left, top, width = factors[:, 0] * 4 + 2, factors[:, 1] * 4 + 2, factors[:, 2] + 1
        columns = (pixels >= left[:, None]) & (pixels < (left + width)[:, None])  # (N, W)
        rows = (pixels >= top[:, None]) & (pixels < (top + width)[:, None])  # (N, H)
        images = rows[:, :, None] | columns[:, None, :]  # (N, H, W): the union of the two bars
        return torch.from_numpy(images[:, None].astype(np.float32))
