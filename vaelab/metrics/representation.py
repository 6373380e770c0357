"""Ways to turn factor vectors into codes for the metrics (``represent`` functions).

- :func:`encoder_representation`: the posterior means of a VAE, through a
  :class:`CachedEncoder` and :class:`MeanEncoder` (the fast inference path); used by
  ``vaelab eval ckpt=`` and by the training callback alike.
- :class:`CachedEncoder`: renders and encodes images of a ground-truth dataset,
  each distinct image at most once (metrics draw factor vectors with replacement,
  and a suite draws millions of them over a grid of a few hundred thousand).
- :class:`LookupRepresentation`: precomputed codes for every point of a grid.
- :func:`load_codes_file`: the ``vaelab eval codes=FILE.npz`` format.
"""

from __future__ import annotations

import copy
import os
import time
import zipfile
from typing import Callable

import numpy as np

from vaelab.data.grid import FactorGrid, grid_rows, read_factor_labels
from vaelab.device import native_bf16_cpu
from vaelab.errors import UserError, first_line

EncodeImages = Callable[..., np.ndarray]  # float32 torch tensor (n, C, H, W) -> (n, D)

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device) -> str:
    """``auto``: bf16 on a CPU that computes it natively (faster than fp32 there, every score
    within 0.005 of fp32), fp32 anywhere else: emulated bf16 is far slower, and a GPU's fp32
    is fast already (docs/metrics.md, "Encoding")."""
    if precision not in PRECISIONS:
        raise UserError(f"metrics.encode_precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16" if getattr(device, "type", str(device)) == "cpu" and native_bf16_cpu() else "fp32"


def code_table_bytes(grid_size: int, num_dims: int) -> int:
    """The memory of :class:`CachedEncoder`'s code table: one float64 code per point of the grid."""
    return grid_size * num_dims * 8


class CachedEncoder:
    """``represent`` for a dataset with ``images_at``: encode each distinct flat index once.

    ``num_encoded`` counts the images passed to ``encode_images`` so far;
    ``encode_seconds`` is the time spent rendering and encoding them. ``render_on``: a device
    (a GPU) where the dataset renders the images itself, if it can (``renders_on_device``),
    instead of on the host and copied.
    """

    def __init__(self, dataset, encode_images: EncodeImages, batch_size: int = 256, render_on=None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.dataset = dataset
        self.encode_images = encode_images
        self.batch_size = batch_size
        self.render_on = render_on if render_on is not None and getattr(dataset, "renders_on_device", False) else None
        self.num_encoded = 0
        self.encode_seconds = 0.0
        self._grid_size = int(np.prod(dataset.factor_sizes, dtype=np.int64))
        self._cached = np.zeros(self._grid_size, dtype=bool)
        self._codes: np.ndarray | None = None  # (grid size, D), allocated on first encode

    def __call__(self, factors: np.ndarray) -> np.ndarray:
        index = self.dataset.factors_to_index(np.asarray(factors, dtype=np.int64))
        self.encode(index)
        if self._codes is None:  # nothing requested at all
            return np.zeros((0, 0))
        return self._codes[index]

    def encode(self, index: np.ndarray) -> None:
        """Encode the images of the flat indices ``index`` that are not cached yet."""
        needed = np.zeros(self._grid_size, dtype=bool)
        needed[np.asarray(index, dtype=np.int64)] = True  # a mask: O(grid), no sort of millions
        missing = np.flatnonzero(needed & ~self._cached)
        started = time.perf_counter()
        for start in range(0, len(missing), self.batch_size):
            self._encode(missing[start : start + self.batch_size])
        self.encode_seconds += time.perf_counter() - started

    def _encode(self, index: np.ndarray) -> None:
        if self.render_on is not None:
            images = self.dataset.images_on(self.dataset.index_to_factors(index), self.render_on)
        else:
            images = self.dataset.images_at(index)
        codes = np.asarray(self.encode_images(images))
        if codes.ndim != 2 or codes.shape[0] != len(index):
            raise ValueError(f"encode_images returned shape {codes.shape} for {len(index)} images")
        if self._codes is None:
            self._codes = np.zeros((self._grid_size, codes.shape[1]))
        self._codes[index] = codes  # float32 -> float64 exactly, in the copy
        self._cached[index] = True
        self.num_encoded += len(index)


class MeanEncoder:
    """``encode_images`` for a VAE: float32 images -> posterior means ``model.posterior(x)[0]`` (n, D).

    Works on a private copy of the model in eval mode (the caller's model, e.g. one in
    training, is left as it is), under ``torch.inference_mode``, and returns float32
    codes (the cache stores them as float64, exactly).

    ``precision``:

    - ``"fp32"`` (default): the codes are bit for bit those of ``model.encode`` in
      float32.
    - ``"bf16"``: convolutions and their activations in bfloat16 under autocast; every
      ``nn.Linear`` (so the codes) stays float32. Faster than fp32 on CPUs with AVX-512 BF16,
      far slower without them; scores move by up to a few thousandths (docs/metrics.md,
      "Encoding", has the figures).
    - ``"auto"`` (the configs' default, ``metrics.encode_precision``): bf16 on a CPU
      with native bfloat16, fp32 elsewhere (:func:`resolve_precision`).

    The memory layout is the model's own (``model.channels_last`` of the conv model), so fp32
    codes are those of training's forward pass.
    """

    def __init__(self, model, device=None, precision: str = "fp32") -> None:
        import torch
        from torch import nn

        from vaelab.models.conv import fuse_conv_relu_for_inference

        first = next(iter(model.parameters()), None)
        self.device = torch.device(device) if device is not None else (first.device if first is not None else torch.device("cpu"))
        self.dtype = first.dtype if first is not None else torch.float32
        self.precision = precision = resolve_precision(precision, self.device)
        self.model = copy.deepcopy(model).to(self.device).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        if precision == "bf16":
            for module in self.model.modules():
                if isinstance(module, nn.Linear):
                    _float32_forward(module, self.device.type)
        elif self.device.type == "cpu" and self.dtype == torch.float32:
            fuse_conv_relu_for_inference(self.model)  # same codes, bit for bit

    def __call__(self, images) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = images.to(device=self.device, dtype=self.dtype, non_blocking=True)
            if self.precision == "bf16":
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    mu = self.model.posterior(x)[0]
            else:
                mu = self.model.posterior(x)[0]
            return mu.float().cpu().numpy()


def _float32_forward(module, device_type: str) -> None:
    """Run ``module`` (a private copy's layer) outside autocast, on float32 inputs."""
    import torch

    forward = module.forward

    def forward_float32(x, *args, **kwargs):
        with torch.autocast(device_type, enabled=False):
            return forward(x.float(), *args, **kwargs)

    module.forward = forward_float32


def encoder_representation(model, dataset, device=None, *, batch_size: int = 1024, precision: str = "fp32") -> CachedEncoder:
    """``represent`` scoring a VAE's posterior means: each needed image of ``dataset`` encoded once.

    ``model`` has ``encode(images) -> (mu, logvar)``; ``device`` defaults to the model's.
    The one encoding path of ``vaelab eval ckpt=`` and of the training callback.
    """
    encode = MeanEncoder(model, device, precision)
    # On a GPU the images are rendered there (the same bits); on the CPU as they always were.
    return CachedEncoder(dataset, encode, batch_size, render_on=encode.device if encode.device.type != "cpu" else None)


class LookupRepresentation:
    """``represent`` from precomputed codes of a full grid (rows in any order)."""

    def __init__(self, grid: FactorGrid, factors: np.ndarray, codes: np.ndarray) -> None:
        factors = np.asarray(factors, dtype=np.int64)
        codes = np.asarray(codes, dtype=np.float64)
        if factors.ndim != 2 or codes.ndim != 2 or len(factors) != len(codes):
            raise ValueError(f"factors {factors.shape} and codes {codes.shape} must be (N, K) and (N, D)")
        grid_rows(factors, grid.factor_sizes, grid.factor_names, ValueError)  # each grid point once
        self.grid = grid
        self.table = np.empty_like(codes)
        self.table[grid.factors_to_index(factors)] = codes

    @property
    def num_codes(self) -> int:
        return self.table.shape[1]

    def __call__(self, factors: np.ndarray) -> np.ndarray:
        return self.table[self.grid.factors_to_index(factors)]


def load_codes_file(path: str | os.PathLike) -> tuple[FactorGrid, LookupRepresentation]:
    """Read a codes file: ``factors`` (N, K) ints covering a full grid, ``codes`` (N, D).

    Optional arrays: ``factor_sizes`` (K,) and ``factor_names`` (K,) strings. Any problem
    raises :class:`UserError` with one line naming the file.
    """

    def fail(problem: str) -> UserError:
        return UserError(f"codes file {os.fspath(path)}: {problem}")

    if not os.path.isfile(path):
        raise fail("no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise fail(f"cannot be read as an .npz archive ({first_line(err)})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array
        raise fail("not an .npz archive (save it with np.savez(path, factors=..., codes=...))")
    try:
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise fail(f"has an unreadable array ({first_line(err)})") from None

    missing = [name for name in ("factors", "codes") if name not in arrays]
    if missing:
        raise fail(f"missing array(s) {', '.join(missing)}; found {', '.join(sorted(arrays)) or 'none'}")
    factors, factor_names, factor_sizes = read_factor_labels(arrays.__getitem__, arrays, fail)
    codes = arrays["codes"]
    if codes.ndim != 2 or codes.shape[1] == 0:
        raise fail(f"codes must be a 2-D (N, D) array, got shape {codes.shape}")
    if codes.dtype.kind not in "iuf":
        raise fail(f"codes must be numeric, got dtype {codes.dtype}")
    if len(codes) != len(factors):
        raise fail(f"codes has {len(codes)} rows but factors has {len(factors)}")
    if not np.all(np.isfinite(codes)):
        raise fail(f"codes contain {int((~np.isfinite(codes)).sum())} NaN or infinite values")
    grid_rows(factors, factor_sizes, factor_names, fail)
    grid = FactorGrid(
        factor_names=factor_names,
        factor_sizes=factor_sizes,
        factor_values=tuple(np.arange(s, dtype=np.float64) for s in factor_sizes),
    )
    return grid, LookupRepresentation(grid, factors, codes)
