"""BetaVAE score (Higgins et al. 2017, "beta-VAE: Learning Basic Visual Concepts with a
Constrained Variational Framework", https://openreview.net/forum?id=Sy2fzU9gl).

Reproduces disentanglement_lib's ``beta_vae.compute_beta_vae_sklearn``: each
training point picks a factor k uniformly, draws two batches of ``batch_size``
factor vectors whose factor k agrees pairwise, and uses the mean over the batch
of |r(x1) - r(x2)| as features for label k; a default sklearn
``LogisticRegression`` is fit on ``num_train`` points and scored on ``num_eval``
fresh ones.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from vaelab.metrics._common import FactorSampler, Represent, num_factors, represent_many
from vaelab.registry import metric


def _draw_pairs(dataset: FactorSampler, num_points: int, batch_size: int, rng: np.random.Generator):
    """Labels (n,) and two (n, batch, K) factor batches whose factor ``label`` agrees pairwise."""
    k = num_factors(dataset)
    labels = rng.integers(0, k, size=num_points)
    first = dataset.sample_factors(num_points * batch_size, rng).reshape(num_points, batch_size, k)
    second = dataset.sample_factors(num_points * batch_size, rng).reshape(num_points, batch_size, k)
    points = np.arange(num_points)
    second[points, :, labels] = first[points, :, labels]
    return labels, first, second


def _features(codes_first: np.ndarray, codes_second: np.ndarray, num_points: int, batch_size: int) -> np.ndarray:
    diff = np.abs(codes_first - codes_second).reshape(num_points, batch_size, -1)
    return diff.mean(axis=1)


@metric("beta_vae", headline={"beta_vae": "eval_accuracy"})
def compute(
    dataset: FactorSampler,
    represent: Represent,
    rng: np.random.Generator,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
) -> dict[str, float]:
    k = num_factors(dataset)
    train_labels, train_a, train_b = _draw_pairs(dataset, num_train, batch_size, rng)
    eval_labels, eval_a, eval_b = _draw_pairs(dataset, num_eval, batch_size, rng)
    codes = represent_many(
        represent, *(f.reshape(-1, k) for f in (train_a, train_b, eval_a, eval_b))
    )
    train_points = _features(codes[0], codes[1], num_train, batch_size)
    eval_points = _features(codes[2], codes[3], num_eval, batch_size)

    # The reference passes its RandomState; lbfgs (the default solver) does not use it.
    model = LogisticRegression()
    with warnings.catch_warnings():
        # Default max_iter as in the reference; it may stop before convergence there too.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train_points, train_labels)
    return {
        "train_accuracy": float(np.mean(model.predict(train_points) == train_labels)),
        "eval_accuracy": float(np.mean(model.predict(eval_points) == eval_labels)),
    }
