"""`vaelab compare`: one module per job, each importing only those below it.

    cli.py             the command: its flags (build_parser) and the order of the work (main)
    upload.py          --wandb: the comparison as a W&B run
    udr.py             --udr: the label-free ranking from the runs' checkpoints (loads torch)
    plots.py           the PNGs
    tables.py          compare.csv, the summary and seed tables (CSV, Markdown, terminal)
    across_seeds.py    --threshold, --contrast, --paired: the statistics of each cell's seeds
    seed_statistics.py the maths of those statistics (bootstrap, permutation and sign-flip tests)
    groups.py          the figures shown, and the finished runs by cell (pandas)
    runs.py            reading the run directories
"""

from vaelab.compare.cli import build_parser, main

__all__ = ["build_parser", "main"]
