"""The experiment presets of docs/results.md compose and run; their scores are measured by
benchmarks/time_to_disentangle.py and the study itself, not here."""

from __future__ import annotations

import csv
import json
import os

import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO, call_vaelab, compose_train
from vaelab import objectives
from vaelab.registry import OBJECTIVES, SHIPPED

# A few steps of a preset: its settings, with the evaluations cut down to seconds.
FEW_STEPS = (
    "trainer.max_steps=4", "trainer.val_check_interval=4", "trainer.log_every_n_steps=2", "data.val_size=64",
    "information.num_samples=500",
    "images.num_images=2", "metrics=mig", "metrics.suite.mig.num_train=500", "checkpoint.every_n_steps=2",
)  # fmt: skip


def test_dsprites_fast_trains_the_recipe_with_its_warmup_and_precision(tmp_path, monkeypatch, capfd):
    cfg = compose_train(["experiment=dsprites_fast"], tmp_path)
    assert cfg.model._target_ == "vaelab.models.ConvVAE" and cfg.metrics.suite.keys() >= {"dci", "beta_vae", "mig"}
    objective = objectives.build(cfg, dataset_size=737280)
    assert objective.kl_warmup_steps > 0

    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    result = call_vaelab("train", "experiment=dsprites_fast", *FEW_STEPS, "logger=none", "hydra.run.dir=run", **cli)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "success" and "metrics/mig" in metrics["final"]
    assert metrics["objective"]["kl_weight"] == pytest.approx(objective.kl_weight)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_dsprites_weak_trains_pairs_within_the_budget_and_weak_study_matches_kl_weights(tmp_path, monkeypatch, capfd):
    """experiment=dsprites_weak: Ada-GVAE on pairs with a KL warm-up, at most 800,000 training
    images (a pair counts as two); experiment=weak_study puts adainfomax beside it at the same
    weight on its KL term, over five seeds."""
    cfg = compose_train(["experiment=dsprites_weak"], tmp_path)
    objective = objectives.build(cfg, dataset_size=737280)
    assert objective.name == "adagvae" and objective.trains_on_pairs and objective.kl_warmup_steps > 0
    assert cfg.trainer.max_steps * cfg.data.batch_size * 2 <= 800_000
    result = call_vaelab("train", "experiment=weak_study", "--cfg", "hydra", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 0, result.stderr
    params = OmegaConf.create(result.stdout).hydra.sweeper.params
    assert set(params.objective.split(",")) == {"adagvae", "adainfomax"} and len(str(params.seed).split(",")) == 5
    for name in params.objective.split(","):
        built = objectives.build(compose_train(["experiment=weak_study", f"objective={name}"], tmp_path), dataset_size=737280)
        assert built.trains_on_pairs and built.kl_weight == pytest.approx(objective.kl_weight)


@pytest.mark.slow
def test_infomax_study_sweeps_every_objective_at_matched_kl_weights(tmp_path, monkeypatch, capfd):
    """Every job of the study builds (no weight that one objective rejects), and one job per
    objective runs through the CLI to a row of compare."""
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    result = call_vaelab("train", "experiment=infomax_study", "--cfg", "hydra", **cli)
    assert result.returncode == 0, result.stderr
    params = OmegaConf.create(result.stdout).hydra.sweeper.params
    names = params.objective.split(",")
    assert set(names) == {"betavae", "infomax", "infomax_native"}
    weights = [float(w) for w in str(params.kl_weight).split(",")]
    assert len(weights) >= 3 and len(str(params.seed).split(",")) >= 3
    for name in names:
        for weight in weights:
            cfg = compose_train(["experiment=infomax_study", f"objective={name}", f"kl_weight={weight}"], tmp_path)
            assert objectives.build(cfg, dataset_size=737280).kl_weight == pytest.approx(weight)

    result = call_vaelab(
        "train", "-m", "experiment=infomax_study", f"kl_weight={weights[0]}", "seed=0", *FEW_STEPS, "logger=none",
        "hydra.sweep.dir=study", **cli,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    result = call_vaelab("compare", "study", **cli)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "study" / "compare_summary.csv")))
    assert sorted(row["objective"] for row in rows) == ["betavae", "infomax", "infomax-native"]
    assert {float(row["kl_weight"]) for row in rows} == {weights[0]}


