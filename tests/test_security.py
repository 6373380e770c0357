"""A checkpoint from someone else is data, never code (README, "Security"; vaelab/checkpoint.py).

Hostile checkpoints are small dicts written with torch.save: a pickled callable in any field,
a ``_target_`` vaelab does not ship in each config group the loaders build, a config that
points a loader at another pickle. Every path that reads a checkpoint is run against each:
none runs the payload (its marker file never appears), each refuses in one line (exit 2).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import call_vaelab, compose_train
from tests.test_compare import fake_run
from vaelab.errors import UserError

TINY = (
    "model=mlp", "model.hidden=[32]", "trainer.max_steps=2", "trainer.val_check_interval=2", "data.batch_size=16",
    "data.val_size=64", "metrics=none", "metrics@periodic_metrics=none", "information.num_samples=0",
    "images.num_images=0", "logger=none", "num_threads=1",
)  # fmt: skip


def make_marker(path: str) -> None:
    """What every payload here would do if it ran: create the file ``path``."""
    Path(path).touch()


class Payload:
    """Unpickling it calls ``make_marker`` (any callable: ``os.system`` would do the same)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return make_marker, (self.marker,)


MARKER_TARGET = f"{__name__}.make_marker"


def checkpoint_dict(**config_overrides) -> dict:
    """The entries of a vaelab checkpoint (as today's vaelab writes them), small."""
    config = {
        "model": {"_target_": "vaelab.models.MLPVAE", "latent_dim": 2, "hidden": [4], "likelihood": "auto",
                  "gaussian_std": 0.7071067811865476},
        "dataset": {"_target_": "vaelab.data.dsprites.ProceduralDSprites", "correlation": None},
        "objective": {"_target_": "vaelab.objectives.betavae.BetaVAE", "beta": 1.0, "kl_warmup_steps": 0},
        "data": {"batch_size": 16, "val_size": 64, "val_seed": 12345},
        "seed": 0,
    } | config_overrides  # fmt: skip
    return {"global_step": 2, "state_dict": {"model.weight": torch.zeros(2)}, "loops": {}, "callbacks": {},
            "optimizer_states": [], "vaelab_config": config, "vaelab_model_inputs": {"image_shape": [1, 64, 64], "binary_data": True}}  # fmt: skip


def hostile_checkpoints(root: Path, marker: Path) -> dict[str, Path]:
    """name -> a checkpoint file (at <root>/<name>/checkpoints/last.ckpt, as in a run directory)."""
    root.mkdir(parents=True)
    evil_npz = root / "evil.npz"  # a "dataset" whose arrays are pickles
    np.savez(evil_npz, images=np.array([Payload(marker)], dtype=object), factors=np.array([Payload(marker)], dtype=object))
    evil_pickle = root / "evil.pt"
    torch.save({"x": Payload(marker)}, evil_pickle)
    calls = {"_target_": MARKER_TARGET, "path": str(marker)}
    base = checkpoint_dict()
    cases = {
        "callable_in_config": checkpoint_dict(seed=Payload(marker)),
        "callable_in_weights": {**base, "state_dict": {"model.weight": Payload(marker)}},
        "callable_in_lightning_state": {**base, "callbacks": {"EarlyStopping": {"best_score": Payload(marker)}}},
        "callable_as_the_whole_file": Payload(marker),
        "foreign_model": checkpoint_dict(model=calls),
        "foreign_dataset": checkpoint_dict(dataset=calls),
        "foreign_objective": checkpoint_dict(objective=calls),
        "foreign_nested_target": checkpoint_dict(objective={**base["vaelab_config"]["objective"], "optimizer": calls}),
        "loader_of_another_pickle": checkpoint_dict(dataset={"_target_": "torch.load", "f": str(evil_pickle), "weights_only": False}),
        "interpolated_target": checkpoint_dict(dataset={"_target_": "vaelab.data.dsprites.ProceduralDSprites",
                                                        "correlation": "${oc.decode:'{_target_: " + MARKER_TARGET + "}'}"}),
        "shipped_loader_on_a_pickle": checkpoint_dict(dataset={"_target_": "vaelab.data.files.NpzDataset", "path": str(evil_npz)}),
    }  # fmt: skip
    files = {}
    for name, content in cases.items():
        path = root / name / "checkpoints" / "last.ckpt"
        path.parent.mkdir(parents=True)
        torch.save(content, path)
        files[name] = path
    return files


