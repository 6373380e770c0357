"""InfoMEC: InfoM (modularity), InfoE (explicitness) and InfoC (compactness) (Hsu, Dorrell,
Whittington, Wu & Finn 2023, "Disentanglement via Latent Quantization", NeurIPS,
https://arxiv.org/abs/2305.18378; also reported by Tripod, Hsu et al. 2024).

Computed as the authors' code computes them (``kylehkhsu/latent_quantization``,
``disentangle/metrics/infomec.py``, read for this module; the agreement test transcribes
it separately: tests/fixtures/metrics/infomec_reference.py). Every choice that moves
the numbers:

- **Points**: ``num_train`` *distinct* grid points (vaelab's draw, without replacement;
  the whole grid when it has fewer). The nearest-neighbour estimator below counts
  neighbours at distance zero, so repeated points (the other metrics draw with
  replacement) would inflate it; the authors score a set of distinct dataset images.
  No train/test split: all three scores use the same points, as in the reference.
- **NMI** (sources x latents): NMI[i, j] = I(source i; latent j) / H(source i), in nats.
  Sources are the factor indices; H is the plug-in entropy of the sample.

  * continuous latents (the default, encoder means): each latent standardised, then
    I estimated with the k-nearest-neighbour estimator for a continuous and a discrete
    variable (Ross 2014, "Mutual Information between Discrete and Continuous Data
    Sets"), ``k = num_neighbors`` = 10 as the authors set it; this is the estimator of
    sklearn's ``mutual_info_classif`` that they call, implemented here for 1-D latents
    with sorted arrays: within each factor value the k-th nearest neighbour's distance
    d, then the number m of points of any value closer than d, and
    I = psi(N) + <psi(k)> - <psi(N_value)> - <psi(m)>, clipped at 0; points whose factor
    value occurs once are left out, and k is capped at N_value - 1. As in sklearn, ties
    are broken by adding 1e-10 * max(1, mean |z|) * N(0, 1) to each standardised latent
    (drawn from the metric's stream).
  * ``discrete_latents: true`` (quantised codes): the plug-in mutual information of the
    latent's values.

- **Active latents**: range over the points > (largest range) / 20 (any range > 0 for
  discrete latents). InfoM and InfoC are computed on the active latents only; InfoE
  on all of them.
- **InfoM** = (mean over active latents j of max_i NMI[i, j] / sum_i NMI[i, j] - 1/K) / (1 - 1/K),
  K the number of factors: 1 when each latent informs about one factor only.
- **InfoC** = (mean over factors i of max_j NMI[i, j] / sum_j NMI[i, j] - 1/L) / (1 - 1/L),
  L the number of active latents: 1 when each factor is in one latent only.
- **InfoE** = mean over factors of (H_null - H_pred) / H_null. H_pred is the log loss
  (nats, on the same points it was fitted to) of a multinomial logistic regression from
  all latents (standardised; one-hot for discrete latents) to the factor: unpenalised,
  ``class_weight="balanced"``, lbfgs with tol 1e-4 and at most 100 iterations (sklearn's
  LogisticRegression, the authors' settings; it often stops at 100 iterations, which is
  part of the number). H_null is the log loss of the same regression without features;
  with balanced class weights its optimum is the uniform distribution, so H_null =
  log(number of factor values in the sample): the reference fits it and lands there
  exactly (its start is the optimum), vaelab writes it down.

Where the reference divides by zero (vaelab's choice, stated): a latent (factor) whose
NMI sums to zero over factors (latents) counts as spread evenly (0 after the
normalisation), where the reference gives NaN; with a single active latent InfoC is 1
(0 if no factor informs it), with a single factor InfoM is 1, and with no active latent
all three are 0 (as the authors' later version does).

What the scores are blind to (docs/metrics.md): InfoM and InfoC are ratios of mutual
informations, so on a code that carries no information they measure the shape of the
estimator's noise (a latent with a little spurious information about one factor and none
about the others counts as modular): read them together with InfoE and the NMI's size.
The NMI is invariant to any monotone map of each latent (scaling, permutation, sign), not
to rotations (those lower InfoM and InfoC); InfoE is invariant to any invertible linear
map of the latents.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import digamma

from vaelab.errors import UserError
from vaelab.metrics._common import (
    FactorSampler,
    Represent,
    discrete_entropy,
    discrete_mutual_info,
    represent_all,
    sample_distinct_factors,
)
from vaelab.registry import metric

JITTER = 1e-10  # sklearn's tie-breaking noise, relative to the standardised latent's scale
ACTIVE_FRACTION = 1 / 20  # a continuous latent is active if its range exceeds this share of the largest


def standardise(values: np.ndarray) -> np.ndarray:
    """Per column (x - mean) / std; a constant column becomes 0 (sklearn's StandardScaler)."""
    std = values.std(axis=0)
    return (values - values.mean(axis=0)) / np.where(std > 0, std, 1.0)


def kth_neighbour_distance(sorted_values: np.ndarray, k: int) -> np.ndarray:
    """Distance from each value of a sorted 1-D array to its k-th nearest other value.

    In one dimension a point's k nearest neighbours are k consecutive values around it,
    so the distance is the smallest, over the k + 1 windows of k + 1 consecutive values
    that hold the point, of the window's farthest value from it.
    """
    n = len(sorted_values)
    padded = np.concatenate([np.full(k, -np.inf), sorted_values, np.full(k, np.inf)])
    position = np.arange(n) + k
    best = np.full(n, np.inf)
    for left in range(k + 1):  # ``left`` neighbours below the point, k - left above
        below = sorted_values - padded[position - left]
        above = padded[position + k - left] - sorted_values
        best = np.minimum(best, np.maximum(below, above))
    return best


def count_within(sorted_values: np.ndarray, centres: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """For each centre, how many values lie at distance |v - centre| <= radius (itself included).

    The distances are compared as computed, |v - centre| in floating point, as a neighbour
    search computes them: bounds found from centre ± radius can be off by the last bit of the
    sum (the k-th neighbour itself, just outside the radius, would be counted), so they are
    moved until the values at the edges are within the radius and the next ones are not.
    """
    n = len(sorted_values)
    hi = np.searchsorted(sorted_values, centres + radius, side="right")
    lo = np.searchsorted(sorted_values, centres - radius, side="left")
    while True:
        grow = (hi < n) & (np.abs(sorted_values[np.minimum(hi, n - 1)] - centres) <= radius)
        shrink = (hi > 0) & (np.abs(sorted_values[np.maximum(hi - 1, 0)] - centres) > radius)
        if not (grow.any() or shrink.any()):
            break
        hi = hi + grow - (shrink & ~grow)
    while True:
        grow = (lo > 0) & (np.abs(sorted_values[np.maximum(lo - 1, 0)] - centres) <= radius)
        shrink = (lo < n) & (np.abs(sorted_values[np.minimum(lo, n - 1)] - centres) > radius)
        if not (grow.any() or shrink.any()):
            break
        lo = lo - grow + (shrink & ~grow)
    return hi - lo


def mutual_info_continuous_discrete(latent: np.ndarray, labels: np.ndarray, num_neighbors: int) -> float:
    """I(latent; label) in nats, Ross's (2014) nearest-neighbour estimate; latent 1-D float, labels ints."""
    _, label_index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    label_index = label_index.ravel()
    keep = counts[label_index] > 1  # a value seen once has no neighbour of its own value
    latent, label_index = latent[keep], label_index[keep]
    counts_of_point = counts[label_index]
    radius = np.empty(len(latent))
    k_of_point = np.minimum(num_neighbors, counts_of_point - 1)
    for value in np.unique(label_index):
        members = np.flatnonzero(label_index == value)
        order = np.argsort(latent[members], kind="stable")
        k = int(k_of_point[members[0]])
        distance = kth_neighbour_distance(latent[members][order], k)
        radius[members[order]] = np.nextafter(distance, 0)  # strictly closer than the k-th neighbour
    within = count_within(np.sort(latent), latent, radius)
    estimate = (
        digamma(len(latent))
        + np.mean(digamma(k_of_point))
        - np.mean(digamma(counts_of_point))
        - np.mean(digamma(within))
    )
    return max(0.0, float(estimate))


def normalised_mutual_information(
    codes: np.ndarray,
    factors: np.ndarray,
    rng: np.random.Generator,
    *,
    discrete_latents: bool = False,
    num_neighbors: int = 10,
) -> np.ndarray:
    """(K, D) NMI[i, j] = I(factor i; latent j) / H(factor i)."""
    entropy = discrete_entropy(factors)
    if discrete_latents:
        mi = discrete_mutual_info(codes, factors).T
    else:
        latents = standardise(codes)
        scale = np.maximum(1.0, np.mean(np.abs(latents), axis=0))
        latents = latents + JITTER * scale * rng.standard_normal(latents.shape)
        mi = np.array(
            [
                [mutual_info_continuous_discrete(latents[:, j], factors[:, i], num_neighbors) for j in range(codes.shape[1])]
                for i in range(factors.shape[1])
            ]
        )
    return mi / entropy[:, None]


def active_latents(codes: np.ndarray, discrete_latents: bool = False) -> np.ndarray:
    ranges = codes.max(axis=0) - codes.min(axis=0)
    if discrete_latents:
        return ranges > 0
    return ranges > ranges.max() * ACTIVE_FRACTION


def peak_share_score(nmi: np.ndarray, axis: int) -> float:
    """Mean over the other axis of max/sum along ``axis``, rescaled so that an even spread
    scores 0 and all information in one entry scores 1 (InfoM: axis 0, InfoC: axis 1)."""
    n = nmi.shape[axis]
    total = nmi.sum(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, nmi.max(axis=axis) / total, 1.0 / n)
    if n == 1:  # the rescaling is undefined: one entry holds everything there is
        return float(np.mean(total > 0))
    return float((np.mean(share) - 1.0 / n) / (1.0 - 1.0 / n))


def log_loss_of_linear_readout(features: np.ndarray, labels: np.ndarray) -> float:
    """Training log loss (nats) of the authors' multinomial logistic regression of labels on features."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    # C=inf is sklearn's unpenalised model (the reference's penalty=None, deprecated since
    # sklearn 1.8); lbfgs on three or more classes is the multinomial model.
    model = LogisticRegression(C=np.inf, tol=1e-4, class_weight="balanced", solver="lbfgs", max_iter=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(features, labels)
    probabilities = model.predict_proba(features)
    chosen = probabilities[np.arange(len(labels)), np.searchsorted(model.classes_, labels)]
    eps = np.finfo(probabilities.dtype).eps  # sklearn's log_loss clips there too
    return float(-np.mean(np.log(np.clip(chosen, eps, 1.0))))


def infoe(codes: np.ndarray, factors: np.ndarray, discrete_latents: bool = False) -> float:
    if discrete_latents:
        columns = [np.unique(c, return_inverse=True)[1].ravel() for c in codes.T]
        features = np.concatenate([np.eye(int(c.max()) + 1)[c] for c in columns], axis=1)
    else:
        features = standardise(codes)
    shares = []
    for labels in factors.T:
        null = np.log(len(np.unique(labels)))
        shares.append((null - log_loss_of_linear_readout(features, labels)) / null)
    return float(np.mean(shares))


def infomec_from_codes(
    codes: np.ndarray,
    factors: np.ndarray,
    rng: np.random.Generator,
    *,
    discrete_latents: bool = False,
    num_neighbors: int = 10,
) -> dict[str, float]:
    """InfoM, InfoE, InfoC of (N, D) codes for (N, K) factor indices (see the module docstring)."""
    nmi = normalised_mutual_information(codes, factors, rng, discrete_latents=discrete_latents, num_neighbors=num_neighbors)
    active = active_latents(codes, discrete_latents)
    if not active.any():
        return {"infom": 0.0, "infoe": 0.0, "infoc": 0.0, "num_active_dims": 0.0}
    pruned = nmi[:, active]
    return {
        "infom": peak_share_score(pruned, axis=0),
        "infoe": infoe(codes, factors, discrete_latents),
        "infoc": peak_share_score(pruned, axis=1),
        "num_active_dims": float(active.sum()),
    }


def check_hparams(hparams: Mapping[str, Any]) -> None:
    """A UserError for a value out of range (run by check_suite before anything is encoded)."""
    num_train, num_neighbors, discrete_latents = hparams["num_train"], hparams["num_neighbors"], hparams["discrete_latents"]
    if isinstance(num_train, bool) or not isinstance(num_train, int) or num_train < 2:
        raise UserError(f"infomec: num_train={num_train!r}: expected an integer >= 2")
    if isinstance(num_neighbors, bool) or not isinstance(num_neighbors, int) or num_neighbors < 1:
        raise UserError(f"infomec: num_neighbors={num_neighbors!r}: expected an integer >= 1")
    if not isinstance(discrete_latents, bool):
        raise UserError(f"infomec: discrete_latents={discrete_latents!r}: expected true or false")


@metric("infomec", headline={"infom": "infom", "infoe": "infoe", "infoc": "infoc"}, check_hparams=check_hparams)
def compute(
    dataset: FactorSampler,
    represent: Represent,
    rng: np.random.Generator,
    *,
    num_train: int = 10000,
    num_neighbors: int = 10,
    discrete_latents: bool = False,
) -> dict[str, float]:
    constant = [k for k, size in enumerate(dataset.factor_sizes) if size < 2]
    if constant:
        raise UserError(
            f"infomec: factor {constant[0]} takes a single value, so it has no entropy to normalise by; "
            "leave it out of the dataset's factors"
        )
    factors = sample_distinct_factors(dataset, num_train, rng)
    codes = represent_all(represent, factors)
    return infomec_from_codes(codes, factors, rng, discrete_latents=discrete_latents, num_neighbors=num_neighbors)
