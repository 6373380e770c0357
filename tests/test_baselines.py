"""The field's baselines (β-TCVAE, FactorVAE, DIP-VAE, AnnealedVAE): each loss on fixed tensors
against disentanglement_lib's formula, written out here independently in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from vaelab.errors import UserError
from vaelab.runfiles import read_history
from vaelab.models import MLPVAE
from vaelab.objectives.annealedvae import AnnealedVAE
from vaelab.objectives.betatcvae import BetaTCVAE
from vaelab.objectives.dipvae import DIPVAE
from vaelab.objectives.factorvae import FactorVAE, shuffle_dimensions


def _forward(batch: int = 32, latent_dim: int = 3):
    torch.manual_seed(0)
    model = MLPVAE(image_shape=(1, 8, 8), binary_data=True, latent_dim=latent_dim, hidden=(32,))
    images = (torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    return model, model(images, torch.randn(batch, latent_dim, generator=torch.Generator().manual_seed(2)))


def _fixed_output(batch: int = 32, latent_dim: int = 4):
    """A forward pass's tensors, fixed: correlated means (a total correlation well above zero)."""
    from types import SimpleNamespace

    from vaelab.information import kl_conditional_per_dim

    generator = torch.Generator().manual_seed(5)
    base = torch.randn(batch, 1, generator=generator)
    mu = base + 0.3 * torch.randn(batch, latent_dim, generator=generator)
    logvar = -2.0 + 0.5 * torch.randn(batch, latent_dim, generator=generator)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(batch, latent_dim, generator=generator)
    reconstruction = 50.0 + 10.0 * torch.rand(batch, generator=generator)
    return SimpleNamespace(mu=mu, logvar=logvar, z=z, reconstruction=reconstruction,
                           kl_conditional=kl_conditional_per_dim(mu, logvar))  # fmt: skip


def _numpy(*tensors):
    return [t.detach().double().numpy() for t in tensors]


def _reference_total_correlation(z, mu, logvar):
    """disentanglement_lib's total_correlation (vae.py): minibatch-weighted, the log(N*M) constants
    left out."""
    log_q = -0.5 * (np.log(2 * np.pi) + logvar[None] + (z[:, None] - mu[None]) ** 2 * np.exp(-logvar[None]))
    log_qz_product = logsumexp(log_q, axis=1).sum(axis=1)
    log_qz = logsumexp(log_q.sum(axis=2), axis=1)
    return np.mean(log_qz - log_qz_product)


def _reference_kl(mu, logvar):
    return np.mean(np.sum(0.5 * (mu**2 + np.exp(logvar) - logvar - 1), axis=1))


@pytest.mark.parametrize("beta", [1.0, 6.0])
def test_betatcvae_is_disentanglement_libs_loss(beta):
    out = _fixed_output()
    z, mu, logvar, recon = _numpy(out.z, out.mu, out.logvar, out.reconstruction)
    batch, dims = z.shape
    # The reference leaves out log(N*M) in each log-density; vaelab's minibatch-weighted estimate
    # divides each mixture by the batch size B, so the two TCs differ by the constant (D-1) log B.
    tc = _reference_total_correlation(z, mu, logvar) + (dims - 1) * np.log(batch)
    expected = recon.mean() + _reference_kl(mu, logvar) + (beta - 1) * tc
    terms = BetaTCVAE(beta=beta, sampling="mws", dataset_size=10_000)(out)
    assert tc > 0.5  # the correlated means make the total correlation worth testing
    assert terms["total_correlation_mb"].item() == pytest.approx(tc, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-5)


def _reference_dip(mu, logvar, lambda_od, lambda_d, dip_type):
    expectation_mu_mu_t = np.mean(mu[:, :, None] * mu[:, None, :], axis=0)
    expectation_mu = mu.mean(axis=0)
    covariance = expectation_mu_mu_t - expectation_mu[:, None] * expectation_mu[None, :]
    if dip_type == "ii":
        covariance = covariance + np.diag(np.exp(logvar).mean(axis=0))
    diagonal = np.diag(covariance)
    off_diagonal = covariance - np.diag(diagonal)
    return lambda_od * np.sum(off_diagonal**2) + lambda_d * np.sum((diagonal - 1) ** 2)


