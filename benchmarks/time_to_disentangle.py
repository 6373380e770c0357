"""Time to disentangle: MIG at fixed wall-clock times of a training run, per seed.

    PYTHONPATH=. python benchmarks/time_to_disentangle.py [--preset dsprites_fast] [--seeds 0 1 2]
        [--minutes 5 10 15] [--stop-at-last] [-- override ...]

Runs ``vaelab train experiment=<preset> seed=<s> [overrides]`` in this process
(logger=none) with a callback that, the first time the run's wall clock passes each of
``--minutes``, scores MIG on the current encoder at the reference settings
(``metrics=mig``: 10,000 points, 20 bins, metric seed 0) and pauses the clock while it
does, so the scores are those the run had reached at that time. The clock starts when
``train()`` is called (dataset rendering and model build included; the imports of torch
and Lightning, about 5 s of a ``vaelab train`` command, are not). ``--stop-at-last``
ends training at the last mark (and skips the final suite): a cheaper probe of a recipe.
Otherwise the run ends as its preset says and its final ``metrics/mig`` and wall time
are reported too.

Not part of ``make bench``: each seed takes as long as the preset (minutes).
Prints one human line per measurement and one JSON line per figure:
{"name", "value", "unit", ...}; the CPU model is one of the figures, since speed and so
the scores at a wall-clock time depend on it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl

ROOT = Path(__file__).resolve().parent.parent
MIG_SUITE = {"mig": {"num_train": 10000, "num_bins": 20}}  # conf/metrics/mig.yaml


def cpu_model() -> str:
    from benchmarks.machine import machine_description

    return machine_description()["cpu_model"]


class WallClockMIG(pl.Callback):
    """Scores MIG when the run's clock first passes each mark (seconds); the clock pauses meanwhile."""

    def __init__(self, started: float, marks: list[float], stop_at_last: bool) -> None:
        super().__init__()
        self.started = started
        self.marks = sorted(marks)
        self.stop_at_last = stop_at_last
        self.paused = 0.0
        self.results: list[dict] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.started - self.paused

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if len(self.results) == len(self.marks) or self.elapsed() < self.marks[len(self.results)]:
            return
        from vaelab.metrics import metric_rng
        from vaelab.metrics._common import represent_all
        from vaelab.metrics.mig import mig_per_factor
        from vaelab.metrics.representation import encoder_representation

        began = time.perf_counter()
        dataset = trainer.datamodule.dataset
        represent = encoder_representation(pl_module.model, dataset, pl_module.device, precision="auto")
        # The points metrics=mig scores (its stream: metric seed 0), so the mean is metrics/mig.
        factors = dataset.sample_factors(MIG_SUITE["mig"]["num_train"], metric_rng(0, "mig"))
        per_factor = mig_per_factor(represent_all(represent, factors), factors, MIG_SUITE["mig"]["num_bins"])
        mig = float(per_factor.mean())
        # The last logged training reconstruction error: tells a slow start (the all-background
        # plateau of dSprites, about 500 nats) from a model that reconstructs but does not disentangle.
        reconstruction = float(trainer.callback_metrics.get("train/reconstruction", float("nan")))
        names = getattr(dataset, "factor_names", None) or [f"factor_{k}" for k in range(len(per_factor))]
        by_factor = {name: round(float(gap), 4) for name, gap in zip(names, per_factor)}
        self.results.append({"minutes": self.marks[len(self.results)] / 60, "step": trainer.global_step, "mig": mig,
                             "reconstruction": reconstruction, "mig_by_factor": by_factor})  # fmt: skip
        self.paused += time.perf_counter() - began
        print(f"  {self.results[-1]['minutes']:5.1f} min  step {trainer.global_step:6d}  MIG {mig:.3f}  "
              f"reconstruction {reconstruction:.1f}  ({', '.join(f'{k} {v:.2f}' for k, v in by_factor.items())})",
              flush=True)  # fmt: skip
        if self.stop_at_last and len(self.results) == len(self.marks):
            trainer.should_stop = True


