"""Statistics across seeds (vaelab/compare/seed_statistics.py) against direct computations on fixed numbers;
the time to disentangle from made-up histories; `vaelab compare --threshold/--contrast` on fake runs."""

from __future__ import annotations

import csv
import itertools
import json
import statistics
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import call_vaelab
from tests.test_compare import fake_run
from vaelab.compare import seed_statistics
from vaelab.errors import RunStatus, UserError
from vaelab.objectives.betavae import BetaVAE
from vaelab.objectives.infomax import InfoMax
from vaelab.time_to_disentangle import check_thresholds, first_steps_reaching, images_per_step, images_to

A = [0.12, 0.31, 0.05, 0.22]
B = [0.40, 0.29, 0.35]


def exact_two_sided_p(a: list[str], b: list[str]) -> Fraction:
    """The permutation p-value by enumeration in exact rational arithmetic: the share of the
    splits of the pooled values whose |difference of means| is at least the observed one."""
    pooled = [Fraction(value) for value in a + b]

    def difference(in_a: set[int]) -> Fraction:
        first = [pooled[i] for i in in_a]
        second = [pooled[i] for i in range(len(pooled)) if i not in in_a]
        return sum(second) / len(second) - sum(first) / len(first)

    observed = abs(difference(set(range(len(a)))))
    splits = [set(split) for split in itertools.combinations(range(len(pooled)), len(a))]
    return Fraction(sum(abs(difference(split)) >= observed for split in splits), len(splits))


def test_the_permutation_p_value_is_the_exact_enumeration():
    result = seed_statistics.permutation_test(A, B)
    expected = exact_two_sided_p([str(x) for x in A], [str(x) for x in B])
    assert result.exact and result.splits == 35  # C(7, 4)
    assert result.p == float(expected)
    assert 0 < result.p < 1
    # A tie with the observed split counts: 1, 2 against 3, 4 has the same |difference| as 3, 4 against 1, 2.
    tied = seed_statistics.permutation_test([1.0, 2.0], [3.0, 4.0])
    assert tied.p == float(exact_two_sided_p(["1", "2"], ["3", "4"])) == 2 / 6


def test_the_monte_carlo_permutation_test_is_seeded_and_near_the_exact_p():
    a, b = [0.10, 0.14, 0.31, 0.05, 0.22], [0.25, 0.33, 0.12, 0.29, 0.41]
    exact = seed_statistics.permutation_test(a, b)
    sampled = seed_statistics.permutation_test(a, b, exact_limit=100)  # 252 splits: drawn at random instead
    assert exact.exact and not sampled.exact and sampled.splits == seed_statistics.PERMUTATIONS
    assert sampled == seed_statistics.permutation_test(a, b, exact_limit=100)  # fixed seed: the same p
    # 10,000 draws: the standard error of p is at most 0.005.
    assert sampled.p == pytest.approx(exact.p, abs=0.02)


def test_the_bootstrap_intervals_are_percentiles_of_a_direct_numpy_resample():
    rng = np.random.default_rng(seed_statistics.BOOTSTRAP_SEED)
    R = seed_statistics.BOOTSTRAP_RESAMPLES
    x = np.array(A)
    means = x[rng.integers(0, len(x), size=(R, len(x)))].mean(axis=1)
    assert seed_statistics.bootstrap_mean_interval(A) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), rel=1e-12)

    # The difference: A's resamples first, then B's, from one generator.
    rng = np.random.default_rng(seed_statistics.BOOTSTRAP_SEED)
    means_a = x[rng.integers(0, len(A), size=(R, len(A)))].mean(axis=1)
    means_b = np.array(B)[rng.integers(0, len(B), size=(R, len(B)))].mean(axis=1)
    result = seed_statistics.contrast(A, B)
    assert result.interval == pytest.approx(tuple(np.percentile(means_b - means_a, [2.5, 97.5])), rel=1e-12)
    assert result.difference == pytest.approx(statistics.fmean(B) - statistics.fmean(A), rel=1e-15)
    assert result.interval[0] < result.difference < result.interval[1]
    assert (result.n_a, result.n_b) == (4, 3)


def test_a_zero_difference_is_exactly_zero_with_p_one():
    values = [0.1, 0.2, 0.3, 0.7, 0.05]
    reordered = values[::-1]  # summed in another order, a naive mean can differ in the last bit
    result = seed_statistics.contrast(values, reordered)
    assert result.difference == 0.0
    assert result.interval[0] <= 0.0 <= result.interval[1]
    assert result.test.p == 1.0 and result.test.exact
    assert seed_statistics.permutation_test(values, reordered, exact_limit=0).p == 1.0  # drawn at random too


