"""Reading the runs `vaelab compare` compares.

A training run is a directory with ``.hydra/config.yaml`` whose config names an objective; what
it trained, how it ended and its last figures are in its ``metrics.json`` (vaelab/loggers.py
writes it; vaelab/runfiles.py names the run's files). A run that cannot be read is kept, as
damaged, with the reason: compare lists every run, never silently drops one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vaelab.errors import RunStatus, first_line
from vaelab.runfiles import METRICS_FILE
from vaelab.time_to_disentangle import images_per_step_of_config

RECONSTRUCTION = "val/reconstruction"
NOT_REACHED = "not reached"
# A run's own columns in compare.csv and in the W&B table, before its figures (Run.fields).
RUN_COLUMNS = ["run", "objective", "knobs", "beta_effective", "kl_weight", "seed", "status"]


@dataclass
class Run:
    path: Path
    objective: str  # the objective's label: betavae, infomax, infomax-native, betatcvae, ...
    beta_effective: float | None  # None for objectives without an equivalent β-VAE
    seed: int | None
    status: str  # success, failed, interrupted, unfinished, damaged
    figures: dict[str, float] = field(default_factory=dict)
    kl_weight: float | None = None  # the loss's weight on its KL term, relative to reconstruction
    knobs: dict[str, float] = field(default_factory=dict)  # the objective's own knobs, the first is its axis
    reason: str = ""  # why a damaged run could not be read
    images_to: dict[str, float | None] = field(default_factory=dict)  # time to disentangle; None: not reached
    images_per_step: int | None = None  # training images per step (None: unknown)
    name: str = ""  # the objective's config name (objective=adainfomax), where its label differs

    @property
    def succeeded(self) -> bool:
        """It finished training (the others are listed, never compared)."""
        return self.status == RunStatus.SUCCESS.value

    @property
    def reconstruction(self) -> float | None:
        return self.figures.get(RECONSTRUCTION)

    @property
    def knob(self) -> float | None:
        """The value of the objective's first knob, the axis its sweeps vary."""
        return next(iter(self.knobs.values()), None)

    @property
    def knob_text(self) -> str:
        return ", ".join(f"{key}={value:.4g}" for key, value in self.knobs.items())

    @property
    def setting(self) -> tuple[tuple[str, float], ...]:
        """The knob values that make a cell (with the objective): runs differing only by seed share it."""
        return tuple((key, round(value, 12)) for key, value in self.knobs.items())

    def fields(self) -> list:
        """The values of RUN_COLUMNS."""
        return [self.path, self.objective, self.knob_text, self.beta_effective, self.kl_weight, self.seed, self.status]


def read_run(path: Path) -> Run | None:
    """The run in ``path``, or None when it is not a training run (e.g. an eval run).

    What it trained is the objective description the run wrote to ``metrics.json``
    (``Objective.describe``); a run that failed before writing one is listed by the
    objective its config names. A run whose config or ``metrics.json`` cannot be read
    (half-written after a crash, a bad copy) is listed as damaged, with the reason."""
    try:
        config = _load_yaml(path / ".hydra" / "config.yaml")
    except Exception as error:  # noqa: BLE001 - any unreadable config: list the run, go on with the rest
        return Run(path, "?", None, None, "damaged", reason=f".hydra/config.yaml: {first_line(error)}")
    if not isinstance(config, dict) or not isinstance(config.get("objective"), dict):
        return None
    seed = config.get("seed")
    if isinstance(seed, str) and "${" in seed:  # an interpolation: let OmegaConf resolve it
        from omegaconf import OmegaConf

        try:
            seed = OmegaConf.create(config).get("seed")
        except Exception:  # noqa: BLE001 - the seed is only shown
            pass
    objective = str(config["objective"].get("_target_", "?")).rsplit(".", 1)[-1].lower()
    metrics_file = path / METRICS_FILE
    try:
        metrics = json.loads(metrics_file.read_bytes()) if metrics_file.is_file() else {}
        described = metrics.get("objective")
        if described is None:  # the run stopped before training (a bad knob, say)
            return Run(path, objective, None, seed, "failed")
        status = RunStatus(metrics.get("status", RunStatus.SUCCESS))  # an unknown status: ValueError, damaged
        figures = {key: value for key, value in metrics["final"].items() if isinstance(value, (int, float))}
        shown = "unfinished" if status == RunStatus.RUNNING else status.value  # killed, or still going
        per_step = metrics.get("images_per_step")
        if not isinstance(per_step, int):  # recorded only with time-to-disentangle thresholds
            per_step = images_per_step_of_config(config)
        return Run(
            path, described["label"], described["beta_effective"], seed, shown, figures,
            described["kl_weight"], described["knobs"], images_to=dict(metrics.get("images_to") or {}),
            images_per_step=per_step, name=described.get("name", ""),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        return Run(path, objective, None, seed, "damaged", reason=f"{METRICS_FILE}: {first_line(error)}")


def _load_yaml(path: Path):
    """A YAML file as plain Python values, with libyaml's parser where PyYAML has it: several
    times faster than OmegaConf.load, which matters for hundreds of runs (docs/performance.md).
    Interpolations stay strings."""
    import yaml

    with open(path, "rb") as file:
        return yaml.load(file, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def find_runs(directories: list[Path]) -> list[Run]:
    """Every training run under ``directories``, in path order within each."""
    runs = []
    for directory in directories:
        for config in sorted(Path(directory).rglob(".hydra/config.yaml")):
            run = read_run(config.parent.parent)
            if run is not None:
                runs.append(run)
    return runs


def images_to_keys(runs: list[Run]) -> list[str]:
    """The time-to-disentangle figures any run recorded."""
    return sorted({key for run in runs for key in run.images_to})


def images_to_text(run: Run, key: str) -> str:
    """A run's images to a threshold, "not reached" (recorded null), or "" (not recorded)."""
    if key not in run.images_to:
        return ""
    value = run.images_to[key]
    return NOT_REACHED if value is None else f"{value:.0f}"
