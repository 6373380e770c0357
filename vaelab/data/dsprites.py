"""Procedural dSprites: the exact factor grid of Matthey et al. (2017), rendered here.

Factors (the colour factor of size 1 is not a ground-truth factor and is dropped):

    shape        3  {square, ellipse, heart}
    scale        6  linspace(0.5, 1)
    orientation 40  linspace(0, 2*pi)   (0 and 2*pi both present, as in the original)
    pos_x       32  linspace(0, 1)
    pos_y       32  linspace(0, 1)      (varies fastest in the flat index)

737,280 binary 64x64 images. The 720 centred sprites (shape x scale x orientation)
are rasterised once with 4x4 supersampling; an image is a sprite pasted at an
integer offset: pos_x moves it right, pos_y moves it down, one pixel per step.
Nothing is downloaded and the full set is never materialised.

Two variants from the study of Locatello et al. (2019), as in disentanglement_lib
(``data/ground_truth/dsprites.py``: ColorDSprites, NoisyDSprites); 3 channels, not binary:

    color_dsprites  the sprite in a random colour (each channel uniform in [0.5, 1])
                    on black; the colour is noise, not a factor
    noisy_dsprites  a white sprite on uniform noise in [0, 1) (per pixel and channel)

disentanglement_lib draws the colour/noise afresh whenever an image is made.
Here it is a fixed function of the image's flat index (and ``variant_seed``), so
an image always looks the same: the validation set, the metrics and every
evaluation see the same pixels, and scores are repeatable.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from vaelab.data.grid import FactorGrid, GroundTruthDataset
from vaelab.errors import UserError

IMAGE_SIZE = 64
SPRITE_SIZE = 32  # centred sprites live in a 32x32 patch; 32 positions fill the remaining span
SHAPES = ("square", "ellipse", "heart")


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in sprite coordinates: u right, v up, unit ~ half the extent at scale 1."""
    if shape == "square":
        return (np.abs(u) <= 0.62) & (np.abs(v) <= 0.62)
    if shape == "ellipse":
        return (u / 0.88) ** 2 + (v / 0.44) ** 2 <= 1.0
    if shape == "heart":
        # (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0; scaled to the square's footprint.
        x, y = u / 0.68, v / 0.68 + 0.15
        return (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0
    raise ValueError(f"unknown shape {shape!r}")


def render_sprites(scales: np.ndarray, orientations: np.ndarray, supersample: int = 4) -> np.ndarray:
    """All centred sprites: bool array (shapes, scales, orientations, 32, 32)."""
    n = SPRITE_SIZE * supersample
    # Sub-pixel sample centres in sprite units: one unit is 13 px, so the largest
    # sprite still fits the 32x32 patch at every rotation.
    coords = ((np.arange(n) + 0.5) / n * 2.0 - 1.0) * (SPRITE_SIZE / 2) / 13.0
    rows, xx = np.meshgrid(coords, coords, indexing="ij")
    yy = -rows  # image rows grow downwards; sprite coordinates have y up
    # Rotate the sampling grid by -angle (the sprite counter-clockwise by +angle), undo the scale;
    # all scales and orientations at once: (scales, orientations, n, n).
    cos = np.cos(orientations)[None, :, None, None]
    sin = np.sin(orientations)[None, :, None, None]
    scale = np.asarray(scales)[:, None, None, None]
    u = (cos * xx + sin * yy) / scale
    v = (-sin * xx + cos * yy) / scale
    out = np.empty((len(SHAPES), len(scales), len(orientations), SPRITE_SIZE, SPRITE_SIZE), dtype=bool)
    for s, shape in enumerate(SHAPES):
        inside = _shape_mask(shape, u, v).reshape(
            len(scales), len(orientations), SPRITE_SIZE, supersample, SPRITE_SIZE, supersample
        )
        out[s] = inside.mean(axis=(3, 5)) >= 0.5  # pixel on when at least half its area is inside
    return out


@functools.lru_cache(maxsize=1)
def _centred_sprites(scales: tuple[float, ...], orientations: tuple[float, ...]) -> torch.Tensor:
    """The 720 sprites as float32 (shape x scale x orientation, 32, 32), rasterised once per
    process: every run of a sweep in one process (Hydra's basic launcher) shares them."""
    sprites = render_sprites(np.asarray(scales), np.asarray(orientations))
    return torch.from_numpy(sprites.reshape(-1, SPRITE_SIZE, SPRITE_SIZE).astype(np.float32))


class ProceduralDSprites(GroundTruthDataset):
    """dSprites generated on the fly, with the original file's flat-index order."""

    name = "dsprites"
    binary = True
    image_shape = (1, IMAGE_SIZE, IMAGE_SIZE)

    def __init__(self, correlation=None) -> None:
        self.grid = FactorGrid(
            factor_names=("shape", "scale", "orientation", "pos_x", "pos_y"),
            factor_sizes=(3, 6, 40, 32, 32),
            factor_values=(
                np.arange(1.0, 4.0),  # the original labels shapes 1, 2, 3
                np.linspace(0.5, 1.0, 6),
                np.linspace(0.0, 2.0 * math.pi, 40),
                np.linspace(0.0, 1.0, 32),
                np.linspace(0.0, 1.0, 32),
            ),
        )
        self._sprites = _centred_sprites(tuple(self.grid.factor_values[1]), tuple(self.grid.factor_values[2]))
        self._sprites_on: dict[torch.device, torch.Tensor] = {self._sprites.device: self._sprites}
        self.configure_correlation(correlation)

    def images(self, factors: np.ndarray) -> torch.Tensor:
        return self.images_on(factors, torch.device("cpu"))  # the variants' draws too

    def render(self, factors: torch.Tensor) -> torch.Tensor:
        return self._paste_sprites(factors)

    def _paste_sprites(self, factors: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, 64) images of (N, K) int64 factor indices, on the factors' device. One gather
        of pre-rasterised sprites and one scatter: exact copies of 0/1 values, the same bits on
        any device."""
        device = factors.device
        if device not in self._sprites_on:  # 720 x 32 x 32 floats (2.9 MB), copied once per device
            self._sprites_on[device] = self._sprites.to(device)
        n = factors.shape[0]
        sprites = self._sprites_on[device][(factors[:, 0] * 6 + factors[:, 1]) * 40 + factors[:, 2]]
        # Flat canvas index of every sprite pixel; one scatter places the whole batch
        # (far cheaper than advanced-index assignment). pos_y moves down, pos_x right.
        offsets = torch.arange(SPRITE_SIZE, device=device)
        rows = (factors[:, 4, None] + offsets)[:, :, None]
        cols = (factors[:, 3, None] + offsets)[:, None, :]
        target = (rows * IMAGE_SIZE + cols).reshape(n, -1)
        canvas = torch.zeros(n, IMAGE_SIZE * IMAGE_SIZE, device=device).scatter_(1, target, sprites.reshape(n, -1))
        return canvas.view(n, 1, IMAGE_SIZE, IMAGE_SIZE)


def per_image_generator(variant_seed: int, index: int) -> np.random.Generator:
    """The random stream of one image: Philox keyed by (variant_seed, flat index).

    Counter-based and keyed directly (no seed hashing): every image has its own
    independent stream, a few microseconds to set up, whatever order images come in.
    """
    return np.random.Generator(np.random.Philox(key=np.array([variant_seed, index], dtype=np.uint64)))


class _ProceduralVariant(ProceduralDSprites):
    """dSprites with per-image randomness that is a function of the flat index (not a factor).
    Each image's colour or noise is drawn on the host from its numpy Philox stream
    (:meth:`draws`); the image is composed with torch wherever the factors are (:meth:`render`),
    so on a GPU only the draws travel, and any device makes the host's images bit for bit."""

    binary = False
    image_shape = (3, IMAGE_SIZE, IMAGE_SIZE)

    def __init__(self, variant_seed: int = 0, correlation=None) -> None:
        if isinstance(variant_seed, bool) or not isinstance(variant_seed, int) or not 0 <= variant_seed < 2**64:
            raise UserError(f"dataset.variant_seed={variant_seed!r}: expected an integer in [0, 2**64)")
        super().__init__(correlation=correlation)
        self.variant_seed = variant_seed

    def _per_image(self, factors: np.ndarray, draw) -> torch.Tensor:
        """``draw(generator)`` with each image's own generator, stacked as a tensor."""
        index = self.factors_to_index(factors)
        return torch.from_numpy(np.stack([draw(per_image_generator(self.variant_seed, int(i))) for i in index]))


class ColorDSprites(_ProceduralVariant):
    """`dataset=color_dsprites`: the sprite in a colour with each channel uniform in [0.5, 1], on black."""

    name = "color_dsprites"

    def draws(self, factors: np.ndarray) -> dict[str, torch.Tensor]:
        return {"colours": self._per_image(factors, lambda rng: rng.uniform(0.5, 1.0, 3).astype(np.float32))}

    def render(self, factors: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
        return self._paste_sprites(factors) * colours[:, :, None, None]  # (N, 1, 64, 64) in {0, 1} coloured


class NoisyDSprites(_ProceduralVariant):
    """`dataset=noisy_dsprites`: a white sprite on uniform noise (per pixel and channel)."""

    name = "noisy_dsprites"

    def draws(self, factors: np.ndarray) -> dict[str, torch.Tensor]:
        return {"noise": self._per_image(factors, lambda rng: rng.random((3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32))}

    def render(self, factors: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return torch.clamp_max(self._paste_sprites(factors) + noise, 1.0)
