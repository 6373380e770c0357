"""Unsupervised Disentanglement Ranking, UDR (Duan et al., 2020, "Unsupervised Model Selection for
Variational Disentangled Representation Learning", https://arxiv.org/abs/1905.12614).

Reproduces disentanglement_lib's ``udr.compute_udr_sklearn``. No labels: a model whose code is
disentangled should agree with other disentangled models up to a permutation and sign flips of
the latents, while entangled codes are each entangled their own way. For two models i, j
encoded on the same images:

1. each code (the posterior means) is standardised per latent, and latents whose mean
   KL[q(z_d|x)||p(z_d)] is at most ``kl_threshold`` (0.01 nats, unused by the model) are zeroed
   and left out;
2. R[a, b] is how strongly latent a of model i goes with latent b of model j: the absolute
   coefficients of a Lasso regression (alpha 0.1) of j's code on i's (``correlation="lasso"``),
   or the absolute Spearman rank correlation (``"spearman"``);
3. the pairwise score is the mean of the relative strengths, max(R)^2 / sum(R), of R's columns
   and of its rows (each averaged over the active latents): 1 when R is a permutation,
   lower as each latent spreads over several of the other's.

A model's UDR is the median of its pairwise scores against its peers: in the paper's UDR,
the models trained with the same hyperparameters and other seeds; in UDR-A2A, all the others.

Unlike the registered metrics (vaelab/registry.py), UDR scores a set of models against each
other, so it has its own signature: :func:`pairwise_scores` and :func:`model_scores`.
"""

from __future__ import annotations

import numpy as np

CORRELATIONS = ("lasso", "spearman")


def relative_strength(correlation: np.ndarray) -> float:
    """Mean over columns and over rows of max^2 / sum (0/0 counts as 0), averaged: the pairwise score.
    With no active latent on one side there is nothing to match: 0 (the reference fails there)."""
    if correlation.size == 0:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        columns = np.nan_to_num(correlation.max(axis=0) ** 2 / correlation.sum(axis=0), nan=0.0)
        rows = np.nan_to_num(correlation.max(axis=1) ** 2 / correlation.sum(axis=1), nan=0.0)
    return float((np.nanmean(columns) + np.nanmean(rows)) / 2)


def lasso_correlation(codes_i: np.ndarray, codes_j: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """|coefficients| of the Lasso regression of codes_j on codes_i, (D_i, D_j)."""
    from sklearn.linear_model import Lasso

    return np.abs(Lasso(alpha=alpha).fit(codes_i, codes_j).coef_).T


def spearman_correlation(codes_i: np.ndarray, codes_j: np.ndarray) -> np.ndarray:
    """|Spearman rank correlation| of each latent of codes_i with each of codes_j, (D_i, D_j).
    A constant (zeroed) latent has no correlation: its entries are NaN, as in the reference."""
    import warnings

    from scipy.stats import ConstantInputWarning, spearmanr

    size = codes_i.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)  # the zeroed latents: NaN, expected
        return np.abs(np.array([[spearmanr(codes_i[:, a], codes_j[:, b]).statistic for b in range(size)]
                                for a in range(size)]))  # fmt: skip


def _standardised(codes: np.ndarray, kl: np.ndarray, kl_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    mean, std = codes.mean(axis=0), codes.std(axis=0)
    scaled = (codes - mean) / np.where(std > 0, std, 1.0)  # sklearn's StandardScaler
    active = kl > kl_threshold
    return scaled * active, active


def pairwise_scores(
    codes: list[np.ndarray], kl: list[np.ndarray], *, correlation: str = "lasso", kl_threshold: float = 0.01
) -> np.ndarray:
    """(M, M) scores of every ordered pair of the M models (diagonal NaN).

    ``codes[m]``: (N, D) posterior means of model m on the same N images; ``kl[m]``: (D,) its
    mean KL per latent on them."""
    if correlation not in CORRELATIONS:
        raise ValueError(f"correlation must be one of {CORRELATIONS}, got {correlation!r}")
    prepared = [_standardised(np.asarray(c, dtype=np.float64), np.asarray(k), kl_threshold) for c, k in zip(codes, kl)]
    correlate = lasso_correlation if correlation == "lasso" else spearman_correlation
    scores = np.full((len(codes), len(codes)), np.nan)
    for i, (codes_i, active_i) in enumerate(prepared):
        for j, (codes_j, active_j) in enumerate(prepared):
            if i != j:
                scores[i, j] = relative_strength(correlate(codes_i, codes_j)[active_i][:, active_j])
    return scores


def model_scores(pairwise: np.ndarray, peers: list[list[int]] | None = None) -> np.ndarray:
    """(M,) each model's UDR: the median of its scores against its ``peers`` (default: all others,
    UDR-A2A); NaN for a model without peers. As in the reference, model m's scores are
    column m, the other models' regressions onto it."""
    size = pairwise.shape[0]
    peers = peers if peers is not None else [[j for j in range(size) if j != m] for m in range(size)]
    return np.array([np.median(pairwise[others, m]) if others else np.nan for m, others in enumerate(peers)])
