"""Hyperparameter searches: the Optuna presets (conf/hparams_search/, hydra/sweeper=optuna, from
the sweeps extra) and the W&B sweep (examples/wandb_sweep.yaml), each run end to end on a few
steps; and optimized_metric, the figure a run hands back to the sweeper."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import REPO, call_vaelab, cli_env, compose_train
from tests.wandb_offline import read_offline_run
from vaelab import objectives
from vaelab.loggers import sweep_group
from vaelab.rundir import LOCK_NAME

PRESET = "hparams_search=dsprites_fast_mig"
SEARCHED = {"kl_weight", "optimizer.lr", "data.batch_size"}

# A few steps of a trial, with its evaluations cut down to seconds (the preset's MIG stays the score).
FEW_STEPS = {
    "trainer.max_steps": 4, "trainer.val_check_interval": 4, "trainer.log_every_n_steps": 2, "data.val_size": 64,
    "information.num_samples": 500, "images.num_images": 2, "metrics.suite.mig.num_train": 500,
    "checkpoint.every_n_steps": 2, "num_threads": 1,
}  # fmt: skip
FEW_STEP_ARGS = tuple(f"{key}={value}" for key, value in FEW_STEPS.items())


def _cli(tmp_path, monkeypatch, capfd) -> dict:
    return {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("vaelab: error:")]


def test_hparams_search_preset_composes_an_optuna_search_of_the_recipes_knobs(tmp_path, monkeypatch, capfd):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result = call_vaelab("train", PRESET, "--cfg", "hydra", **_cli(tmp_path, monkeypatch, capfd))
    assert result.returncode == 0, result.stderr
    sweeper = OmegaConf.create(result.stdout).hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == SEARCHED and sweeper.n_trials >= 10 and sweeper.sampler.seed is not None

    result = call_vaelab("train", PRESET, "--cfg", "job", **_cli(tmp_path, monkeypatch, capfd))
    assert result.returncode == 0, result.stderr
    job = OmegaConf.create(result.stdout)
    # One trial: the fast recipe cut to 3,000 steps, scored by MIG alone at the end.
    assert job.optimized_metric == "metrics/mig" and list(job.metrics.suite) == ["mig"]
    assert job.trainer.max_steps == 3000 and job.periodic_metrics.suite == {}
    # Every corner of the ranges builds, for the recipe's objective and for β-VAE on the same axis.
    low, high = (float(x) for x in re.findall(r"[\d.e-]+", sweeper.params.kl_weight.split("interval")[1]))
    for objective in ("infomax_native", "betavae"):
        for weight in (low, high):
            cfg = compose_train([PRESET, f"objective={objective}", f"kl_weight={weight}"], tmp_path)
            assert objectives.build(cfg, dataset_size=737280).kl_weight == pytest.approx(weight)


@pytest.mark.slow
def test_optuna_search_scores_each_trial_by_its_final_metric(tmp_path, monkeypatch, capfd):
    """Three trials through the CLI: each its own run directory (locked while it ran, inside the
    locked sweep directory) and W&B run in the sweep's group; the value Optuna records for the
    best trial is that trial's final MIG in its metrics.json."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result = call_vaelab(
        "train", "-m", PRESET, "hydra.sweeper.n_trials=3", *FEW_STEP_ARGS, "hydra.sweep.dir=search",
        **_cli(tmp_path, monkeypatch, capfd),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "search"
    assert (sweep / LOCK_NAME).is_file()
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(results.best_params) == SEARCHED

    trials = sorted(path for path in sweep.iterdir() if path.is_dir() and path.name[0].isdigit())
    assert [path.name[:2] for path in trials] == ["0_", "1_", "2_"]
    scores, params = [], []
    for trial in trials:
        assert (trial / LOCK_NAME).is_file()
        metrics = json.loads((trial / "metrics.json").read_text())
        assert metrics["status"] == "success"
        scores.append(metrics["final"]["metrics/mig"])
        overrides = dict(item.split("=", 1) for item in OmegaConf.load(trial / ".hydra" / "overrides.yaml"))
        params.append({key: float(overrides[key]) for key in SEARCHED})
        (wandb_dir,) = (trial / "wandb").glob("offline-run-*")
        run = read_offline_run(wandb_dir)
        assert run.group == sweep_group(sweep) and run.exit_code == 0
        config = OmegaConf.create(run.config)
        for key in SEARCHED:  # the trial's values, recorded where the user would type them
            assert OmegaConf.select(config, key) == pytest.approx(params[-1][key]), key
        assert run.config["optimized_metric"] == "metrics/mig"
    assert len({tuple(sorted(p.items())) for p in params}) == 3  # three points of the search, none twice

    best = params.index({key: float(value) for key, value in results.best_params.items()})
    assert results.best_value == scores[best] == max(scores)