def exact_sign_flip_p(differences: list[str]) -> Fraction:
    """The sign-flip p-value by enumeration in exact rational arithmetic: the share of the 2^n
    sign patterns whose |mean| is at least the observed |mean|."""
    d = [Fraction(value) for value in differences]
    observed = abs(sum(d))
    patterns = list(itertools.product((1, -1), repeat=len(d)))
    return Fraction(sum(abs(sum(s * x for s, x in zip(signs, d))) >= observed for signs in patterns), len(patterns))


def test_the_paired_contrast_is_the_mean_per_seed_difference_with_an_exact_sign_flip_p():
    a = [0.10, 0.14, 0.31, 0.05, 0.22, 0.18]
    b = [0.13, 0.15, 0.36, 0.04, 0.27, 0.22]  # each seed's B a little above its A: B - A = 0.03, 0.01, 0.05, -0.01, 0.05, 0.04
    result = seed_statistics.paired_contrast(a, b)
    expected = exact_sign_flip_p(["0.03", "0.01", "0.05", "-0.01", "0.05", "0.04"])
    assert result.test.exact and result.test.paired and result.test.splits == 64
    assert result.test.p == float(expected) == 6 / 64  # |mean| as large: the observed signs, either 0.01 flipped, and the negations
    assert result.difference == pytest.approx(statistics.fmean(b) - statistics.fmean(a), rel=1e-12)
    # The interval: percentiles of the means of a direct numpy resample of the differences.
    d = np.array(b) - np.array(a)
    rng = np.random.default_rng(seed_statistics.BOOTSTRAP_SEED)
    means = d[rng.integers(0, len(d), size=(seed_statistics.BOOTSTRAP_RESAMPLES, len(d)))].mean(axis=1)
    assert result.interval == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), rel=1e-9)
    # The seeds' shared luck cancels: unpaired, the same values cannot tell the cells apart.
    assert result.interval[0] > 0 and seed_statistics.contrast(a, b).interval[0] < 0
    # More pairs than 2^n can enumerate: random sign patterns, seeded, near the exact p.
    sampled = seed_statistics.sign_flip_test(d, exact_limit=10)
    assert not sampled.exact and sampled.splits == seed_statistics.PERMUTATIONS
    assert sampled == seed_statistics.sign_flip_test(d, exact_limit=10)
    assert sampled.p == pytest.approx(6 / 64, abs=0.02)


def test_a_paired_zero_difference_is_exactly_zero_with_p_one():
    values = [0.1, 0.2, 0.3, 0.7, 0.05]
    result = seed_statistics.paired_contrast(values, list(values))
    assert result.difference == 0.0 and result.interval == (0.0, 0.0) and result.test.p == 1.0
    with pytest.raises(ValueError, match="one pair per seed"):
        seed_statistics.paired_contrast(values, values[:3])


def test_a_cell_summary_is_the_textbook_one():
    values = [0.30, 0.02, 0.11, 0.25, 0.08]
    summary = seed_statistics.summarize(values)
    assert summary.n == 5 and summary.mean == pytest.approx(0.152) and summary.std == pytest.approx(statistics.stdev(values))
    assert (summary.q1, summary.median, summary.q3) == (0.08, 0.11, 0.25)  # order statistics 2, 3, 4 of five
    assert summary.interval == seed_statistics.bootstrap_mean_interval(values)
    one = seed_statistics.summarize([0.3])
    assert (one.std, one.interval) == (0.0, None)  # one seed: no spread to resample


def test_the_fraction_at_or_above_a_threshold_counts_the_threshold_itself():
    assert seed_statistics.fraction_at_or_above([0.1, 0.2, 0.25, 0.19999], 0.2) == (2, 4)
    assert seed_statistics.fraction_at_or_above([0.1], 0.2) == (0, 1)


