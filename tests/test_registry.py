"""The registry (vaelab/registry.py): a part registers where it is defined, or through an installed
package's entry points; a run imports only the parts it uses and reads no config file to learn
what exists."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import cli_env
from vaelab.errors import UserError
from vaelab.registry import OBJECTIVES, SHIPPED, Registry

# `vaelab train objective=infomax lambda=3`, with yaml and OmegaConf.load watched from the moment
# composition has handed the config to vaelab.train.train; reports what it read and imported.
WATCHED_RUN = r"""
import json, sys
import yaml
from omegaconf import OmegaConf
import vaelab.train
from vaelab.cli import main

reads = []
def watched(name, load):
    def reading(*args, **kwargs):
        reads.append(name)
        return load(*args, **kwargs)
    return reading

train = vaelab.train.train
def watched_train(cfg, *args, **kwargs):
    for name in ("load", "safe_load", "full_load", "unsafe_load", "load_all", "safe_load_all"):
        setattr(yaml, name, watched(f"yaml.{name}", getattr(yaml, name)))
    OmegaConf.load = watched("OmegaConf.load", OmegaConf.load)
    return train(cfg, *args, **kwargs)
vaelab.train.train = watched_train

try:
    main(sys.argv[1:])
finally:
    modules = sorted(name for name in sys.modules if name.startswith(("vaelab.objectives.", "vaelab.metrics.", "vaelab.data.")))
    print("WATCHED " + json.dumps({"reads": reads, "modules": modules}), file=sys.stderr)
"""


@pytest.mark.slow
def test_a_run_imports_only_the_parts_it_uses_and_reads_no_yaml_after_composition(tmp_path):
    overrides = [
        "train", "objective=infomax", "lambda=3", "model=mlp", "model.hidden=[32]", "trainer.max_steps=4",
        "trainer.val_check_interval=4", "trainer.log_every_n_steps=2", "data.val_size=32", "logger=none",
        "metrics=mig", "metrics.suite.mig.num_train=300", "metrics@periodic_metrics=none",
        "information.num_samples=0", "images.num_images=0", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    result = subprocess.run([sys.executable, "-c", WATCHED_RUN, *overrides], cwd=tmp_path, env=cli_env(tmp_path),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("WATCHED ")]
    watched = json.loads(line.removeprefix("WATCHED "))
    assert watched["reads"] == []
    modules = set(watched["modules"])
    assert "vaelab.objectives.infomax" in modules
    other_objectives = {module for module in SHIPPED["objectives"].values() if module != "vaelab.objectives.infomax"}
    assert not modules & other_objectives, modules & other_objectives
    other_metrics = {module for module in SHIPPED["metrics"].values() if module != "vaelab.metrics.mig"}
    assert "vaelab.metrics.mig" in modules and not modules & other_metrics, modules & other_metrics
    assert "vaelab.data.files" not in modules  # the dataset is procedural dSprites


def test_a_part_registers_where_it_is_defined_and_a_name_is_taken_once():
    from vaelab.data.grid import FactorGrid, GroundTruthDataset
    from vaelab.registry import DATASETS

    class Dots(GroundTruthDataset):
        name = "dots_for_this_test"
        image_shape = (1, 4, 4)
        binary = True
        grid = FactorGrid(("x",), (2,), (np.array([0.0, 1.0]),))

        def images(self, factors):
            raise AssertionError("not drawn here")

    try:
        assert DATASETS.get("dots_for_this_test") is Dots and "dots_for_this_test" in DATASETS.names()
        with pytest.raises(ValueError, match="'dots_for_this_test' is registered already"):

            class OtherDots(Dots):
                name = "dots_for_this_test"

    finally:
        DATASETS.parts.pop("dots_for_this_test", None)


def test_an_unknown_name_is_one_line_listing_the_registered_ones():
    with pytest.raises(UserError, match=r"^unknown objective 'betavea'; registered: betavae, infomax, "):
        Registry("objectives").get("betavea")


def test_an_entry_point_adds_a_part_by_name_and_imports_it_only_when_asked(tmp_path, monkeypatch):
    (tmp_path / "outside_part.py").write_text(
        "from vaelab.objectives.betavae import BetaVAE\n\n"
        "class LouderVAE(BetaVAE):\n    name = 'louder'\n"
    )
    info = tmp_path / "outside_part-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: outside-part\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[vaelab.objectives]\nlouder = outside_part:LouderVAE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    objectives = Registry("objectives")  # a fresh one: this process's reads the installed packages once
    assert "louder" in objectives.names() and "outside_part" not in sys.modules
    try:
        assert objectives.get("louder").__name__ == "LouderVAE"
    finally:  # defining it registered it with this process's registry too: forget it
        OBJECTIVES.parts.pop("louder", None)
        sys.modules.pop("outside_part", None)


def test_every_shipped_objective_reads_its_knobs_from_the_one_table():
    """vaelab/knobs.py is where the config learns an objective's knobs without importing it: the
    class that trains must have exactly those (a knob added to a class alone would be a key the
    command line cannot set)."""
    from vaelab.knobs import OBJECTIVE_KNOBS
    from vaelab.registry import OBJECTIVES, SHIPPED

    assert set(OBJECTIVE_KNOBS) == set(SHIPPED["objectives"])
    for name, knobs in OBJECTIVE_KNOBS.items():
        assert OBJECTIVES.get(name).knobs == knobs, name

