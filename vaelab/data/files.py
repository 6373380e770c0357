"""Ground-truth datasets read from files: ``dataset=dsprites_file|shapes3d|mpi3d|npz``.

Each file holds one image per point of a full factor grid. The factor grid comes
from the file's labels (or, for MPI3D, from the documented sizes); the pixels
stay on disk and only the rows a batch needs are read (see :mod:`vaelab.data.storage`), unless
``in_memory=True``. Flat indices are always C order over the factor sizes (last
factor fastest); when a file's rows are in another order, a flat-index -> row
table maps between them.

File formats, factor tables, and disk and memory use: docs/datasets.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import partial

import numpy as np
import torch

from vaelab.data.grid import FactorGrid, GroundTruthDataset, grid_rows, read_factor_labels
from vaelab.data.storage import PACK_BITS, StoredArray, file_error, open_source, pixel_array
from vaelab.errors import UserError

log = logging.getLogger("vaelab")


class ImageTable:
    """Rows of a pixel array -> float32 images (n, C, H, W) in [0, 1].

    ``array`` (in memory, or a :class:`StoredArray` on disk) is (N, H, W) or
    (N, H, W, C), uint8 (read as value / 255), bool or float; or, with
    ``packed_width``, binary images packed 8 pixels a byte along the last axis
    (N, H, ceil(W / 8)).
    """

    def __init__(self, array: np.ndarray | StoredArray, packed_width: int | None = None) -> None:
        self.array = array
        self.packed_width = packed_width
        height = array.shape[1]
        width = packed_width if packed_width is not None else array.shape[2]
        channels = array.shape[3] if array.ndim == 4 else 1
        self.image_shape = (channels, height, width)

    def read(self, rows: np.ndarray) -> torch.Tensor:
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")  # ascending rows: consecutive ones are read together
        pixels = np.empty((len(rows), *self.array.shape[1:]), dtype=self.array.dtype)
        if isinstance(self.array, StoredArray):
            pixels[order] = self.array.read_rows(rows[order])
        else:
            pixels[order] = self.array[rows[order]]
        if self.packed_width is not None:
            pixels = np.unpackbits(pixels, axis=-1, count=self.packed_width)
        images = torch.from_numpy(pixels)
        # Channels first while still 1 byte a pixel: the float conversion then runs on contiguous memory.
        images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2).contiguous()
        if pixels.dtype == np.uint8 and self.packed_width is None:
            return images.float().div_(255.0)
        return images.float()


def _check_options(in_memory, cache_dir) -> None:
    if not isinstance(in_memory, bool):
        raise UserError(f"dataset.in_memory={in_memory!r}: expected true or false")
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise UserError(f"dataset.cache_dir={cache_dir!r}: expected a directory path")


def _check_images(path, name: str, shape: tuple[int, ...], rows: int, channels: int | None) -> None:
    """``shape`` must be (rows, H, W) for channels None, else (rows, H, W, channels)."""
    expected = "(N, H, W)" if channels is None else f"(N, H, W, {channels})"
    ndim = 3 if channels is None else 4
    if len(shape) != ndim or (channels is not None and shape[3] != channels):
        raise file_error(path, f"{name} has shape {shape}, expected {expected}")
    if shape[0] != rows:
        raise file_error(path, f"{name} has {shape[0]} images but the factor labels have {rows} rows")


def _check_varying(path, names: Sequence[str], sizes: Sequence[int]) -> None:
    """Every factor must take at least two values: a constant factor has zero entropy (MIG divides by it)."""
    single = [name for name, size in zip(names, sizes) if size < 2]
    if single:
        raise file_error(path, f"factor(s) {', '.join(single)} take a single value: nothing to score; drop them")


class FileDataset(GroundTruthDataset):
    """A full factor grid whose images are rows of a pixel array (on disk or in memory)."""

    def __init__(
        self,
        grid: FactorGrid,
        table: ImageTable,
        row_of_index: np.ndarray | None,
        binary: bool,
        correlation,
        path,
    ) -> None:
        self.grid = grid
        self.image_shape = table.image_shape
        self.binary = binary
        self.path = str(path)
        self._table = table
        self._row_of_index = row_of_index
        self.configure_correlation(correlation)
        log.info(
            "%s: %d images %s from %s (%s), factors %s",
            type(self).__name__, len(grid), "x".join(map(str, self.image_shape)), path,
            "read from disk by rows" if isinstance(table.array, StoredArray) else "in memory",
            ", ".join(f"{n}={s}" for n, s in zip(grid.factor_names, grid.factor_sizes)),
        )  # fmt: skip

    def images(self, factors: np.ndarray) -> torch.Tensor:
        index = self.factors_to_index(factors)
        rows = index if self._row_of_index is None else self._row_of_index[index]
        return self._table.read(rows)


class DSpritesFile(FileDataset):
    """`dataset=dsprites_file`: the original dSprites .npz (deepmind/dsprites-dataset).

    Arrays: ``imgs`` (737280, 64, 64) uint8 in {0, 1}, ``latents_classes`` and
    ``latents_values`` (737280, 6) over color, shape, scale, orientation, pos_x,
    pos_y. The constant colour factor is dropped. The file is
    ``np.savez_compressed``: the pixels are cached once bit-packed (377 MB instead
    of 3 GB) and read from there. ``metadata`` (a pickle) is never read.
    """

    name = "dsprites_file"

    FACTOR_NAMES = ("color", "shape", "scale", "orientation", "pos_x", "pos_y")

    def __init__(self, path, in_memory: bool = False, cache_dir=None, correlation=None) -> None:
        _check_options(in_memory, cache_dir)
        with open_source(path, "npz") as archive:
            for name in ("imgs", "latents_classes", "latents_values"):
                archive.info(name)  # a missing array fails before anything is read
            classes, values = archive.load("latents_classes"), archive.load("latents_values")
            if classes.ndim != 2 or classes.shape[1] != 6 or classes.dtype.kind not in "iu":
                raise file_error(path, f"latents_classes must be (N, 6) integers, got {classes.shape} {classes.dtype}")
            if values.shape != classes.shape or values.dtype.kind not in "iuf":
                raise file_error(path, f"latents_values must be numeric of shape {classes.shape}, got {values.shape}")
            _check_images(path, "imgs", archive.info("imgs").shape, len(classes), channels=None)
            if len(classes) and (classes[:, 0] != classes[0, 0]).any():
                raise file_error(path, "latents_classes column 0 (color) must be constant, as in dSprites")
            factors, values = classes[:, 1:].astype(np.int64), values[:, 1:].astype(np.float64)
            if len(factors) == 0 or (factors < 0).any():
                raise file_error(path, "latents_classes must hold non-negative class indices")
            sizes = tuple(int(s) for s in factors.max(axis=0) + 1)
            names = self.FACTOR_NAMES[1:]
            _check_varying(path, names, sizes)
            row_of_index = grid_rows(factors, sizes, names, partial(file_error, path), "latents_classes")
            factor_values = []
            for k, size in enumerate(sizes):
                column = np.zeros(size)
                column[factors[:, k]] = values[:, k]
                factor_values.append(column)
            width = archive.info("imgs").shape[2]
            pixels = pixel_array(archive, "imgs", in_memory=in_memory, cache_dir=cache_dir, transform=PACK_BITS)
        grid = FactorGrid(names, sizes, tuple(factor_values))
        table = ImageTable(pixels, packed_width=width)
        super().__init__(grid, table, row_of_index, True, correlation, path)


class Shapes3D(FileDataset):
    """`dataset=shapes3d`: 3D Shapes (deepmind/3d-shapes), ``3dshapes.h5``.

    Datasets: ``images`` (480000, 64, 64, 3) uint8 and ``labels`` (480000, 6)
    float64 (factor values). Each label column's distinct values, sorted, are that
    factor's classes: 10, 10, 10, 8, 4, 15 in the released file.
    """

    name = "shapes3d"

    FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")

    def __init__(self, path, in_memory: bool = False, cache_dir=None, correlation=None) -> None:
        _check_options(in_memory, cache_dir)
        with open_source(path, "h5") as h5:
            images = h5.info("images")
            labels = h5.load("labels")
            if labels.ndim != 2 or labels.shape[1] != 6 or labels.dtype.kind not in "iuf":
                raise file_error(path, f"labels must be (N, 6) numbers, got {labels.shape} {labels.dtype}")
            _check_images(path, "images", images.shape, len(labels), channels=3)
            if images.dtype != np.uint8:
                raise file_error(path, f"images must be uint8, got {images.dtype}")
            classes = [np.unique(labels[:, k], return_inverse=True) for k in range(6)]
            values = tuple(np.asarray(unique, dtype=np.float64) for unique, _ in classes)
            factors = np.stack([inverse.reshape(-1) for _, inverse in classes], axis=1)
            sizes = tuple(len(v) for v in values)
            _check_varying(path, self.FACTOR_NAMES, sizes)
            row_of_index = grid_rows(factors, sizes, self.FACTOR_NAMES, partial(file_error, path), "labels")
            pixels = pixel_array(h5, "images", in_memory=in_memory, cache_dir=cache_dir)
        grid = FactorGrid(self.FACTOR_NAMES, sizes, values)
        super().__init__(grid, ImageTable(pixels), row_of_index, False, correlation, path)


class MPI3D(FileDataset):
    """`dataset=mpi3d`: MPI3D (rr-learning/disentanglement_dataset), e.g. ``mpi3d_toy.npz``.

    Array: ``images`` (1036800, 64, 64, 3) uint8, no labels: row r is the grid point
    ``np.unravel_index(r, factor_sizes)`` (C order). ``factor_sizes`` defaults to
    the released files' (6, 6, 2, 3, 3, 40, 40); other releases (the earlier
    460800-image one: 4, 4, 2, 3, 3, 40, 40) set it.
    """

    name = "mpi3d"

    FACTOR_NAMES = (
        "object_color", "object_shape", "object_size", "camera_height", "background_color",
        "horizontal_axis", "vertical_axis",
    )  # fmt: skip
    FACTOR_SIZES = (6, 6, 2, 3, 3, 40, 40)

    def __init__(
        self, path, in_memory: bool = False, cache_dir=None, correlation=None, factor_sizes=FACTOR_SIZES
    ) -> None:
        _check_options(in_memory, cache_dir)
        sizes = tuple(factor_sizes) if isinstance(factor_sizes, Sequence) else ()
        if len(sizes) != 7 or any(isinstance(s, bool) or not isinstance(s, int) or s < 2 for s in sizes):
            raise UserError(f"dataset.factor_sizes={factor_sizes!r}: expected 7 integers >= 2")
        with open_source(path, "npz") as archive:
            images = archive.info("images")
            expected = int(np.prod(sizes))
            if len(images.shape) != 4 or images.shape[3] != 3:
                raise file_error(path, f"images has shape {images.shape}, expected (N, H, W, 3)")
            if images.shape[0] != expected:
                raise file_error(
                    path,
                    f"images has {images.shape[0]} rows but the factor sizes {list(sizes)} make {expected}; "
                    "set dataset.factor_sizes for another MPI3D release",
                )
            if images.dtype != np.uint8:
                raise file_error(path, f"images must be uint8, got {images.dtype}")
            pixels = pixel_array(archive, "images", in_memory=in_memory, cache_dir=cache_dir)
        grid = FactorGrid(self.FACTOR_NAMES, sizes, tuple(np.arange(s, dtype=np.float64) for s in sizes))
        super().__init__(grid, ImageTable(pixels), None, False, correlation, path)


class NpzDataset(FileDataset):
    """`dataset=npz`: any ground-truth dataset in one .npz (the format in docs/datasets.md).

    Arrays: ``images`` (N, H, W) or (N, H, W, C) with C 1 or 3: uint8 (read as
    value / 255), bool (binary data: Bernoulli likelihood with model.likelihood=auto)
    or float in [0, 1]; ``factors`` (N, K) integer factor indices covering the
    full grid exactly once, rows in any order. Optional: ``factor_names`` (K,)
    strings, ``factor_sizes`` (K,) (default: max index + 1 per factor).
    """

    name = "npz"

    def __init__(self, path, in_memory: bool = False, cache_dir=None, correlation=None) -> None:
        _check_options(in_memory, cache_dir)
        with open_source(path, "npz") as archive:
            images = archive.info("images")
            factors, names, sizes = read_factor_labels(archive.load, archive.names, partial(file_error, path))
            _check_varying(path, names, sizes)
            if len(images.shape) not in (3, 4) or (len(images.shape) == 4 and images.shape[3] not in (1, 3)):
                expected = "(N, H, W) or (N, H, W, C) with C 1 or 3"
                raise file_error(path, f"images has shape {images.shape}, expected {expected}")
            if images.shape[0] != len(factors):
                raise file_error(path, f"images has {images.shape[0]} rows but factors has {len(factors)}")
            if images.dtype.kind not in "buf" or (images.dtype.kind == "u" and images.dtype != np.uint8):
                raise file_error(path, f"images must be uint8, bool or float, got {images.dtype}")
            row_of_index = grid_rows(factors, sizes, names, partial(file_error, path))
            pixels = pixel_array(archive, "images", in_memory=in_memory, cache_dir=cache_dir)
        if images.dtype.kind == "f":
            first = np.arange(min(len(pixels), 256))
            sample = pixels.read_rows(first) if isinstance(pixels, StoredArray) else pixels[first]
            if sample.size and (np.nanmin(sample) < 0 or np.nanmax(sample) > 1 or np.isnan(sample).any()):
                raise file_error(path, "float images must lie in [0, 1] (store uint8 for 0..255)")
        grid = FactorGrid(names, sizes, tuple(np.arange(s, dtype=np.float64) for s in sizes))
        super().__init__(grid, ImageTable(pixels), row_of_index, images.dtype == np.bool_, correlation, path)
