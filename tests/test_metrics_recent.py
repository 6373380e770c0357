"""InfoMEC (Hsu et al. 2023) and DCI-ES (Eastwood et al. 2023) against their authors' code, and
the properties a user reads them for (docs/metrics.md).

Agreement, on the five fixed codes of the fixture (ideal, permuted-and-scaled, rotated, noisy,
one factor missing: tests/fixtures/metrics/representations.py, RECENT_REPRESENTATIONS):

- InfoMEC: reference_scores_recent.json holds the scores of the authors' formulas
  (tests/fixtures/metrics/infomec_reference.py, run by make_reference_recent.py) on the same
  distinct points vaelab scores here; the reference's one random draw (sklearn's tie-breaking
  noise) is fixed by random_state=0.
- DCI-ES: the authors' probe training is transcribed in tests/fixtures/metrics/dci_es_reference.py
  and run live, from the same draws as vaelab's ``dci_es.compute`` (its points, its probes'
  initial weights, its batch order), so that the two computations see the same random numbers.

Both must agree within 0.01 on every score (observed: 1e-6 and closer).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import sys

import numpy as np
import pytest

from vaelab.data.grid import FactorGrid
from vaelab.errors import UserError
from vaelab.metrics import dci_es, evaluate, infomec
from vaelab.metrics._common import sample_distinct_factors

from tests.conftest import call_vaelab
from tests.wandb_offline import read_offline_run

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "metrics"
REFERENCE = json.loads((FIXTURES / "reference_scores_recent.json").read_text())
SLOW = os.environ.get("VAELAB_SLOW_TESTS") == "1"
TOLERANCE = 0.01


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"recent_{name}", FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


reps = _load("representations")
sys.path.insert(0, str(FIXTURES))  # make_reference_recent imports its siblings by name
try:
    maker = _load("make_reference_recent")
    dci_es_reference = _load("dci_es_reference")
finally:
    sys.path.remove(str(FIXTURES))

SIZES = reps.FACTOR_SIZES
# Factor 0 is named "shape" so that categorical=auto makes it a class, as for dSprites' shape.
GRID = FactorGrid(
    factor_names=("shape", *(f"f{k}" for k in range(1, len(SIZES)))),
    factor_sizes=SIZES,
    factor_values=tuple(np.arange(s, dtype=np.float64) for s in SIZES),
)
FIVE = list(reps.RECENT_REPRESENTATIONS)


def represent(name: str):
    return reps.lookup(reps.recent_code_table(name))


# --- InfoMEC -----------------------------------------------------------------------------------


def _with_vaelab_rule(nmi: np.ndarray, axis: int) -> float:
    """The reference's InfoM (axis 0) or InfoC (axis 1) from its NMI, where it divides 0 by 0 (a
    latent or factor with no information at all) taking vaelab's stated rule: an even spread."""
    n = nmi.shape[axis]
    total = nmi.sum(axis=axis)
    share = np.where(total > 0, nmi.max(axis=axis) / np.where(total > 0, total, 1.0), 1.0 / n)
    return float((share.mean() - 1.0 / n) / (1.0 - 1.0 / n))


@pytest.mark.parametrize("code", [*FIVE, reps.RANDOM_CODE])
def test_infomec_agrees_with_the_authors_formulas(code):
    for seed in REFERENCE["seeds"] if SLOW else REFERENCE["seeds"][:1]:
        reference = REFERENCE["infomec"][code][str(seed)]
        factors = maker.points(seed)
        codes = maker.codes_at(code, factors)
        ours = infomec.infomec_from_codes(codes, factors, np.random.default_rng(seed))
        nmi = infomec.normalised_mutual_information(codes, factors, np.random.default_rng(seed))
        ref_nmi = np.array(reference["nmi"])
        assert np.abs(nmi - ref_nmi).max() <= TOLERANCE
        active = np.array(reference["active_latents"])
        assert ours["num_active_dims"] == active.sum()
        expected = {"infoe": reference["infoe"]}
        for score, axis in (("infom", 0), ("infoc", 1)):
            expected[score] = reference[score]
            if np.isnan(reference[score]):  # the reference's 0/0: compare with the rule applied to its NMI
                expected[score] = _with_vaelab_rule(ref_nmi[:, active], axis)
        for score, value in expected.items():
            assert abs(ours[score] - value) <= TOLERANCE, f"{code} seed {seed} {score}: {ours[score]:.4f} vs {value:.4f}"


