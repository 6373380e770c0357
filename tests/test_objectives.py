"""The objectives of docs/objectives.md: closed-form KL, and InfoMax (derived) = (1+λ)·β-VAE."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.conftest import compose_train
from vaelab import CONFIG_DIR, objectives
from vaelab.errors import UserError
from vaelab.information import gaussian_log_density, kl_conditional_per_dim
from vaelab.models import MLPVAE
from vaelab.objectives.betavae import BetaVAE
from vaelab.registry import OBJECTIVES
from vaelab.objectives.infomax import InfoMax


def test_closed_form_kl_matches_monte_carlo():
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    logvar = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    n = 200_000
    z = mu + torch.exp(0.5 * logvar) * torch.randn(n, 3, 4, generator=generator, dtype=torch.float64)
    log_ratio = gaussian_log_density(z, mu, logvar) - gaussian_log_density(z, torch.zeros(()), torch.zeros(()))
    monte_carlo, stderr = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    closed_form = kl_conditional_per_dim(mu, logvar)
    assert torch.all((monte_carlo - closed_form).abs() < 4 * stderr + 1e-6)


def _tiny_model(seed: int = 0) -> MLPVAE:
    torch.manual_seed(seed)
    return MLPVAE(image_shape=(1, 8, 8), binary_data=True, latent_dim=3, hidden=(32,))


@pytest.mark.parametrize("lam", [3.0, 0.5, -0.5])
def test_infomax_derived_is_one_plus_lambda_times_betavae(lam):
    model = _tiny_model()
    images = (torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(2))
    infomax, betavae = InfoMax(lam=lam), BetaVAE(beta=1.0 / (1.0 + lam))
    assert infomax.beta_effective == pytest.approx(betavae.beta_effective)

    grads = {}
    for name, objective in (("infomax", infomax), ("betavae", betavae)):
        model.zero_grad()
        terms = objective(model(images, noise))
        terms["loss"].backward()
        grads[name] = (terms["loss"].detach(), [p.grad.clone() for p in model.parameters()])
    loss_infomax, grad_infomax = grads["infomax"]
    loss_betavae, grad_betavae = grads["betavae"]
    torch.testing.assert_close(loss_infomax, (1 + lam) * loss_betavae)
    for g_infomax, g_betavae in zip(grad_infomax, grad_betavae):
        torch.testing.assert_close(g_infomax, (1 + lam) * g_betavae)


def test_adam_trains_infomax_and_betavae_to_the_same_parameters(tmp_path):
    """50 Adam steps through the real training loop: Adam is invariant to the (1+λ) scale.

    Adam is invariant "up to its epsilon": parameters whose gradients are below eps
    (dead units) move differently under a scaled loss, so the test sets eps far below
    any gradient, and runs in float64 so that rounding of the scaled loss cannot flip
    the sign of near-zero steps either.
    """
    from vaelab.train import train

    states = {}
    for name, overrides in {
        "infomax": ["objective=infomax", "lambda=3"],
        "betavae": ["objective=betavae", "beta=0.25"],
    }.items():
        cfg = compose_train(
            [
                *overrides,
                *("logger=none", "metrics=none", "information.num_samples=0"),
                *("model=mlp", "model.hidden=[256]", "data.val_size=64"),
                *("trainer.max_steps=50", "trainer.precision=64-true", "optimizer.eps=1e-16"),
            ],
            tmp_path / name,
        )
        train(cfg)
        checkpoint = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)
        states[name] = checkpoint["state_dict"]
        assert checkpoint["global_step"] == 50
    assert states["infomax"].keys() == states["betavae"].keys()
    moved = 0.0
    for key in states["infomax"]:
        torch.testing.assert_close(states["infomax"][key], states["betavae"][key], rtol=1e-7, atol=1e-9)
        moved = max(moved, (states["infomax"][key] - _initial(key)).abs().max().item())
    assert moved > 1e-3  # the parameters did move: the equality is not trivial


def _initial(key: str) -> torch.Tensor:
    from vaelab.models import MLPVAE

    torch.manual_seed(0)  # train() seeds with pl.seed_everything(cfg.seed=0) before building the model
    model = MLPVAE(image_shape=(1, 64, 64), binary_data=True, hidden=(256,)).double()
    return model.state_dict()[key.removeprefix("model.")]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["beta=0"], "beta=0: expected a number > 0"),
        (["beta=-2"], "beta=-2: expected a number > 0"),
        (["beta=abc"], "beta='abc': expected a number > 0"),
        (["objective=infomax", "lambda=-1"], "lambda=-1: expected a number > -1"),
        (["objective=infomax", "lambda=-3.5"], "lambda=-3.5: expected a number > -1"),
        (["objective=infomax", "objective.estimator=bogus"], "objective.estimator='bogus'"),
        (["beta_effective=2", "kl_weight=2"], "beta_effective=2 and kl_weight=2 both set the objective's weight"),
        (["objective=infomax", "lambda=1", "kl_weight=2"], "kl_weight=2 and lambda=1 both set"),
        (["kl_weight=0"], "kl_weight=0: expected a number > 0"),
        (["objective.kl_warmup_steps=-1"], "objective.kl_warmup_steps=-1: expected an integer >= 0"),
        (["objective=factorvae", "kl_weight=4"], "kl_weight=4: objective=factorvae has no kl_weight; set gamma= instead"),
        (["objective=annealedvae", "c_max=-1"], "c_max=-1: expected a number > 0"),
        (["experiment=baselines", "+baseline=betavae", "level=5"], "level=5: expected an integer from 0 to 2"),
    ],
)
def test_bad_objective_settings_are_one_line_errors(tmp_path, overrides, message):
    cfg = compose_train(overrides, tmp_path)
    with pytest.raises(Exception) as caught:
        objectives.build(cfg, dataset_size=100)
    from vaelab.errors import user_error_in

    error = user_error_in(caught.value)
    assert isinstance(error, UserError)
    assert message in str(error) and "\n" not in str(error)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objective=betavae", "lambda=3"], "lambda=3 is not used by objective=betavae, whose knob is beta; drop lambda=... or choose an objective that uses it (adainfomax, infomax)"),
        (["objective=infomax", "beta=2"], "beta=2 is not used by objective=infomax"),
        (["objective=dipvae", "beta=2"], "beta=2 is not used by objective=dipvae, whose knob is lambda_od"),
        (["objective=annealedvae", "lambda_od=2"], "lambda_od=2 is not used by objective=annealedvae, whose knobs are c_max, gamma"),
        # a typo, no one's knob: test_cli::test_bad_inputs_are_one_line_errors (the advice needs the command line)
    ],
)
def test_a_knob_the_objective_does_not_declare_is_refused_in_one_line(tmp_path, overrides, message):
    """The config holds the chosen objective's knobs alone (its declaration, vaelab/config_source.py):
    Hydra refuses any other, and the CLI says whose knob it is."""
    from vaelab.cli import _message_and_exit_code

    with pytest.raises(Exception) as caught:
        compose_train(overrides, tmp_path)
    text, code = _message_and_exit_code(caught.value)
    assert code == 2 and message in text and "\n" not in text


def test_defaults_are_the_plain_vae(tmp_path):
    assert objectives.build(compose_train([], tmp_path), 10).beta_effective == 1.0
    assert objectives.build(compose_train(["objective=infomax"], tmp_path), 10).beta_effective == 1.0
    assert objectives.build(compose_train(["objective=infomax", "lambda=3"], tmp_path), 10).beta_effective == 0.25


def test_native_infomax_is_minibatch_marginal_kl_plus_lambda_reconstruction():
    from tests.test_information import kl_marginal_minibatch

    model = _tiny_model()
    images = (torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    out = model(images, torch.randn(32, 3, generator=torch.Generator().manual_seed(2)))
    for sampling in ("mws", "mss"):
        native = InfoMax(lam=3.0, estimator="native", sampling=sampling, dataset_size=1000)
        terms = native(out)
        expected_kl = kl_marginal_minibatch(out.z, out.mu, out.logvar, 1000, sampling)
        torch.testing.assert_close(terms["kl_marginal_mb"], expected_kl)
        torch.testing.assert_close(terms["loss"], expected_kl + 3.0 * out.reconstruction.mean())
        # The minibatch decomposition is logged term by term and adds up.
        torch.testing.assert_close(
            terms["kl_marginal_mb"], terms["total_correlation_mb"] + terms["dimwise_kl_mb"], rtol=1e-5, atol=1e-4
        )
        terms["loss"].backward(retain_graph=True)  # differentiable end to end
    assert native.beta_effective == 0.25


@pytest.mark.parametrize("lam", [0.0, -0.5])
def test_native_infomax_needs_positive_lambda(lam):
    with pytest.raises(UserError, match="native"):
        InfoMax(lam=lam, estimator="native", dataset_size=1000)


@pytest.mark.parametrize(
    ("overrides", "knob", "beta_effective"),
    [
        (["objective=betavae"], ("beta", 4.0), 4.0),
        (["objective=infomax"], ("lam", -0.75), 4.0),  # derived: (1+λ) recon + KL, i.e. 1/(1+λ)
        (["objective=infomax_native"], ("lam", 0.25), 0.8),  # native: KL[q(z)||p(z)] + λ recon, i.e. 1/λ
    ],
)
def test_kl_weight_sets_each_objective_by_the_weight_its_loss_puts_on_its_kl_term(
    tmp_path, overrides, knob, beta_effective
):
    """kl_weight=4 is the one axis of experiment=infomax_study: each objective's own weight on its KL
    term relative to reconstruction, which for the native estimator is not beta_effective."""
    objective = objectives.build(compose_train([*overrides, "kl_weight=4"], tmp_path), dataset_size=1000)
    attribute, value = knob
    assert getattr(objective, attribute) == pytest.approx(value)
    assert objective.kl_weight == pytest.approx(4.0)
    assert objective.beta_effective == pytest.approx(beta_effective)


@pytest.mark.parametrize("overrides", [["objective=betavae", "beta=4"], ["objective=infomax", "lambda=0.5"],
                                       ["objective=infomax_native", "lambda=0.5"]])  # fmt: skip
def test_kl_warmup_ramps_only_the_kl_term_from_zero_to_its_weight(tmp_path, overrides):
    objective = objectives.build(compose_train([*overrides, "objective.kl_warmup_steps=100"], tmp_path), 1000)
    model = _tiny_model()
    images = (torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    out = model(images, torch.randn(32, 3, generator=torch.Generator().manual_seed(2)))
    full = objective(out)  # no step: fully warmed up
    reconstruction_only = objective(out, step=0)["loss"]
    kl_term = full["loss"] - reconstruction_only
    assert kl_term.abs() > 1e-3  # the KL term is there once warmed up, and absent at step 0
    torch.testing.assert_close(objective(out, step=25)["loss"], reconstruction_only + 0.25 * kl_term)
    torch.testing.assert_close(objective(out, step=100)["loss"], full["loss"])
    torch.testing.assert_close(objective(out, step=5000)["loss"], full["loss"])


OBJECTIVE_OPTIONS = sorted(path.stem for path in (Path(CONFIG_DIR) / "objective").glob("*.yaml"))


@pytest.mark.slow
def test_every_objective_trains_through_the_cli_and_records_what_it_trained(tmp_path, monkeypatch, capfd):
    """One sweep over every conf/objective option (a new objective joins it by adding its yaml):
    each run trains, logs every loss term under train/ and val/ (finite), is scored, and
    records its objective's description in metrics.json, which `vaelab compare` reads."""
    import json

    from tests.conftest import call_vaelab

    assert {"betavae", "infomax", "infomax_native", "betatcvae", "factorvae", "dipvae", "annealedvae"} <= set(
        OBJECTIVE_OPTIONS
    )
    sweep = tmp_path / "sweep"
    result = call_vaelab(
        "train", "-m", f"objective={','.join(OBJECTIVE_OPTIONS)}", "logger=none", "model=mlp", "model.hidden=[64]",
        "data.batch_size=32", "data.val_size=64", "trainer.max_steps=20", "trainer.val_check_interval=20",
        "trainer.log_every_n_steps=10", "metrics=mig", "metrics.suite.mig.num_train=500",
        "metrics@periodic_metrics=none", "information.num_samples=0", "images.num_images=0",
        "objective.kl_warmup_steps=5", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {}
    for metrics_file in sweep.glob("*/metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        runs[metrics["objective"]["label"]] = metrics
    assert set(runs) == {"betavae", "infomax", "infomax-native", "betatcvae", "factorvae", "dipvae-i", "annealedvae",
                         "adagvae", "adamlvae", "gvae", "mlvae", "ada-infomax-native"}  # fmt: skip
    classes = OBJECTIVES.all()
    for label, metrics in runs.items():
        described = metrics["objective"]
        assert metrics["status"] == "success", label
        assert set(described["knobs"]) == {knob.name for knob in classes[described["name"]].knobs}
        final = metrics["final"]
        train_terms = {key.removeprefix("train/") for key in final if key.startswith("train/")}
        assert {"loss", "reconstruction", "kl_conditional"} <= train_terms, label
        for term in train_terms:
            assert math.isfinite(final[f"train/{term}"]) and math.isfinite(final[f"val/{term}"]), (label, term)
        assert 0.0 <= final["metrics/mig"] <= 1.0
        # Its constants are in its description, not series.
        assert not {"train/beta_effective", "train/kl_weight", "val/beta_effective"} & final.keys(), label
    assert runs["betavae"]["objective"]["beta_effective"] == 1.0
    assert runs["factorvae"]["objective"]["knobs"] == {"gamma": 10.0}


def test_an_objective_without_a_forward_cannot_be_built():
    """`forward` is the one hook every objective must define: a class without it is refused
    when it is built, not at its first training step."""
    from vaelab.objectives import Objective

    class Incomplete(Objective):  # no name: not registered
        knobs = ()

    with pytest.raises(TypeError, match="abstract method forward"):
        Incomplete()
