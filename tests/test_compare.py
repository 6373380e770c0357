"""`vaelab compare`: every run of a sweep in the table, the CSV and the plots; failures reported."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import call_vaelab, cli_env
from vaelab.compare.plots import plot
from vaelab.compare.runs import find_runs
from vaelab.objectives.betatcvae import BetaTCVAE
from vaelab.objectives.betavae import BetaVAE
from vaelab.objectives.infomax import InfoMax
from vaelab.objectives.weak import AdaGVAE, AdaInfoMax


def fake_run(root: Path, name: str, objective: str, knob: float, seed: int, mig: float | None, status: str = "success",
             reconstruction: float = 30.0):  # fmt: skip
    """A run directory as `vaelab train` leaves it: its config, and metrics.json with the objective's
    description (made by the objective class itself) unless it failed before training."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    trained = {
        "betavae": lambda: BetaVAE(beta=knob),
        "infomax": lambda: InfoMax(lam=knob),
        "infomax-native": lambda: InfoMax(lam=knob, estimator="native", dataset_size=1000),
        "betatcvae": lambda: BetaTCVAE(beta=knob, dataset_size=1000),
        "adagvae": lambda: AdaGVAE(beta=knob),
        "adainfomax": lambda: AdaInfoMax(lam=knob, estimator="native", dataset_size=1000),
    }[objective]()
    target = f"{type(trained).__module__}.{type(trained).__name__}"
    (run / ".hydra" / "config.yaml").write_text(f"objective:\n  _target_: {target}\nseed: {seed}\n")
    if mig is not None:
        final = {"metrics/mig": mig, "info/mutual_info": 2.0 + mig, "val/reconstruction": reconstruction}
        metrics = {"status": status, "objective": trained.describe(), "final": final}
        (run / "metrics.json").write_text(json.dumps(metrics))


