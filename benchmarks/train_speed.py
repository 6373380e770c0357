"""Training throughput through the real loop (Lightning, data stream, logging), and startup time.

    PYTHONPATH=. python benchmarks/train_speed.py [--steps 300] [--batch-sizes 64 256] [--repeats 3]

For each batch size: runs `vaelab.train.train` (standard conv architecture, dSprites,
Bernoulli β-VAE, logger=none, metrics and information off) and times the steps after a
warm-up of 20 steps; reports the median images/s over repeats. Also times the data
stream alone (cost of producing one batch as a share of a step) and, once, the wall
time from starting `vaelab train` to its first training step.
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
        if self.started is not None:
            self.steps += 1
            self.elapsed = time.perf_counter() - self.started


def train_images_per_second(batch_size: int, steps: int) -> float:
    import vaelab.train
    from tests.conftest import compose_train

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_train(
            [
                f"data.batch_size={batch_size}", f"trainer.max_steps={steps + WARMUP_STEPS}",
                "logger=none", "metrics=none", "information.num_samples=0", "trainer.val_check_interval=100000",
                f"checkpoint.every_n_steps={10**9}",
            ],
            Path(run_dir),
        )  # fmt: skip
        vaelab.train.train(cfg, extra_callbacks=[timer])
    return timer.steps * batch_size / timer.elapsed


def data_share(batch_size: int, step_seconds: float, repeats: int = 50) -> float:
    from vaelab.data.dsprites import ProceduralDSprites
    from vaelab.data.stream import TrainingStream

    stream = iter(TrainingStream(ProceduralDSprites(), batch_size, seed=0))
    next(stream)
    start = time.perf_counter()
    for _ in range(repeats):
        next(stream)
    return (time.perf_counter() - start) / repeats / step_seconds


def startup_seconds() -> float:
    """Wall time from `vaelab train` to the first training step (the log line that announces it)."""
    with tempfile.TemporaryDirectory() as cwd:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "vaelab", "train", "logger=none", "metrics=none", "information.num_samples=0",
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
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    figures = []
    for batch_size in args.batch_sizes:
        rates = [train_images_per_second(batch_size, args.steps) for _ in range(args.repeats)]
        rate = statistics.median(rates)
        figures.append({"name": f"train_images_per_s_batch{batch_size}", "value": round(rate, 1), "unit": "images/s"})
        share = data_share(batch_size, batch_size / rate)
        figures.append({"name": f"data_share_of_step_batch{batch_size}", "value": round(share, 4), "unit": "ratio"})
    figures.append({"name": "startup_to_first_step", "value": round(startup_seconds(), 2), "unit": "s"})
    for figure in figures:
        print(f"{figure['name']:<36} {figure['value']:>10} {figure['unit']}")
    for figure in figures:
        print(json.dumps(figure))
    return figures


if __name__ == "__main__":
    main()
