"""The `vaelab` command end to end, as a user runs it (W&B offline, read back from its files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, call_vaelab, cli_env, run_vaelab
from tests.wandb_offline import read_offline_run
from vaelab import CONFIG_DIR
from vaelab.runfiles import read_history

QUICK = (
    "experiment=quick",
    "trainer.max_steps=40",
    "trainer.val_check_interval=20",
    "metrics=mig",
    "metrics.suite.mig.num_train=1000",
    "metrics@periodic_metrics=mig",
    "periodic_metrics.every_n_steps=20",
    "periodic_metrics.suite.mig.num_train=1000",
)


# Reached at the first evaluation (step 20): the time to disentangle's record, whatever the model learnt.
TIME_TO_ANY_MIG = "time_to_disentangle={metrics/mig:0}"


def single_run_dir(root: Path) -> Path:
    (metrics_json,) = (root / "outputs").glob("*/*/metrics.json")
    return metrics_json.parent


@pytest.fixture(scope="module")
def infomax_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    cwd = tmp_path_factory.mktemp("infomax")
    # The default W&B mode: no WANDB_MODE, no API key, no ~/.netrc -> offline, said once.
    result = run_vaelab(
        "train", "objective=infomax", "lambda=3", "logger.wandb.tags=[study]", *QUICK, TIME_TO_ANY_MIG,
        cwd=cwd, env={"WANDB_MODE": None, "HOME": str(cwd)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result, single_run_dir(cwd)


def test_help_lists_subcommands_without_loading_torch():
    code = "import sys; from vaelab.cli import main; main(['--help']); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "eval" in result.stdout


@pytest.mark.parametrize("plugins", ["[{_target_: pytorch_lightning.plugins.precision.DoublePrecision}]",
                                     "{_target_: pytorch_lightning.plugins.precision.DoublePrecision}"])
def test_trainer_plugins_from_the_config_reach_lightning(tmp_path, monkeypatch, capfd, plugins):
    """trainer.* passes through to Lightning's Trainer, plugins included (a list or one), beside
    vaelab's own checkpoint writer: a precision plugin given on the command line trains in float64."""
    run_dir = tmp_path / "run"
    result = call_vaelab(
        "train", "trainer.max_steps=2", "trainer.val_check_interval=2", "data.val_size=64", "metrics=none",
        "metrics@periodic_metrics=none", "information.num_samples=0", "images.num_images=0", "logger=none",
        "trainer.precision=null", f"+trainer.plugins={plugins}", f"hydra.run.dir={run_dir}",
        cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert {value.dtype for value in state.values()} == {torch.float64}


def test_unknown_subcommand_is_a_one_line_error(tmp_path, monkeypatch, capfd):
    result = call_vaelab("fit", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 2
    assert result.stderr.strip() == "vaelab: error: unknown command 'fit'; expected one of: train, eval, compare"


def test_hydra_flags_keep_working(tmp_path, monkeypatch, capfd):
    result = call_vaelab("train", "--cfg", "job", "objective=infomax", "lambda=3", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 0, result.stderr
    assert "_target_: vaelab.objectives.infomax.InfoMax" in result.stdout
    # The knob is a top-level key, declared by the objective's class alone (no copy under objective:)
    assert "\nlambda: 3\n" in result.stdout and "lam:" not in result.stdout and "\nbeta:" not in result.stdout
    assert not (tmp_path / "outputs").exists()  # printing the config trains nothing
    groups = call_vaelab("train", "--help", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    # --help lists every objective config a user can select
    (listed,) = [line.removeprefix("objective: ").split(", ") for line in groups.stdout.splitlines() if line.startswith("objective: ")]
    assert groups.returncode == 0 and {path.stem for path in (Path(CONFIG_DIR) / "objective").glob("*.yaml")} <= set(listed)


@pytest.mark.slow
def test_train_writes_a_complete_run_directory(infomax_run):
    _, run_dir = infomax_run
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 40
    assert checkpoint["vaelab_config"]["beta_effective"] == 0.25

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "success"
    # Time to disentangle: MIG >= 0 at the first evaluation, step 20, of 64 images each.
    assert metrics["images_per_step"] == 64 and metrics["images_to"] == {"images_to/metrics/mig>=0": 20 * 64}
    final = metrics["final"]
    assert metrics["objective"]["beta_effective"] == 0.25  # a constant: recorded once, never a series
    assert not {"train/beta_effective", "train/kl_weight", "val/beta_effective"} & final.keys()
    assert {"train/loss", "train/reconstruction", "train/kl_conditional", "metrics/mig"} <= final.keys()
    assert {"val/loss", "val/reconstruction", "val/kl_conditional"} <= final.keys()
    history = read_history(run_dir)  # metrics_history.jsonl, merged by step
    steps = [entry["step"] for entry in history]
    assert steps == sorted(steps)
    # One evaluation, one step: validation after step 20's update at 20, beside its metrics.
    assert [entry["step"] for entry in history if "val/loss" in entry] == [20, 40]
    # MIG fires during training (every 20 steps), not only at the end.
    mig_steps = [entry["step"] for entry in history if "metrics/mig" in entry]
    assert mig_steps == [20, 40]
    assert all(0.0 <= entry["metrics/mig"] <= 1.0 for entry in history if "metrics/mig" in entry)
    # The information decomposition at the same evaluations, per latent dim too.
    info_steps = [entry["step"] for entry in history if "info/kl_marginal" in entry]
    assert info_steps == [20, 40]
    assert {f"info/kl_dim_{j}" for j in range(10)} | {"info/identity_gap", "info/tc_gap"} <= final.keys()
    assert abs(final["info/identity_gap"]) <= 5 * final["info/identity_gap_stderr"] + 1e-6
    # Pictures at the same evaluations: inputs above reconstructions; one traversal row per latent dim.
    from PIL import Image

    names = sorted(path.name for path in (run_dir / "images").glob("*.png"))
    assert names == [f"{kind}_step{step}.png" for kind in ("reconstructions", "traversals") for step in (20, 40)]
    reconstructions = Image.open(run_dir / "images" / "reconstructions_step40.png")
    traversals = Image.open(run_dir / "images" / "traversals_step40.png")
    assert reconstructions.size[1] < reconstructions.size[0] and traversals.size[1] > 4 * reconstructions.size[1]
    assert 0.0 <= final["info/mutual_info"] <= final["info/mutual_info_cap"] + 1e-6


@pytest.mark.slow
def test_train_logs_an_offline_wandb_run(infomax_run):
    result, run_dir = infomax_run
    assert result.stderr.count("logging offline") == 1
    (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
    run = read_offline_run(wandb_dir)
    assert run.exit_code == 0  # finished
    assert run.job_type == "train"
    assert run.tags == ["infomax", "dsprites", "study"]  # the user's tag adds to the defaults
    assert run.name == ",".join(sorted(["objective=infomax", "lambda=3", "logger.wandb.tags=[study]", *QUICK, TIME_TO_ANY_MIG]))
    assert run.config["beta_effective"] == 0.25
    assert run.config["lambda"] == 3 and run.config["objective_name"] == "infomax"
    assert run.config["model"]["latent_dim"] == 10
    logged = set().union(*(entry.keys() for entry in run.history))
    assert {"train/loss", "train/reconstruction", "train/kl_conditional"} <= logged
    assert {"val/loss", "metrics/mig", "info/kl_marginal", "info/total_correlation", "info/kl_dim_0"} <= logged
    assert "epoch" not in logged
    assert len(list((wandb_dir / "files" / "media" / "images").rglob("*.png"))) == 4
    # Which code made it: vaelab's version and commit (this checkout's), W&B's record of the cwd's repository.
    import vaelab

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert run.config["vaelab_version"] == vaelab.__version__
    assert run.config["vaelab_git_commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    assert "upload it with `wandb sync " + str(wandb_dir) + "`" in result.stderr  # the offline run's sync command
    # Each figure once, and no constant drawn as a chart (they are in the config).
    assert "metrics/mig_discrete_mig" not in logged and "metrics/mig" in logged
    assert not {"train/beta_effective", "train/kl_weight", "val/beta_effective"} & logged
    # The traversal animation as a video; MIG per factor as a table at each evaluation, also as CSV.
    def entries(key: str) -> list[dict]:
        return [entry for entry in run.history if f"{key}/_type" in entry]

    assert [e["images/traversal_animation/_type"] for e in entries("images/traversal_animation")] == ["videos"] * 2  # W&B's type for a list of wandb.Video
    tables = entries("tables/mig_per_factor")
    assert [(e["tables/mig_per_factor/_type"], e["trainer/global_step"]) for e in tables] == [("table-file", 20), ("table-file", 40)]
    assert tables[-1]["tables/mig_per_factor/ncols"] == 2 and tables[-1]["tables/mig_per_factor/nrows"] == 5  # dSprites' 5 factors
    assert sorted(p.name for p in (run_dir / "tables").iterdir()) == ["mig_per_factor_step20.csv", "mig_per_factor_step40.csv"]



@pytest.mark.slow
def test_compare_of_a_single_run_joins_that_runs_wandb_group(infomax_run, tmp_path, monkeypatch, capfd):
    """A run outside a sweep is grouped by its run directory, so `compare --wandb` over it lands
    beside it on the dashboard, as it does for a sweep."""
    from vaelab.loggers import sweep_group

    _, run_dir = infomax_run
    (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
    trained = read_offline_run(wandb_dir)
    assert trained.group == sweep_group(run_dir)
    result = call_vaelab("compare", str(run_dir), "--wandb", "--out", str(tmp_path / "out"), cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    (compare_dir,) = (tmp_path / "out" / "wandb").glob("offline-run-*")
    compared = read_offline_run(compare_dir)
    assert compared.job_type == "compare" and compared.group == trained.group

@pytest.mark.slow
def test_wandb_run_shows_each_evaluation_at_one_step(infomax_run):
    _, run_dir = infomax_run
    (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
    history = read_offline_run(wandb_dir).history

    def steps(key: str) -> list[int]:
        return [entry["trainer/global_step"] for entry in history if key in entry]

    for key in ("val/loss", "metrics/mig", "info/kl_marginal", "images/reconstructions/_type"):
        assert steps(key) == [20, 40], key


@pytest.mark.slow
def test_wandb_summary_has_the_best_validation_loss_and_the_final_scores_as_numbers(infomax_run):
    _, run_dir = infomax_run
    (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
    run = read_offline_run(wandb_dir)
    val_losses = [entry["val/loss"] for entry in run.history if "val/loss" in entry]
    assert run.summary["val/loss"] == {"min": min(val_losses), "last": val_losses[-1]}
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert run.summary["metrics/mig"] == final["metrics/mig"]
    assert run.summary["images_to/metrics/mig>=0"] == 20 * 64  # the time to disentangle, as in metrics.json
    assert all(isinstance(v, float) for k, v in run.summary.items() if k.startswith("metrics/"))  # sortable


def test_wandb_config_holds_each_setting_once_under_the_key_a_user_types(infomax_run):
    _, run_dir = infomax_run
    (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
    config = {key: value for key, value in read_offline_run(wandb_dir).config.items() if key != "_wandb"}
    assert not {"logger", "paths", "wandb"} & config.keys()
    assert "lam" not in config["objective"]  # the knob is lambda, set once at the top
    assert not {"beta", "gamma", "lambda_od", "c_max"} & config.keys()  # other objectives' (unset) knobs

    def leaves(node: dict, prefix: str = ""):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [(f"{prefix}{key}", value)]

    flat = dict(leaves(config))
    # A setting that follows another is recorded where it is set, once.
    assert flat["periodic_metrics.every_n_steps"] == 20 and "information.every_n_steps" not in flat
    assert not [key for key, value in flat.items() if isinstance(value, str) and str(run_dir) in value]


def test_final_checkpoint_is_the_runs_wandb_model_artifact(infomax_run):
    _, run_dir = infomax_run
    (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
    run = read_offline_run(wandb_dir)
    size = (run_dir / "checkpoints" / "last.ckpt").stat().st_size
    assert [artifact for artifact in run.artifacts if artifact["type"] == "model"] == [{
        "name": f"model-{run.run_id}", "type": "model", "aliases": {"latest", "step-40"},
        "files": {"last.ckpt": size}, "metadata": {"global_step": 40},
    }]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["beta=0"], "beta=0: expected a number > 0"),
        (["objective=infomax", "lambda=-1"], "lambda=-1: expected a number > -1"),
        (["objective=betavae", "lambda=3"], "lambda=3 is not used by objective=betavae"),
        (["objective=betavae", "+lambda=3"], "lambda=3 is not used by objective=betavae"),  # added, still refused
        (["beta=abc"], "beta='abc': expected a number > 0"),
        (["model.latent_dim=0"], "model.latent_dim=0: expected an integer >= 1"),
        (["model.channels_last=maybe"], "model.channels_last='maybe': expected true or false"),
        (["data.batch_size=0"], "data.batch_size=0: expected an integer >= 1"),
        (["trainer.max_steps=-5"], "trainer.max_steps=-5: expected an integer >= 1"),
        (["trainer.max_steps=abc"], "trainer.max_steps='abc': expected an integer >= 1"),
        (["checkpoint.every_n_steps=0"], "checkpoint.every_n_steps=0: expected an integer >= 1"),
        (["progress.every_s=0"], "progress.every_s=0: expected a number > 0"),
        (["optimizer.lr=-1"], "optimizer.lr=-1: expected a number > 0"),
        (["optimizer.lr=0"], "optimizer.lr=0: expected a number > 0"),
        (["optimizer.lr=fast"], "optimizer.lr='fast': expected a number > 0"),
        (["optimizer.eps=-1"], "optimizer (torch.optim.Adam): Invalid epsilon value: -1"),
        (["+optimizer.momentum=0.9"], "+optimizer.momentum=0.9: torch.optim.Adam takes no argument momentum"),
        (["+optimizer.weight_decay=-1"], "optimizer (torch.optim.Adam): Invalid weight_decay value: -1"),  # an argument it takes
        (["trainer.devices=0"], "trainer: `Trainer(devices=0)` value is not a valid input"),
        # Hydra's composition errors, several lines long from Hydra itself:
        (["model=foo"], "Could not find 'model/foo' (available: conv, mlp)"),
        (["model=cnov"], "Could not find 'model/cnov'; did you mean model=conv? (available: conv, mlp)"),
        (["foo=1"], "foo=1: no such key; `vaelab train --cfg job` lists the keys"),
        # a mistyped key: the closest one (a group, a key, a nested key), never Hydra's advice to add it with +
        (["objectiv=infomax"], "objectiv=infomax: no such key; did you mean objective=infomax?"),
        (["trainer.max_stpes=3"], "trainer.max_stpes=3: no such key; did you mean trainer.max_steps=3?"),
        (["objective=infomax", "lamda=3"], "lamda=3: no such key; did you mean lambda=3?"),
        # a key added with + that nothing would read
        (["+objectiv=infomax"], "+objectiv=infomax: nothing reads objectiv; did you mean objective=infomax?"),
        (["+ckpt_path=x.ckpt"], "+ckpt_path=x.ckpt: nothing reads ckpt_path"),
        (["+data.batchsize=3"], "+data.batchsize=3: nothing reads data.batchsize; did you mean data.batch_size=3?"),
        (["+trainer.max_stpes=3"], "+trainer.max_stpes=3: pytorch_lightning.Trainer takes no argument max_stpes; did you mean trainer.max_steps=3?"),
        (["resume=nothing.ckpt"], "resume=nothing.ckpt: no such file"),
        (["beta=[1"], "no viable alternative at input '[1'"),
        (["seed=${nothing}"], "seed: Interpolation key 'nothing' not found"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, monkeypatch, capfd, overrides, message):
    result = call_vaelab("train", "logger=none", "metrics=none", *overrides, cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("vaelab: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists(), "a refused command leaves no run directory behind"


@pytest.mark.parametrize("override", ["beta=0", "model=foo"])
def test_full_error_shows_the_traceback(tmp_path, monkeypatch, capfd, override):
    result = call_vaelab(
        "train", "logger=none", override, cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd, env={"HYDRA_FULL_ERROR": "1"}
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_eval_scores_a_checkpoint(infomax_run, tmp_path, monkeypatch, capfd):
    _, run_dir = infomax_run
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    # The suite and seed of the training run's final evaluation, on its final weights.
    result = call_vaelab(
        "eval", f"ckpt={checkpoint}", "metrics=mig", "metrics.suite.mig.num_train=1000",
        cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(result.stdout)  # stdout holds the JSON alone; the table goes to stderr
    trained = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert scores["metrics/mig"] == pytest.approx(trained["metrics/mig"], abs=1e-12)
    assert "│ mig " in result.stderr and "discrete_mig" not in result.stderr  # the table: each score once
    (eval_dir,) = (tmp_path / "outputs" / "eval").glob("*/*")
    assert json.loads((eval_dir / "metrics.json").read_text())["final"]["metrics/mig"] == scores["metrics/mig"]
    (wandb_dir,) = (eval_dir / "wandb").glob("offline-run-*")
    eval_run = read_offline_run(wandb_dir)
    assert eval_run.job_type == "eval"
    # Linked to what it scored: the training run's model artifact at that step.
    (train_wandb,) = (run_dir / "wandb").glob("offline-run-*")
    assert eval_run.config["checkpoint_artifact"] == f"vaelab/model-{read_offline_run(train_wandb).run_id}:step-40"
    # MIG per factor: a table in the eval run and a CSV in its directory, equal to the training
    # run's own at step 40 (same suite, seed and weights).
    assert [e["tables/mig_per_factor/_type"] for e in eval_run.history if "tables/mig_per_factor/_type" in e] == ["table-file"]
    assert (eval_dir / "tables" / "mig_per_factor_step40.csv").read_text() == (run_dir / "tables" / "mig_per_factor_step40.csv").read_text()
    # The training run's final pictures, redrawn from the checkpoint alone: the same pixels.
    for name in ("reconstructions_step40.png", "traversals_step40.png", "traversal_animation_step40.gif"):
        assert (eval_dir / "images" / name).read_bytes() == (run_dir / "images" / name).read_bytes(), name


def eval_arrivals(command: list[str], cwd: Path, pty: bool) -> list[tuple[float, str]]:
    """Run ``command`` with its output piped (or on a terminal, through a pty) and return each
    line of what it writes with the time it arrived, as someone watching it sees them."""
    import os
    import time

    cwd.mkdir(parents=True, exist_ok=True)
    if not pty:
        with subprocess.Popen(command, cwd=cwd, env=cli_env(cwd), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) as process:  # fmt: skip
            arrivals = [(time.monotonic(), line.rstrip("\n")) for line in process.stderr]
        assert process.returncode == 0, "\n".join(line for _, line in arrivals[-20:])
        return arrivals
    import pty as pty_module

    import fcntl
    import struct
    import termios

    controller, terminal = pty_module.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a terminal of 120 columns
    with subprocess.Popen(command, cwd=cwd, env=cli_env(cwd), stdin=terminal, stdout=subprocess.DEVNULL,
                          stderr=terminal) as process:  # fmt: skip
        os.close(terminal)
        arrivals, pending = [], ""
        while True:
            try:
                chunk = os.read(controller, 4096).decode(errors="replace")
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            pending += chunk.replace("\r", "\n")  # a bar redraws its line with carriage returns
            *lines, pending = pending.split("\n")
            arrivals += [(time.monotonic(), line) for line in lines if line.strip()]
    os.close(controller)
    assert process.returncode == 0, "\n".join(line for _, line in arrivals[-20:])
    return arrivals


@pytest.mark.slow
def test_eval_reports_progress_through_a_suite_off_and_on_a_terminal(infomax_run, tmp_path):
    """Piped, a line at least every progress.every_s while the suite runs; on a terminal, a bar.

    The suite is the fast preset with FactorVAE on 300 training votes (a few seconds here) at a
    cadence of 0.5 s instead of 30 s: the same property, scaled to fit a test."""
    _, run_dir = infomax_run
    command = [sys.executable, "-m", "vaelab", "eval", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}",
               "metrics=fast", "metrics.suite.factor_vae.num_train=300", "logger=csv", "images.num_images=0",
               "progress.every_s=0.5"]  # fmt: skip
    arrivals = eval_arrivals(command, tmp_path / "piped", pty=False)
    beats = [(at, line) for at, line in arrivals if "] - metrics: " in line]
    assert len(beats) >= 3 and any("factor_vae running for" in line for _, line in beats), arrivals
    assert "images encoded" in beats[-1][1]
    start = beats[0][0]
    watched = [at for at, line in arrivals if at >= start]
    gaps = [later - earlier for earlier, later in zip(watched, watched[1:])]
    assert max(gaps) < 2.5, (max(gaps), arrivals)  # 0.5 s cadence; slack for a loaded machine
    closing = [line for _, line in arrivals if "metrics done in" in line]
    assert len(closing) == 1 and all(name in closing[0] for name in ("mig", "factor_vae", "modularity_explicitness"))

    on_terminal = eval_arrivals([*command[:5], "metrics=mig", *command[7:]], tmp_path / "terminal", pty=True)
    bar = [line for _, line in on_terminal if line.startswith("metrics:") and "metric" in line]
    assert bar and any("1/1" in line for line in bar), on_terminal  # tqdm's frames, the last one complete
    assert not any("] - metrics: " in line for _, line in on_terminal)  # the bar, not the lines


def test_eval_rejects_a_missing_or_foreign_checkpoint(tmp_path, monkeypatch, capfd):
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    both = call_vaelab("eval", f"ckpt={tmp_path / 'nope.ckpt'}", "artifact=model-abc123:latest", **cli)
    assert both.returncode == 2 and "vaelab: error: give exactly one of ckpt=PATH" in both.stderr
    offline = call_vaelab("eval", "artifact=model-abc123:latest", **cli)
    assert offline.returncode == 2 and "Traceback" not in offline.stderr
    assert offline.stderr.strip().splitlines()[-1] == (
        "vaelab: error: artifact=model-abc123:latest: W&B is offline here, and artifacts come from the W&B "
        "server; log in (wandb login) or give ckpt=PATH"
    )
    missing = call_vaelab("eval", f"ckpt={tmp_path / 'nope.ckpt'}", "logger=none", **cli)
    assert missing.returncode == 2 and f"ckpt={tmp_path / 'nope.ckpt'}: no such file" in missing.stderr
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    junk = call_vaelab("eval", f"ckpt={tmp_path / 'junk.ckpt'}", "logger=none", **cli)
    assert junk.returncode == 2 and "not a readable checkpoint" in junk.stderr
    assert "Traceback" not in missing.stderr + junk.stderr


def test_eval_scores_any_representation_from_a_codes_file(tmp_path, monkeypatch, capfd):
    """Users of other frameworks: factors on a full grid + their codes -> the same metrics."""
    import numpy as np

    sizes = (3, 4, 5)
    factors = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(-1, 3)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(factors))  # any row order
    ideal = factors / (np.array(sizes) - 1) + 0.01 * rng.standard_normal(factors.shape)
    np.savez(tmp_path / "codes.npz", factors=factors[order], codes=ideal[order], factor_names=np.array(["a", "b", "c"]))
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    result = call_vaelab("eval", f"codes={tmp_path / 'codes.npz'}", "metrics=mig", "logger=none", **cli)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(result.stdout)
    assert scores["metrics/mig"] > 0.9  # an ideal code
    # Any logger choice works for eval (the W&B-only group is not passed to the CSV logger).
    with_csv = call_vaelab("eval", f"codes={tmp_path / 'codes.npz'}", "metrics=mig", "logger=csv", **cli)
    assert with_csv.returncode == 0, with_csv.stderr[-2000:]
    assert json.loads(with_csv.stdout)["metrics/mig"] == scores["metrics/mig"]

    np.savez(tmp_path / "broken.npz", factors=factors[:-1], codes=ideal[:-1])
    broken = call_vaelab("eval", f"codes={tmp_path / 'broken.npz'}", "logger=none", **cli)
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    (error,) = [line for line in broken.stderr.splitlines() if line.startswith("vaelab: error:")]
    assert "broken.npz" in error


@pytest.mark.parametrize(
    "command",
    [
        ["train", "objective=infomax", "lambda=abc"],
        ["train", "objectiv=infomax"],
        ["train", "+data.batchsize=3"],
        ["eval", "ckpt=nothing.ckpt"],
    ],
)
def test_a_refused_command_answers_before_torch_is_imported(tmp_path, command):
    """A mistyped command is answered from the config alone (vaelab/validation.py): torch and
    Lightning, which take seconds to import, are never loaded, and no run directory is made.
    (Its latency is a benchmark: benchmarks/error_latency.py.)"""
    probe = (
        "import sys\nfrom vaelab.cli import main\n"
        f"try:\n    main({command!r})\nexcept SystemExit as stop:\n    code = stop.code\n"
        "print(code, sorted(m for m in ('torch', 'pytorch_lightning', 'sklearn') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.stdout.split("\n")[0] == "2 []", result.stdout + result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("vaelab: error:")]) == 1
    assert not (tmp_path / "outputs").exists()


def test_a_config_group_appended_with_plus_is_not_an_unread_key(tmp_path, monkeypatch, capfd):
    """`+baseline=…` appends a config group (README: experiment=baselines): the check of keys
    added with `+` that nothing reads leaves groups alone."""
    result = call_vaelab(
        "train", "experiment=baselines", "+baseline=betavae", "level=0", "model=mlp", "model.hidden=[32]",
        "trainer.max_steps=2", "trainer.val_check_interval=2", "data.val_size=64", "logger=none", "metrics=none",
        "periodic_metrics.every_n_steps=null", "information.num_samples=0", "images.num_images=0",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["objective"]["knobs"] == {"beta": 2.0}
