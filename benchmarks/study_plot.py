"""The finish of the study scripts' figures (bf16_parity.py, time_to_disentangle.py): titled
with the CPU the study ran on, since their curves are wall-clock or machine dependent."""

from __future__ import annotations

from pathlib import Path


def save_study_figure(fig, ax, title: str, path: Path, legend_fontsize: int) -> None:
    """Title (with the CPU model underneath), grid and legend on ``ax``; ``fig`` saved as ``path``."""
    import matplotlib.pyplot as plt

    from benchmarks.machine import machine_description

    ax.set_title(f"{title}\n{machine_description()['cpu_model']}", fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=legend_fontsize)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
