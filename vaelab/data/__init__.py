"""Ground-truth datasets (a factor grid plus a renderer) and the training data stream."""

from __future__ import annotations

from vaelab.data.grid import FactorGrid, GroundTruthDataset

__all__ = ["FactorGrid", "GroundTruthDataset"]