def test_seed_question_reruns_infomax_studys_matched_cells_over_45_seeds(tmp_path, monkeypatch, capfd):
    """experiment=seed_question is experiment=infomax_study's training for its two cells that
    reconstruct alike (betavae at kl_weight 6, infomax_native at 20), MIG at the end, seeds 0-44."""
    result = call_vaelab("train", "experiment=seed_question", "--cfg", "hydra", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 0, result.stderr
    params = OmegaConf.create(result.stdout).hydra.sweeper.params
    assert dict(params) == {"seed": "range(0,45)"}  # the cell is chosen on the command line, one sweep each
    for name, weight in (("betavae", 6), ("infomax_native", 20)):
        cell = [f"objective={name}", f"kl_weight={weight}"]
        question, study = (compose_train([f"experiment={preset}", *cell], tmp_path) for preset in ("seed_question", "infomax_study"))
        assert objectives.build(question, dataset_size=737280).kl_weight == pytest.approx(weight)
        for key in ("objective", "model", "data", "optimizer", "trainer", "kl_weight"):
            assert question[key] == study[key], key
        assert list(question.metrics.suite) == ["mig"]


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_never_trains_in_emulated_bfloat16(monkeypatch, native, expected):
    """trainer.precision=auto (the fast recipe's) picks bf16 only where the CPU computes it natively:
    on AVX2-only CPUs bfloat16 is emulated, hundreds of times slower than float32."""
    import torch

    from vaelab import device

    monkeypatch.setattr(device, "native_bf16_cpu", lambda: native)
    assert device.resolve_training_precision("auto", torch.device("cpu")) == expected
    assert device.resolve_training_precision("32-true", torch.device("cpu")) == "32-true"  # an explicit choice stays



def test_benchmarks_name_the_machine_and_whether_its_bfloat16_is_native():
    """Every benchmark figure depends on the CPU: `make bench` names its model and the vector
    extensions that pick the kernels, consistently with the bf16 check that precision=auto uses."""
    from benchmarks.machine import VECTOR_EXTENSIONS, machine_description

    machine = machine_description()
    assert machine["cpu_model"] and machine["cores"] >= 1
    flags = set(open("/proc/cpuinfo").read().split()) if os.path.exists("/proc/cpuinfo") else set()
    assert set(machine["vector_extensions"]) == {ext for ext in VECTOR_EXTENSIONS if ext in flags}
    if machine["native_bf16"] and flags:
        assert {"avx512_bf16", "amx_bf16"} & set(machine["vector_extensions"])


@pytest.mark.parametrize("native", [True, False])
def test_benchmarks_never_time_an_emulated_bfloat16_path_unless_asked(monkeypatch, native):
    """On a CPU without native bfloat16 (AVX2 only) a bf16 encoding of the suite's images would
    take hours: `make bench` times bf16 only where vaelab itself would use it."""
    import importlib.util

    from vaelab import device

    spec = importlib.util.spec_from_file_location("metrics_speed", REPO / "benchmarks" / "metrics_speed.py")
    metrics_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(metrics_speed)
    monkeypatch.setattr(device, "native_bf16_cpu", lambda: native)
    assert metrics_speed.default_precisions() == (["fp32", "bf16"] if native else ["fp32"])

def test_baselines_sweep_every_shipped_objective_over_three_strengths_of_its_own_knob(tmp_path, monkeypatch, capfd):
    """experiment=baselines: every job composes and builds (no knob its objective refuses), each
    objective at three values of its first knob, in order, and every unsupervised objective
    vaelab ships (but the derived InfoMax, which is β-VAE by another name) is in it; the
    weakly-supervised ones train on pairs, another regime (experiment=dsprites_weak)."""
    result = call_vaelab("train", "experiment=baselines", "--cfg", "hydra", cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert result.returncode == 0, result.stderr
    params = OmegaConf.create(result.stdout).hydra.sweeper.params
    baselines, levels = params["+baseline"].split(","), [int(level) for level in str(params.level).split(",")]
    assert len(str(params.seed).split(",")) >= 2
    trained = {}
    for baseline in baselines:
        values = []
        for level in levels:
            cfg = compose_train(["experiment=baselines", f"+baseline={baseline}", f"level={level}"], tmp_path)
            objective = objectives.build(cfg, dataset_size=737280)
            values.append(next(iter(objective.knob_values.values())))
            trained[objective.label] = objective.name
        # Three distinct strengths, in order (InfoMax's lambda falls as its KL weight rises).
        assert len(set(values)) == len(levels) and values in (sorted(values), sorted(values, reverse=True)), baseline
    shipped = {name for name in SHIPPED["objectives"] if not OBJECTIVES.get(name).trains_on_pairs}
    assert set(trained.values()) == shipped
    assert {"dipvae-i", "dipvae-ii", "infomax-native"} <= set(trained)


def _benchmark_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_simulated_bf16_rounds_as_autocast_does_and_leaves_float32_regions_alone():
    """benchmarks/bf16_simulation.py, the bf16 study's stand-in on CPUs without native bfloat16:
    a linear layer's output and gradients are autocast's to the bit; a convolution's output
    carries bf16's round-off (up to the order of float32 sums); autocast-disabled code is float32."""
    import torch

    simulation = _benchmark_module("bf16_simulation")
    torch.manual_seed(0)
    plugin = simulation.SimulatedBF16Precision()

    def run(layer, x, context):
        x = x.clone().requires_grad_(True)
        layer.zero_grad()
        with context:
            y = layer(x)
        y.float().backward(torch.linspace(-1, 1, y.numel()).view_as(y))
        return y.detach().float(), x.grad, layer.weight.grad

    linear, x = torch.nn.Linear(64, 16), torch.randn(8, 64)
    for got, want in zip(run(linear, x, plugin.forward_context()), run(linear, x, torch.autocast("cpu", dtype=torch.bfloat16))):
        assert torch.equal(got, want)

    conv, image = torch.nn.Conv2d(8, 8, 4, 2, 1), torch.randn(2, 8, 16, 16)
    simulated = run(conv, image, plugin.forward_context())[0]
    autocast = run(conv, image, torch.autocast("cpu", dtype=torch.bfloat16))[0]
    float32 = run(conv, image, torch.autocast("cpu", enabled=False))[0]
    assert torch.equal(simulated, simulated.bfloat16().float())  # the output is a bf16 value
    assert (simulated - autocast).norm() < 0.05 * (autocast - float32).norm()

    with plugin.forward_context(), torch.autocast("cpu", enabled=False):
        assert torch.equal(conv(image), torch.nn.functional.conv2d(image, conv.weight, conv.bias, 2, 1))


def test_bf16_parity_study_refuses_an_emulated_bfloat16_unless_asked(monkeypatch):
    from vaelab import device

    monkeypatch.setattr(device, "native_bf16_cpu", lambda: False)
    with pytest.raises(SystemExit) as stop:
        _benchmark_module("bf16_parity").main(["--seeds", "0"])
    assert stop.value.code == 2

