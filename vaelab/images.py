"""Pictures of what a model does: reconstruction grids and latent traversals (numpy -> PIL).

Both return a PIL image; callers save it as PNG in the run directory and log it to W&B.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

PAD = 2  # pixels between tiles
LABEL_WIDTH = 56  # left margin for row labels in traversals


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, H, W, 3) uint8."""
    array = np.nan_to_num(images.detach().float().clamp(0, 1).cpu().numpy())  # a diverged model draws black
    if array.shape[1] == 1:
        array = np.repeat(array, 3, axis=1)
    return (array.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)


def tile(rows: list[torch.Tensor], scale: int = 2, labels: list[str] | None = None) -> Image.Image:
    """Rows of equally sized images (each (N, C, H, W)) as one grid image, optionally labelled."""
    tiles = [_to_uint8(row) for row in rows]
    height, width = tiles[0].shape[1:3]
    columns = max(len(row) for row in tiles)
    left = LABEL_WIDTH if labels else 0
    canvas = np.full(
        (len(rows) * (height + PAD) + PAD, left + columns * (width + PAD) + PAD, 3), 128, dtype=np.uint8
    )
    for r, row in enumerate(tiles):
        for c, image in enumerate(row):
            y, x = PAD + r * (height + PAD), left + PAD + c * (width + PAD)
            canvas[y : y + height, x : x + width] = image
    picture = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)
    if labels:
        draw = ImageDraw.Draw(picture)
        for r, label in enumerate(labels):
            draw.text((4, (PAD + r * (height + PAD) + height // 2 - 5) * scale), label, fill=(255, 255, 255))
    return picture


@torch.no_grad()
def reconstruction_grid(model, images: torch.Tensor) -> Image.Image:
    """Inputs (top row) above the decoder's mean images for their posterior means (bottom row)."""
    mu, _ = model.encode(images)
    return tile([images, model.mean_image(model.decode(mu))])


@torch.no_grad()
def latent_traversal(
    model, image: torch.Tensor, kl_per_dim: torch.Tensor, steps: int = 9, extent: float = 2.5, collapsed: float = 0.01
) -> Image.Image:
    """One row per latent dim, most informative (largest KL) first: z_j swept over [-extent, extent]
    around the posterior mean of ``image`` (1, C, H, W), the other dims held. Rows of dims whose
    KL is below ``collapsed`` nats are labelled as collapsed."""
    mu, _ = model.encode(image)
    order = torch.argsort(kl_per_dim, descending=True).tolist()
    values = torch.linspace(-extent, extent, steps, device=mu.device, dtype=mu.dtype)
    rows, labels = [], []
    for j in order:
        z = mu.repeat(steps, 1)
        z[:, j] = values
        rows.append(model.mean_image(model.decode(z)))
        kl = float(kl_per_dim[j])
        labels.append(f"z{j} {kl:.2f}" if kl >= collapsed else f"z{j} off")
    return tile(rows, labels=labels)
