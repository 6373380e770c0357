"""Training data made on the training device: the same images, bit for bit, as on the host."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from tests.conftest import compose_train
from vaelab.data.dsprites import SPRITE_SIZE, ProceduralDSprites, render_sprites
from vaelab.data.pairs import PairSampling
from vaelab.data.stream import GroundTruthDataModule, made_ahead

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def pasted_with_numpy(dataset: ProceduralDSprites, factors: np.ndarray) -> np.ndarray:
    """dSprites as the definition says: the rasterised sprite pasted at (pos_y, pos_x) on black."""
    sprites = render_sprites(dataset.factor_values[1], dataset.factor_values[2])
    canvas = np.zeros((len(factors), 1, 64, 64), dtype=np.float32)
    for image, (shape, scale, orientation, x, y) in zip(canvas, factors):
        image[0, y : y + SPRITE_SIZE, x : x + SPRITE_SIZE] = sprites[shape, scale, orientation]
    return canvas


@pytest.mark.parametrize("device", DEVICES)
def test_dsprites_rendered_on_a_device_are_the_host_images_bit_for_bit(device):
    dataset = ProceduralDSprites()
    factors = dataset.sample_factors(3000, np.random.default_rng(0))
    factors[:4, 3:] = [[0, 0], [31, 31], [0, 31], [31, 0]]  # the canvas's corners
    on_device = dataset.render(torch.as_tensor(factors, device=device))
    assert on_device.device.type == device and on_device.dtype == torch.float32
    assert np.array_equal(on_device.cpu().numpy(), pasted_with_numpy(dataset, factors))
    assert torch.equal(on_device.cpu(), dataset.images(factors))
    assert torch.equal(dataset.images_on(factors, device).cpu(), dataset.images(factors))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["color_dsprites", "noisy_dsprites"])
def test_the_colour_and_noise_variants_render_on_a_device_as_their_definition_says(device, variant):
    """Each image's colour or noise comes from its own numpy stream, drawn on the host; the
    image is composed wherever the factors are: the same bits as the definition, on any device."""
    from vaelab.data.dsprites import ColorDSprites, NoisyDSprites, per_image_generator

    dataset = {"color_dsprites": ColorDSprites, "noisy_dsprites": NoisyDSprites}[variant](variant_seed=7)
    factors = dataset.sample_factors(200, np.random.default_rng(1))
    shapes = pasted_with_numpy(dataset, factors)
    streams = [per_image_generator(7, int(i)) for i in dataset.factors_to_index(factors)]
    if variant == "color_dsprites":
        expected = shapes * np.stack([rng.uniform(0.5, 1.0, 3).astype(np.float32) for rng in streams])[:, :, None, None]
    else:
        expected = np.minimum(shapes + np.stack([rng.random((3, 64, 64), dtype=np.float32) for rng in streams]), 1.0)
    assert dataset.renders_on_device
    assert np.array_equal(dataset.images(factors).numpy(), expected)
    on_device = dataset.images_on(factors, device)
    assert on_device.device.type == device and torch.equal(on_device.cpu(), dataset.images(factors))


@pytest.mark.parametrize(
    ("dataset", "pairs"),
    [("dsprites", None), ("dsprites", PairSampling.from_config({"k": 1}, (3, 6, 40, 32, 32))), ("noisy_dsprites", None)],
)
def test_batches_rendered_after_the_transfer_are_the_batches_of_the_host(dataset, pairs):
    """The stream without images (with a variant's draws), rendered by the data module's hook,
    gives the host's batches."""
    from vaelab.data.dsprites import NoisyDSprites

    make = {"dsprites": ProceduralDSprites, "noisy_dsprites": NoisyDSprites}[dataset]
    host, on_device = (GroundTruthDataModule(make(), 16, seed=3, pairs=pairs, render_on_device=flag)
                       for flag in (False, True))  # fmt: skip
    host_batches, device_batches = iter(host.train_dataloader()), iter(on_device.train_dataloader())
    for _ in range(3):
        expected, batch = next(host_batches), next(device_batches)
        assert "images" not in batch
        batch = on_device.on_after_batch_transfer(batch, 0)
        assert batch.keys() == expected.keys() and batch["step"] == expected["step"]
        assert torch.equal(batch["factors"], expected["factors"]) and torch.equal(batch["images"], expected["images"])


def test_a_dataset_that_cannot_render_on_a_device_is_copied_there():
    from examples.bars import Bars  # images from numpy alone: no render

    dataset = Bars()
    factors = dataset.sample_factors(4, np.random.default_rng(0))
    assert not dataset.renders_on_device
    assert torch.equal(dataset.images_on(factors, "cpu"), dataset.images(factors))
    module = GroundTruthDataModule(dataset, 4, render_on_device=True)
    assert "images" in next(iter(module.train_dataloader()))  # the host renders it, as before


def test_batches_made_ahead_on_a_thread_come_in_order_and_its_errors_reach_the_consumer():
    def numbered(fail_at=None):
        for step in range(6):
            if step == fail_at:
                raise ValueError(f"batch {step} is broken")
            yield {"images": torch.full((2, 3), float(step)), "step": step}

    pin = torch.cuda.is_available()
    made = list(made_ahead(numbered(), depth=2, pin_memory=pin))
    assert [batch["step"] for batch in made] == list(range(6))
    assert all(torch.equal(batch["images"], torch.full((2, 3), float(i))) for i, batch in enumerate(made))
    assert all(batch["images"].is_pinned() == pin for batch in made)
    broken = made_ahead(numbered(fail_at=3), depth=2, pin_memory=False)
    assert [next(broken)["step"] for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="batch 3 is broken"):
        next(broken)


class RenderOnDevice(pl.Callback):
    """Forces the device path (rendering after the transfer) on the CPU."""

    def setup(self, trainer, pl_module, stage) -> None:
        trainer.datamodule.render_on_device = True


def test_a_run_rendered_after_the_transfer_trains_exactly_like_one_rendered_on_the_host(tmp_path):
    from vaelab.train import train

    run = [
        "model=mlp", "model.hidden=[32]", "data.val_size=64", "metrics=none", "information.num_samples=64",
        "images.num_images=0", "logger=none", "trainer.max_steps=12", "trainer.log_every_n_steps=4",
        "trainer.val_check_interval=6", "metrics@periodic_metrics=none", "information.every_n_steps=6",
    ]  # fmt: skip
    train(compose_train(run, tmp_path / "host"))
    train(compose_train(run, tmp_path / "device"), extra_callbacks=[RenderOnDevice()])
    host, device = (torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
                    for name in ("host", "device"))  # fmt: skip
    assert host.keys() == device.keys() and all(torch.equal(host[key], device[key]) for key in host)


@pytest.mark.parametrize("device", DEVICES)
def test_metrics_encode_images_rendered_on_the_device_to_the_host_codes(device):
    from vaelab.metrics.representation import CachedEncoder

    def encode(images):  # a code per image that any changed pixel would change
        return (images.flatten(1) * torch.arange(1, 4097, device=images.device)).sum(1, keepdim=True).cpu().numpy()

    dataset = ProceduralDSprites()
    factors = dataset.sample_factors(600, np.random.default_rng(1))
    host, on_device = CachedEncoder(dataset, encode, 256), CachedEncoder(dataset, encode, 256, render_on=device)
    assert on_device.render_on == device
    assert np.array_equal(host(factors), on_device(factors))
