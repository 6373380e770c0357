"""Correlated factors at training time: ``dataset.correlation`` (after Träuble et al. 2021).

The ground-truth grids are products of independent factors; real data rarely is.
To study what β-VAE and InfoMax learn when factors co-vary, the *training* stream
can draw pairs of factors jointly, while validation and every metric keep the
uniform full grid (the model is still scored on all combinations).

Configuration, a list of pairs applied in order::

    dataset.correlation=[{factors:[pos_x,pos_y],strength:0.8}]

The model, for a pair (a, b) with sizes n_a, n_b and strength s in [-1, 1]:

* every factor is first drawn uniformly, as without correlation; then b is
  redrawn given a, so a's marginal stays uniform;
* factor indices are placed at their quantile positions u_a(i) = (i + 1/2) / n_a
  and u_b(j) = (j + 1/2) / n_b, so factors of different sizes line up;
* b is drawn from a discretised Gaussian around a's position (mirrored, 1 - u_a,
  when s < 0)::

      p(b = j | a = i)  ∝  exp(-(u_b(j) - u_a(i))^2 / (2 σ^2))

  This is the pairing of Träuble et al. (2021), "On Disentangled Representations
  Learned from Correlated Data", with a drawn uniformly rather than from the
  joint, and positions as quantiles rather than i / (n - 1).
* σ is not given directly: it is solved (bisection on log σ) so that the Pearson
  correlation of (u_a, u_b) under this joint — equivalently of the two factor
  indices — equals s. s = 0 gives σ = ∞ (b uniform, independent of a);
  |s| = 1 gives σ = 0 (b at the quantile nearest to a's, ties split evenly).
  When the factor sizes differ the largest reachable |correlation| can be just
  below 1; a larger |s| then uses σ = 0. The σ used and the correlation reached
  are logged.

A factor may be redrawn by at most one pair, and not after an earlier pair
has used it as its source (list chains as a -> b, then b -> c).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vaelab.errors import UserError

log = logging.getLogger("vaelab")

CONFIG_KEY = "dataset.correlation"
EXAMPLE = "[{factors: [pos_x, pos_y], strength: 0.8}]"


def _positions(size: int) -> np.ndarray:
    """Quantile positions (i + 1/2) / size of a factor's indices."""
    return (np.arange(size) + 0.5) / size


def conditional_probabilities(size_a: int, size_b: int, sigma: float, negative: bool = False) -> np.ndarray:
    """(size_a, size_b) table of p(b = j | a = i) for kernel width ``sigma`` (0 and inf allowed)."""
    centres = _positions(size_a)
    if negative:
        centres = 1.0 - centres
    squared = (_positions(size_b)[None, :] - centres[:, None]) ** 2
    squared -= squared.min(axis=1, keepdims=True)  # the nearest position: exponent 0 (stable for small σ)
    if math.isinf(sigma):
        weights = np.ones_like(squared)
    elif sigma == 0.0:
        weights = (squared <= 1e-12).astype(np.float64)
    else:
        weights = np.exp(-squared / (2.0 * sigma**2))
    return weights / weights.sum(axis=1, keepdims=True)


def pair_correlation(conditional: np.ndarray) -> float:
    """Pearson correlation of (u_a, u_b) when a is uniform and b ~ ``conditional[a]``."""
    size_a, size_b = conditional.shape
    joint = conditional / size_a
    u_a = _positions(size_a) - joint.sum(axis=1) @ _positions(size_a)
    u_b = _positions(size_b) - joint.sum(axis=0) @ _positions(size_b)
    covariance = float(u_a @ joint @ u_b)
    variance_a = float(joint.sum(axis=1) @ u_a**2)
    variance_b = float(joint.sum(axis=0) @ u_b**2)
    return covariance / math.sqrt(variance_a * variance_b) if variance_b > 0 else 0.0


def sigma_for_strength(strength: float, size_a: int, size_b: int) -> float:
    """The kernel width whose pair correlation is ``|strength|`` (inf for 0, 0 when out of reach)."""
    target = abs(strength)
    if target == 0.0:
        return math.inf
    if target >= abs(pair_correlation(conditional_probabilities(size_a, size_b, 0.0))):
        return 0.0
    low, high = math.log(1e-6), math.log(1e3)  # correlation falls as σ grows
    for _ in range(80):
        middle = 0.5 * (low + high)
        reached = abs(pair_correlation(conditional_probabilities(size_a, size_b, math.exp(middle))))
        low, high = (middle, high) if reached > target else (low, middle)
    return math.exp(0.5 * (low + high))


