"""`vaelab compare DIR [DIR …]`: the runs of one or more sweeps in one table and one picture per figure.

Reads every training run under the given directories (runs.py), groups the finished ones by
objective and knob values (groups.py), prints a table and writes `compare.csv` (one row per
run), `compare_summary.csv` and `compare_summary.md` (one row per objective and knob value:
mean ± std over seeds; tables.py) and, for each headline metric and information quantity, a
PNG of the figure against the objectives' weights and the reconstruction error (plots.py).
Across seeds (across_seeds.py): a seed table per objective and knob value (`compare_seeds.csv`,
`.md`: median, IQR, a bootstrap interval, seeds at or above each `--threshold`, the time to
disentangle), a quotable line per `--contrast` of two of them, and each metric against training
images seen, over seeds.

Failed and unfinished runs are listed, never silently dropped. With `--wandb` the table,
the plots and W&B line charts of the same means go to a W&B run in the sweep's group
(upload.py); `--udr` ranks the runs without labels from their checkpoints (udr.py, the one
part that loads torch).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaelab.compare import across_seeds, plots, tables, udr, upload
from vaelab.compare.groups import groups, shown
from vaelab.compare.runs import find_runs
from vaelab.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    """`vaelab compare`'s arguments (also what tab completion offers after `vaelab compare`)."""
    parser = argparse.ArgumentParser(prog="vaelab compare", description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="*", type=Path, help="sweep or run directories (before --contrast)")
    parser.add_argument("--out", type=Path, help="where compare.csv and the PNGs go (default: the first directory)")
    parser.add_argument(
        "--wandb", action="store_true",
        help="also log the table and plots as a W&B run (job_type compare) in the sweep's group; offline without an API key",
    )  # fmt: skip
    parser.add_argument("--project", default="vaelab", help="W&B project for --wandb (default: vaelab)")
    parser.add_argument(
        "--udr", nargs="?", const="lasso", choices=("lasso", "spearman"),
        help="rank the runs without labels by UDR (Duan et al. 2020) from their last checkpoints: udr/… against "
        "the other seeds of the same objective and knobs, udr_a2a/… against every run (default variant: lasso)",
    )  # fmt: skip
    parser.add_argument(
        "--trust-checkpoints", action="store_true",
        help="--udr: let the checkpoints name models, datasets and objectives vaelab does not ship (your own "
        "objective from examples/); their code runs, so only for checkpoints you trust",
    )  # fmt: skip
    across_seeds.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Compare the runs; 0 when done. A user's error is raised before anything is written
    (``vaelab compare`` reports it as one line, vaelab/cli.py, as every command's)."""
    return compare(build_parser().parse_args(argv))


def compare(args: argparse.Namespace) -> int:
    """What main does once the arguments parse: every check (and UDR's minutes of encoding)
    before the first table is printed or file written."""
    if not args.directories:
        raise UserError("compare: no directories given (they go before --contrast, which would read them as cells)")
    for directory in args.directories:
        if not directory.is_dir():
            raise UserError(f"compare: {directory}: no such directory")
    runs = find_runs(args.directories)
    if not runs:
        raise UserError(f"compare: no training runs under {', '.join(map(str, args.directories))}")
    out = args.out or args.directories[0]
    across_seeds.check_syntax(args)  # before UDR's minutes of encoding
    udr_lines = udr.add_udr(runs, args.udr, trust=args.trust_checkpoints) if args.udr else []
    cells = groups(runs)
    present = {key for run in runs if run.succeeded for key in run.figures}
    across = across_seeds.AcrossSeeds.of_arguments(args, cells, present, shown(runs))

    out.mkdir(parents=True, exist_ok=True)
    tables.print_runs(runs)
    for line in udr_lines:
        print(line)
    tables.print_seed_table(across.rows)
    for line in across.contrast_lines:
        print(line)
    tables.write_runs_csv(runs, out / "compare.csv")
    tables.write_summary(runs, cells, out)
    tables.write_seed_tables(across.rows, out)
    drawn = plots.plot_figures(runs, cells, out) | plots.plot_curves(across, out) | plots.plot_paired_contrasts(across, out)
    for run in runs:
        if not run.succeeded:
            print(f"{run.status}: {run.path}" + (f" ({run.reason})" if run.reason else ""), file=sys.stderr)
    print(f"wrote compare.csv, compare_summary.csv/.md, compare_seeds.csv/.md and {len(drawn)} plots to {out}", file=sys.stderr)
    if args.wandb:
        run_dir = upload.log_to_wandb(runs, drawn, out, args.directories[0], args.project)
        if run_dir:
            print(f"logged to W&B: {run_dir}", file=sys.stderr)
    return 0
