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
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from vaelab.data.correlation import FactorCorrelation
from vaelab.registry import DATASETS

if TYPE_CHECKING:
    import torch


def read_factor_labels(
    load: Callable[[str], np.ndarray], present: Collection[str], fail: Callable[[str], Exception]
) -> tuple[np.ndarray, tuple[str, ...], tuple[int, ...]]:
    """A file's factor labels, checked: ``factors`` (N, K) integer indices, and the optional
    ``factor_names`` (K,) distinct strings (default factor_0, …) and ``factor_sizes`` (K,)
    positive integers (default: each factor's largest index + 1). ``load(name)`` reads an array
    of the file, ``present`` names those it has; ``fail(problem)`` is the error to raise. The one
    reader of this table, for dataset files (dataset=npz) and codes files (vaelab eval codes=)."""
    factors = load("factors")
    if factors.ndim != 2 or factors.shape[1] == 0 or factors.dtype.kind not in "iu":
        raise fail(f"factors must be a 2-D (N, K) array of integer factor indices, got shape {factors.shape} dtype {factors.dtype}")
    factors = factors.astype(np.int64)
    num_factors = factors.shape[1]
    names = tuple(f"factor_{k}" for k in range(num_factors))
    if "factor_names" in present:
        given = load("factor_names")
        if given.ndim != 1 or given.dtype.kind not in "US" or len(given) != num_factors:
            raise fail(f"factor_names must be {num_factors} strings, got shape {given.shape} dtype {given.dtype}")
        names = tuple(str(n.decode() if isinstance(n, bytes) else n) for n in given)
        if len(set(names)) != len(names):
            raise fail(f"factor_names must be distinct, got {list(names)}")
    if "factor_sizes" in present:
        given = load("factor_sizes")
        if given.ndim != 1 or given.dtype.kind not in "iu" or len(given) != num_factors or (given < 1).any():
            raise fail(f"factor_sizes must be {num_factors} positive integers, got {given.tolist()!r}")
        sizes = tuple(int(s) for s in given)
    else:
        if len(factors) == 0 or (factors < 0).any():
            raise fail("factors must hold non-negative indices")
        sizes = tuple(int(s) for s in factors.max(axis=0) + 1)
    return factors, names, sizes


def grid_rows(
    factors: np.ndarray, factor_sizes: Sequence[int], factor_names: Sequence[str], fail: Callable[[str], Exception], what: str = "factors"
) -> np.ndarray | None:
    """The row of ``factors`` (N, K) at each flat grid index, or None when the rows are in grid
    order already. Every point of the grid must be there exactly once (``what`` names the array
    in the error ``fail`` makes)."""
    sizes = np.asarray(factor_sizes, dtype=np.int64)
    if factors.shape[1] != len(sizes):
        raise fail(f"{what} has {factors.shape[1]} columns but there are {len(sizes)} factors")
    outside = (factors < 0) | (factors >= sizes)
    if outside.any():
        column = int(np.argmax(outside.any(axis=0)))
        raise fail(f"{what}: factor {factor_names[column]!r} has indices outside 0..{sizes[column] - 1}")
    expected = int(np.prod(sizes))
    flat = np.ravel_multi_index(tuple(factors.T), tuple(int(s) for s in sizes))
    counts = np.bincount(flat, minlength=expected)
    missing, repeated = int((counts == 0).sum()), int((counts > 1).sum())
    if missing or repeated:
        raise fail(
            f"{what} do not cover the full grid of factor sizes {sizes.tolist()} exactly once "
            f"({len(factors)} rows for {expected} combinations: {missing} missing, {repeated} repeated)"
        )
    if np.array_equal(flat, np.arange(expected)):
        return None
    row_of_index = np.empty(expected, dtype=np.int64)
    row_of_index[flat] = np.arange(expected)
    return row_of_index


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

    # Datasets that make images with torch alone override this, ``render(factors, **draws)``:
    # they are then rendered on the training device (a GPU) instead of on the host and copied.
    render = None

    def draws(self, factors: np.ndarray) -> dict[str, torch.Tensor]:
        """The per-image random inputs :meth:`render` needs besides the factors, drawn on the
        host from each image's own numpy stream (a colour, a noise field), as tensors to copy
        to the device with the factors; none for a dataset without per-image randomness."""
        return {}

    @property
    def renders_on_device(self) -> bool:
        """Whether :meth:`render` makes images of factor indices on any device (their device),
        bit for bit :meth:`images` of the same factors."""
        return self.render is not None

    def images_on(self, factors: np.ndarray, device) -> torch.Tensor:
        """:meth:`images` on ``device``: rendered there where the dataset can, else copied."""
        import torch

        if self.renders_on_device:
            draws = {key: value.to(device) for key, value in self.draws(factors).items()}
            return self.render(torch.as_tensor(np.asarray(factors, dtype=np.int64), device=device), **draws)
        return self.images(factors).to(device)
