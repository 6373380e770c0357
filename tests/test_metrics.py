"""Property tests of the disentanglement metrics (vaelab.metrics).

Small grid, reduced sample sizes where the property still holds with a wide
margin; the agreement with disentanglement_lib is in test_metrics_reference.py.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest
import sklearn.metrics
import torch

from vaelab.data.grid import FactorGrid, GroundTruthDataset
from vaelab.errors import UserError
from vaelab.metrics import evaluate, headline_keys, metric_rng, registered
from vaelab.metrics import dci, modularity_explicitness, unsupervised
from vaelab.metrics._common import discrete_entropy, discrete_mutual_info, histogram_discretize
from vaelab.metrics.representation import CachedEncoder, LookupRepresentation, load_codes_file
from vaelab.registry import SHIPPED

METRICS = {name: registered(name).compute for name in SHIPPED["metrics"]}  # vaelab's own

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "metrics"
_spec = importlib.util.spec_from_file_location("metric_representations", FIXTURES / "representations.py")
reps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reps)

SIZES = reps.FACTOR_SIZES
GRID = FactorGrid(
    factor_names=tuple(f"f{k}" for k in range(len(SIZES))),
    factor_sizes=SIZES,
    factor_values=tuple(np.arange(s, dtype=np.float64) for s in SIZES),
)
K = len(SIZES)

# Reduced sizes: enough for the properties below with a wide margin, small enough for every test run.
SMALL = {
    "mig": dict(num_train=4000),
    "factor_vae": dict(num_train=600, num_eval=400, num_variance_estimate=3000),
    "beta_vae": dict(num_train=1500, num_eval=500),
    "dci": dict(num_train=1500, num_test=750),
}


@pytest.fixture(scope="module")
def scores():
    """Scores of ideal, rotated and noise codes with the SMALL suite (computed once)."""
    return {
        name: evaluate(GRID, reps.lookup(reps.code_table(name)), SMALL, seed=0)
        for name in ("ideal", "rotated", "noise")
    }


def test_ideal_code_scores_near_one(scores):
    s = scores["ideal"]
    assert s["metrics/mig"] > 0.95
    assert s["metrics/dci_disentanglement"] > 0.95
    assert s["metrics/dci_completeness"] > 0.9
    assert s["metrics/factor_vae"] > 0.97
    assert s["metrics/beta_vae"] > 0.97
    # the five near-constant dims (std 0.01) are pruned at threshold 0.05
    assert s["metrics/factor_vae_num_active_dims"] == 5


def test_rotation_drops_mig_and_dci_but_not_the_classifier_scores(scores):
    ideal, rotated = scores["ideal"], scores["rotated"]
    assert rotated["metrics/mig"] < 0.5 < ideal["metrics/mig"]
    assert rotated["metrics/dci_disentanglement"] < 0.8
    assert ideal["metrics/dci_disentanglement"] - rotated["metrics/dci_disentanglement"] > 0.2
    assert rotated["metrics/factor_vae"] > 0.9
    assert rotated["metrics/beta_vae"] > 0.9
    # a rotation keeps the information (the classifiers still predict the factors)
    assert rotated["metrics/dci_informativeness_test"] > 0.7


def test_noise_scores_near_chance(scores):
    s = scores["noise"]
    assert s["metrics/mig"] < 0.02
    assert s["metrics/dci_disentanglement"] < 0.1
    assert s["metrics/dci_informativeness_test"] < 0.3
    assert abs(s["metrics/factor_vae"] - 1 / K) < 0.08
    assert abs(s["metrics/beta_vae"] - 1 / K) < 0.08
    assert s["metrics/factor_vae_num_active_dims"] == 10


def test_results_repeat_exactly_for_a_seed_and_do_not_depend_on_other_metrics():
    represent = reps.lookup(reps.code_table("noisy"))
    suite = {"mig": SMALL["mig"], "factor_vae": SMALL["factor_vae"], "irs": dict(num_train=2000)}
    first = evaluate(GRID, represent, suite, seed=7)
    assert first == evaluate(GRID, represent, suite, seed=7)
    alone = evaluate(GRID, represent, {"irs": dict(num_train=2000)}, seed=7)
    assert alone["metrics/irs_IRS"] == first["metrics/irs_IRS"]
    other_seed = evaluate(GRID, represent, suite, seed=8)
    assert other_seed["metrics/mig"] != first["metrics/mig"]


def test_metric_streams_are_stable_across_processes():
    # crc32-derived: a fixed value, unlike hash() which is salted per process
    assert metric_rng(0, "mig").integers(0, 2**31) == metric_rng(0, "mig").integers(0, 2**31)
    assert metric_rng(0, "mig").integers(0, 2**31) != metric_rng(0, "dci").integers(0, 2**31)


def test_evaluate_keys_and_aliases():
    represent = reps.lookup(reps.code_table("ideal"))
    out = evaluate(GRID, represent, {"mig": SMALL["mig"], "sap": dict(num_train=1000, num_test=500)}, seed=0)
    assert set(out) == {"metrics/mig", "metrics/sap"}  # each score once: a headline under its own name
    # SAP is low even for an ideal code (one linear SVM on one dim, many classes): ~0.25
    assert 0.15 < out["metrics/sap"] < 0.35
    # A metric's headline scores, as it declares them, in compare's column order
    assert list(headline_keys(METRICS))[:4] == ["metrics/mig", "metrics/dci_disentanglement", "metrics/factor_vae", "metrics/beta_vae"]
    for headline, (metric, score) in headline_keys(METRICS).items():
        assert metric in METRICS and headline.startswith("metrics/")


def test_every_metric_returns_its_reference_keys():
    represent = reps.lookup(reps.code_table("mixed"))
    expected = {
        "beta_vae": {"train_accuracy", "eval_accuracy"},
        "factor_vae": {"train_accuracy", "eval_accuracy", "num_active_dims"},
        "mig": {"discrete_mig"},
        "dci": {"disentanglement", "completeness", "informativeness_train", "informativeness_test"},
        "sap": {"SAP_score"},
        "modularity_explicitness": {"modularity_score", "explicitness_score_train", "explicitness_score_test"},
        "irs": {"IRS", "num_active_dims"},
        "unsupervised": {
            "gaussian_total_correlation",
            "gaussian_wasserstein_correlation",
            "gaussian_wasserstein_correlation_norm",
            "mutual_info_score",
        },
        "infomec": {"infom", "infoe", "infoc", "num_active_dims"},
        "dci_es": {"explicitness", "size", "informativeness"},
    }
    assert set(expected) == set(METRICS)
    tiny = {
        "beta_vae": dict(num_train=100, num_eval=50, batch_size=8),
        "factor_vae": dict(num_train=100, num_eval=50, num_variance_estimate=500, batch_size=8),
        "mig": dict(num_train=500),
        "dci": dict(num_train=300, num_test=100),
        "sap": dict(num_train=300, num_test=100),
        "modularity_explicitness": dict(num_train=500, num_test=300),
        "irs": dict(num_train=500),
        "unsupervised": dict(num_train=500),
        "infomec": dict(num_train=300),
        "dci_es": dict(num_train=100, num_val=50, num_test=50, widths=[0, 14], epochs=2),
    }
    rng = np.random.default_rng(0)
    for name, fn in METRICS.items():
        result = fn(GRID, represent, rng, **tiny[name])
        assert set(result) == expected[name], name
        assert all(isinstance(v, float) and np.isfinite(v) for v in result.values()), name


def test_unknown_metric_and_hparam_are_user_errors():
    with pytest.raises(UserError, match="valid metrics: mig, dci, factor_vae"):
        evaluate(GRID, reps.lookup(reps.code_table("ideal")), {"mgi": {}}, seed=0)
    with pytest.raises(UserError, match="num_trian"):
        evaluate(GRID, reps.lookup(reps.code_table("ideal")), {"mig": {"num_trian": 10}}, seed=0)
    with pytest.raises(UserError, match="booster"):
        evaluate(GRID, reps.lookup(reps.code_table("ideal")), {"dci": {"booster": "xgb"}}, seed=0)


# --- building blocks against their definitions -------------------------------------------


def test_discrete_mutual_info_matches_sklearn_pairwise():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 20, size=(3000, 4)) + 1
    b = np.stack([a[:, 0] // 3, rng.integers(0, 7, 3000), (a[:, 1] + a[:, 2]) % 5], axis=1)
    mi = discrete_mutual_info(a, b)
    for i in range(a.shape[1]):
        for j in range(b.shape[1]):
            assert mi[i, j] == pytest.approx(sklearn.metrics.mutual_info_score(b[:, j], a[:, i]), abs=1e-12)
    for j in range(b.shape[1]):
        assert discrete_entropy(b)[j] == pytest.approx(sklearn.metrics.mutual_info_score(b[:, j], b[:, j]), abs=1e-12)


def test_histogram_discretize_is_the_reference_formula():
    x = np.random.default_rng(2).standard_normal((1000, 3))
    x[:, 2] = 5.0  # constant column: np.histogram widens the range by 0.5 each side
    got = histogram_discretize(x, 20)
    for c in range(3):
        np.testing.assert_array_equal(got[:, c], np.digitize(x[:, c], np.histogram(x[:, c], 20)[1][:-1]))
    assert got[:, :2].min() == 1 and got[:, :2].max() == 20


def test_dci_scores_of_known_importance_matrices():
    assert dci.disentanglement(np.eye(4)) == pytest.approx(1.0, abs=1e-6)
    assert dci.completeness(np.eye(4)) == pytest.approx(1.0, abs=1e-6)
    assert dci.disentanglement(np.ones((4, 4))) == pytest.approx(0.0, abs=1e-6)
    # one code explains both factors: not disentangled, but complete
    r = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert dci.disentanglement(r) == pytest.approx(0.0, abs=1e-6)
    assert dci.completeness(r) == pytest.approx(1.0, abs=1e-6)


def test_modularity_of_known_mutual_information():
    # one factor per code -> 1; equal MI with both of 2 factors -> 0; no information -> 0
    assert modularity_explicitness.modularity(np.array([[1.0, 0.0], [0.0, 2.0]])) == pytest.approx(1.0)
    assert modularity_explicitness.modularity(np.array([[1.0, 1.0], [0.0, 0.0]])) == pytest.approx(0.0)


def test_unsupervised_gaussian_scores_match_closed_form():
    rho = 0.6
    cov = np.array([[1.0, rho], [rho, 1.0]])
    assert unsupervised.gaussian_total_correlation(cov) == pytest.approx(-0.5 * np.log(1 - rho**2))
    assert unsupervised.gaussian_total_correlation(np.diag([2.0, 3.0])) == pytest.approx(0.0)
    assert unsupervised.gaussian_wasserstein_correlation(np.diag([2.0, 3.0])) == pytest.approx(0.0, abs=1e-12)
    assert unsupervised.gaussian_wasserstein_correlation(cov) > 0.0


# --- representations ---------------------------------------------------------------------


class IndexImages(GroundTruthDataset):
    """Fake dataset whose image for flat index i is a 1x2x2 image filled with i."""

    image_shape = (1, 2, 2)
    binary = False

    def __init__(self, grid: FactorGrid):
        self.grid = grid

    def images(self, factors):
        index = self.grid.factors_to_index(factors)
        return torch.tensor(index, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()


def test_cached_encoder_encodes_each_image_at_most_once():
    dataset = IndexImages(GRID)
    table = reps.code_table("mixed")
    encoded_batches = []

    def encode_images(images: torch.Tensor) -> np.ndarray:
        assert images.dtype == torch.float32 and images.shape[1:] == (1, 2, 2)
        index = images[:, 0, 0, 0].numpy().astype(np.int64)
        encoded_batches.append(index)
        return table[index]

    encoder = CachedEncoder(dataset, encode_images, batch_size=500)
    suite = {"factor_vae": SMALL["factor_vae"], "mig": SMALL["mig"], "beta_vae": dict(num_train=200, num_eval=100)}
    cached = evaluate(dataset, encoder, suite, seed=3)
    direct = evaluate(GRID, reps.lookup(table), suite, seed=3)
    assert cached == direct  # same codes, same draws

    all_encoded = np.concatenate(encoded_batches)
    assert len(np.unique(all_encoded)) == len(all_encoded)  # no image encoded twice
    assert encoder.num_encoded == len(all_encoded) <= len(GRID)
    assert max(len(b) for b in encoded_batches) <= 500
    # a second pass over the same factors encodes nothing new
    before = encoder.num_encoded
    evaluate(dataset, encoder, {"mig": SMALL["mig"]}, seed=3)
    assert encoder.num_encoded == before


def _save(tmp_path, name="codes.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_load_codes_file_round_trip_any_row_order(tmp_path):
    factors = reps.grid_factors()
    codes = reps.code_table("mixed")
    order = np.random.default_rng(0).permutation(len(factors))
    path = _save(tmp_path, factors=factors[order], codes=codes[order], factor_names=np.array(list("abcde")))
    grid, represent = load_codes_file(path)
    assert grid.factor_sizes == SIZES and grid.factor_names == tuple("abcde")
    query = GRID.sample_factors(100, np.random.default_rng(1))
    np.testing.assert_array_equal(represent(query), codes[GRID.factors_to_index(query)])
    assert isinstance(represent, LookupRepresentation) and represent.num_codes == 10


def _bad_files(tmp_path):
    factors = reps.grid_factors()
    codes = reps.code_table("ideal")
    nan_codes = codes.copy()
    nan_codes[5, 2] = np.nan
    dup = factors.copy()
    dup[1] = dup[0]
    text = tmp_path / "notes.npz"
    text.write_text("not an archive\n")
    npy = tmp_path / "codes.npy"
    np.save(npy, codes)
    return {
        "no such file": tmp_path / "missing.npz",
        "cannot be read": text,
        "not an .npz": npy,
        "missing array(s) codes": _save(tmp_path, "a.npz", factors=factors),
        "factors must be a 2-D": _save(tmp_path, "b.npz", factors=factors[:, 0], codes=codes),
        "integer factor indices": _save(tmp_path, "c.npz", factors=factors.astype(float), codes=codes),
        "codes must be a 2-D": _save(tmp_path, "d.npz", factors=factors, codes=codes[:, 0]),
        "rows but factors has": _save(tmp_path, "e.npz", factors=factors, codes=codes[:-1]),
        "NaN or infinite": _save(tmp_path, "f.npz", factors=factors, codes=nan_codes),
        "exactly once (11520 rows for 11520 combinations: 1 missing, 1 repeated)": _save(tmp_path, "g.npz", factors=dup, codes=codes),
        "do not cover the full grid": _save(tmp_path, "h.npz", factors=factors[:-1], codes=codes[:-1]),
        "outside 0..1": _save(tmp_path, "i.npz", factors=factors, codes=codes, factor_sizes=np.array([2, 6, 10, 8, 8])),
        "factor_sizes must be": _save(tmp_path, "j.npz", factors=factors, codes=codes, factor_sizes=np.array([3, 6])),
        "factor_names must be": _save(tmp_path, "k.npz", factors=factors, codes=codes, factor_names=np.array(["a"])),
        "codes must be numeric": _save(tmp_path, "l.npz", factors=factors, codes=codes.astype(str)),
    }


def test_load_codes_file_errors_are_one_line_user_errors(tmp_path):
    for problem, path in _bad_files(tmp_path).items():
        with pytest.raises(UserError) as info:
            load_codes_file(path)
        message = str(info.value)
        assert problem in message, (problem, message)
        assert str(path) in message and "\n" not in message, message


def test_presets_are_valid_suites():
    from omegaconf import OmegaConf

    from vaelab.metrics import check_suite

    conf = pathlib.Path(__file__).parent.parent / "conf" / "metrics"
    full = OmegaConf.to_container(OmegaConf.load(conf / "full.yaml"))
    fast = OmegaConf.to_container(OmegaConf.load(conf / "fast.yaml"))
    # a preset is a suite and its seed; when it runs is train.yaml's (periodic_metrics)
    assert {"seed", "suite"} <= set(full) and {"seed", "suite"} <= set(fast)
    assert set(full["suite"]) == set(METRICS)
    check_suite(full["suite"])
    check_suite(fast["suite"])
    assert set(fast["suite"]) < set(METRICS)
    # full = the study's hyperparameters, i.e. each metric's defaults
    import inspect

    for name, hparams in full["suite"].items():
        defaults = {p.name: p.default for p in inspect.signature(METRICS[name]).parameters.values() if p.kind is p.KEYWORD_ONLY}
        as_yaml = {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}  # YAML has lists
        assert hparams == {k: as_yaml[k] for k in hparams}, name


def test_suite_breaks_mig_and_dci_down_by_factor_into_tables_and_csv(tmp_path):
    """MIG per factor and DCI's importance matrix, what the two headline numbers hide: for an ideal
    code every factor has a MIG near 1 and each factor's importance sits on one code dimension;
    for noise nothing does. A run writes them as CSV (and the matrix as a heatmap) and hands them
    to every logger that shows tables."""
    from vaelab.tables import save_and_log_tables

    suite = {"mig": SMALL["mig"], "dci": SMALL["dci"]}
    tables = {"ideal": {}, "noise": {}}
    for name in tables:
        scores = evaluate(GRID, reps.lookup(reps.code_table(name)), suite, seed=0, tables=tables[name])
        per_factor = tables[name]["mig_per_factor"]
        assert per_factor.columns == ["factor", "mig"] and [row[0] for row in per_factor.rows] == list(GRID.factor_names)
        assert np.mean([row[1] for row in per_factor.rows]) == pytest.approx(scores["metrics/mig"])
    assert min(row[1] for row in tables["ideal"]["mig_per_factor"].rows) > 0.9
    assert max(row[1] for row in tables["noise"]["mig_per_factor"].rows) < 0.1
    importance = np.array([row[1:] for row in tables["ideal"]["dci_importance"].rows])
    assert tables["ideal"]["dci_importance"].columns == ["code", *GRID.factor_names]
    assert importance.shape[1] == K and (importance.max(axis=0) / importance.sum(axis=0) > 0.8).all()

    from vaelab.loggers import RunLoggerDefaults

    class TableLogger(RunLoggerDefaults):
        def __init__(self):
            self.tables, self.images = {}, {}

        def log_score_table(self, key, columns, rows, step):
            self.tables[key] = (columns, rows, step)

        def log_picture(self, key, path, step):
            self.images[key] = (path, step)

    logger = TableLogger()
    paths = save_and_log_tables(tables["ideal"], tmp_path, step=7, loggers=[logger])
    assert paths["mig_per_factor"] == tmp_path / "tables" / "mig_per_factor_step7.csv"
    lines = paths["mig_per_factor"].read_text().splitlines()
    assert lines[0] == "factor,mig" and len(lines) == 1 + K
    assert set(logger.tables) == {"tables/mig_per_factor", "tables/dci_importance"}
    assert logger.tables["tables/dci_importance"][0] == ["code", *GRID.factor_names]
    assert (tmp_path / "images" / "dci_importance_step7.png").is_file() and "images/dci_importance" in logger.images
    assert evaluate(GRID, reps.lookup(reps.code_table("ideal")), {"mig": SMALL["mig"]}, seed=0) == {
        "metrics/mig": pytest.approx(np.mean([row[1] for row in tables["ideal"]["mig_per_factor"].rows]))
    }  # without tables=, nothing is kept