@pytest.mark.skipif(not SLOW, reason="reruns the authors' formulas (sklearn's estimator, ~1.5 s a code); VAELAB_SLOW_TESTS=1")
def test_infomec_fixture_is_what_the_reference_transcription_computes():
    infomec_reference = _load("infomec_reference")
    for code in (*FIVE, reps.RANDOM_CODE):
        for seed in REFERENCE["seeds"]:
            factors = maker.points(seed)
            fresh = infomec_reference.reference_infomec(factors, maker.codes_at(code, factors), random_state=0)
            stored = REFERENCE["infomec"][code][str(seed)]
            np.testing.assert_allclose(fresh["nmi"], stored["nmi"], atol=1e-12)
            for score in ("infom", "infoe", "infoc"):
                np.testing.assert_allclose(fresh[score], stored[score], atol=1e-9, equal_nan=True)


@pytest.fixture(scope="module")
def infomec_scores():
    suite = {"infomec": {"num_train": 1200}}
    names = ("ideal", "permuted_scaled", "rotated", "missing", reps.RANDOM_CODE)
    return {name: evaluate(GRID, represent(name), suite, seed=0) for name in names}


def test_infomec_ideal_codes_score_near_one_and_rotations_lower_only_m_and_c(infomec_scores):
    for name in ("ideal", "permuted_scaled"):  # NMI ignores each latent's scale, sign and order
        s = infomec_scores[name]
        assert min(s["metrics/infom"], s["metrics/infoe"], s["metrics/infoc"]) > 0.95, name
    rotated = infomec_scores["rotated"]
    assert rotated["metrics/infom"] < 0.7 and rotated["metrics/infoc"] < 0.5
    assert rotated["metrics/infoe"] > 0.95  # a linear readout undoes a rotation
    # One factor of five missing: InfoE loses a fifth; InfoM does not see it.
    missing = infomec_scores["missing"]
    assert 0.75 < missing["metrics/infoe"] < 0.85 and missing["metrics/infom"] > 0.95


def test_infomec_random_codes_carry_no_information_but_m_and_c_are_ratios_of_noise(infomec_scores):
    s = infomec_scores[reps.RANDOM_CODE]
    assert s["metrics/infoe"] < 0.02
    factors = sample_distinct_factors(GRID, 1200, np.random.default_rng(0))
    nmi = infomec.normalised_mutual_information(
        represent(reps.RANDOM_CODE)(factors), factors, np.random.default_rng(0)
    )
    assert nmi.max() < 0.03  # next to ~1 for each factor's own latent in the ideal code
    # InfoM and InfoC share out that noise: well above 0 (docs/metrics.md: read them with InfoE).
    assert s["metrics/infom"] > 0.2


def test_infomec_division_by_zero_cases_follow_the_stated_rules():
    nmi = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])  # latent 2 informs about no factor
    assert infomec.peak_share_score(nmi, axis=0) == pytest.approx(2 / 3)  # (1 + 1 + 0) / 3
    assert infomec.peak_share_score(nmi, axis=1) == pytest.approx(1.0)
    assert infomec.peak_share_score(np.array([[0.3], [0.0]]), axis=1) == pytest.approx(0.5)  # one latent
    assert infomec.peak_share_score(np.array([[0.3, 0.1]]), axis=0) == pytest.approx(1.0)  # one factor
    flat = np.zeros((200, 3))
    out = infomec.infomec_from_codes(flat, sample_distinct_factors(GRID, 200, np.random.default_rng(0)),
                                     np.random.default_rng(0))  # fmt: skip
    assert out == {"infom": 0.0, "infoe": 0.0, "infoc": 0.0, "num_active_dims": 0.0}


