"""Pictures of what a model does: reconstruction grids, latent traversals, and an animated traversal.

:func:`model_pictures` makes all three for a model and a few images; :func:`save_and_log`
writes them to ``<run dir>/images/`` (PNG, GIF) and sends them to the loggers that take
images (W&B). Training (callbacks.ImageLogging) and `vaelab eval ckpt=` both use them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from vaelab.errors import write_atomically
from vaelab.information import kl_conditional_per_dim
from vaelab.loggers import tell_run_loggers


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
    mu, _ = model.posterior(images)
    return tile([images, model.mean_image(model.decode(mu))])


@torch.no_grad()
def traversal_rows(
    model, image: torch.Tensor, kl_per_dim: torch.Tensor, steps: int = 9, extent: float = 2.5
) -> tuple[list[int], list[torch.Tensor]]:
    """(dims, rows): the latent dims, most informative (largest KL) first, and for each one
    row of ``steps`` decoded images with z_j swept over [-extent, extent] around the
    posterior mean of ``image`` (1, C, H, W), the other dims held."""
    mu, _ = model.posterior(image)
    order = torch.argsort(kl_per_dim, descending=True).tolist()
    values = torch.linspace(-extent, extent, steps, device=mu.device, dtype=mu.dtype)
    rows = []
    for j in order:
        z = mu.repeat(steps, 1)
        z[:, j] = values
        rows.append(model.mean_image(model.decode(z)))
    return order, rows


def latent_traversal(
    dims: list[int], rows: list[torch.Tensor], kl_per_dim: torch.Tensor, collapsed: float = 0.01
) -> Image.Image:
    """The rows of :func:`traversal_rows` as one picture, each labelled with its dim and KL;
    dims whose KL is below ``collapsed`` nats are labelled as collapsed ("off")."""
    labels = [f"z{j} {float(kl_per_dim[j]):.2f}" if float(kl_per_dim[j]) >= collapsed else f"z{j} off" for j in dims]
    return tile(rows, labels=labels)


def traversal_animation(rows: list[torch.Tensor]) -> list[Image.Image]:
    """Frames of a GIF from the rows of :func:`traversal_rows`: frame t shows column t of
    every row side by side (one tile per latent dim, in the traversal's order), so all dims
    sweep together from -extent to extent and back."""
    steps = rows[0].shape[0]
    columns = [*range(steps), *range(steps - 2, 0, -1)]
    return [tile([torch.stack([row[t] for row in rows])]) for t in columns]


@torch.no_grad()
def model_pictures(model, images: torch.Tensor, steps: int = 9, extent: float = 2.5) -> dict:
    """``reconstructions``, ``traversals`` (PIL images) and ``traversal_animation`` (frames)
    for ``images`` (N, C, H, W); traversals start from the first image. Eval mode inside."""
    was_training = model.training
    model.eval()
    try:
        mu, logvar = model.posterior(images)
        kl_per_dim = kl_conditional_per_dim(mu, logvar).mean(0)
        dims, rows = traversal_rows(model, images[:1], kl_per_dim, steps, extent)
        return {
            "reconstructions": reconstruction_grid(model, images),
            "traversals": latent_traversal(dims, rows, kl_per_dim),
            "traversal_animation": traversal_animation(rows),
        }
    finally:
        model.train(was_training)


def save_and_log(pictures: dict, directory: Path, step: int, loggers=()) -> dict[str, Path]:
    """``<name>_step<step>.png`` (``.gif`` for frame lists) in ``directory``, then to every logger
    (:meth:`~vaelab.loggers.RunLogger.log_picture`; W&B shows an animation as a video) under ``images/<name>``; a logger that fails is told about once
    here and never stops the caller. Returns the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, picture in pictures.items():
        # Written whole or not at all (a full disk: DiskFull, no half picture left behind).
        if isinstance(picture, list):
            path = directory / f"{name}_step{step}.gif"
            write_atomically(path, lambda file, frames=picture: frames[0].save(
                file, format="GIF", save_all=True, append_images=frames[1:], duration=120, loop=0
            ))  # fmt: skip
        else:
            path = directory / f"{name}_step{step}.png"
            write_atomically(path, lambda file, image=picture: image.save(file, format="PNG"))
        paths[name] = path
        tell_run_loggers(loggers, name, lambda logger, key=f"images/{name}", path=path: logger.log_picture(key, path, step))
    return paths