@pytest.mark.parametrize(("dip_type", "lambda_d_factor"), [("i", 10.0), ("ii", 1.0)])
def test_dipvae_is_disentanglement_libs_loss(dip_type, lambda_d_factor):
    out = _fixed_output()
    mu, logvar, recon = _numpy(out.mu, out.logvar, out.reconstruction)
    objective = DIPVAE(lambda_od=5.0, type=dip_type)  # lambda_d_factor defaults by type
    assert objective.lambda_d == 5.0 * lambda_d_factor
    expected = recon.mean() + _reference_kl(mu, logvar) + _reference_dip(mu, logvar, 5.0, 5.0 * lambda_d_factor, dip_type)
    assert objective(out)["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_annealedvae_holds_the_kl_at_a_capacity_growing_linearly_to_c_max():
    out = _fixed_output()
    mu, logvar, recon = _numpy(out.mu, out.logvar, out.reconstruction)
    kl = _reference_kl(mu, logvar)
    objective = AnnealedVAE(c_max=20.0, gamma=1000.0, c_steps=100)
    for step, capacity in [(0, 0.0), (25, 5.0), (100, 20.0), (10_000, 20.0), (None, 20.0)]:
        terms = objective(out, step=step)
        assert terms["capacity"].item() == pytest.approx(capacity)
        assert terms["loss"].item() == pytest.approx(recon.mean() + 1000.0 * abs(kl - capacity), rel=1e-5)


def test_factorvae_loss_and_each_part_gets_only_its_own_gradient():
    model, out = _forward(latent_dim=4)
    objective = FactorVAE(gamma=10.0, latent_dim=4, discriminator_hidden=16, discriminator_layers=2, seed=3)
    terms = objective(out, step=7)
    z, mu, logvar, recon = _numpy(out.z, out.mu, out.logvar, out.reconstruction)
    with torch.no_grad():
        logits = objective.discriminator(out.z).double().numpy()
        shuffled = shuffle_dimensions(out.z, objective._generator(7))
        logits_shuffled = objective.discriminator(shuffled).double().numpy()
    # disentanglement_lib: tc = E[logit_0 - logit_1]; discriminator loss = -(0.5 E log p_0(z) + 0.5 E log p_1(z~)).
    tc = np.mean(logits[:, 0] - logits[:, 1])
    log_softmax = lambda x: x - logsumexp(x, axis=1, keepdims=True)  # noqa: E731
    discriminator_loss = -(0.5 * log_softmax(logits)[:, 0].mean() + 0.5 * log_softmax(logits_shuffled)[:, 1].mean())
    vae_loss = recon.mean() + _reference_kl(mu, logvar) + 10.0 * tc
    assert terms["total_correlation_discriminator"].item() == pytest.approx(tc, rel=1e-5)
    assert terms["loss_vae"].item() == pytest.approx(vae_loss, rel=1e-5)
    assert terms["loss_discriminator"].item() == pytest.approx(discriminator_loss, rel=1e-5)
    # The shuffle permutes each dimension across the batch: same values per column, new pairings.
    assert torch.equal(shuffled.sort(dim=0).values, out.z.sort(dim=0).values) and not torch.equal(shuffled, out.z)

    # One backward of the summed loss = the VAE loss's gradient for the model, the
    # discriminator loss's gradient for the discriminator (the reference's two optimisers).
    def gradients(loss, parameters):
        return torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)

    model_parameters, discriminator_parameters = list(model.parameters()), list(objective.discriminator.parameters())
    for summed, alone in zip(gradients(terms["loss"], model_parameters), gradients(terms["loss_vae"], model_parameters)):
        torch.testing.assert_close(summed, alone)
    for summed, alone in zip(gradients(terms["loss"], discriminator_parameters),
                             gradients(terms["loss_discriminator"], discriminator_parameters)):  # fmt: skip
        torch.testing.assert_close(summed, alone)
    assert all(g is None for g in gradients(terms["loss_discriminator"], model_parameters))
    # The shuffle is a function of (seed, step): a resumed run draws the same one.
    torch.testing.assert_close(objective(out, step=7)["loss"], terms["loss"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BetaTCVAE(beta=0, dataset_size=10), "beta=0: expected a number > 0"),
        (lambda: BetaTCVAE(beta=2, sampling="x", dataset_size=10), "objective.sampling='x'"),
        (lambda: FactorVAE(gamma=-1), "gamma=-1: expected a number > 0"),
        (lambda: DIPVAE(lambda_od=0), "lambda_od=0: expected a number > 0"),
        (lambda: DIPVAE(type="iii"), "objective.type='iii': expected one of i, ii"),
        (lambda: AnnealedVAE(c_max=0), "c_max=0: expected a number > 0"),
        (lambda: AnnealedVAE(c_steps=0), "objective.c_steps=0: expected an integer >= 1"),
        (lambda: BetaTCVAE(sampling="queue", dataset_size=100), "objective.sampling='queue': expected one of mws, mss, memory"),
        (lambda: BetaTCVAE(sampling="memory", memory_size=0, dataset_size=100), "objective.memory_size=0: expected an integer >= 1"),
    ],
)
def test_bad_baseline_settings_are_one_line_errors(make, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")) as caught:
        make()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "objective",
    [
        pytest.param(("objective=factorvae", "gamma=10", "objective.discriminator_hidden=32"), id="factorvae"),
        # Its capacity grows with the step: a resumed run must pick the schedule up where it was.
        pytest.param(("objective=annealedvae", "objective.c_steps=15"), id="annealedvae"),
        # Its pairs are drawn by (seed, step) like single images: a resumed run trains on the same ones.
        pytest.param(("objective=adagvae", "beta=2"), id="adagvae"),
        # Its memory of recent encodings estimates log q(z): a resumed run must start from the same one.
        pytest.param(("objective=betatcvae", "beta=4", "objective.sampling=memory", "objective.memory_size=48"), id="betatcvae-memory"),
    ],
)
def test_stateful_objectives_resume_bit_for_bit(tmp_path, objective):
    """10 steps, then 10 more resumed from the checkpoint, end exactly where 20 uninterrupted
    steps end: the model, FactorVAE's discriminator, and Adam's state for both; AnnealedVAE's
    capacity schedule; Ada-GVAE's pairs. (The other objectives are functions of the batch
    alone, like β-VAE, whose resume test_resume checks through a SIGKILL.)"""
    from tests.conftest import compose_train
    from vaelab.train import train

    settings = [
        *objective, "model=mlp", "model.hidden=[64]",
        "data.batch_size=32", "data.val_size=64", "logger=none", "metrics=none", "metrics@periodic_metrics=none",
        "information.num_samples=0", "images.num_images=0", "trainer.val_check_interval=10",
        "trainer.log_every_n_steps=5", "checkpoint.every_n_steps=10",
    ]  # fmt: skip
    train(compose_train([*settings, "trainer.max_steps=20"], tmp_path / "whole"))
    train(compose_train([*settings, "trainer.max_steps=10"], tmp_path / "resumed"))
    train(compose_train([*settings, "trainer.max_steps=20", "resume=auto"], tmp_path / "resumed"))
    whole, resumed = (torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=False) for run in ("whole", "resumed"))
    assert resumed["global_step"] == whole["global_step"] == 20
    for key, value in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    (adam_whole,), (adam_resumed,) = whole["optimizer_states"], resumed["optimizer_states"]
    for index, state in adam_whole["state"].items():
        for name, value in state.items():
            assert torch.equal(adam_resumed["state"][index][name], value), (index, name)
    if "objective.sampling=memory" in objective:
        assert whole["state_dict"]["objective.memory.mu"].shape == (48, 10)  # full: the last 48 encodings
    if "objective=factorvae" in objective:
        assert any(key.startswith("objective.discriminator.") for key in whole["state_dict"])
        assert len(adam_whole["param_groups"]) == 2 and adam_whole["param_groups"][1]["betas"] == (0.5, 0.9)
    history = {run: read_history(tmp_path / run) for run in ("whole", "resumed")}
    logged = [[{k: v for k, v in entry.items() if not k.endswith("seconds")} for entry in history[run]] for run in history]
    assert logged[0] == logged[1]  # the same figures at the same steps, capacity included
