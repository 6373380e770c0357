"""Helpers shared by the metrics: sampling, one-call representation, discretisation, MI.

The reference implementation (disentanglement_lib, ``evaluation/metrics/utils.py``)
samples and encodes in small batches and computes mutual information with one
``sklearn.metrics.mutual_info_score`` call per (code, factor) pair. Here every
metric draws all of its factor vectors first and calls ``represent`` once, so
that a caching encoder can encode each distinct image at most once, and the
mutual-information matrix is computed for all pairs with one ``np.bincount``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

Represent = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ScoreTable:
    """A metric's score broken down (per factor, per code dimension): what its one number hides.
    ``vaelab.metrics.evaluate(..., tables=)`` gathers them; runs write them as CSV and to W&B."""

    columns: list[str]
    rows: list[list]


_tables: ContextVar[dict[str, ScoreTable] | None] = ContextVar("vaelab_score_tables", default=None)


def record_table(name: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Keep a breakdown of the running metric's score as ``name`` (ignored unless a caller of
    ``evaluate`` asked for tables): a metric's signature stays ``-> dict[str, float]``."""
    tables = _tables.get()
    if tables is not None:
        tables[name] = ScoreTable(list(columns), [list(row) for row in rows])


@contextmanager
def collecting_tables(tables: dict[str, ScoreTable] | None) -> Iterator[None]:
    token = _tables.set(tables)
    try:
        yield
    finally:
        _tables.reset(token)


def factor_names(dataset) -> list[str]:
    """The dataset's factor names, or factor_0, factor_1, ... where it has none."""
    names = getattr(dataset, "factor_names", None)
    return list(names) if names else [f"factor_{k}" for k in range(num_factors(dataset))]


class FactorSampler(Protocol):
    """What a metric needs from a dataset: a FactorGrid or a GroundTruthDataset."""

    factor_sizes: tuple[int, ...]

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray: ...


def num_factors(dataset: FactorSampler) -> int:
    return len(dataset.factor_sizes)


class NonFiniteCodes(ValueError):
    """The representation has NaN/inf entries: no metric is defined on it (a diverged model)."""


def sample_distinct_factors(dataset: FactorSampler, n: int, rng: np.random.Generator) -> np.ndarray:
    """``min(n, grid size)`` distinct factor vectors of the full grid, uniformly: (n, K) int64.

    For the metrics whose estimators or splits need distinct points (a repeated point is
    its own nearest neighbour; a test point seen in training is no test). The grid is the
    product of ``factor_sizes``; the vectors come out in draw order.
    """
    sizes = tuple(int(s) for s in dataset.factor_sizes)
    total = int(np.prod(sizes, dtype=np.int64))
    flat = rng.choice(total, size=min(int(n), total), replace=False)
    return np.stack(np.unravel_index(flat, sizes), axis=1).astype(np.int64)


def represent_all(represent: Represent, factors: np.ndarray) -> np.ndarray:
    """Codes of all ``factors`` in a single ``represent`` call, checked: (N, D) float64."""
    factors = np.ascontiguousarray(factors, dtype=np.int64)
    codes = np.asarray(represent(factors), dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] != factors.shape[0]:
        raise ValueError(
            f"represent returned shape {codes.shape} for {factors.shape[0]} factor vectors; expected (N, D)"
        )
    if not np.all(np.isfinite(codes)):
        raise NonFiniteCodes("represent returned NaN or infinite codes")
    return codes


def represent_many(represent: Represent, *factor_sets: np.ndarray) -> list[np.ndarray]:
    """Codes for several factor arrays with one ``represent`` call; returned in the same split."""
    sizes = [len(f) for f in factor_sets]
    codes = represent_all(represent, np.concatenate(factor_sets, axis=0))
    return np.split(codes, np.cumsum(sizes)[:-1], axis=0)


def histogram_discretize(values: np.ndarray, num_bins: int) -> np.ndarray:
    """Per column: bin index of each value among ``num_bins`` equal-width bins over its range.

    Exactly disentanglement_lib's ``_histogram_discretizer``:
    ``np.digitize(x, np.histogram(x, num_bins)[1][:-1])`` column by column (values 1..num_bins).
    ``values`` is (N, C); the result is (N, C) int64.
    """
    values = np.asarray(values)
    out = np.empty(values.shape, dtype=np.int64)
    for c in range(values.shape[1]):
        edges = np.histogram_bin_edges(values[:, c], bins=num_bins)
        out[:, c] = np.digitize(values[:, c], edges[:-1])
    return out


def _compact_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """(N, C) integer labels -> same labels renumbered 0..L-1 per column, and max L."""
    out = np.empty(labels.shape, dtype=np.int64)
    max_levels = 1
    for c in range(labels.shape[1]):
        uniques, inverse = np.unique(labels[:, c], return_inverse=True)
        out[:, c] = inverse.ravel()
        max_levels = max(max_levels, len(uniques))
    return out, max_levels


def discrete_mutual_info(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """m[i, j] = mutual information (nats) between column i of ``a`` and column j of ``b``.

    Same value as ``sklearn.metrics.mutual_info_score(b[:, j], a[:, i])`` (the
    reference's ``discrete_mutual_info``), from the empirical joint distribution of
    each pair, computed for all pairs at once. ``a`` is (N, I), ``b`` is (N, J).
    """
    a_lab, levels_a = _compact_labels(np.asarray(a))
    b_lab, levels_b = _compact_labels(np.asarray(b))
    n, num_a = a_lab.shape
    num_b = b_lab.shape[1]
    # One joint-count table per (i, j) pair, all in one bincount over a flat index.
    pair = (np.arange(num_a)[:, None] * num_b + np.arange(num_b)[None, :])  # (I, J)
    flat = (pair[None, :, :] * levels_a + a_lab[:, :, None]) * levels_b + b_lab[:, None, :]
    joint = np.bincount(flat.ravel(), minlength=num_a * num_b * levels_a * levels_b)
    joint = joint.reshape(num_a, num_b, levels_a, levels_b).astype(np.float64) / n
    p_a = joint.sum(axis=3, keepdims=True)
    p_b = joint.sum(axis=2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = joint * (np.log(joint) - np.log(p_a) - np.log(p_b))
    mi = np.where(joint > 0, terms, 0.0).sum(axis=(2, 3))
    # sklearn clips tiny negative round-off to 0.
    return np.clip(mi, 0.0, None)


def discrete_entropy(labels: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each column of (N, C) integer labels (reference: MI of y with itself)."""
    labels, _ = _compact_labels(np.asarray(labels))
    out = np.empty(labels.shape[1])
    for c in range(labels.shape[1]):
        p = np.bincount(labels[:, c]) / labels.shape[0]
        p = p[p > 0]
        out[c] = -np.sum(p * np.log(p))
    return out


def sample_factors_sharing_one(
    dataset: FactorSampler, num_groups: int, group_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``num_groups`` groups of ``group_size`` factor vectors, each group fixing one random factor.

    Returns (fixed factor index per group (G,), factors (G, group_size, K)); within group g
    every vector has the value of its first vector at factor ``fixed[g]`` (FactorVAE's
    construction).
    """
    k = num_factors(dataset)
    fixed = rng.integers(0, k, size=num_groups)
    factors = dataset.sample_factors(num_groups * group_size, rng).reshape(num_groups, group_size, k)
    groups = np.arange(num_groups)
    factors[groups, :, fixed] = factors[groups, 0, fixed][:, None]
    return fixed, factors
