"""Does bf16 mixed precision train like float32? The same seeds in both, loss curves and final MIG.

    PYTHONPATH=. python benchmarks/bf16_parity.py [--seeds 0 1 2] [--steps 1000]
        [--simulate | --allow-emulated] [--plot curves.png] [-- override ...]

For each seed, trains ``vaelab train seed=<s> [overrides]`` twice in this process
(logger=none), with ``trainer.precision=32-true`` and with ``bf16-mixed``, validating
every 100 steps, and scores the final model with ``metrics=mig`` (10,000 points, the
reference settings). It reports each run's validation-loss curve, the first
validation step below ``--plateau-nats`` (dSprites' all-background plateau, where the
decoder draws empty images and the code carries nothing, sits near 500 nats), the final
validation loss and MIG, and a verdict per figure: bf16's mean over the seeds is within
seed noise of float32's when the difference is at most twice float32's standard deviation
over the seeds; and every seed leaves the plateau in bf16 if it does in float32.

bf16 runs where it is native (a CPU with AVX-512 BF16 or AMX, a CUDA GPU that supports it).
Elsewhere oneDNN emulates it several times slower than float32; ``--allow-emulated`` runs
it anyway, and ``--simulate`` trains in float32 with bf16-mixed's round-off instead
(benchmarks/bf16_simulation.py: what it reproduces and what it does not).

Not part of ``make bench``: each run takes as long as its steps (minutes). Prints one
human line per run and one JSON line per figure: {"name", "value", "unit", ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VALIDATE_EVERY = 100


def run(seed: int, precision: str, steps: int, overrides: list[str]) -> dict:
    import vaelab.train
    from tests.conftest import compose_train
    from vaelab.runfiles import read_history

    run_overrides = [
        f"seed={seed}", f"trainer.max_steps={steps}", f"trainer.val_check_interval={VALIDATE_EVERY}",
        "metrics=mig", "metrics@periodic_metrics=none", "information.num_samples=0", "images.num_images=0",
        "logger=none", f"checkpoint.every_n_steps={steps}", *overrides,
    ]  # fmt: skip
    if precision == "bf16-simulated":
        run_overrides += ["trainer.precision=null", "+trainer.plugins=[{_target_: bf16_simulation.SimulatedBF16Precision}]"]
    else:
        run_overrides.append(f"trainer.precision={precision}")
    with tempfile.TemporaryDirectory() as run_dir:
        final = vaelab.train.train(compose_train(run_overrides, Path(run_dir)))
        curve = [(entry["step"], entry["val/loss"]) for entry in read_history(Path(run_dir)) if "val/loss" in entry]
    return {"seed": seed, "precision": precision, "curve": curve, "final": final}


def verdict(reference: list[float], other: list[float]) -> dict:
    """other's mean against reference's, in units of reference's spread over the seeds."""
    difference = statistics.mean(other) - statistics.mean(reference)
    if len(reference) < 2:  # one seed: no spread to compare with
        return {"difference": difference, "fp32_seed_sd": None, "within_seed_noise": None}
    spread = statistics.stdev(reference)
    return {"difference": difference, "fp32_seed_sd": spread, "within_seed_noise": abs(difference) <= 2 * spread}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--plateau-nats", type=float, default=300.0, help="validation loss below which a run has left the plateau")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--simulate", action="store_true", help="bf16's round-off in float32 (CPUs without native bf16)")
    group.add_argument("--allow-emulated", action="store_true", help="run bf16-mixed even where it is emulated (slow)")
    parser.add_argument("--plot", type=Path, help="also draw the validation-loss curves (PNG)")
    parser.add_argument("overrides", nargs="*", help="config overrides after --")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from vaelab.device import resolve_device, resolve_training_precision
    from benchmarks.machine import machine_description

    bf16 = "bf16-simulated" if args.simulate else "bf16-mixed"
    accelerator = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("trainer.accelerator=")), "auto")
    device = resolve_device(accelerator, "trainer.accelerator")
    native = resolve_training_precision("auto", device) == "bf16-mixed"  # what trainer.precision=auto decides
    if bf16 == "bf16-mixed" and not native and not args.allow_emulated:
        parser.error("this CPU emulates bfloat16 (several times slower than float32): use --simulate, or --allow-emulated")
    figures = [{"name": "machine", "value": machine_description(), "unit": ""}]
    runs = []
    for seed in args.seeds:
        for precision in ("32-true", bf16):
            result = run(seed, precision, args.steps, args.overrides)
            runs.append(result)
            result["left_plateau_at_step"] = next((step for step, loss in result["curve"] if loss < args.plateau_nats), None)
            final = result["final"]
            print(f"seed {seed} {precision:14s} val/loss {' '.join(f'{loss:.0f}' for _, loss in result['curve'])}  "
                  f"final MIG {final.get('metrics/mig', float('nan')):.3f}", flush=True)  # fmt: skip
            common = {"seed": seed, "precision": precision}
            figures += [
                {"name": "val_loss_curve", "value": [[step, round(loss, 2)] for step, loss in result["curve"]], "unit": "nats", **common},
                {"name": "left_plateau_at_step", "value": result["left_plateau_at_step"], "unit": "step", **common},
                {"name": "final_val_loss", "value": round(final["val/loss"], 2), "unit": "nats", **common},
                {"name": "final_mig", "value": round(final["metrics/mig"], 4), "unit": "MIG", **common},
            ]  # fmt: skip
    by_precision = {p: [r for r in runs if r["precision"] == p] for p in ("32-true", bf16)}  # seeds in the same order
    for name, key, unit, digits in (("final_val_loss", "val/loss", "nats", 2), ("final_mig", "metrics/mig", "MIG", 4)):
        per = {p: [round(r["final"][key], digits) for r in rs] for p, rs in by_precision.items()}
        figures.append({"name": f"{name}_{bf16}_vs_32-true", "unit": unit,
                        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in verdict(per["32-true"], per[bf16]).items()},
                        "value": per})  # fmt: skip
    leaves = {p: [r["left_plateau_at_step"] is not None for r in rs] for p, rs in by_precision.items()}
    figures.append({"name": "every_seed_leaves_the_plateau_as_in_fp32", "unit": "",
                    "value": all(b or not f for f, b in zip(leaves["32-true"], leaves[bf16]))})  # fmt: skip
    for figure in figures:
        print(json.dumps(figure))
    if args.plot:
        plot_curves(runs, args.plot, args.plateau_nats, " ".join(args.overrides))
    return figures


def plot_curves(runs: list[dict], path: Path, plateau: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.study_plot import save_study_figure

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    colours = {}
    for result in runs:
        colour = colours.setdefault(result["seed"], f"C{len(colours)}")
        style = "-" if result["precision"] == "32-true" else "--"
        steps, losses = zip(*result["curve"])
        ax.plot(steps, losses, style, color=colour, label=f"seed {result['seed']} {result['precision']}")
    ax.axhline(plateau, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats)")
    save_study_figure(fig, ax, title or "defaults", path, legend_fontsize=7)


if __name__ == "__main__":
    main()