@pytest.mark.slow
def test_an_optimized_metric_the_run_cannot_produce_is_a_one_line_error(tmp_path, monkeypatch, capfd):
    cli = _cli(tmp_path, monkeypatch, capfd)
    # A score of a metric the final suite does not compute: refused before anything is trained.
    result = call_vaelab(
        "train", "experiment=quick", "optimized_metric=metrics/dci_disentanglement", "logger=none",
        "hydra.run.dir=dci", **cli,
    )  # fmt: skip
    assert result.returncode == 2
    assert _errors(result.stderr) == [
        "vaelab: error: optimized_metric=metrics/dci_disentanglement: the final metric suite computes mig, not dci; "
        "choose a metrics= preset that has it (e.g. metrics=full) or another optimized_metric"
    ], result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "dci" / "metrics.json").exists()
    result = call_vaelab("train", "experiment=quick", "optimized_metric=5", "logger=none", "hydra.run.dir=five", **cli)
    assert result.returncode == 2 and _errors(result.stderr) == [
        "vaelab: error: optimized_metric=5: expected the name of a final figure, e.g. metrics/mig or val/loss"
    ], result.stderr

    # A name the run never logged: known when it ends; the run itself is kept, finished.
    result = call_vaelab("train", *FEW_STEP_ARGS, "metrics=mig", "optimized_metric=metrics/mgi", "logger=none",
                         "hydra.run.dir=typo", **cli)  # fmt: skip
    assert result.returncode == 2
    (error,) = _errors(result.stderr)
    assert error.startswith(
        "vaelab: error: optimized_metric=metrics/mgi: the run logged no figure of that name; did you mean metrics/mig"
    ), result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads((tmp_path / "typo" / "metrics.json").read_text())["status"] == "success"

    # In an Optuna search the trial fails with that line, and so does the search (exit 2).
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper"):
        result = call_vaelab(
            "train", "-m", PRESET, "hydra.sweeper.n_trials=1", "optimized_metric=val/los", *FEW_STEP_ARGS,
            "logger=none", "hydra.sweep.dir=search", **cli,
        )  # fmt: skip
        assert result.returncode == 2
        errors = _errors(result.stderr)  # the trial's line, then the search's: the same
        assert len(set(errors)) == 1 and errors[0].startswith(
            "vaelab: error: optimized_metric=val/los: the run logged no figure of that name; did you mean val/loss"
        ), result.stderr
        assert "Traceback" not in result.stderr


