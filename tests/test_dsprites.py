"""Procedural dSprites: the original grid and index order, and factors that act as they should."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaelab.data.dsprites import ProceduralDSprites
from vaelab.data.stream import TrainingStream, batch_factors


@pytest.fixture(scope="module")
def dsprites() -> ProceduralDSprites:
    return ProceduralDSprites()


def test_grid_is_the_original(dsprites):
    assert dsprites.factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert dsprites.factor_sizes == (3, 6, 40, 32, 32)
    assert len(dsprites) == 737_280
    np.testing.assert_allclose(dsprites.factor_values[1], np.linspace(0.5, 1, 6))
    np.testing.assert_allclose(dsprites.factor_values[2], np.linspace(0, 2 * math.pi, 40))
    np.testing.assert_allclose(dsprites.factor_values[3], np.linspace(0, 1, 32))


def test_flat_index_is_a_bijection_in_the_original_order(dsprites):
    index = np.arange(len(dsprites))
    factors = dsprites.index_to_factors(index)
    np.testing.assert_array_equal(dsprites.factors_to_index(factors), index)
    assert len(np.unique(factors, axis=0)) == len(dsprites)
    assert factors.min() == 0 and np.all(factors.max(0) == np.array(dsprites.factor_sizes) - 1)
    # pos_y varies fastest, then pos_x, orientation, scale, shape.
    np.testing.assert_array_equal(factors[1], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(factors[32], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(factors[32 * 32], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(factors[32 * 32 * 40 * 6], [1, 0, 0, 0, 0])


def _centroid(image: torch.Tensor) -> tuple[float, float]:
    rows, cols = torch.nonzero(image[0], as_tuple=True)
    return rows.double().mean().item(), cols.double().mean().item()


def test_images_are_binary_64x64(dsprites):
    images = dsprites.images(dsprites.sample_factors(32, np.random.default_rng(0)))
    assert images.shape == (32, 1, 64, 64) and images.dtype == torch.float32
    assert set(images.unique().tolist()) == {0.0, 1.0}
    assert torch.all(images.sum((1, 2, 3)) > 0)


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_scale_grows_the_area(dsprites, shape):
    factors = np.array([[shape, scale, 7, 16, 16] for scale in range(6)])
    areas = dsprites.images(factors).sum((1, 2, 3))
    assert torch.all(areas[1:] > areas[:-1])
    # Area grows with the square of the scale (1 -> 0.5 is a factor of about 4).
    assert 3.0 < (areas[-1] / areas[0]).item() < 5.0


def test_positions_move_the_centroid_one_pixel_per_step(dsprites):
    base = np.array([2, 3, 11, 10, 20])
    reference_row, reference_col = _centroid(dsprites.images(base[None])[0])
    for step in (1, 5, 21):
        moved_x = base + np.array([0, 0, 0, step, 0])
        moved_y = base + np.array([0, 0, 0, 0, -step if step < 20 else -20])
        row, col = _centroid(dsprites.images(moved_x[None])[0])
        assert (row, col) == pytest.approx((reference_row, reference_col + step))
        row, col = _centroid(dsprites.images(moved_y[None])[0])
        assert (row, col) == pytest.approx((reference_row + moved_y[4] - base[4], reference_col))


def _principal_angle(image: torch.Tensor) -> float:
    """Angle of the main axis of the pixel cloud (x right, y up), modulo pi."""
    rows, cols = torch.nonzero(image[0], as_tuple=True)
    x, y = cols.double() - cols.double().mean(), -(rows.double() - rows.double().mean())
    return 0.5 * math.atan2(2 * (x * y).mean().item(), ((x * x).mean() - (y * y).mean()).item()) % math.pi


def test_orientation_rotates_the_sprite(dsprites):
    orientations = dsprites.factor_values[2]
    # The ellipse's long axis follows the orientation (counter-clockwise, modulo pi).
    for o in range(0, 40, 3):
        image = dsprites.images(np.array([[1, 5, o, 16, 16]]))[0]
        expected = orientations[o] % math.pi
        difference = abs(_principal_angle(image) - expected)
        assert min(difference, math.pi - difference) < math.radians(4)
    # 0 and 2*pi are both on the grid (as in the original) and render the same heart.
    hearts = dsprites.images(np.array([[2, 5, o, 16, 16] for o in (0, 10, 20, 39)]))
    torch.testing.assert_close(hearts[0], hearts[3])
    assert not torch.equal(hearts[0], hearts[1]) and not torch.equal(hearts[0], hearts[2])
    # Rotating keeps the area (up to rasterisation).
    areas = hearts.sum((1, 2, 3))
    assert (areas.max() / areas.min()).item() < 1.06


def test_training_stream_is_indexed_by_seed_and_step(dsprites):
    first = batch_factors(dsprites, 16, seed=3, step=10)
    np.testing.assert_array_equal(first, batch_factors(dsprites, 16, seed=3, step=10))
    assert not np.array_equal(first, batch_factors(dsprites, 16, seed=3, step=11))
    assert not np.array_equal(first, batch_factors(dsprites, 16, seed=4, step=10))
    # A stream restarted at step k yields exactly what the uninterrupted stream yields at k.
    uninterrupted = iter(TrainingStream(dsprites, 16, seed=3))
    for _ in range(5):
        expected = next(uninterrupted)
    resumed = next(iter(TrainingStream(dsprites, 16, seed=3, start_step=4)))
    assert resumed["step"] == expected["step"] == 4
    torch.testing.assert_close(resumed["images"], expected["images"])
