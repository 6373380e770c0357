"""Mean correlation coefficient, MCC (as in the identifiability literature, e.g. Khemakhem et al.,
2020, "Variational Autoencoders and Nonlinear ICA"): the extension example of docs/extending.md
for a metric.

Each factor is matched to a distinct code dimension (the Hungarian assignment on the absolute
Spearman rank correlations between factors and codes) and MCC is the mean absolute correlation
of the matched pairs: 1 when each factor is a monotone function of its own latent, near 0 for
a code that ignores the factors. Same signature as every vaelab metric; ``metrics=mcc`` runs it
alone, and its headline score is ``metrics/mcc`` (this module and its entry point,
examples/pyproject.toml).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import spearmanr

from vaelab.metrics._common import FactorSampler, Represent, represent_all
from vaelab.registry import metric


def mcc_from_codes(codes: np.ndarray, factors: np.ndarray) -> float:
    num_codes = codes.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = np.abs(spearmanr(codes, factors).statistic[:num_codes, num_codes:])  # (D, K)
    correlation = np.nan_to_num(correlation)  # a constant code or factor correlates with nothing
    rows, columns = linear_sum_assignment(-correlation)
    return float(correlation[rows, columns].sum() / factors.shape[1])


@metric("mcc", headline={"mcc": "mcc"})
def compute(dataset: FactorSampler, represent: Represent, rng: np.random.Generator, *, num_train: int = 10000) -> dict[str, float]:
    factors = dataset.sample_factors(num_train, rng)
    return {"mcc": mcc_from_codes(represent_all(represent, factors), factors)}