def vaelab_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("vaelab: error:")]


def test_hostile_checkpoints_run_nothing_on_any_path_and_are_refused_in_one_line(tmp_path, monkeypatch, capfd):
    from vaelab import evaluate, rundir
    from vaelab.checkpoint import atomic_checkpoint_io, saved_step
    from vaelab.module import VAEModule

    # A checkpoint named on the command line is refused before Hydra makes a run directory
    # (checked below): not made and then cleared.
    monkeypatch.setattr(rundir, "remove_unused", lambda directory: False)

    marker = tmp_path / "MARKER"
    hostile = hostile_checkpoints(tmp_path / "hostile", marker)
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    out = f"hydra.run.dir={tmp_path / 'out'}"
    expected = {  # what each refusal names
        "callable_in_config": "its pickle needs tests.test_security.make_marker, which vaelab never saves",
        "callable_in_weights": "its pickle needs tests.test_security.make_marker",
        "callable_in_lightning_state": "its pickle needs tests.test_security.make_marker",
        "callable_as_the_whole_file": "its pickle needs tests.test_security.make_marker",
        "foreign_model": f"vaelab_config.model._target_ is '{MARKER_TARGET}', which vaelab does not ship (conf/model/)",
        "foreign_dataset": f"vaelab_config.dataset._target_ is '{MARKER_TARGET}', which vaelab does not ship (conf/dataset/)",
        "foreign_objective": f"vaelab_config.objective._target_ is '{MARKER_TARGET}', which vaelab does not ship (conf/objective/)",
        "foreign_nested_target": f"vaelab_config.objective.optimizer._target_ is '{MARKER_TARGET}'",
        "loader_of_another_pickle": "vaelab_config.dataset._target_ is 'torch.load', which vaelab does not ship (conf/dataset/)",
        "interpolated_target": "vaelab_config.dataset.correlation is an interpolation",
        "shipped_loader_on_a_pickle": "array 'factors' is unreadable (Object arrays cannot be loaded when allow_pickle=False)",
    }
    for name, path in hostile.items():
        runs = {
            "eval ckpt=": ("eval", f"ckpt={path}", "logger=none", out),
            "eval artifact=": ("eval", "artifact=model-x:latest", "logger=none", f"hydra.run.dir={tmp_path / 'fetched'}"),
            "train resume=": ("train", *TINY, f"resume={path}"),
            "compare --udr": ("compare", str(path.parents[2]), "--udr"),
        }
        if name == "shipped_loader_on_a_pickle":  # the dataset is only opened where it is built
            del runs["train resume="]
        if name not in ("callable_in_config", "foreign_dataset"):  # eval artifact= reads the file it fetched as ckpt= does
            del runs["eval artifact="]
        monkeypatch.setattr(evaluate, "download_checkpoint_artifact", lambda *args, path=path: path)
        if "compare --udr" in runs:  # two finished runs of a sweep, the checkpoint in each
            sweep = tmp_path / "sweeps" / name
            for seed in (0, 1):
                fake_run(sweep, str(seed), "betavae", 1.0, seed, 0.1)
                (sweep / str(seed) / "checkpoints").mkdir()
                shutil.copy(path, sweep / str(seed) / "checkpoints" / "last.ckpt")
            runs["compare --udr"] = ("compare", str(sweep), "--udr")
        for where, args in runs.items():
            result = call_vaelab(*args, **cli)
            assert result.returncode == 2, (name, where, result.stderr[-2000:])
            (line,) = vaelab_errors(result.stderr)
            assert expected[name] in line and "Traceback" not in result.stderr, (name, where, line)
            # read, not built: refused before any run directory (artifact=: fetched into one first)
            if where in ("eval ckpt=", "train resume=") and name != "shipped_loader_on_a_pickle":
                assert not (tmp_path / "out").exists() and not (tmp_path / "outputs").exists(), (name, where)
        # The notebook API (it builds no dataset: the shipped loader never opens the pickle, and
        # the weights do not fit), Lightning's own read of a resumed checkpoint, the step a
        # full disk's message names (read, never built).
        shipped_loader = name == "shipped_loader_on_a_pickle"
        with pytest.raises(UserError, match="do not fit" if shipped_loader else "^checkpoint_path=.*refused"):
            VAEModule.load_from_checkpoint(path)
        pickled = name.startswith("callable")
        if not shipped_loader:
            with pytest.raises(UserError, match=r"^resume=.*" + ("its pickle needs" if pickled else "refused")):
                atomic_checkpoint_io().load_checkpoint(path)
        saved_step(path)  # the step, or None: read, never built
        assert not marker.exists(), f"{name}: the payload ran"


