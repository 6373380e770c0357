"""Modularity and explicitness (Ridgeway & Mozer 2018, "Learning Deep Disentangled
Embeddings With the F-Statistic Loss", https://arxiv.org/abs/1802.05312).

Reproduces disentanglement_lib's
``modularity_explicitness.compute_modularity_explicitness`` with the study's
20-bin histogram discretizer. Modularity: from the (code, factor) MI matrix as
for MIG, per code theta = max_j m^2, delta = (sum_j m^2 - theta) / (theta (K - 1)),
score 1 - delta (0 when theta = 0), averaged over all code dims. Explicitness:
codes z-scored with the training mean/std, one default ``LogisticRegression`` per
factor on all dims, macro one-vs-rest ROC-AUC of the predicted probabilities,
averaged over factors.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import label_binarize

from vaelab.metrics._common import (
    FactorSampler,
    Represent,
    discrete_mutual_info,
    histogram_discretize,
    represent_many,
)
from vaelab.registry import metric


def modularity(mutual_information: np.ndarray) -> float:
    squared = np.square(mutual_information)  # (D, K)
    theta = squared.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (squared.sum(axis=1) - theta) / (theta * (squared.shape[1] - 1.0))
    scores = np.where(theta == 0.0, 0.0, 1.0 - delta)
    return float(np.mean(scores))


def _macro_auc(y: np.ndarray, probabilities: np.ndarray, classes: np.ndarray) -> float:
    # The reference one-hot encodes y over the classes present in y (MultiLabelBinarizer)
    # and scores the probability columns of all classes seen in training; with the
    # study's sample sizes every factor value occurs in both sets, so these match.
    present = np.isin(classes, np.unique(y))
    onehot = label_binarize(y, classes=classes)
    if len(classes) == 2:
        onehot = np.hstack([1 - onehot, onehot])
    return float(roc_auc_score(onehot[:, present], probabilities[:, present], average="macro"))


def explicitness_scores(codes: np.ndarray, factors: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray):
    mean, std = codes.mean(axis=0), codes.std(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # A constant dim gives NaN as in the reference; zero it so sklearn accepts it.
        train = np.nan_to_num((codes - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)
        test = np.nan_to_num((codes_test - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)
    train_auc, test_auc = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for j in range(factors.shape[1]):
            clf = LogisticRegression().fit(train, factors[:, j])
            train_auc.append(_macro_auc(factors[:, j], clf.predict_proba(train), clf.classes_))
            test_auc.append(_macro_auc(factors_test[:, j], clf.predict_proba(test), clf.classes_))
    return float(np.mean(train_auc)), float(np.mean(test_auc))


@metric("modularity_explicitness", headline={"modularity": "modularity_score"})
def compute(
    dataset: FactorSampler,
    represent: Represent,
    rng: np.random.Generator,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
    num_bins: int = 20,
    explicitness: bool = True,
) -> dict[str, float]:
    """``explicitness=False`` skips the classifiers (the costly half) and returns modularity only."""
    factors = dataset.sample_factors(num_train, rng)
    factors_test = dataset.sample_factors(num_test, rng)
    codes, codes_test = represent_many(represent, factors, factors_test)
    mi = discrete_mutual_info(histogram_discretize(codes, num_bins), factors)
    if not explicitness:
        return {"modularity_score": modularity(mi)}
    train_auc, test_auc = explicitness_scores(codes, factors, codes_test, factors_test)
    return {
        "modularity_score": modularity(mi),
        "explicitness_score_train": train_auc,
        "explicitness_score_test": test_auc,
    }
