"""Time the metric suites (conf/metrics/*.yaml) on a dSprites-sized grid.

The representation is a cheap lookup table (a fixed random linear map of the
factors plus fixed noise, precomputed for all 737,280 grid points), so the
timings are the metrics' own cost, not encoding. Prints a small table, then one
JSON line per figure: {"name": ..., "value": ..., "unit": ...}.

    PYTHONPATH=. python benchmarks/metrics_speed.py [--suites fast full] [--dci-booster exact|fast_exact|binned]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
from omegaconf import OmegaConf

from vaelab.data.grid import FactorGrid
from vaelab.metrics import evaluate

ROOT = pathlib.Path(__file__).resolve().parent.parent
DSPRITES_SIZES = (3, 6, 40, 32, 32)
NUM_CODES = 10


def synthetic_representation(sizes=DSPRITES_SIZES, num_codes=NUM_CODES, seed=0):
    rng = np.random.default_rng(seed)
    grid = FactorGrid(
        factor_names=("shape", "scale", "orientation", "x", "y"),
        factor_sizes=sizes,
        factor_values=tuple(np.linspace(0, 1, s) for s in sizes),
    )
    factors = np.stack(np.unravel_index(np.arange(len(grid)), sizes), axis=1)
    # partly entangled: each code mixes the factors a little, plus noise
    mixing = np.eye(len(sizes), num_codes) + 0.2 * rng.standard_normal((len(sizes), num_codes))
    table = (factors / (np.asarray(sizes) - 1)) @ mixing + 0.05 * rng.standard_normal((len(grid), num_codes))
    return grid, lambda f: table[grid.factors_to_index(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+", default=["fast", "full"])
    parser.add_argument("--dci-booster", choices=["exact", "fast_exact", "binned"], help="override the preset's DCI booster")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    grid, represent = synthetic_representation()
    figures = []
    for suite_name in args.suites:
        preset = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "metrics" / f"{suite_name}.yaml"))
        suite = preset["suite"]
        if args.dci_booster and "dci" in suite:
            suite["dci"] = {**(suite["dci"] or {}), "booster": args.dci_booster}
        tag = suite_name + (f"_dci_{args.dci_booster}" if args.dci_booster else "")
        total = 0.0
        for metric, hparams in suite.items():
            start = time.perf_counter()
            evaluate(grid, represent, {metric: hparams}, seed=args.seed)
            seconds = time.perf_counter() - start
            total += seconds
            figures.append((f"metrics_speed/{tag}/{metric}", seconds))
        figures.append((f"metrics_speed/{tag}/total", total))

    width = max(len(name) for name, _ in figures)
    print(f"{'figure'.ljust(width)}  seconds")
    for name, seconds in figures:
        print(f"{name.ljust(width)}  {seconds:7.2f}")
    for name, seconds in figures:
        print(json.dumps({"name": name, "value": round(seconds, 3), "unit": "s"}))


if __name__ == "__main__":
    main()
