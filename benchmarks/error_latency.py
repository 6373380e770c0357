"""How long a mistyped command takes to answer, against the time to import torch alone.

    python benchmarks/error_latency.py [--repeats 7]

Each command is run as a user runs it (a fresh `python -m vaelab` process). The first ones are
refused from their config alone (vaelab/validation.py): the target is a median of at most
1.5 s; the peer is a fresh interpreter importing torch, which such a refusal never waits for.
Then, without a target: a command refused by the pass's second stage (the parts, after torch
loads), and a 2-step run that passes, for what the stage adds to every run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "bad_knob": ["train", "objective=infomax", "lambda=abc"],
    "mistyped_key": ["train", "objectiv=infomax"],
    "unread_added_key": ["train", "+data.batchsize=3"],
    "missing_checkpoint": ["eval", "ckpt=nothing.ckpt"],
}
TARGET_S = 1.5
TINY_RUN = [
    "model=mlp", "model.hidden=[32]", "trainer.max_steps=2", "trainer.val_check_interval=2", "checkpoint.every_n_steps=2",
    "data.batch_size=16", "data.val_size=64", "metrics=none", "metrics@periodic_metrics=none",
    "periodic_metrics.every_n_steps=null", "information.num_samples=0", "images.num_images=0", "logger=none", "num_threads=1",
]  # fmt: skip
UNTARGETED = {
    "batch_beyond_memory": ["train", "data.batch_size=100000000", "logger=none"],
    "two_step_run": ["train", *TINY_RUN],
}


def median_seconds(argv: list[str], repeats: int, cwd: str) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, cwd=cwd, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cwd:
        peer = median_seconds([sys.executable, "-c", "import torch"], args.repeats, cwd)
        print(f"{'command':<22}{'median s':>10}{'/ import torch':>16}{'/ target 1.5 s':>16}")
        print(f"{'(import torch alone)':<22}{peer:>10.2f}{1.0:>16.2f}{peer / TARGET_S:>16.2f}")
        figures = []
        for name, command in (COMMANDS | UNTARGETED).items():
            seconds = median_seconds([sys.executable, "-m", "vaelab", *command], args.repeats, cwd)
            against_target = f"{seconds / TARGET_S:>16.2f}" if name in COMMANDS else f"{'-':>16}"
            print(f"{name:<22}{seconds:>10.2f}{seconds / peer:>16.2f}{against_target}   vaelab {' '.join(command)}")
            figures.append({"name": f"error_latency/{name}", "value": round(seconds, 3), "unit": "s", "import_torch_s": round(peer, 3)})
    for figure in figures:
        print(json.dumps(figure))


if __name__ == "__main__":
    main()