def test_compare_tables_plots_and_reports_failures(tmp_path, monkeypatch, capfd):
    sweep = tmp_path / "sweep"
    fake_run(sweep, "0", "betavae", 1.0, 0, 0.10)
    fake_run(sweep, "1", "betavae", 1.0, 1, 0.14)
    fake_run(sweep, "2", "betavae", 4.0, 0, 0.30)
    fake_run(sweep, "3", "infomax", 0.0, 0, 0.11)  # beta_effective 1
    fake_run(sweep, "4", "infomax", -0.75, 0, 0.29)  # beta_effective 4
    fake_run(sweep, "5", "infomax", 3.0, 0, None)  # failed before writing metrics.json
    fake_run(sweep, "6", "betavae", 8.0, 0, 0.5, status="running")  # killed

    result = call_vaelab("compare", str(sweep), cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 0, result.stderr
    # Piped (not a terminal): the table is not cut to 80 columns.
    assert "info/mutual_info" in result.stdout and "unfinished" in result.stdout
    rows = list(csv.DictReader(open(sweep / "compare.csv")))
    assert len(rows) == 7
    status = {Path(row["run"]).name: row["status"] for row in rows}
    assert status == {"0": "success", "1": "success", "2": "success", "3": "success", "4": "success",
                      "5": "failed", "6": "unfinished"}  # fmt: skip
    assert {float(row["beta_effective"]) for row in rows if row["objective"] == "infomax" and row["status"] == "success"} == {1.0, 4.0}
    assert "failed: " in result.stderr and "unfinished: " in result.stderr
    assert (sweep / "compare_metrics_mig.png").stat().st_size > 0

    runs = find_runs([sweep])
    assert plot(runs, "metrics/mig", tmp_path / "mig.png") == 2  # one line per objective
    assert plot(runs, "metrics/dci_disentanglement", tmp_path / "dci.png") == 0  # nothing to draw


def test_compare_puts_the_native_estimator_on_its_real_kl_weight_and_on_reconstruction(tmp_path, monkeypatch, capfd):
    """InfoMax native at lambda weighs KL[q(z)||p(z)] by 1/lambda, not by beta_effective = 1/(1+lambda);
    the summary has one row per objective and knob, mean ± std over its seeds."""
    sweep = tmp_path / "sweep"
    fake_run(sweep, "0", "betavae", 4.0, 0, 0.20, reconstruction=40.0)
    fake_run(sweep, "1", "betavae", 4.0, 1, 0.30, reconstruction=44.0)
    fake_run(sweep, "2", "infomax", -0.75, 0, 0.22, reconstruction=41.0)  # beta_effective 4
    fake_run(sweep, "3", "infomax-native", 0.25, 0, 0.35, reconstruction=25.0)  # beta_effective 0.8, weight 4
    fake_run(sweep, "4", "infomax-native", 0.25, 1, 0.45, reconstruction=27.0)

    runs = {run.path.name: run for run in find_runs([sweep])}
    assert (runs["0"].beta_effective, runs["0"].kl_weight) == (4.0, 4.0)
    assert runs["2"].beta_effective == runs["2"].kl_weight == 4.0
    assert runs["3"].beta_effective == 0.8 and runs["3"].kl_weight == 4.0
    assert runs["3"].reconstruction == 25.0

    result = call_vaelab("compare", str(sweep), cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 0, result.stderr
    summary = list(csv.DictReader(open(sweep / "compare_summary.csv")))
    rows = {(row["objective"], row["beta_effective"]): row for row in summary}
    assert set(rows) == {("betavae", "4"), ("infomax", "4"), ("infomax-native", "0.8")}
    assert rows[("betavae", "4")]["seeds"] == "2"
    assert rows[("betavae", "4")]["metrics/mig"] == "0.250 ± 0.071"
    assert rows[("infomax-native", "0.8")]["kl_weight"] == "4"
    assert rows[("infomax-native", "0.8")]["val/reconstruction"] == "26.000 ± 1.414"
    markdown = (sweep / "compare_summary.md").read_text().splitlines()
    assert len(markdown) == 2 + 3 and "| infomax-native | lambda=0.25 | 0.8 | 4 | 2 | 0.400 ± 0.071" in markdown[-1]
    assert plot(list(runs.values()), "metrics/mig", tmp_path / "mig.png") == 3


def test_compare_loads_torch_only_for_udr(tmp_path):
    """Reading, tables, statistics and plots need no torch (it takes seconds to import); only
    --udr, which loads checkpoints, does."""
    sweep = tmp_path / "sweep"
    fake_run(sweep, "0", "betavae", 1.0, 0, 0.10)
    fake_run(sweep, "1", "betavae", 1.0, 1, 0.14)
    code = ("import sys; from vaelab.compare import main; "
            f"assert main([{str(sweep)!r}, '--threshold', 'metrics/mig=0.1', '--contrast', 'beta=1', 'beta=1']) == 0; "
            "print(sorted(name for name in ('torch', 'pytorch_lightning') if name in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=cli_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "[]"
    assert (sweep / "compare_metrics_mig.png").stat().st_size > 0  # the plots were drawn


def test_compare_rejects_a_missing_directory(tmp_path, monkeypatch, capfd):
    result = call_vaelab("compare", str(tmp_path / "nope"), cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("vaelab: error: compare:")


def test_sweep_presets_define_matched_grids(tmp_path, monkeypatch, capfd):
    from omegaconf import OmegaConf

    grids = {}
    for preset in ("sweep_beta", "sweep_lambda"):
        result = call_vaelab("train", f"experiment={preset}", "--cfg", "hydra", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
        assert result.returncode == 0, result.stderr
        grids[preset] = OmegaConf.create(result.stdout).hydra.sweeper.params
    betas = [float(b) for b in grids["sweep_beta"].beta.split(",")]
    lambdas = [float(x) for x in grids["sweep_lambda"]["lambda"].split(",")]
    # The same beta_effective points, so compare puts both derivations on one axis.
    assert [1 / b for b in betas] == [1 + lam for lam in lambdas]
    assert grids["sweep_beta"].seed == grids["sweep_lambda"].seed == "0,1,2"


def test_compare_udr_needs_two_runs_with_checkpoints(tmp_path, monkeypatch, capfd):
    sweep = tmp_path / "sweep"
    fake_run(sweep, "0", "betavae", 1.0, 0, 0.10)  # metrics.json, but no checkpoint
    fake_run(sweep, "1", "betavae", 1.0, 1, 0.12)
    result = call_vaelab("compare", str(sweep), "--udr", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 2
    assert result.stderr.strip() == "vaelab: error: compare --udr: needs at least 2 finished runs with checkpoints, found 0"


def test_compare_lists_damaged_runs_with_the_reason_and_compares_the_rest(tmp_path, monkeypatch, capfd):
    sweep = tmp_path / "sweep"
    fake_run(sweep, "0", "betavae", 1.0, 0, 0.10)
    fake_run(sweep, "1", "betavae", 1.0, 1, 0.14)
    fake_run(sweep, "2", "betavae", 4.0, 0, 0.30)
    (sweep / "1" / ".hydra" / "config.yaml").write_text("a: [\n")  # half-written after a crash
    (sweep / "2" / "metrics.json").write_text('{"status": "success", "final": {"metrics/mig": 0.')  # truncated
    result = call_vaelab("compare", str(sweep), cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = {Path(row["run"]).name: row for row in csv.DictReader(open(sweep / "compare.csv"))}
    assert {name: row["status"] for name, row in rows.items()} == {"0": "success", "1": "damaged", "2": "damaged"}
    assert f"damaged: {sweep / '1'} (.hydra/config.yaml: " in result.stderr
    assert f"damaged: {sweep / '2'} (metrics.json: " in result.stderr
    summary = list(csv.DictReader(open(sweep / "compare_summary.csv")))
    assert [(row["objective"], row["seeds"]) for row in summary] == [("betavae", "1")]


def test_compare_wandb_draws_native_line_charts_of_the_means(tmp_path):
    from tests.wandb_offline import read_offline_run
    from vaelab.compare.upload import log_to_wandb

    sweep = tmp_path / "sweep"
    fake_run(sweep, "0", "betavae", 1.0, 0, 0.10)
    fake_run(sweep, "1", "betavae", 1.0, 1, 0.20)
    fake_run(sweep, "2", "betavae", 4.0, 0, 0.30)
    fake_run(sweep, "3", "infomax", 0.0, 0, 0.11)  # beta_effective 1
    fake_run(sweep, "4", "infomax", -0.75, 0, 0.29)  # beta_effective 4
    files = Path(log_to_wandb(find_runs([sweep]), {}, sweep, sweep, "vaelab"))
    run = read_offline_run(files.parent)
    chart = run.config["_wandb/visualize/compare/metrics_mig_vs_beta_effective"]["panel_config"]
    assert chart["panelDefId"] == "wandb/line/v0"  # W&B's own line plot, not a picture
    assert chart["fieldSettings"] == {"x": "beta_effective", "y": "metrics/mig", "stroke": "objective"}
    (points,) = (files / "media" / "table" / "compare").glob("metrics_mig_vs_beta_effective_table_*.table.json")
    table = json.loads(points.read_text())
    column = {name: i for i, name in enumerate(table["columns"])}
    means = {(row[column["objective"]], row[column["beta_effective"]]): row[column["metrics/mig"]] for row in table["data"]}
    assert means == pytest.approx({("betavae", 1.0): 0.15, ("betavae", 4.0): 0.30, ("infomax", 1.0): 0.11, ("infomax", 4.0): 0.29})
    assert "_wandb/visualize/compare/metrics_mig_vs_val_reconstruction" in run.config


def test_compare_reads_500_runs_and_lists_every_one(tmp_path, monkeypatch, capfd):
    """A large sweep: every run in the table and compare.csv, whatever their number (the timing
    of 500 runs with long histories is in docs/performance.md)."""
    from vaelab.compare import main

    sweep = tmp_path / "sweep"
    objectives = ("betavae", "infomax", "betatcvae")
    for index in range(500):
        knob = (0.5, 1.0, 2.0, 4.0)[index // 3 % 4]
        fake_run(sweep, f"{index}_run", objectives[index % 3], knob, index // 12, mig=index / 1000)
    monkeypatch.chdir(tmp_path)
    assert main([str(sweep)]) == 0
    out = capfd.readouterr().out
    rows = list(csv.DictReader(open(sweep / "compare.csv")))
    assert sorted(Path(row["run"]).name for row in rows) == sorted(f"{index}_run" for index in range(500))
    assert {row["status"] for row in rows} == {"success"}
    by_name = {Path(row["run"]).name: row for row in rows}
    assert all(float(by_name[f"{index}_run"]["metrics/mig"]) == index / 1000 for index in range(500))
    assert sum(line.count("_run") for line in out.splitlines()) == 500  # one table row each


def test_udr_agreement_with_a_metric_is_a_rank_correlation_or_says_why_there_is_none():
    from vaelab.compare.udr import rank_correlation_line

    same_order = rank_correlation_line("udr/lasso", "metrics/mig", [(0.1, 0.2), (0.3, 0.5), (0.2, 0.4)])
    assert same_order == "udr/lasso against metrics/mig: Spearman rank correlation +1.00 over 3 runs"
    reversed_order = rank_correlation_line("udr/lasso", "metrics/mig", [(0.1, 0.5), (0.3, 0.2), (0.2, 0.4)])
    assert "-1.00" in reversed_order
    constant = rank_correlation_line("udr/lasso", "metrics/mig", [(0.1, 0.0), (0.3, 0.0), (0.2, 0.0)])
    assert constant == "udr/lasso against metrics/mig: no rank correlation (metrics/mig is the same for all 3 runs)"


def test_compare_has_infomec_and_dci_es_as_headline_figures(tmp_path, monkeypatch, capfd):
    """Runs whose final suite computed InfoMEC and DCI-ES (metrics=full): their headline scores are
    columns of the table and compare.csv, with a picture each, beside MIG."""
    sweep = tmp_path / "sweep"
    recent = ("metrics/infom", "metrics/infoe", "metrics/infoc", "metrics/dci_es_explicitness", "metrics/dci_es_size")
    for name, beta, seed, mig in (("0", 1.0, 0, 0.1), ("1", 4.0, 0, 0.3), ("2", 4.0, 1, 0.35)):
        fake_run(sweep, name, "betavae", beta, seed, mig)
        metrics_file = sweep / name / "metrics.json"
        metrics = json.loads(metrics_file.read_text())
        metrics["final"].update({figure: 0.5 + mig for figure in recent})
        metrics_file.write_text(json.dumps(metrics))
    result = call_vaelab("compare", str(sweep), cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "objective" in line)
    rows = list(csv.DictReader(open(sweep / "compare.csv")))
    for figure in recent:
        assert figure.removeprefix("metrics/") in header, figure  # a column of the printed table
        assert sorted(float(row[figure]) for row in rows) == [0.6, 0.8, 0.85], figure
        assert (sweep / f"compare_{figure.replace('/', '_')}.png").stat().st_size > 0
