"""Weakly-supervised objectives and their pairs: the loss against disentanglement_lib's formulas on
fixed numbers, pairs that differ in exactly the factors drawn, and runs through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import call_vaelab
from vaelab.data.pairs import PairSampling
from vaelab.data.dsprites import ProceduralDSprites
from vaelab.data.stream import TrainingStream, batch_pair_factors
from vaelab.errors import UserError
from vaelab.information import kl_conditional_per_dim
from vaelab.models.vae import VAEOutput
from vaelab.objectives.weak import AdaGVAE, AdaInfoMax, AdaMLVAE, GroupVAE, MLVAE


def reference_pair_posteriors(mu1, logvar1, mu2, logvar2, averaging, known_k=None):
    """disentanglement_lib's weak_vae, restated in numpy on variances: its divergence (twice the
    KL, which moves no threshold), two equal-width bins between the smallest and the largest
    (the upper bin keeps its own posterior), and the two averages."""
    var1, var2 = np.exp(logvar1), np.exp(logvar2)
    divergence = var1 / var2 + (mu2 - mu1) ** 2 / var2 - 1 + logvar2 - logvar1
    if known_k is None:
        low, high = divergence.min(1, keepdims=True), divergence.max(1, keepdims=True)
        keep = divergence >= low + (high - low) / 2
    else:
        keep = np.zeros_like(divergence, dtype=bool)
        for row, k in enumerate(known_k):
            keep[row, np.argsort(-divergence[row])[:k]] = True
    if averaging == "gvae":
        mean, var = 0.5 * mu1 + 0.5 * mu2, 0.5 * var1 + 0.5 * var2
    else:
        var = 2 * var1 * var2 / (var1 + var2)
        mean = (mu1 / var1 + mu2 / var2) * var * 0.5
    first = np.where(keep, mu1, mean), np.where(keep, logvar1, np.log(var))
    second = np.where(keep, mu2, mean), np.where(keep, logvar2, np.log(var))
    return first, second


def fixed_pairs(count=6, dims=5, seed=3):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(size=(count, dims)), rng.normal(size=(count, dims))
    logvar1, logvar2 = rng.normal(scale=0.5, size=(count, dims)), rng.normal(scale=0.5, size=(count, dims))
    factors = np.zeros((2 * count, 5), dtype=np.int64)
    for row in range(count):  # pair b differs in its first 1, 2 or 3 factors
        factors[count + row, : 1 + row % 3] = 1
    return mu1, logvar1, mu2, logvar2, factors


@pytest.mark.parametrize("objective_class", [AdaGVAE, AdaMLVAE, GroupVAE, MLVAE])
def test_pair_posteriors_and_loss_match_disentanglement_lib(objective_class):
    mu1, logvar1, mu2, logvar2, factors = fixed_pairs()
    objective = objective_class(beta=3.0)
    as_tensor = lambda array: torch.tensor(array, dtype=torch.float64)  # noqa: E731
    mu, logvar, decided = objective.pair_posteriors(
        as_tensor(np.concatenate([mu1, mu2])), as_tensor(np.concatenate([logvar1, logvar2])), torch.tensor(factors)
    )
    known = (factors[:6] != factors[6:]).sum(1) if objective.shared_dims == "known" else None
    (mean1, lv1), (mean2, lv2) = reference_pair_posteriors(mu1, logvar1, mu2, logvar2, objective.averaging, known)
    np.testing.assert_allclose(mu.numpy(), np.concatenate([mean1, mean2]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(logvar.numpy(), np.concatenate([lv1, lv2]), rtol=1e-12, atol=1e-12)
    assert decided["differing_factors"].item() == pytest.approx(known.mean() if known is not None else 2.0)
    assert 0 < decided["shared_dims"].item() < 5

    # The loss on both observations: 0.5 (rec1 + rec2) + beta * 0.5 (kl1 + kl2), per-example means.
    reconstruction = as_tensor(np.arange(12.0) * 10)
    out = VAEOutput(mu=mu, logvar=logvar, z=mu, decoded=mu, reconstruction=reconstruction, kl_conditional=kl_conditional_per_dim(mu, logvar))
    terms = objective(out)

    def gaussian_kl(mean, log_var):  # disentanglement_lib's compute_gaussian_kl: batch mean of the sum over dims
        return np.mean(np.sum(0.5 * (mean**2 + np.exp(log_var) - log_var - 1), axis=1))

    expected = 0.5 * reconstruction[:6].mean() + 0.5 * reconstruction[6:].mean() + 3.0 * (0.5 * gaussian_kl(mean1, lv1) + 0.5 * gaussian_kl(mean2, lv2))
    assert terms["loss"].item() == pytest.approx(float(expected), rel=1e-12)


def test_shared_dims_are_the_ones_that_do_not_change():
    """Two dims move between the observations, eight stay: Ada-GVAE averages exactly the eight,
    so both observations get one posterior there and keep their own in the two."""
    mu1 = torch.zeros(3, 10)
    mu2 = mu1.clone()
    mu2[:, [2, 7]] = 3.0
    mu2[:, [0, 1, 3]] += 0.01  # small moves stay below the midpoint
    logvar = torch.full((6, 10), -2.0)
    mu, new_logvar, decided = AdaGVAE().pair_posteriors(torch.cat([mu1, mu2]), logvar, torch.zeros(6, 5, dtype=torch.long))
    shared = [0, 1, 3, 4, 5, 6, 8, 9]
    assert torch.equal(mu[:3, shared], mu[3:, shared]) and decided["shared_dims"].item() == 8
    assert torch.equal(mu[:3, [2, 7]], mu1[:, [2, 7]]) and torch.equal(mu[3:, [2, 7]], mu2[:, [2, 7]])
    torch.testing.assert_close(new_logvar, logvar)  # equal variances average to themselves


def test_ada_infomax_is_native_infomax_on_the_averaged_codes():
    from vaelab.objectives.infomax import InfoMax

    torch.manual_seed(0)
    mu, logvar, z = torch.randn(8, 4), torch.randn(8, 4) * 0.3, torch.randn(8, 4)
    out = VAEOutput(mu=mu, logvar=logvar, z=z, decoded=mu, reconstruction=torch.rand(8) * 100, kl_conditional=kl_conditional_per_dim(mu, logvar))
    pairs, plain = AdaInfoMax(lam=0.5, estimator="native", dataset_size=1000), InfoMax(lam=0.5, estimator="native", dataset_size=1000)
    assert pairs.trains_on_pairs and not plain.trains_on_pairs and pairs.label == "ada-infomax-native"
    assert pairs(out)["loss"].item() == pytest.approx(plain(out)["loss"].item(), rel=1e-12)


def test_pairs_differ_in_exactly_k_factors_and_random_k_follows_disentanglement_lib():
    dataset = ProceduralDSprites()
    rng = np.random.default_rng(0)
    first = dataset.sample_factors(20000, rng)
    for k in (1, 4):
        second = PairSampling(k).sample(first, dataset.factor_sizes, rng)
        assert ((first != second).sum(1) == k).all()
        assert ((second >= 0) & (second < np.array(dataset.factor_sizes))).all()
    counts = (first != PairSampling(None).sample(first, dataset.factor_sizes, rng)).sum(1)
    # k' uniform in 1..4, then 1 or k' with equal odds: P(1) = 1/2 + 1/8, P(2..4) = 1/8 each.
    frequencies = np.bincount(counts, minlength=5)[1:] / len(counts)
    np.testing.assert_allclose(frequencies, [0.625, 0.125, 0.125, 0.125], atol=0.015)
    # A factor of one value is never the one that differs.
    sizes = (3, 1, 4)
    second = PairSampling(1).sample(np.zeros((500, 3), dtype=np.int64), sizes, rng)
    assert (second[:, 1] == 0).all() and ((second != 0).sum(1) == 1).all()


def test_pairs_are_indexed_by_seed_and_step_and_split_across_ranks():
    dataset = ProceduralDSprites()
    pairs = PairSampling(None)
    np.testing.assert_array_equal(batch_pair_factors(dataset, pairs, 8, 0, 5), batch_pair_factors(dataset, pairs, 8, 0, 5))
    assert not np.array_equal(batch_pair_factors(dataset, pairs, 8, 0, 5), batch_pair_factors(dataset, pairs, 8, 0, 6))
    whole = next(iter(TrainingStream(dataset, 8, seed=0, start_step=3, pairs=pairs)))
    ranks = [next(iter(TrainingStream(dataset, 4, seed=0, start_step=3, rank=r, world_size=2, pairs=pairs))) for r in (0, 1)]
    assert whole["images"].shape[0] == 16  # 8 pairs: first observations, then second
    # Rank r holds pairs 4r..4r+3 whole: its first observations and their partners.
    for r, batch in enumerate(ranks):
        torch.testing.assert_close(batch["factors"][:4], whole["factors"][4 * r : 4 * r + 4])
        torch.testing.assert_close(batch["factors"][4:], whole["factors"][8 + 4 * r : 8 + 4 * r + 4])
        torch.testing.assert_close(batch["images"][4:], whole["images"][8 + 4 * r : 8 + 4 * r + 4])


@pytest.mark.parametrize(
    "spec, message",
    [({"k": 0}, "data.pairs.k=0: expected an integer >= 1"), ({"k": 5}, "data.pairs.k=5: expected random or an integer from 1 to 4"),
     ({"k": "some"}, "data.pairs.k='some'")],
)  # fmt: skip
def test_bad_pair_settings_are_one_line_errors(spec, message):
    with pytest.raises(UserError, match=message) as caught:
        PairSampling.from_config(spec, ProceduralDSprites().factor_sizes)
    assert "\n" not in str(caught.value)


TINY = (
    "model=mlp", "model.hidden=[32]", "trainer.max_steps=6", "trainer.val_check_interval=6", "trainer.log_every_n_steps=2",
    "data.batch_size=8", "data.val_size=32", "metrics=mig", "metrics.suite.mig.num_train=300", "metrics@periodic_metrics=none",
    "periodic_metrics.every_n_steps=null", "information.num_samples=100", "images.num_images=2", "logger=csv", "num_threads=1",
)  # fmt: skip


def test_weakly_supervised_runs_train_validate_and_score_like_the_others(tmp_path, monkeypatch, capfd):
    import json

    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    for objective in ("adagvae",):  # every objective trains in test_objectives; this one also with pictures and info/
        run_dir = tmp_path / objective
        result = call_vaelab("train", f"objective={objective}", *TINY, f"hydra.run.dir={run_dir}", **cli)
        assert result.returncode == 0, result.stderr[-2000:]
        final = json.loads((run_dir / "metrics.json").read_text())["final"]
        for key in ("train/loss", "train/shared_dims", "val/loss", "val/shared_dims", "val/differing_factors", "metrics/mig", "info/mutual_info"):
            assert np.isfinite(final[key]), key
        assert 0 <= final["val/shared_dims"] <= 10 and 1 <= final["val/differing_factors"] <= 4
        assert (run_dir / "images").is_dir()

    for args, message in [
        (("objective=betavae", "data.pairs.k=2"), "data.pairs.k=2: objective=betavae trains on single images"),
        (("objective=adagvae", "data.pairs.k=5"), "data.pairs.k=5: expected random or an integer from 1 to 4"),
        (("objective=adamlvae", "beta=0"), "beta=0: expected a number > 0"),
        (("objective=adagvae", "lambda=2"), "lambda=2 is not used by objective=adagvae"),
    ]:
        result = call_vaelab("train", *args, *TINY, f"hydra.run.dir={tmp_path / 'bad'}", **cli)
        errors = [line for line in result.stderr.splitlines() if line.startswith("vaelab: error:")]
        assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr[-2000:]