def test_infomec_discrete_latents_use_plug_in_information_and_one_hot_readout():
    factors = sample_distinct_factors(GRID, 1500, np.random.default_rng(2))
    quantised = np.round(represent("ideal")(factors) * 4)  # five levels per factor latent
    ours = infomec.infomec_from_codes(quantised, factors, np.random.default_rng(0), discrete_latents=True)
    ref = _load("infomec_reference").reference_infomec(factors, quantised, discrete_latents=True)
    for score in ("infom", "infoe", "infoc"):
        assert abs(ours[score] - ref[score]) <= 1e-6, score


def test_distinct_points_are_distinct_and_cover_a_small_grid():
    factors = sample_distinct_factors(GRID, 4000, np.random.default_rng(0))
    assert len(np.unique(GRID.factors_to_index(factors))) == 4000
    tiny = FactorGrid(("a", "b"), (3, 4), (np.arange(3.0), np.arange(4.0)))
    everything = sample_distinct_factors(tiny, 100, np.random.default_rng(0))
    assert sorted(tiny.factors_to_index(everything)) == list(range(12))


# --- DCI-ES ------------------------------------------------------------------------------------

# Small enough for every test run; the reference's own loop (a DataLoader per width) sets the cost.
AGREEMENT = dict(num_train=600, num_val=200, num_test=400, widths=[0, 14, 47], epochs=8, lr=0.004)


def vaelab_and_reference_dci_es(code: str, seed: int, settings: dict) -> tuple[dict, dict]:
    """vaelab's dci_es.compute and the reference transcription, from the draws compute() makes,
    in its order: the points, then a torch seed for the initial weights, then the batch orders."""
    import torch

    ours = dci_es.compute(GRID, represent(code), np.random.default_rng(seed), **settings)
    rng = np.random.default_rng(seed)
    sizes = (settings["num_train"], settings["num_val"], settings["num_test"])
    factors = sample_distinct_factors(GRID, sum(sizes), rng)
    codes = represent(code)(factors)
    generator = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
    targets = dci_es.ProbeTargets(SIZES, dci_es.categorical_mask(GRID, "auto"))
    widths, layers = settings["widths"], settings.get("hidden_layers", 2)
    initial = dci_es.initial_weights(widths, layers, codes.shape[1], targets.outputs, generator)
    orders = dci_es.batch_orders(sizes[0], settings["epochs"], generator)
    bounds = np.cumsum(sizes)[:-1]
    reference = dci_es_reference.reference_dci_es(
        np.split(codes, bounds), np.split(factors, bounds), SIZES, targets.categorical, widths=widths,
        hidden_layers=layers, epochs=settings["epochs"], lr=settings["lr"], initial=initial, orders=orders,
    )  # fmt: skip
    return ours, reference


@pytest.mark.parametrize("code", FIVE)
def test_dci_es_agrees_with_the_authors_probe_training_from_the_same_draws(code):
    ours, reference = vaelab_and_reference_dci_es(code, 3, AGREEMENT)
    assert abs(ours["explicitness"] - reference["explicitness"]) <= TOLERANCE
    baseline = np.array([1 - 1 / SIZES[0], 1, 1, 1, 1])  # shape is a class, the rest numbers
    reference_informativeness = np.mean(1 - (1 - reference["test_scores"]).min(axis=0) / baseline)
    assert abs(ours["informativeness"] - reference_informativeness) <= TOLERANCE
    assert ours["size"] == len(SIZES) / reps.NUM_CODES


@pytest.mark.skipif(not SLOW, reason="the full preset's ten widths and 20 epochs, twice; VAELAB_SLOW_TESTS=1")
@pytest.mark.parametrize("code", FIVE)
def test_dci_es_at_the_full_presets_probe_family_agrees_too(code):
    settings = dict(num_train=2400, num_val=600, num_test=1200, widths=list(dci_es.DEFAULT_WIDTHS), epochs=20, lr=0.004)
    ours, reference = vaelab_and_reference_dci_es(code, 4, settings)
    assert abs(ours["explicitness"] - reference["explicitness"]) <= TOLERANCE


