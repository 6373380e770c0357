"""The training step never waits for the host on steps that write nothing, and the non-finite
guard, decided on the device, still keeps its guarantees (docs/errors.md)."""

from __future__ import annotations

import collections
import json
import traceback

import pytest
import pytorch_lightning as pl
import torch

from tests.conftest import compose_train

TINY_RUN = [
    "model=mlp", "model.hidden=[32]", "data.val_size=64", "metrics=none", "information.num_samples=0",
    "images.num_images=0", "logger=none", "trainer.max_steps=20", "trainer.log_every_n_steps=5",
    "trainer.val_check_interval=10", "checkpoint.every_n_steps=10", "trainer.enable_progress_bar=true",
]  # fmt: skip

# What makes the host wait for a GPU: every way a tensor's value reaches Python.
HOST_READS = ("__bool__", "item", "cpu", "tolist", "__float__", "__int__", "__index__", "numpy")


class HostReadCounter(pl.Callback):
    """Counts HOST_READS from the end of one step to the end of the next, when neither writes
    anything (no logging; checkpoints and validation fall on logging steps here): the next
    batch's fetch and rendering, its transfer and every hook of the step are inside."""

    def __init__(self) -> None:
        self.quiet_steps: collections.Counter = collections.Counter()
        self.logging_steps: collections.Counter = collections.Counter()
        self.where: collections.Counter = collections.Counter()
        self.counting: collections.Counter | None = None
        self.quiet_steps_seen = 0

    def read(self, name: str) -> None:
        if self.counting is not None:
            self.counting[name] += 1
            if self.counting is self.quiet_steps:
                frames = traceback.extract_stack()[-5:-2]
                self.where[" < ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in reversed(frames))] += 1

    def on_train_start(self, trainer, pl_module) -> None:
        self._choose(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._choose(trainer)

    def _choose(self, trainer) -> None:
        """At the end of step s - 1: count step s among the quiet ones if neither it nor step
        s - 1 logs (what s - 1 logs is written after this hook)."""
        step, every = trainer.global_step, trainer.log_every_n_steps
        quiet = 0 < step < trainer.max_steps and (step + 1) % every != 0 and step % every != 0
        self.counting = self.quiet_steps if quiet else self.logging_steps
        self.quiet_steps_seen += quiet

    def on_validation_start(self, trainer, pl_module) -> None:
        self._paused, self.counting = self.counting, None

    def on_validation_end(self, trainer, pl_module) -> None:
        self.counting = self._paused

    def on_train_end(self, trainer, pl_module) -> None:
        self.counting = None


@pytest.fixture
def host_reads(monkeypatch):
    counter = HostReadCounter()
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            counter.read(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counter


@pytest.mark.parametrize(("objective", "render_on_device"), [("betavae", False), ("betavae", True), ("factorvae", True), ("adagvae", True)])
def test_steps_that_write_nothing_never_read_a_tensor_on_the_host(tmp_path, host_reads, objective, render_on_device):
    """render_on_device: images rendered after the transfer, as on a GPU (tests/test_device_data.py)."""
    from tests.test_device_data import RenderOnDevice
    from vaelab.train import train

    overrides = [f"objective={objective}"]
    if objective == "factorvae":
        overrides += ["objective.discriminator_hidden=32", "objective.discriminator_layers=2"]
    callbacks = [host_reads, *([RenderOnDevice()] if render_on_device else [])]
    train(compose_train([*TINY_RUN, *overrides], tmp_path), extra_callbacks=callbacks)
    assert host_reads.quiet_steps_seen == 12  # steps 1-3, 6-8, 11-13, 16-18
    assert sum(host_reads.logging_steps.values()) > 0  # the counting works: logging reads values
    assert not host_reads.quiet_steps, host_reads.where.most_common(5)


class PoisonGradient(pl.Callback):
    """Makes one gradient NaN at step ``at`` and records the weights and Adam's state around it."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.at:
            next(p for p in pl_module.model.parameters() if p.grad is not None).grad[0] = float("nan")

    def on_train_start(self, trainer, pl_module) -> None:
        self.module, self.optimizer = pl_module, trainer.optimizers[0]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.states[trainer.global_step] = self.snapshot()  # after the update of step global_step - 1

    def snapshot(self) -> dict[str, torch.Tensor]:
        """The weights, and Adam's first moments and step counts."""
        parameters = list(self.module.parameters())
        state = {f"weight{i}": p.detach().clone() for i, p in enumerate(parameters)}
        return state | {f"{key}{i}": self.optimizer.state[p][key].clone() for i, p in enumerate(parameters)
                        for key in ("exp_avg", "step") if p in self.optimizer.state}  # fmt: skip


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize("fused", [True, False])
def test_a_non_finite_gradient_is_skipped_on_the_device_and_counted(tmp_path, fused):
    """Skip mode: step 6 (not a logging step) changes nothing, the steps around it do."""
    from vaelab.train import train

    poison = PoisonGradient(at=6)
    train(compose_train([*TINY_RUN, "on_non_finite=skip", f"optimizer.fused={fused}"], tmp_path), extra_callbacks=[poison])
    states = poison.states
    assert same_state(states[6], states[7])  # the update of step 6 was not applied, Adam's step count included
    assert not same_state(states[5], states[6]) and not same_state(states[7], states[8])
    final = json.loads((tmp_path / "metrics.json").read_text())["final"]
    assert final["train/skipped_steps"] == 1


def test_a_stopped_run_never_applies_an_update_after_its_non_finite_step(tmp_path):
    """Stop mode: the error comes at the next step that writes something (the checkpoint at
    step 10), names step 6 and the gradient, and no update after step 6 changed anything."""
    from vaelab.errors import TrainingDiverged
    from vaelab.train import train

    poison = PoisonGradient(at=6)
    with pytest.raises(TrainingDiverged, match=r"non-finite value at step 6 \(gradient of model\.[\w.]+=nan\)"):
        train(compose_train([*TINY_RUN, "checkpoint.every_n_steps=5"], tmp_path), extra_callbacks=[poison])
    assert max(poison.states) == 9  # the checkpoint of step 10 raised before this callback's hook
    assert all(same_state(poison.states[6], state) for state in (poison.states[7], poison.states[9], poison.snapshot()))
    assert not same_state(poison.states[5], poison.states[6])
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 5