def agent_command(sweep: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """The command line W&B's agent runs for one run of ``sweep`` given the parameter ``values``
    (wandb's Agent._command_run and sweeps.utils, outside Windows; W&B's docs, "sweep
    configuration options", name the same macros). ``${envvar:NAME}`` inside a word becomes
    that variable's value (its name when unset); then each word that is a whole macro becomes
    a list of words: ${env} /usr/bin/env, ${interpreter} python, ${program} the sweep's
    ``program``, ${args} ``--key=value`` per parameter, ${args_no_hyphens} ``key=value``,
    ${args_no_equals} ``--key value``, ${args_json} the values as one JSON word; an unknown
    macro becomes nothing. Any other word is passed as it is."""
    command = sweep.get("command") or ["${env}", "${interpreter}", "${program}", "${args}"]
    macros = {
        "env": ["/usr/bin/env"],
        "interpreter": ["python"],
        "program": [sweep["program"]],
        "args": [f"--{key}={value}" for key, value in values.items()],
        "args_no_hyphens": [f"{key}={value}" for key, value in values.items()],
        "args_no_equals": [word for key, value in values.items() for word in (f"--{key}", str(value))],
        "args_json": [json.dumps(values)],
    }
    words = []
    for word in command:
        word = re.sub(r"\$\{envvar:([A-Z0-9_]*)\}", lambda match: os.environ.get(match[1], match[1]), str(word))
        if word.startswith("${") and word.endswith("}"):
            words += macros.get(word[2:-1], [])
        else:
            words.append(word)
    return words


def test_agent_command_expands_macros_as_the_wandb_agent_does():
    """The expansion above, against wandb's own (the installed version's create_sweep_command_args)."""
    create_sweep_command_args = pytest.importorskip("wandb.sdk.launch.sweeps.utils").create_sweep_command_args

    values = {"kl_weight": 7.5, "optimizer.lr": 0.0007, "data.batch_size": 32}
    theirs = create_sweep_command_args({"args": {key: {"value": value} for key, value in values.items()}})
    sweep = {"program": "vaelab", "command": ["${env}", "${interpreter}", "${program}", "x", "${args_no_hyphens}"]}
    assert agent_command(sweep, values) == ["/usr/bin/env", "python", "vaelab", "x", *theirs["args_no_hyphens"]]
    assert agent_command({"program": "p.py"}, values) == ["/usr/bin/env", "python", "p.py", *theirs["args"]]


@pytest.mark.slow
def test_wandb_sweep_runs_vaelab_train_with_the_agents_command_line(tmp_path):
    """One run of examples/wandb_sweep.yaml, started by the command line the W&B agent would
    build (W&B offline), with the ids the agent sets in the environment: it trains with the
    parameter set's values and records them in its W&B config, in a directory named by them."""
    sweep = yaml.safe_load((REPO / "examples" / "wandb_sweep.yaml").read_text())
    assert sweep["metric"] == {"name": "metrics/mig", "goal": "maximize"}
    parameters = sweep["parameters"]
    assert set(parameters) == SEARCHED
    # One parameter set, as the sweep's controller would choose it: a value in each range,
    # plus the few-step settings (fixed values, as `value:` entries of the yaml would give).
    chosen = {"kl_weight": 7.5, "optimizer.lr": 0.0007, "data.batch_size": 32}
    for key, value in chosen.items():
        spec = parameters[key]
        assert value in spec["values"] if "values" in spec else spec["min"] <= value <= spec["max"], key
    command = agent_command(sweep, {**chosen, **FEW_STEPS})
    assert command[:3] == ["/usr/bin/env", "vaelab", "train"]

    sweep_id, run_id = "sweep123", "run45678"
    # The agent's environment: the ids, and the parameter file wandb.init reads the run's config from.
    params_file = tmp_path / "wandb" / f"sweep-{sweep_id}" / f"config-{run_id}.yaml"
    params_file.parent.mkdir(parents=True)
    params_file.write_text(yaml.safe_dump({key: {"value": value} for key, value in {**chosen, **FEW_STEPS}.items()}))
    env = cli_env(tmp_path, {
        "WANDB_SWEEP_ID": sweep_id, "WANDB_RUN_ID": run_id, "WANDB_SWEEP_PARAM_PATH": str(params_file),
        # The console script of this interpreter (as in its activated virtualenv), running this repository's code.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    })  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    run_dir = tmp_path / "outputs" / "wandb_sweep" / sweep_id / run_id
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "success" and "metrics/mig" in metrics["final"]  # the sweep's metric, in the summary too
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
    run = read_offline_run(wandb_dir)
    assert run.run_id == run_id and run.exit_code == 0
    assert run.summary["metrics/mig"] == pytest.approx(metrics["final"]["metrics/mig"])
    logged = OmegaConf.create({key: value for key, value in run.config.items() if "." not in key})
    for key, value in chosen.items():
        assert OmegaConf.select(config, key) == pytest.approx(value), key
        assert OmegaConf.select(logged, key) == pytest.approx(value), key
    assert config.trainer.max_steps == FEW_STEPS["trainer.max_steps"] and list(config.metrics.suite) == ["mig"]