def test_time_to_disentangle_is_the_first_step_at_or_above_in_images():
    history = [
        {"step": 3000, "metrics/mig": 0.15, "metrics/factor_vae": 0.9},  # entries need not be in order
        {"step": 1000, "metrics/mig": 0.10, "train/loss": 5.0},
        {"step": 2000, "metrics/mig": 0.20},  # at the threshold: reached
        {"step": 4000, "metrics/mig": float("nan")},  # a diverged evaluation reaches nothing
        {"step": 4000, "train/loss": 1.0},
    ]
    thresholds = {"metrics/mig": 0.2, "metrics/factor_vae": 0.95}
    reached = first_steps_reaching(history, {**thresholds, "metrics/sap": 0.5})
    assert reached == {"images_to/metrics/mig>=0.2": 2000}
    per_step = images_per_step({"data": {"batch_size": 64}}, world_size=2)
    assert per_step == 128
    assert images_to(thresholds, reached, per_step) == {"images_to/metrics/mig>=0.2": 256_000,
                                                        "images_to/metrics/factor_vae>=0.95": None}  # fmt: skip


def test_time_to_disentangle_thresholds_are_checked():
    assert check_thresholds(None) == {} and check_thresholds({"metrics/mig": 1}) == {"metrics/mig": 1.0}
    for bad, says in (({"metrics/mig": "high"}, "time_to_disentangle.metrics/mig='high': expected a number"),
                      ({"val/loss": 0.2}, "'val/loss' is not a metric"), (0.2, "expected a mapping")):  # fmt: skip
        with pytest.raises(UserError, match=says.replace(".", r"\.").replace("(", r"\(")):
            check_thresholds(bad)


