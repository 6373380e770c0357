"""Training throughput through the real loop (Lightning, data stream, logging), and what bounds it.

    PYTHONPATH=. python benchmarks/train_speed.py [--steps 300] [--batch-sizes 64 256] [--repeats 3]
        [--precisions 32-true bf16-mixed] [--objectives betavae infomax_native] [--only-throughput] [--peak-memory]
        [--disent-python VENV/bin/python]

- the machine's fp32 matrix-multiply rate, measured here (the ceiling for the model);
- FLOPs per image of the standard conv architecture, forward + backward (torch's counter);
- for each batch size: `vaelab.train.train` (standard conv architecture, dSprites,
  Bernoulli β-VAE, logger=none, metrics and information off), steps timed after a
  warm-up of 20; median images/s over repeats and the median fraction of the matmul
  rate, each repeat against the mean of the rates measured just before and just after
  it (a shared or virtual machine's speed drifts by a third within a minute);
- with ``--disent-python``: disent's β-VAE on the same architecture through its own
  Lightning loop (benchmarks/framework_speed.py, run by that Python), taking turns with
  vaelab's repeats; the median of vaelab's rate over disent's, pair by pair;
- the step split into data / forward / backward / optimiser, timed in a plain loop of the
  same model, and each phase's share of that loop's step (the real loop's own overhead is
  not derived from it: the machine's speed drifts between the two measurements by more);
- the wall time from `vaelab train` to its first step, and with ``--peak-memory`` the peak
  memory (max RSS) of a default run cut to 1,000 steps (metrics and information estimates
  included: minutes, most of it the final metric suite).
Prints one human line and one JSON line per figure: {"name", "value", "unit"}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl

ROOT = Path(__file__).resolve().parent.parent
WARMUP_STEPS = 20


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.started: float | None = None
        self.steps = 0
        self.first_step_at: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.perf_counter()
        if trainer.global_step == WARMUP_STEPS:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 1:  # the first step: where torch.compile compiles
            self.first_step_seconds = time.perf_counter() - self.first_step_at
        if self.started is not None:
            self.steps += 1
            self.elapsed = time.perf_counter() - self.started


def train_images_per_second(batch_size: int, steps: int, precision: str = "32-true", objective: str = "betavae") -> float:
    return timed_run(batch_size, steps, precision, objective).images_per_second


def timed_run(batch_size: int, steps: int, precision: str = "32-true", objective: str = "betavae", compile: bool = False,
              overrides: tuple[str, ...] = ()) -> StepTimer:  # fmt: skip
    """A run of `vaelab.train.train` timed by a StepTimer (``images_per_second``, ``first_step_seconds``)."""
    import vaelab.train
    from tests.conftest import compose_train

    timer = StepTimer()
    knob = ["lambda=0.25"] if objective == "infomax_native" else []  # the native estimator needs lambda > 0
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_train(
            [
                f"objective={objective}", *knob, f"trainer.precision={precision}",
                f"data.batch_size={batch_size}", f"trainer.max_steps={steps + WARMUP_STEPS}",
                "logger=none", "metrics=none", "metrics@periodic_metrics=none", "information.num_samples=0", "trainer.val_check_interval=100000",
                f"checkpoint.every_n_steps={10**9}", f"trainer.compile={str(compile).lower()}", *overrides,
            ],
            Path(run_dir),
        )  # fmt: skip
        vaelab.train.train(cfg, extra_callbacks=[timer])
    timer.images_per_second = timer.steps * batch_size / timer.elapsed
    return timer


def disent_images_per_second(python: str, batch_size: int, steps: int, accelerator: str = "cpu") -> float:
    """disent's rate in a process of its own (its Python environment has disent and `lightning`)."""
    result = subprocess.run(
        [python, str(ROOT / "benchmarks" / "framework_speed.py"), "--steps", str(steps), "--batch-sizes", str(batch_size),
         "--accelerator", accelerator],  # fmt: skip
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for line in result.stdout.splitlines():
        if line.startswith("{") and (figure := json.loads(line))["value"] is not None:
            return figure["value"]
    raise SystemExit(f"disent did not run under {python}: {result.stdout.strip().splitlines()[0]}")


def flops_per_image(batch_size: int = 64) -> float:
    """Forward + backward FLOPs of the standard architecture with its loss, per image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vaelab.models import ConvVAE
    from vaelab.objectives.betavae import BetaVAE

    model, objective = ConvVAE((1, 64, 64), True), BetaVAE()
    images = (torch.rand(batch_size, 1, 64, 64) > 0.9).float()
    with FlopCounterMode(display=False) as counter:
        objective(model(images))["loss"].backward()
    return counter.get_total_flops() / batch_size


def step_breakdown(batch_size: int, steps: int = 30) -> dict[str, float]:
    """Seconds per step of each phase, in a plain loop over the same model, data and optimiser."""
    import torch

    from vaelab.data.dsprites import ProceduralDSprites
    from vaelab.data.stream import TrainingStream
    from vaelab.models import ConvVAE
    from vaelab.objectives.betavae import BetaVAE
    from vaelab.system import tune_glibc_malloc

    tune_glibc_malloc()
    model, objective = ConvVAE((1, 64, 64), True), BetaVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, fused=True)  # as conf/train.yaml
    stream = iter(TrainingStream(ProceduralDSprites(), batch_size, seed=0))
    phases = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    for step in range(steps + 5):
        t0 = time.perf_counter()
        batch = next(stream)
        t1 = time.perf_counter()
        loss = objective(model(batch["images"]))["loss"]
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        t4 = time.perf_counter()
        if step >= 5:  # warm-up
            for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                phases[name] += seconds / steps
    return phases


def peak_rss_of_default_run(steps: int = 1000) -> float:
    """Max RSS (MB) of `vaelab train` with its defaults (W&B offline), cut to ``steps``."""
    import resource

    with tempfile.TemporaryDirectory() as cwd:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "WANDB_DIR": cwd}
        subprocess.run(
            [sys.executable, "-m", "vaelab", "train", f"trainer.max_steps={steps}"],
            cwd=cwd, env=env, check=True, capture_output=True,
        )  # fmt: skip
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def startup_seconds() -> float:
    """Wall time from `vaelab train` to the first training step (the log line that announces it)."""
    with tempfile.TemporaryDirectory() as cwd:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "vaelab", "train", "logger=none", "metrics=none", "metrics@periodic_metrics=none", "information.num_samples=0",
             "trainer.max_steps=1"],
            cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for line in process.stderr:
            if "training " in line and "steps ->" in line:
                elapsed = time.perf_counter() - start
                break
        else:
            raise RuntimeError("vaelab train did not start")
        process.wait()
    return elapsed


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps at batch 64; other batch sizes time as many images (20 steps at least)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=["32-true"], help="trainer.precision values to time")
    parser.add_argument("--objectives", nargs="+", default=["betavae"], help="e.g. betavae infomax_native")
    parser.add_argument("--only-throughput", action="store_true", help="skip the step split and startup")
    parser.add_argument("--peak-memory", action="store_true", help="also the peak RSS of a default run cut to 1,000 steps (minutes)")
    parser.add_argument("--disent-python", help="a Python with disent installed (benchmarks/framework_speed.py): time it beside vaelab")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from benchmarks.machine import matmul_gflops, print_figures

    figures = []

    def add(name: str, value: float, unit: str) -> None:
        figures.append({"name": name, "value": round(value, 4), "unit": unit})

    peak = matmul_gflops()
    flops = flops_per_image()
    add("matmul_fp32_gflops", peak, "GFLOP/s")
    add("model_flops_per_image_fwd_bwd", flops / 1e6, "MFLOP")
    add("flop_bound_images_per_s", peak * 1e9 / flops, "images/s")
    for batch_size in args.batch_sizes:
        for precision in args.precisions:
            for objective in args.objectives:
                variant = "".join(f"_{v}" for v, default in ((objective, "betavae"), (precision, "32-true")) if v != default)
                against_disent = args.disent_python and not variant
                steps = max(20, args.steps * 64 // batch_size)
                rates, fractions, speedups, peaks, disent_rates = [], [], [], [], []
                for _ in range(args.repeats):
                    if against_disent:
                        disent_rates.append(disent_images_per_second(args.disent_python, batch_size, steps))
                    before = matmul_gflops(repeats=10)
                    rates.append(train_images_per_second(batch_size, steps, precision, objective))
                    peaks.append((before + matmul_gflops(repeats=10)) / 2)
                    fractions.append(rates[-1] * flops / (peaks[-1] * 1e9))
                    if against_disent:
                        speedups.append(rates[-1] / disent_rates[-1])
                add(f"train_images_per_s_batch{batch_size}{variant}", statistics.median(rates), "images/s")
                add(f"matmul_fp32_gflops_beside_batch{batch_size}{variant}", statistics.median(peaks), "GFLOP/s")
                add(f"fraction_of_matmul_peak_batch{batch_size}{variant}", statistics.median(fractions), "ratio")
                if against_disent:
                    add(f"disent_train_images_per_s_batch{batch_size}", statistics.median(disent_rates), "images/s")
                    add(f"speedup_over_disent_batch{batch_size}", statistics.median(speedups), "ratio")
        if args.only_throughput:
            continue
        phases = step_breakdown(batch_size)
        for name, seconds in phases.items():
            add(f"step_{name}_ms_batch{batch_size}", seconds * 1e3, "ms")
        for name, seconds in phases.items():
            add(f"step_{name}_share_batch{batch_size}", seconds / sum(phases.values()), "ratio")
    if not args.only_throughput:
        add("startup_to_first_step", startup_seconds(), "s")
    if args.peak_memory:
        add("peak_rss_default_run_1000_steps", peak_rss_of_default_run(), "MB")
    print_figures(figures)
    return figures


if __name__ == "__main__":
    main()