def run_seed(preset: str, seed: int, minutes: list[float], stop_at_last: bool, overrides: list[str],
             keep: Path | None = None) -> dict:  # fmt: skip
    import vaelab.train  # torch and Lightning load here, before the clock starts
    from tests.conftest import compose_train

    run_overrides = [f"experiment={preset}", f"seed={seed}", "logger=none", *overrides]
    if stop_at_last:
        run_overrides += ["metrics=none", "trainer.max_steps=100000000"]
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = keep / f"seed{seed}" if keep else Path(scratch)
        cfg = compose_train(run_overrides, run_dir)
        started = time.perf_counter()
        clock = WallClockMIG(started, [m * 60 for m in minutes], stop_at_last)
        final = vaelab.train.train(cfg, extra_callbacks=[clock])
        wall = time.perf_counter() - started
    return {"seed": seed, "marks": clock.results, "final": final, "wall_seconds": wall, "paused_seconds": clock.paused}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dsprites_fast", help="an experiment preset (conf/experiment/)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 15])
    parser.add_argument("--stop-at-last", action="store_true", help="stop at the last mark, no final suite")
    parser.add_argument("--keep", type=Path, help="keep each seed's run directory (images, checkpoint) under DIR/seed<s>")
    parser.add_argument("--plot", type=Path, help="also draw MIG against wall-clock minutes, one line per seed (PNG)")
    parser.add_argument("overrides", nargs="*", help="config overrides after --")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    figures = [{"name": "cpu_model", "value": cpu_model(), "unit": ""}]
    runs = []
    for seed in args.seeds:
        print(f"seed {seed}: experiment={args.preset} {' '.join(args.overrides)}", flush=True)
        run = run_seed(args.preset, seed, args.minutes, args.stop_at_last, args.overrides, args.keep)
        runs.append(run)
        for mark in run["marks"]:
            figures.append({"name": f"mig_at_{mark['minutes']:g}min", "value": round(mark["mig"], 4), "unit": "MIG",
                            "seed": seed, "step": mark["step"], "reconstruction": round(mark["reconstruction"], 2),
                            "by_factor": mark["mig_by_factor"]})  # fmt: skip
        if "metrics/mig" in run["final"]:
            figures.append({"name": "final_mig", "value": round(run["final"]["metrics/mig"], 4), "unit": "MIG",
                            "seed": seed})  # fmt: skip
        # The run's own time: wall time minus the pauses for this benchmark's MIG scores.
        own = run["wall_seconds"] - run["paused_seconds"]
        figures.append({"name": "run_seconds", "value": round(own, 1), "unit": "s", "seed": seed})
        print(f"  run {own:.0f} s (+{run['paused_seconds']:.0f} s scoring the marks), "
              f"final MIG {run['final'].get('metrics/mig', float('nan')):.3f}")  # fmt: skip
    for name in sorted({f["name"] for f in figures if f.get("unit") == "MIG"}):
        values = [f["value"] for f in figures if f["name"] == name]
        figures.append({"name": f"median_{name}", "value": round(statistics.median(values), 4), "unit": "MIG",
                        "seeds": len(values)})  # fmt: skip
    for figure in figures:
        print(json.dumps(figure))
    if args.plot:
        plot_mig_against_time(runs, args.plot, f"experiment={args.preset} {' '.join(args.overrides)}".strip())
    return figures


def plot_mig_against_time(runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.study_plot import save_study_figure

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for run in runs:
        minutes = [0.0] + [mark["minutes"] for mark in run["marks"]]
        ax.plot(minutes, [0.0] + [mark["mig"] for mark in run["marks"]], marker="o", label=f"seed {run['seed']}")
        if "metrics/mig" in run["final"]:  # the final full suite, at the run's own end
            own = (run["wall_seconds"] - run["paused_seconds"]) / 60
            ax.plot([own], [run["final"]["metrics/mig"]], marker="*", markersize=12, color=ax.lines[-1].get_color())
    ax.set_xlabel("wall-clock minutes (2-core CPU; ★ = final full suite at the run's end)", fontsize=8)
    ax.set_ylabel("MIG")
    save_study_figure(fig, ax, title, path, legend_fontsize=8)


if __name__ == "__main__":
    main()
