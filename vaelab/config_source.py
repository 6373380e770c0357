"""The config nodes Hydra composes from the registry (vaelab/registry.py), not from yaml files.

- ``knobs/<objective>``: the objective's top-level knob keys, each null (None: its default),
  from its ``knobs`` declaration (vaelab/knobs.py: vaelab's own are read without importing them). Each objective's yaml includes it at the top level
  (``defaults: [{/knobs@_global_: betavae}]``), so ``vaelab train objective=X knob=1`` and
  ``-m knob=1,2`` are plain overrides of a key that exists, and a knob of another objective,
  or a mistyped one, is not in the config at all: Hydra refuses it (cli.py says whose it is).
- ``objective/<name>``, ``dataset/<name>``, ``metrics/<name>``, ``logger/<name>``: a part
  registered without a yaml of its own (an installed package's entry point) is selected like a
  shipped one, ``objective=free_bits``, ``dataset=bars``, ``metrics=mcc``, ``logger=report``: an objective's or a dataset's
  node is its ``_target_`` and its arguments' defaults (an objective's knobs at the top), a
  metric's a suite of it alone at its hyperparameters' defaults; each is then a plain
  override (``metrics.suite.mcc.num_train=1000``). A yaml of the same name, in conf/ or on
  ``hydra.searchpath``, comes first.

Only the node asked for is built, and only the part it names is imported.
"""

from __future__ import annotations

import inspect
from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from vaelab.knobs import knobs_of
from vaelab.registry import DATASETS, LOGGERS, METRICS, OBJECTIVES, Registry

KNOBS = "knobs"
GROUPS: dict[str, Registry] = {KNOBS: OBJECTIVES, "objective": OBJECTIVES, "dataset": DATASETS, "metrics": METRICS, "logger": LOGGERS}

# The objective whose knobs were composed last: a knob override Hydra refuses is named with it (cli.py).
composed: dict[str, str] = {}


def knobs_node(name: str) -> dict[str, None]:
    composed["objective"] = name
    return {knob.name: None for knob in knobs_of(name)}


def defaults_of(function, skip: set[str] = frozenset()) -> dict[str, Any]:
    """The arguments of ``function`` that have a plain default, by name: what a node lists so
    that each is a plain override (``dataset.correlation=…``)."""
    plain = (type(None), bool, int, float, str, list, tuple)
    return {p.name: list(p.default) if isinstance(p.default, tuple) else p.default
            for p in inspect.signature(function).parameters.values()
            if p.name not in skip and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and isinstance(p.default, plain)}  # fmt: skip


def part_node(group: str, name: str) -> dict[str, Any]:
    """The node of a part registered without a yaml (module docstring)."""
    if group == "metrics":
        from vaelab.metrics import registered

        return {"defaults": ["none", "_self_"], "suite": {name: defaults_of(registered(name).compute)}}
    part = GROUPS[group].get(name)
    node: dict[str, Any] = {"_target_": f"{part.__module__}.{part.__qualname__}"}
    if group == "objective":
        node["defaults"] = [{f"/{KNOBS}@_global_": name}, "_self_"]
        return node | defaults_of(part, skip={knob.attribute for knob in part.knobs})  # knobs: top-level keys
    if group == "logger":  # under its name, like conf/logger/*.yaml (logger=[wandb,report]); files in the run directory
        settings = defaults_of(part, skip={"save_dir"})
        if "save_dir" in inspect.signature(part).parameters:
            settings["save_dir"] = "${paths.output_dir}"
        return {name: node | settings}
    return node | defaults_of(part)


class RegistrySource(ConfigSource):
    """``vaelab://registry``: the nodes of the module docstring."""

    @staticmethod
    def scheme() -> str:
        return "vaelab"

    def _split(self, config_path: str) -> tuple[str, str] | None:
        group, _, name = self._normalize_file_name(config_path).removesuffix(".yaml").partition("/")
        return (group, name) if group in GROUPS and name and "/" not in name else None

    def load_config(self, config_path: str) -> ConfigResult:
        split = self._split(config_path)
        if split is None or split[1] not in GROUPS[split[0]]:
            raise ConfigLoadError(f"{config_path}: not a registered part")
        group, name = split
        node = knobs_node(name) if group == KNOBS else part_node(group, name)
        return ConfigResult(config=OmegaConf.create(node), path=f"{self.scheme()}://{self.path}",
                            provider=self.provider, header={"package": None})  # fmt: skip

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return config_path in GROUPS

    def is_config(self, config_path: str) -> bool:
        split = self._split(config_path)
        return split is not None and split[1] in GROUPS[split[0]]

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if config_path not in GROUPS or results_filter == ObjectType.GROUP:
            return []
        return GROUPS[config_path].names()


class RegistrySearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="vaelab", path="vaelab://registry")


def install() -> None:
    """Put the source on every Hydra search path of this process (idempotent)."""
    plugins = Plugins.instance()
    for plugin in (RegistrySource, RegistrySearchPath):
        plugins.register(plugin)
