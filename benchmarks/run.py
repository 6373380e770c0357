"""`make bench`: every benchmark in turn; a table per benchmark, then all figures as JSON lines.

    python benchmarks/run.py [--quick] [--peak-memory] [--disent-python VENV/bin/python]

The figures (name, value, unit) can be compared across commits on the same machine; the
first JSON line names the machine (CPU model, cores, vector extensions, native bfloat16),
since every figure depends on it. Speeds are also given as ratios to limits measured in
the same run. Timings on a shared 2-core machine are noisy: run on an otherwise idle
machine and compare medians. ``--peak-memory`` adds the slow peak-memory run of
train_speed.py (a default run cut to 1,000 steps, final metric suite included);
``--disent-python`` times disent's β-VAE beside vaelab's (benchmarks/framework_speed.py
says how to install it). The whole takes under 10 minutes on a 2-core AVX2 CPU. The GPU
section (gpu_speed.py) measures only where torch sees a CUDA GPU, and says so otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent

BENCHMARKS = {
    "train_speed.py": (["--steps", "60"], ["--steps", "60", "--repeats", "1", "--batch-sizes", "64"]),
    # encoder throughput per precision and layout; both suites end to end at the presets' precision
    "metrics_speed.py": (["--parts", "encode", "e2e", "--encode-blocks", "4"], ["--quick"]),
    "information_speed.py": ([], ["--repeats", "1"]),
    "metrics_file_speed.py": ([], ["--calls", "5000"]),
    "error_latency.py": ([], ["--repeats", "3"]),
    # CUDA only: training eager and compiled, the full suite end to end, disent if importable
    "gpu_speed.py": ([], ["--steps", "100", "--repeats", "1", "--batch-sizes", "64"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--peak-memory", action="store_true", help="also the peak memory of a default run (minutes)")
    parser.add_argument("--disent-python", help="a Python with disent installed: time it beside vaelab's training")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT.parent), os.environ.get("PYTHONPATH", "")])}
    sys.path.insert(0, str(ROOT.parent))
    from benchmarks.machine import machine_description

    machine = machine_description()
    print(f"== machine: {machine['cpu_model']}, {machine['cores']} cores, {' '.join(machine['vector_extensions'])}"
          f" (bfloat16 {'native' if machine['native_bf16'] else 'emulated: not used'})", flush=True)  # fmt: skip
    figures = [{"name": "machine", "value": machine.pop("cpu_model"), "unit": "cpu", **machine}]
    for script, (full_args, quick_args) in BENCHMARKS.items():
        print(f"== {script}", flush=True)
        extra = []
        if script == "train_speed.py":
            extra += ["--peak-memory"] if args.peak_memory else []
            extra += ["--disent-python", args.disent_python] if args.disent_python else []
        result = subprocess.run(
            [sys.executable, str(ROOT / script), *(quick_args if args.quick else full_args), *extra],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        for line in result.stdout.splitlines():
            if line.startswith("{"):
                figures.append(json.loads(line))
            else:
                print(line)
        if result.returncode != 0:
            print(result.stderr[-2000:], file=sys.stderr)
            sys.exit(f"benchmark {script} failed")
    print("== figures (JSON lines)")
    for figure in figures:
        print(json.dumps(figure))


if __name__ == "__main__":
    main()