def test_a_bad_time_to_disentangle_stops_training_before_it_starts(tmp_path, monkeypatch, capfd):
    result = call_vaelab("train", "time_to_disentangle={metrics/mig:high}", "logger=none", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 2
    assert result.stderr.strip() == "vaelab: error: time_to_disentangle.metrics/mig='high': expected a number"


def test_the_metrics_file_records_the_time_to_disentangle_and_a_resume_keeps_it(tmp_path):
    from vaelab.loggers import MetricsFileLogger

    logger = MetricsFileLogger(tmp_path, thresholds={"metrics/mig": 0.2, "metrics/factor_vae": 0.9})
    logger.images_per_step = 64
    for step, mig in ((1000, 0.05), (2000, 0.24), (3000, 0.18)):
        logger.log_metrics({"train/loss": 1.0}, step=step - 1)
        logger.log_metrics({"metrics/mig": mig}, step=step)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    expected = {"images_to/metrics/mig>=0.2": 128_000, "images_to/metrics/factor_vae>=0.9": None}
    assert metrics["images_to"] == expected and metrics["images_per_step"] == 64
    logger.end(RunStatus.INTERRUPTED)
    # Resumed from step 2500: the first step at 0.2 (2000) is kept; what followed is logged anew.
    resumed = MetricsFileLogger(tmp_path, resume_step=2500, thresholds={"metrics/mig": 0.2, "metrics/factor_vae": 0.9})
    resumed.images_per_step = 64
    resumed.log_metrics({"metrics/mig": 0.3, "metrics/factor_vae": 0.95}, step=3000)
    assert resumed.images_to() == {**expected, "images_to/metrics/factor_vae>=0.9": 192_000}
    assert json.loads((tmp_path / "metrics.json").read_text())["images_to"] == resumed.images_to()


def trained_like(root: Path, name: str, objective: str, knob: float, seed: int, migs: dict[int, float], batch_size: int = 64):
    """A run directory as `vaelab train` leaves it, its files written by the run's own
    MetricsFileLogger: ``migs`` is {step: MIG} of the periodic evaluations, the last one final."""
    from vaelab.loggers import MetricsFileLogger

    fake_run(root, name, objective, knob, seed, mig=None)  # the config alone
    (root / name / ".hydra" / "config.yaml").write_text(
        (root / name / ".hydra" / "config.yaml").read_text() + f"data:\n  batch_size: {batch_size}\n"
    )
    described = (BetaVAE(beta=knob) if objective == "betavae" else InfoMax(lam=knob, estimator="native", dataset_size=1000)).describe()
    logger = MetricsFileLogger(root / name, objective=described, thresholds={"metrics/mig": 0.2})
    logger.images_per_step = batch_size
    for step, mig in sorted(migs.items()):
        logger.log_metrics({"metrics/mig": mig, "val/reconstruction": 30.0 + mig}, step=step)
    logger.end(RunStatus.SUCCESS)


BETAVAE_MIG = [0.10, 0.14, 0.31, 0.05, 0.22]
NATIVE_MIG = [0.25, 0.33, 0.12, 0.29, 0.41]


@pytest.fixture
def study(tmp_path) -> Path:
    """Five seeds of β-VAE and of InfoMax native, MIG rising linearly to its final value over 4,000 steps."""
    sweep = tmp_path / "sweep"
    for objective, knob, finals in (("betavae", 4.0, BETAVAE_MIG), ("infomax-native", 0.25, NATIVE_MIG)):
        for seed, final in enumerate(finals):
            migs = {step: final * step / 4000 for step in (1000, 2000, 3000, 4000)}
            trained_like(sweep, f"{objective}_{seed}", objective, knob, seed, migs)
    return sweep


def test_compare_prints_the_seed_statistics_and_a_quotable_contrast(study, tmp_path, monkeypatch, capfd):
    result = call_vaelab(
        "compare", str(study), "--threshold", "metrics/mig=0.2", "--threshold", "metrics/mig=0.3",
        "--contrast", "objective=betavae", "objective=infomax_native", "kl_weight=4",
        "--contrast", "objective=betavae", "beta=4",  # a cell against itself
        cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    contrast = seed_statistics.contrast(BETAVAE_MIG, NATIVE_MIG)
    low, high = contrast.interval
    exact_p = exact_two_sided_p([str(x) for x in BETAVAE_MIG], [str(x) for x in NATIVE_MIG])
    assert contrast.difference == pytest.approx(0.116) and contrast.test.p == float(exact_p)
    low, high = (f"{end:+.3g}".replace("-", "−") for end in (low, high))  # a true minus sign
    line = (f"metrics/mig: infomax-native (lambda=0.25) − betavae (beta=4) = +0.116 [bootstrap 95% CI {low}, {high}; "
            f"10,000 resamples], p = {float(exact_p):.2g} (two-sided permutation test, all 252 splits; 5 vs 5 seeds)")  # fmt: skip
    assert line in result.stdout.splitlines()
    (same,) = [line for line in result.stdout.splitlines() if line.startswith("metrics/mig: betavae (beta=4) − betavae")]
    assert same.startswith("metrics/mig: betavae (beta=4) − betavae (beta=4) = 0 [bootstrap 95% CI −")
    assert same.endswith("p = 1 (two-sided permutation test, all 252 splits; 5 vs 5 seeds)")

    rows = {(row["objective"], row["figure"]): row for row in csv.DictReader(open(study / "compare_seeds.csv"))}
    mig = rows[("betavae", "metrics/mig")]
    assert (mig["seeds"], mig["mean ± std"], mig["median"], mig["IQR"]) == ("5", "0.164 ± 0.103", "0.140", "0.100–0.220")
    assert mig["bootstrap 95% CI of the mean"] == "[{:.3f}, {:.3f}]".format(*seed_statistics.bootstrap_mean_interval(BETAVAE_MIG))
    assert mig["at or above threshold"] == "≥0.2: 2/5; ≥0.3: 1/5"
    # Time to disentangle: a seed at 0.22 reaches 0.2 at its last evaluation (4,000 steps x 64 images).
    runs = {Path(row["run"]).name: row for row in csv.DictReader(open(study / "compare.csv"))}
    assert runs["betavae_4"]["images_to/metrics/mig>=0.2"] == "256000"
    assert runs["betavae_0"]["images_to/metrics/mig>=0.2"] == "not reached"
    assert runs["infomax-native_4"]["images_to/metrics/mig>=0.2"] == "128000"  # 0.41 x 2/4 = 0.205 at step 2,000
    timing = rows[("betavae", "images_to/metrics/mig>=0.2")]
    assert (timing["median"], timing["at or above threshold"]) == ("not reached", "reached 2/5")  # 3 of 5 never
    timing = rows[("infomax-native", "images_to/metrics/mig>=0.2")]
    assert (timing["median"], timing["at or above threshold"]) == ("192,000", "reached 4/5")
    assert (study / "compare_seeds.md").read_text().count("\n") == 2 + 4
    assert (study / "compare_images_metrics_mig.png").stat().st_size > 0


def test_compare_paired_contrasts_the_seeds_both_cells_ran(study, tmp_path, monkeypatch, capfd):
    # A sixth β-VAE seed with no InfoMax partner is left out of the pairs, and said to be.
    trained_like(study, "betavae_5", "betavae", 4.0, 5, {4000: 0.5})
    result = call_vaelab(
        "compare", str(study), "--paired", "--contrast", "objective=betavae", "objective=infomax_native",
        cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    paired = seed_statistics.paired_contrast(BETAVAE_MIG, NATIVE_MIG)  # seeds 0-4 in order in both
    exact_p = exact_sign_flip_p([str(Fraction(str(n)) - Fraction(str(b))) for b, n in zip(BETAVAE_MIG, NATIVE_MIG)])
    assert paired.test.p == float(exact_p)
    low, high = (f"{end:+.3g}".replace("-", "−") for end in paired.interval)
    line = (f"metrics/mig: infomax-native (lambda=0.25) − betavae (beta=4) = +0.116 [bootstrap 95% CI {low}, {high}; "
            f"10,000 resamples], p = {float(exact_p):.2g} (two-sided sign-flip test, all 32 sign patterns; "
            "paired by seed: 5 seeds, 1 run without a partner left out)")  # fmt: skip
    assert line in result.stdout.splitlines()
    assert (study / "compare_paired_metrics_mig.png").stat().st_size > 0  # each seed's two values


def test_compare_paired_refuses_a_seed_run_twice_and_a_missing_contrast(study, tmp_path, monkeypatch, capfd):
    result = call_vaelab("compare", str(study), "--paired", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 2 and result.stderr.startswith("vaelab: error: compare --paired: pairs the seeds of a --contrast")
    trained_like(study, "betavae_again", "betavae", 4.0, 0, {4000: 0.2})
    result = call_vaelab(
        "compare", str(study), "--paired", "--contrast", "objective=betavae", "objective=infomax_native",
        cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("vaelab: error: compare --paired: betavae (beta=4) has seed 0 twice (")


def test_a_contrast_names_cells_by_config_name_where_the_label_differs(tmp_path, monkeypatch, capfd):
    """objective=adainfomax trains what tables label ada-infomax-native: either name selects it."""
    sweep = tmp_path / "weak"
    for seed, (ada, infomax) in enumerate([(0.41, 0.30), (0.43, 0.35), (0.42, 0.33)]):
        fake_run(sweep, f"a{seed}", "adagvae", 8.0, seed, ada)
        fake_run(sweep, f"i{seed}", "adainfomax", 0.125, seed, infomax)
    for name in ("adainfomax", "ada-infomax-native"):
        result = call_vaelab("compare", str(sweep), "--paired", "--contrast", "objective=adagvae", f"objective={name}",
                             cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "metrics/mig: ada-infomax-native (lambda=0.125) − adagvae (beta=8) = −0.0933 [" in result.stdout
        assert "(two-sided sign-flip test, all 8 sign patterns; paired by seed: 3 seeds)" in result.stdout


def test_the_curves_are_each_cells_seeds_against_images(study):
    from vaelab.compare.across_seeds import curves
    from vaelab.compare.groups import groups
    from vaelab.compare.runs import find_runs

    (betavae,) = [cell for cell in groups(find_runs([study])) if cell.objective == "betavae"]
    ((cell, images, values),) = curves([betavae], ["metrics/mig"])["metrics/mig"]
    assert cell is betavae and values.shape == (5, 4)
    assert images.tolist() == [64_000, 128_000, 192_000, 256_000]
    by_seed = sorted(values.tolist(), key=lambda row: row[-1])
    assert by_seed[-1] == pytest.approx([0.31 * k / 4 for k in (1, 2, 3, 4)])


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--threshold", "metrics/mig:0.2"], "compare --threshold 'metrics/mig:0.2': expected FIGURE=NUMBER, e.g. metrics/mig=0.2"),
        (["--threshold", "metrics/dci_disentanglement=0.2"], "compare: no finished run has metrics/dci_disentanglement; "),
        (["--contrast", "objective=betavae", "objective=factorvae"], "compare --contrast objective=factorvae: matches no cell"),
        (["--contrast", "objective=betavae", "kl_weight=4"], "compare --contrast kl_weight=4: matches 2 cells"),
        (["--contrast", "objective=betavae"], "compare --contrast objective=betavae: expected two cells"),
        (["--contrast", "objective=betavae", "objective=infomax_native", "--metric", "metrics/sap"],
         "compare: no finished run has metrics/sap"),
    ],
)  # fmt: skip
def test_compare_statistics_flags_reject_bad_input_in_one_line(study, tmp_path, monkeypatch, capfd, flags, says):
    result = call_vaelab("compare", str(study), *flags, cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"vaelab: error: {says}")
    assert not (study / "compare_seeds.csv").exists()  # nothing written for a command that was wrong
