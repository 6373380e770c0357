"""Unsupervised scores from code covariance and mutual information.

From disentanglement_lib's large study (Locatello et al. 2019, "Challenging Common
Assumptions in the Unsupervised Learning of Disentangled Representations",
https://arxiv.org/abs/1811.12359); reproduces
``unsupervised_metrics.unsupervised_metrics`` with the 20-bin histogram
discretizer: with cov the covariance of the codes (ddof=1),
gaussian_total_correlation = KL(N(0, cov) || N(0, diag cov)) = 0.5 (sum log cov_ii
- logdet cov); gaussian_wasserstein_correlation = 2 tr(cov) - 2 tr(sqrtm(cov *
diag(cov)[:, None])) (elementwise product), and ``_norm`` divides it by tr(cov);
mutual_info_score = mean off-diagonal discrete MI between discretised code dims.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from vaelab.metrics._common import (
    FactorSampler,
    Represent,
    discrete_mutual_info,
    histogram_discretize,
    represent_all,
)
from vaelab.registry import metric


def gaussian_total_correlation(cov: np.ndarray) -> float:
    return float(0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1]))


def gaussian_wasserstein_correlation(cov: np.ndarray) -> float:
    sqrtm = scipy.linalg.sqrtm(cov * np.diag(cov)[:, None])
    # sqrtm may return a complex array with ~0 imaginary parts; the trace is real.
    return float(np.real(2 * np.trace(cov) - 2 * np.trace(sqrtm)))


@metric("unsupervised")
def compute(
    dataset: FactorSampler,
    represent: Represent,
    rng: np.random.Generator,
    *,
    num_train: int = 10000,
    num_bins: int = 20,
) -> dict[str, float]:
    codes = represent_all(represent, dataset.sample_factors(num_train, rng))
    num_codes = codes.shape[1]
    cov = np.cov(codes, rowvar=False)
    wasserstein = gaussian_wasserstein_correlation(cov)
    discrete = histogram_discretize(codes, num_bins)
    mi = discrete_mutual_info(discrete, discrete)
    np.fill_diagonal(mi, 0.0)
    return {
        "gaussian_total_correlation": gaussian_total_correlation(cov),
        "gaussian_wasserstein_correlation": wasserstein,
        "gaussian_wasserstein_correlation_norm": float(wasserstein / np.trace(cov)),
        "mutual_info_score": float(mi.sum() / (num_codes**2 - num_codes)),
    }