def test_trust_checkpoint_admits_your_own_parts_but_never_pickled_code(tmp_path, monkeypatch, capfd):
    """A checkpoint of the free-bits objective (examples/free_bits.py) is refused as it stands,
    loads with trust_checkpoint=true; trust never turns weights-only unpickling off."""
    from vaelab.module import VAEModule
    from vaelab.train import train

    run_dir = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        train(compose_train(list(TINY), run_dir))  # a checkpoint as today's vaelab writes it
    finally:
        torch.set_num_threads(threads)
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["vaelab_config"]["objective"] = {"_target_": "examples.free_bits.FreeBitsVAE", "free_nats": 0.25, "kl_warmup_steps": 0}
    custom = tmp_path / "custom.ckpt"
    torch.save(checkpoint, custom)
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    evaluate = ("eval", "metrics=mig", "metrics.suite.mig.num_train=200", "images.num_images=2", "logger=none")

    refused = call_vaelab(*evaluate, f"ckpt={custom}", f"hydra.run.dir={tmp_path / 'refused'}", **cli)
    assert refused.returncode == 2
    assert vaelab_errors(refused.stderr) == [
        f"vaelab: error: ckpt={custom}: refused: vaelab_config.objective._target_ is 'examples.free_bits.FreeBitsVAE', "
        "which vaelab does not ship (conf/objective/); if you trust this checkpoint, load it with trust_checkpoint=true"
    ]
    trusted = call_vaelab(*evaluate, f"ckpt={custom}", "trust_checkpoint=true", f"hydra.run.dir={tmp_path / 'trusted'}", **cli)
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert (tmp_path / "trusted" / "images").is_dir()  # the pictures of eval, from the same checkpoint
    with pytest.raises(UserError, match="trust_checkpoint=True"):
        VAEModule.load_from_checkpoint(custom)
    assert type(VAEModule.load_from_checkpoint(custom, trust_checkpoint=True).objective).__name__ == "FreeBitsVAE"

    # Today's checkpoint itself loads on every path without trust (the resume through Lightning's read).
    assert call_vaelab(*evaluate, f"ckpt={last}", f"hydra.run.dir={tmp_path / 'eval'}", **cli).returncode == 0
    assert not VAEModule.load_from_checkpoint(last).training
    # A validation set no machine holds, stored in a checkpoint: eval's pictures refuse it in one line.
    huge = {**checkpoint, "vaelab_config": {**checkpoint["vaelab_config"], "objective": torch.load(last, weights_only=True)["vaelab_config"]["objective"],
                                            "data": {**checkpoint["vaelab_config"]["data"], "val_size": 10**12}}}  # fmt: skip
    torch.save(huge, tmp_path / "huge.ckpt")
    result = call_vaelab(*evaluate, f"ckpt={tmp_path / 'huge.ckpt'}", f"hydra.run.dir={tmp_path / 'huge'}", **cli)
    assert result.returncode == 2 and "the checkpoint's data.val_size=1000000000000: its validation set" in vaelab_errors(result.stderr)[0]
    resumed = call_vaelab("train", *TINY, "trainer.max_steps=4", "resume=auto", f"hydra.run.dir={run_dir}", **cli)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert torch.load(last, weights_only=True)["global_step"] == 4

    marker = tmp_path / "MARKER"
    checkpoint["vaelab_config"]["seed"] = Payload(marker)
    torch.save(checkpoint, custom)
    for args in ((*evaluate, f"ckpt={custom}", f"hydra.run.dir={tmp_path / 'again'}"),
                 ("train", *TINY, f"resume={custom}", "trust_checkpoint=true")):  # fmt: skip
        result = call_vaelab(*args, "trust_checkpoint=true", **cli)
        assert result.returncode == 2 and "its pickle needs tests.test_security.make_marker" in result.stderr
    with pytest.raises(UserError, match="its pickle needs"):
        VAEModule.load_from_checkpoint(custom, trust_checkpoint=True)
    assert not marker.exists()