@dataclass(frozen=True)
class CorrelatedPair:
    """Factor ``target`` redrawn given factor ``source`` (column indices) from ``cumulative[source value]``."""

    source: int
    target: int
    strength: float
    sigma: float
    reached: float  # the correlation this σ gives (equal to strength unless out of reach)
    cumulative: np.ndarray  # (size_source, size_target) cumulative p(target <= j | source = i)

    def resample(self, factors: np.ndarray, rng: np.random.Generator) -> None:
        """Redraw the target column of ``factors`` in place (inverse-CDF, one uniform per row)."""
        uniforms = rng.random(len(factors))
        thresholds = self.cumulative[factors[:, self.source]]
        factors[:, self.target] = (uniforms[:, None] >= thresholds).sum(axis=1)


class FactorCorrelation:
    """The configured pairs, applied in order to uniformly drawn factor vectors."""

    def __init__(self, pairs: Sequence[CorrelatedPair]) -> None:
        self.pairs = tuple(pairs)

    def apply(self, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        factors = np.array(factors, dtype=np.int64)
        for pair in self.pairs:
            pair.resample(factors, rng)
        return factors

    @classmethod
    def from_config(
        cls, spec, factor_names: Sequence[str], factor_sizes: Sequence[int]
    ) -> FactorCorrelation | None:
        """Parse and check ``dataset.correlation`` (None or [] -> None); problems raise UserError."""
        spec = _plain(spec)
        if spec is None or (isinstance(spec, Sequence) and not isinstance(spec, str) and len(spec) == 0):
            return None
        if isinstance(spec, str) or not isinstance(spec, Sequence):
            raise UserError(f"{CONFIG_KEY}={spec!r}: expected a list of pairs such as {EXAMPLE}")
        names = list(factor_names)
        pairs: list[CorrelatedPair] = []
        redrawn: set[int] = set()
        used_as_source: set[int] = set()
        for position, entry in enumerate(spec):
            key = f"{CONFIG_KEY}[{position}]"
            if not isinstance(entry, Mapping) or set(entry) != {"factors", "strength"}:
                raise UserError(f"{key}={entry!r}: expected {{factors: [a, b], strength: s}}, e.g. {EXAMPLE}")
            pair_names, strength = entry["factors"], entry["strength"]
            if isinstance(pair_names, str) or not isinstance(pair_names, Sequence) or len(pair_names) != 2:
                raise UserError(f"{key}.factors={pair_names!r}: expected two factor names [a, b]")
            for name in pair_names:
                if name not in names:
                    raise UserError(f"{key}.factors: unknown factor {name!r}; this dataset has {', '.join(names)}")
            source, target = names.index(pair_names[0]), names.index(pair_names[1])
            if source == target:
                raise UserError(f"{key}.factors={list(pair_names)!r}: a factor cannot be paired with itself")
            if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not -1 <= strength <= 1:
                raise UserError(f"{key}.strength={strength!r}: expected a number in [-1, 1]")
            for column in (source, target):
                if factor_sizes[column] < 2:
                    raise UserError(f"{key}: factor {names[column]!r} has a single value and cannot be correlated")
            if target in redrawn:
                raise UserError(f"{key}: factor {names[target]!r} is already redrawn by an earlier pair")
            if target in used_as_source:
                raise UserError(
                    f"{key}: factor {names[target]!r} was the source of an earlier pair; list this pair first"
                )
            size_a, size_b = factor_sizes[source], factor_sizes[target]
            sigma = sigma_for_strength(float(strength), size_a, size_b)
            conditional = conditional_probabilities(size_a, size_b, sigma, negative=strength < 0)
            cumulative = np.cumsum(conditional, axis=1)
            cumulative[:, -1] = 1.0 + 1e-12  # rounding never lets u land past the last bin
            reached = pair_correlation(conditional)
            pairs.append(CorrelatedPair(source, target, float(strength), sigma, reached, cumulative))
            redrawn.add(target)
            used_as_source.add(source)
            log.info(
                "training factors correlated: %s -> %s, strength %.3g (sigma %.4g, correlation %.3f); "
                "validation and metrics use the uniform grid",
                names[source], names[target], strength, sigma, reached,
            )  # fmt: skip
        return cls(pairs)


def _plain(spec):
    """OmegaConf containers (what Hydra passes) -> plain lists and dicts."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf comes with hydra
        return spec
    if isinstance(spec, (DictConfig, ListConfig)):
        return OmegaConf.to_container(spec, resolve=True)
    return spec
