"""`make bench`: every benchmark in turn; a table per benchmark, then all figures as JSON lines.

    python benchmarks/run.py [--quick]

The figures (name, value, unit) can be compared across commits. Timings on a shared
2-core machine are noisy: run on an otherwise idle machine and compare medians.
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
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT.parent), os.environ.get("PYTHONPATH", "")])}
    figures = []
    for script, (full_args, quick_args) in BENCHMARKS.items():
        print(f"== {script}", flush=True)
        result = subprocess.run(
            [sys.executable, str(ROOT / script), *(quick_args if args.quick else full_args)],
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
