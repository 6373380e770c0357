"""SAP score (Kumar et al. 2018, "Variational Inference of Disentangled Latent Concepts
from Unlabeled Observations", https://openreview.net/forum?id=H1kG7GZAW, Sec. 3).

Reproduces disentanglement_lib's ``sap_score.compute_sap`` with
``continuous_factors=False`` (the study setting): S[i, j] is the test accuracy of
``LinearSVC(C=0.01, class_weight="balanced")`` trained on code dim i alone to
predict factor j; SAP is the mean over factors of the gap between the best and
second-best code dim.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from vaelab.metrics._common import FactorSampler, Represent, represent_many
from vaelab.registry import metric


def score_matrix(codes: np.ndarray, factors: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray) -> np.ndarray:
    num_codes, k = codes.shape[1], factors.shape[1]
    scores = np.zeros((num_codes, k))
    with warnings.catch_warnings():
        # Same solver settings as the reference, which may stop at max_iter as well.
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in range(num_codes):
            for j in range(k):
                classifier = LinearSVC(C=0.01, class_weight="balanced")
                classifier.fit(codes[:, i : i + 1], factors[:, j])
                scores[i, j] = np.mean(classifier.predict(codes_test[:, i : i + 1]) == factors_test[:, j])
    return scores


@metric("sap", headline={"sap": "SAP_score"})
def compute(
    dataset: FactorSampler,
    represent: Represent,
    rng: np.random.Generator,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
) -> dict[str, float]:
    factors = dataset.sample_factors(num_train, rng)
    factors_test = dataset.sample_factors(num_test, rng)
    codes, codes_test = represent_many(represent, factors, factors_test)
    ranked = np.sort(score_matrix(codes, factors, codes_test, factors_test), axis=0)
    return {"SAP_score": float(np.mean(ranked[-1] - ranked[-2]))}