def test_explicitness_is_the_references_area_formula():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 12))
        x = np.sort(rng.uniform(1, 10, n)) + np.arange(n)  # distinct capacities
        y = rng.uniform(0, 1, n)  # not monotone: the running minimum applies
        baseline = float(rng.uniform(0.5, 1.0))
        assert dci_es.explicitness_of_curve(x, y, baseline) == pytest.approx(
            dci_es_reference.reference_explicitness(x, y, baseline), abs=1e-12
        )
    x = np.log([15.0, 385.0, 1000.0, 5000.0])
    assert dci_es.explicitness_of_curve(x, [0.2, 0.2, 0.2, 0.2], 1.0) == pytest.approx(1.0)  # best at once
    assert dci_es.explicitness_of_curve(x, 1 - (x - x[0]) / (x[-1] - x[0]), 1.0) == pytest.approx(0.0)  # linear
    assert dci_es.explicitness_of_curve(x, [1.0, 1.0, 1.0, 0.0], 1.0) < -0.3  # only the largest probe


def test_probe_capacity_counts_the_references_parameters():
    for width in (0, 14, 47):
        for outputs, discrete in (([3, 1, 1, 1, 1], [True, False, False, False, False]), ([1, 1], [False, False])):
            sizes = [o if d else 8 for o, d in zip(outputs, discrete)]
            model = dci_es_reference.ReferenceIndependentMLPs(len(outputs), 10, 2, width, sizes, discrete)
            assert dci_es.probe_parameters(width, 2, 10, outputs) == model.count_parameters()


def test_dci_es_scores_do_not_depend_on_how_widths_are_split_over_threads():
    settings = dict(num_train=300, num_val=100, num_test=200, widths=[0, 14, 21], epochs=3)
    codes = represent("noisy")
    factors = sample_distinct_factors(GRID, 600, np.random.default_rng(0))
    splits = tuple(np.split(codes(factors), [300, 400])), tuple(np.split(factors, [300, 400]))
    targets = dci_es.ProbeTargets(SIZES, dci_es.categorical_mask(GRID, "auto"))
    kwargs = dict(widths=settings["widths"], hidden_layers=2, epochs=3, lr=0.004, batch_size=64, num_evals=10, seed=1)
    one = dci_es.probe_test_scores(*splits, targets, workers=1, **kwargs)
    three = dci_es.probe_test_scores(*splits, targets, workers=3, **kwargs)
    np.testing.assert_array_equal(one, three)


@pytest.fixture(scope="module")
def dci_es_scores():
    # Enough steps (320) for the linear probe to near convergence on these codes: a small set,
    # smaller batches and a larger learning rate than the full preset's.
    settings = dict(num_train=1000, num_val=300, num_test=600, widths=[0, 14, 47], epochs=20, lr=0.01, batch_size=64)
    suite = {"dci_es": settings}
    return {name: evaluate(GRID, represent(name), suite, seed=0) for name in ("ideal", "missing", reps.RANDOM_CODE)}


def test_dci_es_ideal_codes_score_near_one(dci_es_scores):
    s = dci_es_scores["ideal"]
    assert s["metrics/dci_es_explicitness"] > 0.9 and s["metrics/dci_es_informativeness"] > 0.95
    assert s["metrics/dci_es_size"] == 0.5  # 5 factors in 10 dims


def test_dci_es_random_codes_inform_nothing_and_e_alone_does_not_say_so(dci_es_scores):
    s = dci_es_scores[reps.RANDOM_CODE]
    assert abs(s["metrics/dci_es_informativeness"]) < 0.05
    # A flat loss-capacity curve at the baseline: no capacity helps, so E is high (docs/metrics.md).
    assert s["metrics/dci_es_explicitness"] > 0.8
    missing = dci_es_scores["missing"]
    assert 0.75 < missing["metrics/dci_es_informativeness"] < 0.85 and missing["metrics/dci_es_explicitness"] > 0.9


@pytest.mark.parametrize(
    "metric,hparams,message",
    [
        ("dci_es", {"widths": [14]}, "widths: expected at least two different integers >= 0"),
        ("dci_es", {"widths": [0, -3]}, "widths: expected at least two different integers >= 0"),
        ("dci_es", {"epochs": 0}, "dci_es: epochs=0: expected an integer >= 1"),
        ("dci_es", {"lr": -1}, "dci_es: lr=-1: expected a number > 0"),
        ("dci_es", {"categorical": ["colour"]}, "dci_es: categorical names colour, not factors of this dataset"),
        ("infomec", {"num_neighbors": 0}, "infomec: num_neighbors=0: expected an integer >= 1"),
        ("infomec", {"discrete_latents": "yes"}, "infomec: discrete_latents='yes': expected true or false"),
    ],
)
def test_bad_hyperparameters_are_user_errors(metric, hparams, message):
    with pytest.raises(UserError, match=message):
        evaluate(GRID, represent("ideal"), {metric: hparams}, seed=0)


