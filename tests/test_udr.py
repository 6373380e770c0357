"""UDR (vaelab/metrics/udr.py): disentanglement_lib's compute_udr_sklearn on fixed codes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import ConstantInputWarning

from vaelab.metrics import udr


def _factors(n: int = 1000, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.7, 1.7, size=(n, d))  # independent, non-Gaussian


def test_relative_strength_by_hand():
    # columns: 1/1.5 and 0.25/0.5 -> 0.5833; rows: 1/1 and 0.25/1 -> 0.625; mean 0.6042
    assert udr.relative_strength(np.array([[1.0, 0.0], [0.5, 0.5]])) == pytest.approx((7 / 12 + 5 / 8) / 2)
    assert udr.relative_strength(np.eye(4)[[2, 0, 3, 1]]) == 1.0  # a permutation
    assert udr.relative_strength(np.zeros((2, 2))) == 0.0  # 0/0 counts as 0, as in the reference
    assert udr.relative_strength(np.zeros((0, 3))) == 0.0  # a model with no active latent


@pytest.mark.parametrize("correlation", udr.CORRELATIONS)
def test_codes_equal_up_to_permutation_and_sign_score_near_one_rotated_codes_lower(correlation):
    factors = _factors()
    permuted = -2.0 * factors[:, [2, 0, 1]]  # another model's code: permuted, flipped, rescaled
    angle = np.pi / 4
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    rotated = factors @ rotation.T  # entangles the first two latents
    kl = [np.ones(3)] * 3
    scores = udr.pairwise_scores([factors, permuted, rotated], kl, correlation=correlation)
    # The reference's ceiling: the Lasso shrinks each standardised coefficient 1 to 1 - alpha = 0.9,
    # and a permutation scores its coefficient; Spearman's sums carry the sampling noise of the zeros.
    assert scores[0, 1] == pytest.approx(0.9, abs=0.01 if correlation == "lasso" else 0.05)
    assert scores[1, 0] == pytest.approx(scores[0, 1], abs=0.01)
    # Rotating two of three latents by 45 degrees splits each of them over two: about 0.5.
    assert 0.45 < scores[0, 2] < 0.6 and 0.45 < scores[2, 0] < 0.6
    ranked = udr.model_scores(scores)  # A2A: the median over the other two
    assert ranked[0] > ranked[2] and ranked[1] > ranked[2]


def test_latents_with_no_kl_are_left_out():
    """A latent the model does not use (mean KL <= 0.01 nats) is zeroed and ignored: adding
    one to a model leaves its scores unchanged (Lasso)."""
    factors = _factors()
    base = udr.pairwise_scores([factors, factors[:, ::-1]], [np.ones(3), np.ones(3)])
    noise = np.random.default_rng(1).normal(size=(1000, 1))
    with_dead = [np.hstack([factors, noise]), np.hstack([factors[:, ::-1], noise[::-1]])]
    dead_kl = np.array([1.0, 1.0, 1.0, 0.005])
    scores = udr.pairwise_scores(with_dead, [dead_kl, dead_kl])
    np.testing.assert_allclose(scores, base)


def test_a_models_udr_is_the_median_over_its_peers_of_their_regressions_onto_it():
    pairwise = np.array([[np.nan, 0.2, 0.9, 0.4], [0.3, np.nan, 0.5, 0.6], [0.7, 0.1, np.nan, 0.8], [0.0, 1.0, 0.6, np.nan]])
    np.testing.assert_allclose(udr.model_scores(pairwise), [0.3, 0.2, 0.6, 0.6])  # column medians
    scores = udr.model_scores(pairwise, peers=[[1], [0], [3], []])
    np.testing.assert_allclose(scores[:3], [0.3, 0.2, 0.6])
    assert np.isnan(scores[3])  # no peer trained with the same settings


def _reference_udr(representations, kls, correlation_matrix):
    """disentanglement_lib's compute_udr_sklearn after its data generation, transcribed step by step
    (StandardScaler, the 0.01 KL mask, Lasso(alpha=0.1) or per-pair Spearman, relative strength,
    the median of each model's column)."""
    from scipy.stats import spearmanr
    from sklearn import linear_model, preprocessing

    reps = [preprocessing.StandardScaler().fit(r).transform(r) * np.greater(k, 0.01) for r, k in zip(representations, kls)]
    masks = [k > 0.01 for k in kls]
    num_models = len(reps)
    disentanglement = np.zeros((num_models, num_models, 1))
    for i in range(num_models):
        for j in range(num_models):
            if i == j:
                continue
            if correlation_matrix == "lasso":
                corr = np.transpose(np.absolute(linear_model.Lasso(alpha=0.1).fit(reps[i], reps[j]).coef_))
            else:
                corr = np.transpose(np.absolute(np.stack(
                    [np.stack([spearmanr(reps[i][:, a], reps[j][:, b], nan_policy="omit")[0] for b in range(reps[j].shape[1])])
                     for a in range(reps[i].shape[1])], axis=1)))  # fmt: skip
            corr = corr[masks[i], ...][..., masks[j]]
            score_x = np.nanmean(np.nan_to_num(np.power(np.max(corr, axis=0), 2) / np.sum(corr, axis=0), 0))
            score_y = np.nanmean(np.nan_to_num(np.power(np.max(corr, axis=1), 2) / np.sum(corr, axis=1), 0))
            disentanglement[i, j] = (score_x + score_y) / 2
    return disentanglement[..., 0], [np.median(np.delete(disentanglement[:, i], i)) for i in range(num_models)]


@pytest.mark.parametrize("correlation", udr.CORRELATIONS)
def test_udr_reproduces_the_reference_on_fixed_codes(correlation):
    """Four models' codes on the same 500 inputs: mixtures of shared factors with noise, one
    latent each below the KL threshold; every pairwise score and model score as the reference."""
    rng = np.random.default_rng(7)
    factors = rng.uniform(-1, 1, size=(500, 4))
    codes, kls = [], []
    for model in range(4):
        mixing = np.eye(4)[rng.permutation(4)] + model * 0.15 * rng.normal(size=(4, 4))
        codes.append(np.hstack([factors @ mixing, rng.normal(size=(500, 1))]) + 0.05 * rng.normal(size=(500, 5)))
        kls.append(np.append(rng.uniform(0.5, 3.0, size=4), 0.004))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)  # the reference on its zeroed latent
        pairwise, model_scores = _reference_udr([c.copy() for c in codes], kls, correlation)
    ours = udr.pairwise_scores(codes, kls, correlation=correlation)
    off_diagonal = ~np.eye(4, dtype=bool)
    np.testing.assert_allclose(ours[off_diagonal], pairwise[off_diagonal], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(udr.model_scores(ours), model_scores, rtol=1e-9)
    assert np.ptp(model_scores) > 0.05  # the models differ: the comparison is not between equal numbers
