"""Tables: `compare.csv` (a row per run), `compare_summary.csv`/`.md` (a row per cell: mean ±
std over its seeds), `compare_seeds.csv`/`.md` (across_seeds.py's statistics), and the run and
seed tables on the terminal. Files are written whole (write_atomically); a Markdown table drops
the ``metrics/`` prefix from its header, for results pages.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from vaelab.compare import seed_statistics
from vaelab.compare.across_seeds import SEEDS_HEADER
from vaelab.compare.groups import Group, shown
from vaelab.compare.runs import RUN_COLUMNS, Run, images_to_keys, images_to_text
from vaelab.errors import write_atomically

SUMMARY_COLUMNS = ["objective", "knobs", "beta_effective", "kl_weight", "seeds"]


def number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def write_table(header: list[str], rows: list[list], csv_path: Path, markdown_path: Path | None = None) -> None:
    """``rows`` under ``header`` as CSV, and as a Markdown table where ``markdown_path`` is given."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    csv_bytes = text.getvalue().encode()
    write_atomically(csv_path, lambda file: file.write(csv_bytes))
    if markdown_path is not None:
        lines = ["| " + " | ".join(h.removeprefix("metrics/") for h in header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        markdown = ("\n".join(lines) + "\n").encode()
        write_atomically(markdown_path, lambda file: file.write(markdown))


def print_table(title: str, columns: list[str], rows: list[list[str]], left: tuple[str, ...]) -> None:
    """A rich table on stdout, the ``left`` columns aligned left and the others right. Piped to a
    file or another program, every column is printed whole instead of cut to rich's 80 columns."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 10_000).print(table)


def write_runs_csv(runs: list[Run], path: Path) -> None:
    """compare.csv: every run, with every figure any run has and its times to disentangle."""
    keys = sorted({key for run in runs for key in run.figures})
    images_keys = images_to_keys(runs)
    rows = [[*run.fields(), *(run.figures.get(k, "") for k in keys), *(images_to_text(run, k) for k in images_keys)]
            for run in runs]  # fmt: skip
    write_table([*RUN_COLUMNS, *keys, *images_keys], rows, path)


def print_runs(runs: list[Run]) -> None:
    """Every run, in objective, knob and seed order; the figures compare shows, to three decimals."""
    figures = shown(runs)
    images_keys = images_to_keys(runs)
    columns = ["run", "objective", "knobs", "β_eff", "kl_w", "seed", "status", *(f.removeprefix("metrics/") for f in figures),
               *images_keys]  # fmt: skip
    rows = []
    for run in sorted(runs, key=lambda r: (r.objective, tuple(r.knobs.values()), r.seed or 0)):
        status = run.status if run.succeeded else f"[red]{run.status}[/red]"
        values = [f"{run.figures[f]:.3f}" if f in run.figures else "" for f in figures]
        values += [images_to_text(run, key) for key in images_keys]
        rows.append([run.path.name, run.objective, run.knob_text, number(run.beta_effective), number(run.kl_weight),
                     str(run.seed), status, *values])  # fmt: skip
    print_table(f"vaelab compare: {len(runs)} runs", columns, rows, left=("run", "objective", "knobs", "status"))


def summary_rows(runs: list[Run], cells: list[Group]) -> tuple[list[str], list[list[str]]]:
    """One row per cell: seeds, weights and mean ± std of every figure shown."""
    figures = shown(runs)
    rows = []
    for cell in cells:
        row = [cell.objective, cell.knob_text, number(cell.beta_effective), number(cell.kl_weight), str(len(cell.runs))]
        for figure in figures:
            stats = cell.mean_std(figure)
            row.append("" if stats is None else f"{stats[0]:.3f} ± {stats[1]:.3f}")
        rows.append(row)
    return [*SUMMARY_COLUMNS, *figures], rows


def write_summary(runs: list[Run], cells: list[Group], out: Path) -> None:
    """compare_summary.csv and compare_summary.md."""
    header, rows = summary_rows(runs, cells)
    write_table(header, rows, out / "compare_summary.csv", out / "compare_summary.md")


def write_seed_tables(rows: list[list[str]], out: Path) -> None:
    """compare_seeds.csv and compare_seeds.md."""
    write_table(SEEDS_HEADER, rows, out / "compare_seeds.csv", out / "compare_seeds.md")


def print_seed_table(rows: list[list[str]]) -> None:
    title = (f"across seeds (bootstrap: {seed_statistics.BOOTSTRAP_RESAMPLES:,} resamples, seed "
             f"{seed_statistics.BOOTSTRAP_SEED}; IQR: first to third quartile)")  # fmt: skip
    print_table(title, SEEDS_HEADER, rows, left=("objective", "knobs", "figure"))