def test_eval_of_a_codes_file_reports_them_and_logs_them_to_wandb(tmp_path, monkeypatch, capfd):
    factors = reps.grid_factors()
    np.savez(tmp_path / "codes.npz", factors=factors, codes=reps.recent_code_table("ideal"),
             factor_names=np.array(["shape", "scale", "orientation", "pos_x", "pos_y"]))  # fmt: skip
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    result = call_vaelab(
        "eval", f"codes={tmp_path / 'codes.npz'}", "metrics=none", "+metrics.suite.infomec={num_train:1500}",
        "+metrics.suite.dci_es={num_train:300,num_val:100,num_test:200,widths:[0,14],epochs:2}", **cli,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(result.stdout)
    assert scores["metrics/infom"] > 0.95 and scores["metrics/dci_es_size"] == 0.5
    for row in ("│ infom ", "│ infoe ", "│ infoc ", "│ dci_es_explicitness ", "│ dci_es_size "):
        assert row in result.stderr  # the table: each score once, a headline under its own name
    (wandb_dir,) = (tmp_path / "outputs" / "eval").glob("*/*/wandb/offline-run-*")
    logged = read_offline_run(wandb_dir)
    assert logged.summary["metrics/infom"] == scores["metrics/infom"]
    assert logged.summary["metrics/dci_es_explicitness"] == scores["metrics/dci_es_explicitness"]

    bad = call_vaelab("eval", f"codes={tmp_path / 'codes.npz'}", "metrics=none", "logger=none",
                      "+metrics.suite.dci_es={widths:[5]}", **cli)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == (
        "vaelab: error: dci_es: widths: expected at least two different integers >= 0 (0: a linear probe)"
    )


def test_a_setting_that_cannot_run_stops_training_before_it_starts(tmp_path, monkeypatch, capfd):
    result = call_vaelab(
        "train", "logger=none", "trainer.max_steps=2", "metrics=mig", "+metrics.suite.dci_es={epochs:0}",
        "hydra.run.dir=run", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "vaelab: error: dci_es: epochs=0: expected an integer >= 1"
    assert not (tmp_path / "run" / "checkpoints").exists()

def agreement_rows(full_preset: bool = True):
    """(code, score, reference, vaelab) for docs/metrics.md: InfoMEC on both fixture seeds; DCI-ES
    from shared draws at the tests' settings and (``full_preset``) at the full preset's probes."""
    rows = []
    for code in FIVE:
        for seed in REFERENCE["seeds"]:
            reference = REFERENCE["infomec"][code][str(seed)]
            factors = maker.points(seed)
            ours = infomec.infomec_from_codes(maker.codes_at(code, factors), factors, np.random.default_rng(seed))
            for score in ("infom", "infoe", "infoc"):
                rows.append((code, f"{score} (seed {seed})", reference[score], ours[score]))
    settings = {"tests": (3, AGREEMENT)}
    if full_preset:
        settings["full preset probes"] = (4, dict(num_train=2400, num_val=600, num_test=1200,
                                                  widths=list(dci_es.DEFAULT_WIDTHS), epochs=20, lr=0.004))  # fmt: skip
    for label, (seed, values) in settings.items():
        for code in FIVE:
            ours, reference = vaelab_and_reference_dci_es(code, seed, values)
            rows.append((code, f"dci_es explicitness ({label})", reference["explicitness"], ours["explicitness"]))
    return rows


if __name__ == "__main__":
    # PYTHONPATH=. python tests/test_metrics_recent.py  -> the agreement table of docs/metrics.md
    print("| code | score | reference | vaelab | difference |\n| --- | --- | --- | --- | --- |")
    for code, score, ref, ours in agreement_rows():
        print(f"| {code} | {score} | {ref:.4f} | {ours:.4f} | {ours - ref:+.4f} |", flush=True)
