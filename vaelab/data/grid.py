"""The ground-truth dataset interface shared by training and metrics.

A ground-truth dataset is a full grid of factor combinations (shape, scale, ...)
with one image per combination. Everything that needs images or factors —
the training stream, the validation set, every metric — goes through
:class:`GroundTruthDataset`; nothing else knows how images are made.

Flat indices follow the original files' order: the *last* factor varies
fastest (row-major / C order over ``factor_sizes``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from vaelab.data.correlation import FactorCorrelation
from vaelab.registry import DATASETS

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class FactorGrid:
    """Names, sizes and values of the factors of a full grid, and the flat-index mapping."""

    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    factor_values: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if not (len(self.factor_names) == len(self.factor_sizes) == len(self.factor_values)):
            raise ValueError("factor_names, factor_sizes and factor_values must have one entry per factor")
        for name, size, values in zip(self.factor_names, self.factor_sizes, self.factor_values):
            if len(values) != size:
                raise ValueError(f"factor {name!r}: {len(values)} values for size {size}")

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    def __len__(self) -> int:
        return int(np.prod(self.factor_sizes, dtype=np.int64))

    def factors_to_index(self, factors: np.ndarray) -> np.ndarray:
        """(N, K) integer factor indices -> (N,) flat indices (last factor fastest)."""
        factors = np.asarray(factors, dtype=np.int64)
        return np.ravel_multi_index(tuple(factors.T), self.factor_sizes)

    def index_to_factors(self, index: np.ndarray) -> np.ndarray:
        """(N,) flat indices -> (N, K) integer factor indices."""
        return np.stack(np.unravel_index(np.asarray(index, dtype=np.int64), self.factor_sizes), axis=1)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n factor vectors drawn i.i.d. and uniformly from the full grid (with replacement)."""
        return np.stack([rng.integers(0, size, size=n) for size in self.factor_sizes], axis=1)

    def factor_values_of(self, factors: np.ndarray) -> np.ndarray:
        """(N, K) integer factor indices -> (N, K) float factor values."""
        factors = np.asarray(factors, dtype=np.int64)
        return np.stack([self.factor_values[k][factors[:, k]] for k in range(self.num_factors)], axis=1)


class GroundTruthDataset(ABC):
    """A full factor grid plus a renderer: ``images(factors)`` for any factor vectors.

    Subclasses set ``grid``, ``image_shape`` (C, H, W) and ``binary`` and implement
    :meth:`images`; one that sets ``name`` registers under it when defined (vaelab/registry.py:
    ``dataset=<name>`` selects it, its yaml in conf/dataset/ holding its settings). The grid
    methods are forwarded so metrics can treat a dataset and a bare :class:`FactorGrid` alike.

    :meth:`sample_factors` is the uniform full grid (validation, metrics);
    :meth:`sample_training_factors` is what the training stream draws: the same,
    unless ``dataset.correlation`` pairs some factors (see
    :mod:`vaelab.data.correlation`; subclasses call :meth:`configure_correlation`).
    """

    name: ClassVar[str]
    grid: FactorGrid
    image_shape: tuple[int, int, int]
    binary: bool
    correlation: FactorCorrelation | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a base without a name of its own (FileDataset) is none to select
            DATASETS.register(cls.name, cls)

    @property
    def factor_names(self) -> tuple[str, ...]:
        return self.grid.factor_names

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return self.grid.factor_sizes

    @property
    def factor_values(self) -> tuple[np.ndarray, ...]:
        return self.grid.factor_values

    @property
    def num_factors(self) -> int:
        return self.grid.num_factors

    def __len__(self) -> int:
        return len(self.grid)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.grid.sample_factors(n, rng)

    def configure_correlation(self, spec) -> None:
        """Set the training-time factor pairs from ``dataset.correlation`` (None or [] for none)."""
        self.correlation = FactorCorrelation.from_config(spec, self.factor_names, self.factor_sizes)

    def sample_training_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n factor vectors for training: uniform on the grid, then correlated pairs redrawn.

        Without correlation this is exactly :meth:`sample_factors` (same draws from ``rng``).
        """
        factors = self.sample_factors(n, rng)
        if self.correlation is None:
            return factors
        return self.correlation.apply(factors, rng)

    def factors_to_index(self, factors: np.ndarray) -> np.ndarray:
        return self.grid.factors_to_index(factors)

    def index_to_factors(self, index: np.ndarray) -> np.ndarray:
        return self.grid.index_to_factors(index)

    @abstractmethod
    def images(self, factors: np.ndarray):
        """(N, K) integer factor indices -> float32 torch tensor (N, C, H, W) in [0, 1]."""

    def images_at(self, index: np.ndarray):
        """Images by flat index (the original file's order)."""
        return self.images(self.index_to_factors(index))

    # Datasets that make images with torch alone override this: they are then rendered on the
    # training device (a GPU) instead of on the host and copied.
    render = None

    @property
    def renders_on_device(self) -> bool:
        """Whether :meth:`render` makes images of factor indices on any device (their device),
        bit for bit :meth:`images` of the same factors."""
        return self.render is not None

    def images_on(self, factors: np.ndarray, device) -> torch.Tensor:
        """:meth:`images` on ``device``: rendered there where the dataset can, else copied."""
        import torch

        if self.renders_on_device:
            return self.render(torch.as_tensor(np.asarray(factors, dtype=np.int64), device=device))
        return self.images(factors).to(device)
