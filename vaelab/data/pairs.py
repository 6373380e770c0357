"""Pairs of observations that share all but k factors: the data of weakly-supervised objectives.

Locatello et al. 2020 ("Weakly-Supervised Disentanglement Without Compromises") train on
pairs (x1, x2) whose factor vectors differ in k factors, without saying which. Here a pair
is drawn on the grid: the first factor vector as the training stream draws any (uniform,
or with ``dataset.correlation``), then k of its factors, chosen without replacement, are
redrawn to a *different* value each, so the two share exactly K - k factors.

``data.pairs.k`` chooses k per pair:
- ``random`` (the default, disentanglement_lib's dynamics): k' uniform in 1 … K-1, then
  k = 1 or k' with equal probability. Small k is common, k = K-1 possible.
- an integer 1 … K-1: exactly k factors differ in every pair.

(disentanglement_lib redraws a chosen factor uniformly, so it sometimes keeps its value and
the pair differs in fewer factors than drawn; redrawing to a different value makes k exact,
which the objectives that are told k rely on.)

Like single images, pairs are a function of (seed, step) alone (:mod:`vaelab.data.stream`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vaelab.errors import UserError, check_int

RANDOM_K = "random"


@dataclass(frozen=True)
class PairSampling:
    """How many factors differ between the two observations of a pair (``data.pairs``)."""

    k: int | None  # None: random, disentanglement_lib's dynamics (module docstring)

    @classmethod
    def from_config(cls, spec, factor_sizes: tuple[int, ...]) -> "PairSampling":
        """``data.pairs`` ({k: random | int}) checked against the dataset's factors (those of
        one value, which no pair can change, do not count)."""
        k = (spec or {}).get("k", RANDOM_K)
        variable = variable_factor_count(factor_sizes)
        if variable < 2:
            raise UserError(f"pairs need a dataset with at least 2 factors that vary (this one has {variable})")
        if k == RANDOM_K:
            return cls(None)
        k = check_int("data.pairs.k", k, minimum=1)
        if k > variable - 1:
            raise UserError(f"data.pairs.k={k}: expected {RANDOM_K} or an integer from 1 to {variable - 1} (the dataset has {variable} factors that vary)")
        return cls(k)

    def differing_counts(self, n: int, variable: int, rng: np.random.Generator) -> np.ndarray:
        """(n,) the number of factors that differ in each of n pairs, of ``variable`` that can."""
        if self.k is not None:
            return np.full(n, self.k)
        upper = rng.integers(1, variable, size=n)  # k' uniform in 1 … K-1
        return np.where(rng.random(n) < 0.5, 1, upper)

    def sample(self, first: np.ndarray, factor_sizes: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """The second factor vectors of pairs whose first ones are ``first`` (n, K)."""
        n, num_factors = first.shape
        sizes = np.asarray(factor_sizes)
        counts = self.differing_counts(n, variable_factor_count(factor_sizes), rng)
        # The k factors of each pair: the first k of a random order of the factors that vary
        # (a factor of one value sorts last: it is never chosen).
        keys = rng.random((n, num_factors)) + (sizes < 2)
        order = np.argsort(keys, axis=1)
        changed = np.zeros((n, num_factors), dtype=bool)
        np.put_along_axis(changed, order, np.arange(num_factors)[None, :] < counts[:, None], axis=1)
        # A different value of factor j: the current one shifted by 1 … size_j - 1, cyclically.
        shift = 1 + np.floor(rng.random((n, num_factors)) * (sizes - 1)).astype(np.int64)
        second = np.where(changed, (first + shift) % sizes, first)
        return second


def variable_factor_count(factor_sizes: tuple[int, ...]) -> int:
    """The number of factors with more than one value: those a pair can differ in."""
    return int(sum(size >= 2 for size in factor_sizes))


def pair_sampling(spec, factor_sizes: tuple[int, ...], objective) -> PairSampling | None:
    """The pairs ``objective`` trains on from ``data.pairs`` (``spec``), if it is weakly supervised
    (``objective.trains_on_pairs``); None for the others, which refuse a ``data.pairs.k`` other
    than the default rather than ignore it."""
    spec = spec or {}
    if objective.trains_on_pairs:
        return PairSampling.from_config(spec, factor_sizes)
    if spec.get("k", RANDOM_K) != RANDOM_K:
        raise UserError(
            f"data.pairs.k={spec.get('k')}: objective={objective.name} trains on single images; pairs are "
            "for the weakly-supervised objectives (adagvae, adamlvae, gvae, mlvae, adainfomax)"
        )
    return None
