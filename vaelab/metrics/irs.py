"""Interventional Robustness Score (Suter et al. 2019, "Robustly Disentangled Causal
Mechanisms: Validating Deep Representations for Interventional Robustness",
https://arxiv.org/abs/1811.00007).

Reproduces disentanglement_lib's ``irs.compute_irs`` (config ``sample/irs``:
``num_train`` 10000, ``diff_quantile`` 0.99, 20-bin histogram discretizer):
factors are histogram-discretised, zero-variance code dims dropped; for each
factor and each of its (discretised) values, the ``diff_quantile`` quantile of
|z - E[z | value]| is averaged over the values and divided by the code's maximal
deviation max |z - mean z|; IRS is the mean over codes of max_j (1 - ratio),
weighted by each code's maximal deviation.
"""

from __future__ import annotations

import numpy as np

from vaelab.metrics._common import FactorSampler, Represent, histogram_discretize, represent_all
from vaelab.registry import metric


def irs_from_codes(codes: np.ndarray, factors_discrete: np.ndarray, diff_quantile: float) -> float:
    """The reference's ``scalable_disentanglement_score(...)["avg_score"]`` on active codes (N, D)."""
    max_deviations = np.max(np.abs(codes - codes.mean(axis=0)), axis=0)
    cum_deviations = np.zeros((codes.shape[1], factors_discrete.shape[1]))
    for j in range(factors_discrete.shape[1]):
        values, groups = np.unique(factors_discrete[:, j], return_inverse=True)
        groups = groups.ravel()
        # Sort once so that each value's codes are one contiguous block.
        order = np.argsort(groups, kind="stable")
        bounds = np.searchsorted(groups[order], np.arange(len(values) + 1))
        sorted_codes = codes[order]
        for v in range(len(values)):
            block = sorted_codes[bounds[v] : bounds[v + 1]]
            diffs = np.abs(block - block.mean(axis=0))
            cum_deviations[:, j] += np.percentile(diffs, q=diff_quantile * 100, axis=0)
        cum_deviations[:, j] /= len(values)
    irs_matrix = 1.0 - cum_deviations / max_deviations[:, None]
    per_code = irs_matrix.max(axis=1)
    if np.sum(max_deviations) > 0.0:
        return float(np.average(per_code, weights=max_deviations))
    return float(np.mean(per_code))


@metric("irs")
def compute(
    dataset: FactorSampler,
    represent: Represent,
    rng: np.random.Generator,
    *,
    num_train: int = 10000,
    diff_quantile: float = 0.99,
    num_bins: int = 20,
) -> dict[str, float]:
    factors = dataset.sample_factors(num_train, rng)
    codes = represent_all(represent, factors)
    factors_discrete = histogram_discretize(factors, num_bins)
    active = codes.var(axis=0) > 0.0
    if not active.any():
        return {"IRS": 0.0, "num_active_dims": 0.0}
    return {
        "IRS": irs_from_codes(codes[:, active], factors_discrete, diff_quantile),
        "num_active_dims": float(active.sum()),
    }
