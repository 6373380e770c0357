"""Where vaelab finds its parts: objectives, metrics and datasets, each by name.

A part registers itself when it is defined: an objective or a dataset class by setting ``name``
(``Objective.__init_subclass__``, ``GroundTruthDataset.__init_subclass__``), a metric by the
:func:`metric` decorator on its ``compute``. Three ways lead to that definition:

- vaelab's own parts: :data:`SHIPPED` maps each name to the module that defines it, so a run
  imports only the parts it uses (``objective=infomax`` imports ``vaelab.objectives.infomax``);
- an installed package: an entry point in the group ``vaelab.objectives``, ``vaelab.metrics``,
  ``vaelab.datasets`` or ``vaelab.loggers`` (its pyproject.toml: ``[project.entry-points."vaelab.objectives"]
  free_bits = "mypackage.free_bits:FreeBitsVAE"``), loaded when the name is first asked for;
- any other module: importing it registers what it defines.

Nothing here reads a config file: the registry is the code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from vaelab.errors import UserError

# The module that defines each of vaelab's own parts, by name (imported on first use).
SHIPPED: dict[str, dict[str, str]] = {
    "objectives": {
        "betavae": "vaelab.objectives.betavae",
        "infomax": "vaelab.objectives.infomax",
        "betatcvae": "vaelab.objectives.betatcvae",
        "factorvae": "vaelab.objectives.factorvae",
        "dipvae": "vaelab.objectives.dipvae",
        "annealedvae": "vaelab.objectives.annealedvae",
        **{name: "vaelab.objectives.weak" for name in ("adagvae", "adamlvae", "gvae", "mlvae", "adainfomax")},
    },
    "metrics": {
        name: f"vaelab.metrics.{name}"
        # in the order of their headline columns in `vaelab compare`
        for name in ("mig", "dci", "factor_vae", "beta_vae", "sap", "modularity_explicitness", "infomec", "dci_es", "irs", "unsupervised")
    },
    "datasets": {
        **{name: "vaelab.data.dsprites" for name in ("dsprites", "color_dsprites", "noisy_dsprites")},
        **{name: "vaelab.data.files" for name in ("dsprites_file", "shapes3d", "mpi3d", "npz")},
    },
    # vaelab's own loggers (wandb, csv) are chosen by their yaml in conf/logger/; another
    # package's registers here by its entry point (vaelab/loggers.py: RunLogger).
    "loggers": {},
}


class Registry:
    """The parts of one kind (``objectives``, ``metrics``, ``datasets``) by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.entry_point_group = f"vaelab.{kind}"
        self.shipped = SHIPPED[kind]
        self.parts: dict[str, Any] = {}
        self._points: dict[str, Any] | None = None

    def register(self, name: str, part: Any) -> None:
        """Called where ``part`` is defined. A second part of the same name from another module is
        refused (it would silently replace the first); the same one defined again (a module
        reloaded) replaces it."""
        known = self.parts.get(name)
        if known is not None and _where(known) != _where(part):
            raise ValueError(f"{self.kind}: {name!r} is registered already, by {_where(known)}; {_where(part)} needs another name")
        self.parts[name] = part

    def _entry_points(self) -> dict[str, Any]:
        if self._points is None:  # read once per process: the installed packages do not change
            self._points = {point.name: point for point in entry_points(group=self.entry_point_group)}
        return self._points

    def names(self) -> list[str]:
        """Every name that can be asked for, without importing anything: vaelab's own in their
        order, then the installed packages', then those registered by other modules."""
        return list(dict.fromkeys([*self.shipped, *sorted(self._entry_points()), *self.parts]))

    def __contains__(self, name: str) -> bool:
        return name in self.parts or name in self.shipped or name in self._entry_points()

    def get(self, name: str) -> Any:
        """The part called ``name``, importing the one module that defines it if need be; an unknown
        name is a one-line UserError listing the names there are."""
        if name not in self.parts:
            if name in self.shipped:
                importlib.import_module(self.shipped[name])
            else:
                point = self._entry_points().get(name)
                if point is not None:
                    loaded = point.load()  # registers itself when defined; a plain function may not
                    self.parts.setdefault(name, loaded)
        if name not in self.parts:
            raise UserError(f"unknown {self.kind[:-1]} {name!r}; registered: {', '.join(self.names())}")
        return self.parts[name]

    def all(self) -> dict[str, Any]:
        """Every part, by name (imports every module that defines one)."""
        return {name: self.get(name) for name in self.names()}


def _where(part: Any) -> str:
    part = getattr(part, "compute", part)
    return f"{part.__module__}.{part.__qualname__}"


OBJECTIVES = Registry("objectives")
METRICS = Registry("metrics")
DATASETS = Registry("datasets")
LOGGERS = Registry("loggers")


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``compute(dataset, represent, rng, **hparams) -> dict[str, float]``.

    ``headline``: its scores worth a column of their own, headline name -> score; each is also
    reported as ``metrics/<headline name>`` (``metrics/mig`` for MIG's ``discrete_mig``), and
    those are the figures ``vaelab compare`` tabulates and plots, and the summary W&B shows.
    ``check_hparams(hparams)``: a check of hyperparameter values that needs no data, run
    before anything is encoded (optional); ``hparams`` holds every keyword of ``compute``, its
    default where the suite sets none."""

    name: str
    compute: Callable[..., dict[str, float]]
    headline: Mapping[str, str] = field(default_factory=dict)
    check_hparams: Callable[..., Any] | None = None


def metric(name: str, headline: Mapping[str, str] | None = None, check_hparams: Callable[..., Any] | None = None):
    """Register the decorated ``compute`` as the metric ``name`` (see :class:`Metric`)."""

    def register(compute):
        METRICS.register(name, Metric(name, compute, dict(headline or {}), check_hparams))
        return compute

    return register
