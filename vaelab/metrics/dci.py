"""Disentanglement, Completeness and Informativeness (Eastwood & Williams 2018, "A
Framework for the Quantitative Evaluation of Disentangled Representations",
https://openreview.net/forum?id=By-7dz-AZ).

Reproduces disentanglement_lib's ``dci.compute_dci``: one gradient-boosted tree
classifier per factor on the raw codes; R[i, j] = importance of code i for factor
j; disentanglement = sum_i rho_i (1 - H_K(R[i, :] / sum)), completeness =
sum_j rho_j (1 - H_D(R[:, j] / sum)) with entropies in base K resp. D and +1e-11
inside (scipy.stats.entropy as in the reference); informativeness = mean accuracy.

``booster`` picks the classifier:

- ``"exact"``: sklearn ``GradientBoostingClassifier()`` with defaults,
  the reference's model.
- ``"fast_exact"`` (default): the same model (sklearn's algorithm with its exact thresholds,
  vaelab.metrics._gbt.ExactGradientBoosting), all trees of a boosting round grown
  together level by level with torch array operations; it equals sklearn's
  probabilities and importances up to round-off, except where two splits gain
  exactly the same (sklearn then picks at random). Speed in docs/metrics.md.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.stats
from sklearn.ensemble import GradientBoostingClassifier

from vaelab.errors import UserError
from vaelab.metrics._common import FactorSampler, Represent, factor_names, record_table, represent_many
from vaelab.metrics._gbt import ExactGradientBoosting
from vaelab.registry import metric

BOOSTERS = ("exact", "fast_exact")


def _fit_one(booster: str, x_train: np.ndarray, y_train: np.ndarray, seed: int):
    """Fitted model (with ``predict``) and its normalised feature importances."""
    if booster == "exact":
        # The reference leaves random_state unset; without subsampling the trees only
        # use it to break ties between equally good splits.
        model = GradientBoostingClassifier(random_state=seed)
        model.fit(x_train, y_train)
        return model, np.abs(model.feature_importances_)
    model = ExactGradientBoosting(n_estimators=100, learning_rate=0.1, max_depth=3)
    model.fit(x_train, y_train)
    return model, model.feature_importances_


def _predict_train(model, x_train: np.ndarray) -> np.ndarray:
    if isinstance(model, ExactGradientBoosting):  # kept from fitting: the same numbers
        return model.classes_from_decision(model.train_decision_)
    return model.predict(x_train)


def default_workers() -> int:
    """Threads for the per-factor fits: the CPUs this process may use (``VAELAB_DCI_WORKERS`` overrides)."""
    if os.environ.get("VAELAB_DCI_WORKERS"):
        return max(1, int(os.environ["VAELAB_DCI_WORKERS"]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def importance_matrix(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    booster: str,
    seed: int,
    workers: int | None = None,
) -> tuple[np.ndarray, float, float]:
    """(D, K) importances, mean train accuracy, mean test accuracy.

    The K fits are independent and deterministic, so they run in ``workers`` threads
    (default :func:`default_workers`), most classes first; every booster spends its
    time in code that releases the GIL (torch, numpy, sklearn's Cython splitter), and
    torch runs one thread per fit meanwhile. The result does not depend on ``workers``.
    """
    num_codes, k = codes_train.shape[1], factors_train.shape[1]

    def fit(j: int):
        model, importance = _fit_one(booster, codes_train, factors_train[:, j], seed)
        train = np.mean(_predict_train(model, codes_train) == factors_train[:, j])
        test = np.mean(model.predict(codes_test) == factors_test[:, j])
        return importance, train, test

    workers = min(k, default_workers() if workers is None else max(1, workers))
    if workers == 1:
        results = [fit(j) for j in range(k)]
    else:
        import torch

        # Longest first (cost grows with the number of classes), so the slow fits overlap.
        order = sorted(range(k), key=lambda j: -len(np.unique(factors_train[:, j])))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # read by each new thread: one OpenMP thread per fit
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="vaelab-dci") as pool:
                done = dict(zip(order, pool.map(fit, order)))
        finally:
            torch.set_num_threads(threads)
        results = [done[j] for j in range(k)]
    importances = np.zeros((num_codes, k))
    for j, (importance, _, _) in enumerate(results):
        importances[:, j] = importance
    train_acc = [train for _, train, _ in results]
    test_acc = [test for _, _, test in results]
    return importances, float(np.mean(train_acc)), float(np.mean(test_acc))


def disentanglement(importances: np.ndarray) -> float:
    per_code = 1.0 - scipy.stats.entropy(importances.T + 1e-11, base=importances.shape[1])
    weights = importances if importances.sum() > 0 else np.ones_like(importances)
    code_importance = weights.sum(axis=1) / weights.sum()
    return float(np.sum(per_code * code_importance))


def completeness(importances: np.ndarray) -> float:
    per_factor = 1.0 - scipy.stats.entropy(importances + 1e-11, base=importances.shape[0])
    weights = importances if importances.sum() > 0 else np.ones_like(importances)
    factor_importance = weights.sum(axis=0) / weights.sum()
    return float(np.sum(per_factor * factor_importance))


@metric("dci", headline={"dci_disentanglement": "disentanglement"})
def compute(
    dataset: FactorSampler,
    represent: Represent,
    rng: np.random.Generator,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
    booster: str = "fast_exact",
) -> dict[str, float]:
    if booster not in BOOSTERS:
        raise UserError(f"dci: booster must be one of {', '.join(BOOSTERS)}, got {booster!r}")
    factors_train = dataset.sample_factors(num_train, rng)
    factors_test = dataset.sample_factors(num_test, rng)
    codes_train, codes_test = represent_many(represent, factors_train, factors_test)
    seed = int(rng.integers(0, 2**31 - 1))
    importances, train_acc, test_acc = importance_matrix(
        codes_train, factors_train, codes_test, factors_test, booster, seed
    )
    # Which code dimensions predict which factor: one large entry per row and column is disentangled.
    record_table("dci_importance", ["code", *factor_names(dataset)], [[f"z{i}", *map(float, row)] for i, row in enumerate(importances)])
    return {
        "disentanglement": disentanglement(importances),
        "completeness": completeness(importances),
        "informativeness_train": train_acc,
        "informativeness_test": test_acc,
    }
