"""`vaelab compare` over many runs: wall time and peak memory.

    python benchmarks/compare_scale.py [--runs 500] [--history 2000]

Writes ``--runs`` run directories as `vaelab train` leaves them (a full
``.hydra/config.yaml``, a ``metrics.json`` and a ``metrics_history.jsonl`` with ``--history``
logged steps of ten figures, about 0.9 MB each at 2000) into a temporary directory, then
times ``python -m vaelab compare`` on them in a fresh process, with its peak RSS (Linux).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HISTORY_KEYS = ("train/loss", "train/reconstruction", "train/kl_conditional", "val/loss",
                "val/reconstruction", "info/kl_marginal", "info/mutual_info", "metrics/mig", "metrics/seconds")  # fmt: skip


def write_runs(root: Path, runs: int, history: int) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vaelab.cli import CONFIG_DIR
    from vaelab.runfiles import HISTORY_FILE, write_json_atomic
    from vaelab.objectives.betavae import BetaVAE
    from vaelab.objectives.infomax import InfoMax

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = OmegaConf.to_yaml(compose("train", overrides=["paths.output_dir=."]))
    rng = random.Random(0)
    for index in range(runs):
        knob = (0.5, 1.0, 2.0, 4.0, 8.0)[index // 2 % 5]
        objective = BetaVAE(beta=knob) if index % 2 == 0 else InfoMax(lam=knob)
        run = root / f"{index}_run"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(config.replace("seed: 0", f"seed: {index // 10}", 1))
        steps = [{"step": 50 * s, **{key: rng.random() for key in HISTORY_KEYS}} for s in range(history)]
        final = {key: value for key, value in steps[-1].items() if key != "step"} if steps else {}
        (run / HISTORY_FILE).write_text("".join(json.dumps(step) + "\n" for step in steps))
        write_json_atomic(run / "metrics.json", {"status": "success", "objective": objective.describe(), "final": final})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--history", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sweep = Path(tmp) / "sweep"
        write_runs(sweep, args.runs, args.history)
        size = sum(path.stat().st_size for path in sweep.rglob("*") if path.is_file())
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        # The child reports its own peak RSS (VmHWM: its address space's, not the parent's
        # at fork, which getrusage would count).
        child = (
            "import atexit, runpy, sys\n"
            "atexit.register(lambda: print('peak', open('/proc/self/status').read().split('VmHWM:')[1].split()[0],"
            " file=sys.stderr))\n"
            f"sys.argv = ['vaelab', 'compare', {str(sweep)!r}]\n"
            "runpy.run_module('vaelab', run_name='__main__')\n"
        )
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", child], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"vaelab compare failed: {result.stderr[-2000:]}")
        peak_kib = int(result.stderr.split("peak ")[-1].split()[0])
        print(f"{args.runs} runs ({size / 2**20:.0f} MiB): {seconds:.2f} s, peak RSS {peak_kib / 1024:.0f} MiB")

if __name__ == "__main__":
    main()