def test_what_vaelab_saves_in_a_checkpoint_is_plain(tmp_path):
    """A config given as OmegaConf nodes, numpy numbers or paths (a notebook's VAEModule) is saved
    as plain values, so the checkpoint reads back weights-only."""
    from omegaconf import OmegaConf

    from vaelab.checkpoint import load_checkpoint
    from vaelab.module import VAEModule

    config = checkpoint_dict()["vaelab_config"]
    inputs = {"image_shape": np.array([1, 64, 64]), "binary_data": np.bool_(True)}
    for given in (OmegaConf.create(config), config | {"beta": np.float64(2.0), "where": tmp_path, "sizes": np.arange(3)}):
        module = VAEModule(torch.nn.Linear(1, 1), torch.nn.Identity(), config=given, model_inputs=inputs)
        saved = {"state_dict": {}}
        module.on_save_checkpoint(saved)
        torch.save(saved, tmp_path / "notebook.ckpt")
        loaded = load_checkpoint(tmp_path / "notebook.ckpt")
        assert loaded["vaelab_model_inputs"] == {"image_shape": [1, 64, 64], "binary_data": True}
        assert loaded["vaelab_config"]["model"] == config["model"]
    assert {key: loaded["vaelab_config"][key] for key in ("beta", "where", "sizes")} == {"beta": 2.0, "where": str(tmp_path), "sizes": [0, 1, 2]}


def test_an_objective_added_to_the_config_groups_is_allowed_with_no_list_edited(tmp_path, monkeypatch):
    from vaelab import checkpoint

    conf = tmp_path / "conf"
    shutil.copytree(checkpoint.CONFIG_DIR, conf)
    (conf / "objective" / "weak.yaml").write_text("_target_: vaelab.objectives.weak.WeakVAE\nk: 1\n")
    stored = checkpoint_dict(objective={"_target_": "vaelab.objectives.weak.WeakVAE", "k": 1})["vaelab_config"]
    with pytest.raises(UserError, match="'vaelab.objectives.weak.WeakVAE', which vaelab does not ship"):
        checkpoint.check_stored_config(stored, "ckpt=x")
    monkeypatch.setattr(checkpoint, "CONFIG_DIR", str(conf))
    checkpoint.shipped_targets.cache_clear()
    try:
        checkpoint.check_stored_config(stored, "ckpt=x")  # no error: conf/objective/weak.yaml names it
    finally:
        monkeypatch.undo()
        checkpoint.shipped_targets.cache_clear()
    assert os.path.samefile(checkpoint.CONFIG_DIR, Path(checkpoint.__file__).parent / "conf")
