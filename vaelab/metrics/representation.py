"""Ways to turn factor vectors into codes for the metrics (``represent`` functions).

- :class:`CachedEncoder`: renders and encodes images of a ground-truth dataset,
  each distinct image at most once (metrics draw factor vectors with replacement,
  and a suite draws millions of them over a grid of a few hundred thousand).
- :class:`LookupRepresentation`: precomputed codes for every point of a grid.
- :func:`load_codes_file`: the ``vaelab eval codes=FILE.npz`` format.
"""

from __future__ import annotations

import os
import zipfile
from typing import Callable

import numpy as np

from vaelab.data.grid import FactorGrid
from vaelab.errors import UserError

EncodeImages = Callable[..., np.ndarray]  # float32 torch tensor (n, C, H, W) -> (n, D)


class CachedEncoder:
    """``represent`` for a dataset with ``images_at``: encode each distinct flat index once.

    ``num_encoded`` counts the images passed to ``encode_images`` so far.
    """

    def __init__(self, dataset, encode_images: EncodeImages, batch_size: int = 256) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.dataset = dataset
        self.encode_images = encode_images
        self.batch_size = batch_size
        self.num_encoded = 0
        self._grid_size = int(np.prod(dataset.factor_sizes, dtype=np.int64))
        self._cached = np.zeros(self._grid_size, dtype=bool)
        self._codes: np.ndarray | None = None  # (grid size, D), allocated on first encode

    def __call__(self, factors: np.ndarray) -> np.ndarray:
        index = self.dataset.factors_to_index(np.asarray(factors, dtype=np.int64))
        missing = np.unique(index)
        missing = missing[~self._cached[missing]]
        for start in range(0, len(missing), self.batch_size):
            self._encode(missing[start : start + self.batch_size])
        if self._codes is None:  # nothing requested at all
            return np.zeros((0, 0))
        return self._codes[index]

    def _encode(self, index: np.ndarray) -> None:
        images = self.dataset.images_at(index)
        codes = np.asarray(self.encode_images(images), dtype=np.float64)
        if codes.ndim != 2 or codes.shape[0] != len(index):
            raise ValueError(f"encode_images returned shape {codes.shape} for {len(index)} images")
        if self._codes is None:
            self._codes = np.zeros((self._grid_size, codes.shape[1]))
        self._codes[index] = codes
        self._cached[index] = True
        self.num_encoded += len(index)


def _grid_problem(factor_sizes: tuple[int, ...], factors: np.ndarray) -> str | None:
    """Why ``factors`` is not exactly one row per point of the grid, or None."""
    sizes = np.asarray(factor_sizes)
    if factors.shape[1] != len(sizes):
        return f"factors has {factors.shape[1]} columns but there are {len(sizes)} factors"
    below, above = factors < 0, factors >= sizes
    if below.any() or above.any():
        col = int(np.argmax((below | above).any(axis=0)))
        return f"factor {col} has values outside 0..{sizes[col] - 1}"
    expected = int(np.prod(sizes, dtype=np.int64))
    counts = np.bincount(np.ravel_multi_index(tuple(factors.T), tuple(sizes)), minlength=expected)
    if (counts > 1).any():
        return f"{int((counts > 1).sum())} factor combinations appear more than once"
    if len(factors) != expected:
        return f"{len(factors)} rows do not cover the full grid {list(map(int, sizes))} ({expected} combinations)"
    return None


class LookupRepresentation:
    """``represent`` from precomputed codes of a full grid (rows in any order)."""

    def __init__(self, grid: FactorGrid, factors: np.ndarray, codes: np.ndarray) -> None:
        factors = np.asarray(factors, dtype=np.int64)
        codes = np.asarray(codes, dtype=np.float64)
        if factors.ndim != 2 or codes.ndim != 2 or len(factors) != len(codes):
            raise ValueError(f"factors {factors.shape} and codes {codes.shape} must be (N, K) and (N, D)")
        problem = _grid_problem(grid.factor_sizes, factors)
        if problem:
            raise ValueError(problem)
        self.grid = grid
        self.table = np.empty_like(codes)
        self.table[grid.factors_to_index(factors)] = codes

    @property
    def num_codes(self) -> int:
        return self.table.shape[1]

    def __call__(self, factors: np.ndarray) -> np.ndarray:
        return self.table[self.grid.factors_to_index(factors)]


def load_codes_file(path: str | os.PathLike) -> tuple[FactorGrid, LookupRepresentation]:
    """Read a codes file: ``factors`` (N, K) ints covering a full grid, ``codes`` (N, D).

    Optional arrays: ``factor_sizes`` (K,) and ``factor_names`` (K,) strings. Any problem
    raises :class:`UserError` with one line naming the file.
    """

    def fail(problem: str) -> UserError:
        return UserError(f"codes file {os.fspath(path)}: {problem}")

    if not os.path.isfile(path):
        raise fail("no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise fail(f"cannot be read as an .npz archive ({reason})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array
        raise fail("not an .npz archive (save it with np.savez(path, factors=..., codes=...))")
    try:
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise fail(f"has an unreadable array ({reason})") from None

    missing = [name for name in ("factors", "codes") if name not in arrays]
    if missing:
        raise fail(f"missing array(s) {', '.join(missing)}; found {', '.join(sorted(arrays)) or 'none'}")
    factors, codes = arrays["factors"], arrays["codes"]
    if factors.ndim != 2 or factors.shape[1] == 0:
        raise fail(f"factors must be a 2-D (N, K) array, got shape {factors.shape}")
    if factors.dtype.kind not in "iu":
        raise fail(f"factors must hold integer factor indices, got dtype {factors.dtype}")
    if codes.ndim != 2 or codes.shape[1] == 0:
        raise fail(f"codes must be a 2-D (N, D) array, got shape {codes.shape}")
    if codes.dtype.kind not in "iuf":
        raise fail(f"codes must be numeric, got dtype {codes.dtype}")
    if len(codes) != len(factors):
        raise fail(f"codes has {len(codes)} rows but factors has {len(factors)}")
    if not np.all(np.isfinite(codes)):
        raise fail(f"codes contain {int((~np.isfinite(codes)).sum())} NaN or infinite values")
    factors = factors.astype(np.int64)
    num_factors = factors.shape[1]

    if "factor_sizes" in arrays:
        sizes = arrays["factor_sizes"]
        if sizes.ndim != 1 or sizes.dtype.kind not in "iu" or len(sizes) != num_factors or (sizes < 1).any():
            raise fail(f"factor_sizes must be {num_factors} positive integers, got {sizes.tolist()!r}")
        factor_sizes = tuple(int(s) for s in sizes)
    else:
        if (factors < 0).any():
            raise fail("factors contain negative indices")
        factor_sizes = tuple(int(s) for s in factors.max(axis=0) + 1)

    if "factor_names" in arrays:
        names = arrays["factor_names"]
        if names.ndim != 1 or names.dtype.kind not in "US" or len(names) != num_factors:
            raise fail(f"factor_names must be {num_factors} strings, got shape {names.shape} dtype {names.dtype}")
        factor_names = tuple(str(n.decode() if isinstance(n, bytes) else n) for n in names)
    else:
        factor_names = tuple(f"factor_{k}" for k in range(num_factors))

    problem = _grid_problem(factor_sizes, factors)
    if problem:
        raise fail(problem)
    grid = FactorGrid(
        factor_names=factor_names,
        factor_sizes=factor_sizes,
        factor_values=tuple(np.arange(s, dtype=np.float64) for s in factor_sizes),
    )
    return grid, LookupRepresentation(grid, factors, codes)
