"""`make bench`: every benchmark in turn; a table per benchmark, then all figures as JSON lines.

    python benchmarks/run.py [--quick] [--peak-memory]

The figures (name, value, unit) can be compared across commits on the same machine; the
first JSON line names the machine (CPU model, cores, vector extensions, native bfloat16),
since every figure depends on it. Speeds are also given as ratios to limits measured in
the same run. Timings on a shared 2-core machine are noisy: run on an otherwise idle
machine and compare medians. ``--peak-memory`` adds the slow peak-memory run of
train_speed.py (a default run cut to 1,000 steps, final metric suite included).
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
    "train_speed.py": ([], ["--steps", "100", "--repeats", "1", "--batch-sizes", "64"]),
    # all parts: full and fast suites given codes, encoder throughput, end to end (several minutes)
    "metrics_speed.py": ([], ["--quick"]),
    "information_speed.py": ([], ["--repeats", "1"]),
    "metrics_file_speed.py": ([], ["--calls", "5000"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--peak-memory", action="store_true", help="also the peak memory of a default run (minutes)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT.parent), os.environ.get("PYTHONPATH", "")])}
    sys.path.insert(0, str(ROOT.parent))
    from vaelab.system import machine_description

    machine = machine_description()
    print(f"== machine: {machine['cpu_model']}, {machine['cores']} cores, {' '.join(machine['vector_extensions'])}"
          f" (bfloat16 {'native' if machine['native_bf16'] else 'emulated: not used'})", flush=True)  # fmt: skip
    figures = [{"name": "machine", "value": machine.pop("cpu_model"), "unit": "cpu", **machine}]
    for script, (full_args, quick_args) in BENCHMARKS.items():
        print(f"== {script}", flush=True)
        extra = ["--peak-memory"] if args.peak_memory and script == "train_speed.py" else []
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
