"""FactorVAE score (Kim & Mnih 2018, "Disentangling by Factorising",
https://arxiv.org/abs/1802.05983).

Reproduces disentanglement_lib's ``factor_vae.compute_factor_vae`` with the
study's ``prune_dims.threshold = 0.05``: codes are divided by their global
variance (ddof=1, over ``num_variance_estimate`` codes); dims whose global std is
below ``prune_threshold`` are ignored. Each vote fixes one random factor k over
``batch_size`` samples and votes (k, argmin over active dims of local variance /
global variance); the classifier maps each dim to its majority factor over the
training votes, and accuracy is the share of votes it gets right.

One deliberate difference: the reference reports ``num_active_dims`` as
``len(active_mask)`` (always the number of code dims, a bug); here it is the
number of active dims, which is what the name says.
"""

from __future__ import annotations

import numpy as np

from vaelab.metrics._common import FactorSampler, Represent, num_factors, represent_many, sample_factors_sharing_one
from vaelab.registry import metric


def _votes(fixed: np.ndarray, codes: np.ndarray, global_variances: np.ndarray, active: np.ndarray, k: int) -> np.ndarray:
    """(K, D) vote counts from grouped codes (G, batch, D)."""
    local_variances = codes.var(axis=1, ddof=1)
    ratios = local_variances[:, active] / global_variances[active]
    # argmin indexes the active dims only, as in the reference (its vote matrix has D
    # columns, of which only the first num_active can receive votes).
    argmin = np.argmin(ratios, axis=1)
    votes = np.zeros((k, global_variances.shape[0]), dtype=np.int64)
    np.add.at(votes, (fixed, argmin), 1)
    return votes


@metric("factor_vae", headline={"factor_vae": "eval_accuracy"})
def compute(
    dataset: FactorSampler,
    represent: Represent,
    rng: np.random.Generator,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float = 0.05,
) -> dict[str, float]:
    k = num_factors(dataset)
    variance_factors = dataset.sample_factors(num_variance_estimate, rng)
    train_fixed, train_factors = sample_factors_sharing_one(dataset, num_train, batch_size, rng)
    eval_fixed, eval_factors = sample_factors_sharing_one(dataset, num_eval, batch_size, rng)
    variance_codes, train_codes, eval_codes = represent_many(
        represent, variance_factors, train_factors.reshape(-1, k), eval_factors.reshape(-1, k)
    )
    global_variances = variance_codes.var(axis=0, ddof=1)
    active = np.sqrt(global_variances) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0.0}

    dims = global_variances.shape[0]
    train_votes = _votes(train_fixed, train_codes.reshape(num_train, batch_size, dims), global_variances, active, k)
    eval_votes = _votes(eval_fixed, eval_codes.reshape(num_eval, batch_size, dims), global_variances, active, k)
    classifier = np.argmax(train_votes, axis=0)
    columns = np.arange(dims)
    return {
        "train_accuracy": float(train_votes[classifier, columns].sum() / train_votes.sum()),
        "eval_accuracy": float(eval_votes[classifier, columns].sum() / eval_votes.sum()),
        "num_active_dims": float(active.sum()),
    }
