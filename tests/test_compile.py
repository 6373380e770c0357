"""trainer.compile: the compiled training step trains like the eager one, within float round-off."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from tests.conftest import compose_train
from vaelab.runfiles import read_history

RUN = [
    "model=mlp", "model.hidden=[32]", "data.val_size=64", "metrics=none", "information.num_samples=0",
    "images.num_images=0", "logger=none", "trainer.max_steps=8", "trainer.log_every_n_steps=2",
    "trainer.val_check_interval=4",
]  # fmt: skip


class KeepModule(pl.Callback):
    def on_train_end(self, trainer, pl_module) -> None:
        self.module = pl_module


@pytest.mark.slow
def test_the_compiled_step_trains_like_the_eager_one(tmp_path):
    from vaelab.train import train

    runs = {}
    for setting in ("false", "true"):
        kept = KeepModule()
        train(compose_train([*RUN, f"trainer.compile={setting}"], tmp_path / setting), extra_callbacks=[kept])
        state = torch.load(tmp_path / setting / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        losses = [entry["train/loss"] for entry in read_history(tmp_path / setting) if "train/loss" in entry]
        runs[setting] = (kept.module, state, losses)
    (eager, eager_state, eager_losses), (compiled, compiled_state, compiled_losses) = runs["false"], runs["true"]
    assert not eager._compiled and set(compiled._compiled) == {"forward"}  # the compiled run used it
    assert eager_state.keys() == compiled_state.keys()  # the checkpoint does not know: same keys
    for key in eager_state:
        torch.testing.assert_close(compiled_state[key], eager_state[key], rtol=1e-4, atol=1e-5)
    assert len(eager_losses) == 4
    torch.testing.assert_close(torch.tensor(compiled_losses), torch.tensor(eager_losses), rtol=1e-5, atol=1e-4)


def test_compile_auto_follows_the_measured_default_and_bad_values_are_refused():
    from vaelab import device
    from vaelab.errors import UserError

    cpu = torch.device("cpu")
    assert device.resolve_compile("auto", cpu) is ("cpu" in device.COMPILED_BY_DEFAULT)
    assert device.resolve_compile(True, cpu) is True and device.resolve_compile(False, cpu) is False
    for bad in ("maybe", 1, None):
        with pytest.raises(UserError, match=r"^trainer.compile=.*: expected auto, true or false$"):
            device.resolve_compile(bad, cpu)
    with pytest.raises(UserError, match=r"^trainer.compile_mode='fast': expected one of default, reduce-overhead, "):
        device.resolve_compile(True, cpu, "fast")
