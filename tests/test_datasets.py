"""Ground-truth datasets from files, the procedural dSprites variants, and correlated factors.

Small files in each real schema (same array names and dtypes, a few values per
factor) stand in for the downloads. Every image encodes its own row number, so a
wrong index order shows up as a wrong image.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import hydra.utils
import numpy as np
import pytest
import torch

from tests.conftest import call_vaelab, compose_train, run_vaelab
from vaelab.data.dsprites import ColorDSprites, NoisyDSprites, ProceduralDSprites
from vaelab.data.files import MPI3D, DSpritesFile, NpzDataset, Shapes3D
from vaelab.data.grid import FactorGrid, GroundTruthDataset
from vaelab.data.storage import StoredArray
from vaelab.data.stream import batch_factors
from vaelab.errors import UserError

DSPRITES_SIZES = (1, 2, 2, 3, 2, 3)  # color (dropped), shape, scale, orientation, pos_x, pos_y
SHAPES3D_SIZES = (2, 2, 2, 2, 2, 3)
MPI3D_SIZES = (2, 2, 2, 2, 2, 3, 2)
NPZ_SIZES = (3, 4, 5)


def full_grid(sizes) -> np.ndarray:
    """(prod(sizes), K) factor indices in C order (last factor fastest)."""
    return np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(-1, len(sizes))


def numbered_images(n: int, channels: int | None, binary: bool = False) -> np.ndarray:
    """n random 64x64 images whose first pixels spell out the row number."""
    rng = np.random.default_rng(n)
    if binary:
        images = (rng.random((n, 64, 64)) < 0.3).astype(np.uint8)
        images[:, 0, :16] = (np.arange(n)[:, None] >> np.arange(16)) & 1
        return images
    shape = (n, 64, 64) if channels is None else (n, 64, 64, channels)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    number = np.arange(n).reshape(-1, *[1] * (images.ndim - 3))
    images[:, 0, 0], images[:, 0, 1] = number % 256, number // 256
    return images


def as_tensor(images: np.ndarray, scale: float = 255.0) -> torch.Tensor:
    """What a dataset returns for these file rows: float (n, C, H, W) in [0, 1]."""
    tensor = torch.from_numpy(images).float() / scale
    return tensor.unsqueeze(1) if tensor.dim() == 3 else tensor.permute(0, 3, 1, 2)


def write_dsprites(path: Path) -> dict:
    classes = full_grid(DSPRITES_SIZES)
    values = classes * np.array([1.0, 1.0, 0.1, 0.5, 1 / 3, 0.25]) + np.array([1.0, 1.0, 0.5, 0, 0, 0])
    arrays = dict(imgs=numbered_images(len(classes), None, binary=True), latents_classes=classes,
                  latents_values=values, metadata=np.array({"title": "dSprites"}, dtype=object))  # fmt: skip
    np.savez_compressed(path, **arrays)  # as the original
    return arrays


def write_shapes3d(path: Path, chunked: bool = True, order: np.ndarray | None = None) -> dict:
    labels = full_grid(SHAPES3D_SIZES) * np.array([0.1, 0.1, 0.1, 0.25, 1.0, 6.0]) + np.array([0, 0, 0, 0.75, 0, -6])
    images = numbered_images(len(labels), 3)
    if order is not None:
        labels, images = labels[order], images[order]
    with h5py.File(path, "w") as file:
        options = dict(chunks=(16, 64, 64, 3), compression="gzip") if chunked else {}
        file.create_dataset("images", data=images, **options)
        file.create_dataset("labels", data=labels)
    return dict(images=images, labels=labels)


def write_mpi3d(path: Path, compressed: bool = False) -> dict:
    arrays = dict(images=numbered_images(int(np.prod(MPI3D_SIZES)), 3))
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return arrays


def write_npz(path: Path, images: np.ndarray | None = None, **extra) -> dict:
    """The generic format, rows shuffled."""
    factors = full_grid(NPZ_SIZES)
    images = numbered_images(len(factors), None) if images is None else images
    order = np.random.default_rng(1).permutation(len(factors))
    arrays = dict(images=images[order], factors=factors[order], **extra)
    np.savez(path, **arrays)
    return arrays


# --- reading each schema --------------------------------------------------------------------------


def test_dsprites_file_drops_color_keeps_values_and_order(tmp_path):
    arrays = write_dsprites(tmp_path / "dsprites.npz")
    dataset = DSpritesFile(str(tmp_path / "dsprites.npz"), cache_dir=str(tmp_path / "cache"))
    assert dataset.factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert dataset.factor_sizes == DSPRITES_SIZES[1:] and dataset.binary and dataset.image_shape == (1, 64, 64)
    np.testing.assert_allclose(dataset.factor_values[1], [0.5, 0.6])  # from latents_values
    np.testing.assert_allclose(dataset.factor_values[3], [0, 1 / 3])
    index = np.array([0, 71, 5, 5, 40])
    torch.testing.assert_close(dataset.images_at(index), as_tensor(arrays["imgs"][index], scale=1.0))
    # The factors of an index are the file's latents_classes of that row.
    np.testing.assert_array_equal(dataset.index_to_factors(index), arrays["latents_classes"][index, 1:])
    # The cache is bit-packed: 8 pixels a byte.
    (cache,) = (tmp_path / "cache").glob("*.npy")
    assert "packbits" in cache.name and np.load(cache, mmap_mode="r").shape == (72, 64, 8)


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked-gzip", "contiguous"])
def test_shapes3d_labels_define_the_grid_and_rows_any_order(tmp_path, chunked):
    order = np.random.default_rng(0).permutation(96)
    arrays = write_shapes3d(tmp_path / "shapes.h5", chunked=chunked, order=order)
    dataset = Shapes3D(str(tmp_path / "shapes.h5"), cache_dir=str(tmp_path / "cache"))
    assert dataset.factor_sizes == SHAPES3D_SIZES and dataset.image_shape == (3, 64, 64) and not dataset.binary
    np.testing.assert_allclose(dataset.factor_values[5], [-6, 0, 6])
    # Flat index i is grid point i (C order); its image is the row holding that point's labels.
    index = np.arange(96)
    labels = np.stack([dataset.factor_values[k][f] for k, f in enumerate(dataset.index_to_factors(index).T)], 1)
    rows = [int(np.flatnonzero((arrays["labels"] == label).all(1))[0]) for label in labels]
    torch.testing.assert_close(dataset.images_at(index), as_tensor(arrays["images"][rows]))
    # Contiguous storage is read in place; chunked/compressed storage goes through the cache.
    assert len(list((tmp_path / "cache").glob("*.npy"))) == (1 if chunked else 0)


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_mpi3d_rows_are_c_order_over_the_factor_sizes(tmp_path, compressed):
    arrays = write_mpi3d(tmp_path / "mpi3d.npz", compressed=compressed)
    dataset = MPI3D(str(tmp_path / "mpi3d.npz"), cache_dir=str(tmp_path / "cache"), factor_sizes=list(MPI3D_SIZES))
    assert dataset.factor_sizes == MPI3D_SIZES and dataset.factor_names[0] == "object_color"
    factors = np.array([[1, 0, 1, 0, 1, 2, 1], [0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 2, 1]])
    rows = [int(np.ravel_multi_index(f, MPI3D_SIZES)) for f in factors]
    torch.testing.assert_close(dataset.images(factors), as_tensor(arrays["images"][rows]))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == (1 if compressed else 0)


def test_npz_generic_format_any_row_order_names_and_dtypes(tmp_path):
    arrays = write_npz(tmp_path / "mine.npz", factor_names=np.array(["colour", "size", "angle"]))
    dataset = NpzDataset(str(tmp_path / "mine.npz"))
    assert dataset.factor_names == ("colour", "size", "angle") and dataset.factor_sizes == NPZ_SIZES
    assert dataset.image_shape == (1, 64, 64) and not dataset.binary
    factors = np.array([[2, 3, 4], [0, 0, 0], [1, 2, 3]])
    rows = [int(np.flatnonzero((arrays["factors"] == f).all(1))[0]) for f in factors]
    torch.testing.assert_close(dataset.images(factors), as_tensor(arrays["images"][rows]))
    # bool pixels are binary data (Bernoulli likelihood); float pixels are read as they are.
    binary = numbered_images(60, None, binary=True).astype(bool)
    write_npz(tmp_path / "binary.npz", images=binary)
    assert NpzDataset(str(tmp_path / "binary.npz")).binary
    floats = np.random.default_rng(0).random((60, 8, 8, 3), dtype=np.float32)
    stored = write_npz(tmp_path / "float.npz", images=floats, factor_sizes=np.array(NPZ_SIZES))
    dataset = NpzDataset(str(tmp_path / "float.npz"))
    assert dataset.image_shape == (3, 8, 8)
    first = int(np.ravel_multi_index(tuple(stored["factors"][0]), NPZ_SIZES))
    expected = torch.from_numpy(stored["images"][0]).permute(2, 0, 1)
    torch.testing.assert_close(dataset.images_at(np.array([first]))[0], expected)


LAZY_VS_IN_MEMORY = {
    "dsprites_file": ("d.npz", write_dsprites, DSpritesFile),
    "shapes3d": ("s.h5", write_shapes3d, Shapes3D),
    "mpi3d_compressed": (
        "m.npz", lambda path: write_mpi3d(path, compressed=True),
        lambda *args, **kwargs: MPI3D(*args, **kwargs, factor_sizes=MPI3D_SIZES),
    ),
    "npz_shuffled": ("n.npz", write_npz, NpzDataset),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(LAZY_VS_IN_MEMORY))
def test_lazy_and_in_memory_give_identical_images(tmp_path, kind):
    name, write, make = LAZY_VS_IN_MEMORY[kind]
    path, cache = tmp_path / name, str(tmp_path / "cache")
    write(path)
    lazy = make(str(path), cache_dir=cache)
    assert isinstance(lazy._table.array, StoredArray)
    eager = make(str(path), in_memory=True, cache_dir=str(tmp_path / "unused"))
    assert isinstance(eager._table.array, np.ndarray) and not (tmp_path / "unused").exists()
    index = np.random.default_rng(0).integers(0, len(lazy), 50)
    torch.testing.assert_close(lazy.images_at(index), eager.images_at(index), rtol=0, atol=0)


def test_cache_is_reused_then_rebuilt_when_the_source_changes(tmp_path, caplog):
    write_shapes3d(tmp_path / "shapes.h5")
    cache_dir = tmp_path / "cache"
    Shapes3D(str(tmp_path / "shapes.h5"), cache_dir=str(cache_dir))
    (cache,) = cache_dir.glob("*.npy")
    built = cache.stat().st_mtime_ns
    with caplog.at_level("INFO", logger="vaelab"):
        Shapes3D(str(tmp_path / "shapes.h5"), cache_dir=str(cache_dir))
    assert "using cache" in caplog.text and cache.stat().st_mtime_ns == built
    # A truncated cache (a crash mid-copy cannot leave one: it is renamed into place
    # when complete; but a disk error can) is rebuilt, not read, and the log says so.
    cache.write_bytes(cache.read_bytes()[:5000])
    caplog.clear()
    with caplog.at_level("INFO", logger="vaelab"):
        Shapes3D(str(tmp_path / "shapes.h5"), cache_dir=str(cache_dir))
    assert cache.stat().st_size > 5000
    assert f"the cache {cache} is cut short; rebuilding it" in caplog.text
    # A new source (size/mtime) gets a new cache; the old one is removed.
    arrays = write_shapes3d(tmp_path / "shapes.h5", order=np.arange(96)[::-1])
    os.utime(tmp_path / "shapes.h5", ns=(built + 10**9, built + 10**9))
    dataset = Shapes3D(str(tmp_path / "shapes.h5"), cache_dir=str(cache_dir))
    (new_cache,) = cache_dir.glob("*.npy")
    assert new_cache != cache and not list(cache_dir.glob("*.tmp"))
    torch.testing.assert_close(dataset.images_at(np.array([0])), as_tensor(arrays["images"][[95]]))


@pytest.mark.parametrize("in_memory", [False, True])
def test_a_cache_from_another_file_or_of_another_array_is_rebuilt_not_read(tmp_path, caplog, in_memory):
    """Cache files are only caches: one that is not this file's array (copied over, left by
    another dataset, cut off at the array's end) is never read, only rebuilt (or bypassed
    with in_memory), with a log line and no error."""
    cache_dir = tmp_path / "cache"
    write_shapes3d(tmp_path / "a.h5")
    Shapes3D(str(tmp_path / "a.h5"), cache_dir=str(cache_dir))
    (a_cache,) = cache_dir.glob("a-*.npy")
    arrays = write_shapes3d(tmp_path / "b.h5", order=np.arange(96)[::-1])  # same shapes, other rows
    Shapes3D(str(tmp_path / "b.h5"), cache_dir=str(cache_dir))
    (b_cache,) = cache_dir.glob("b-*.npy")
    expected = as_tensor(arrays["images"][[95]])
    a_bytes = a_cache.read_bytes()
    array_end = a_bytes.rindex(b'{"array"')  # where the source record starts
    damages = {
        "was built from another file": a_bytes,  # a's cache under b's name: same shape, other pixels
        "no record of its source": a_bytes[:array_end],  # the array whole, the rest cut off
        "holds a (2, 64, 64, 3) uint8 array": _npy_bytes(np.zeros((2, 64, 64, 3), np.uint8)),
    }
    for problem, content in damages.items():
        b_cache.write_bytes(content)
        caplog.clear()
        with caplog.at_level("INFO", logger="vaelab"):
            dataset = Shapes3D(str(tmp_path / "b.h5"), cache_dir=str(cache_dir), in_memory=in_memory)
        torch.testing.assert_close(dataset.images_at(np.array([0])), expected, rtol=0, atol=0)
        (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warning.startswith(f"the cache {b_cache} ") and problem in warning, warning
        assert warning.endswith("reading the source" if in_memory else "rebuilding it")
        if not in_memory:
            assert b_cache.read_bytes() != content  # rebuilt
    assert a_cache.read_bytes() == a_bytes


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_a_cache_dir_that_cannot_be_written_is_a_one_line_error(tmp_path):
    write_shapes3d(tmp_path / "shapes.h5")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match=r"^dataset\.cache_dir=.*a_file: cannot write the cache \("):
        Shapes3D(str(tmp_path / "shapes.h5"), cache_dir=str(tmp_path / "a_file"))


# --- bad files: one clear line naming the file ------------------------------------------------------


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _corrupt_member(path: Path, member: str) -> None:
    """Zero 2000 bytes in the middle of a member's compressed data (headers stay intact)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data = bytearray(path.read_bytes())
    middle = info.header_offset + 30 + len(member) + info.compress_size // 2
    data[middle : middle + 2000] = bytes(2000)
    path.write_bytes(bytes(data))


BAD_FILES = {
    # name: (how to make it, dataset class, expected message part)
    "missing file": (lambda p: None, Shapes3D, "no such file"),
    "not hdf5": (lambda p: p.write_text("hello"), Shapes3D, "not a readable HDF5 file"),
    "truncated hdf5": (lambda p: (write_shapes3d(p, chunked=False), _truncate(p)), Shapes3D, "HDF5"),
    "no labels": (
        lambda p: h5py.File(p, "w").create_dataset("images", data=np.zeros((2, 64, 64, 3), np.uint8)).file.close(),
        Shapes3D, "no dataset 'labels' (it has images)",
    ),
    "images vs labels": (
        lambda p: (write_shapes3d(p), _drop_h5_rows(p, "images")), Shapes3D,
        "images has 95 images but the factor labels have 96 rows",
    ),
    # The right keys, the wrong shapes or types:
    "h5 images without channels": (lambda p: (write_shapes3d(p), _replace_h5(p, "images", lambda a: a[..., 0])),
                                   Shapes3D, "images has shape (96, 64, 64), expected (N, H, W, 3)"),
    "h5 images with 4 channels": (lambda p: (write_shapes3d(p), _replace_h5(p, "images", lambda a: a[..., [0, 1, 2, 2]])),
                                  Shapes3D, "images has shape (96, 64, 64, 4), expected (N, H, W, 3)"),
    "h5 labels with 5 columns": (lambda p: (write_shapes3d(p), _replace_h5(p, "labels", lambda a: a[:, :5])),
                                 Shapes3D, "labels must be (N, 6) numbers, got (96, 5) float64"),
    "h5 labels one-dimensional": (lambda p: (write_shapes3d(p), _replace_h5(p, "labels", lambda a: a[:, 0])),
                                  Shapes3D, "labels must be (N, 6) numbers, got (96,) float64"),
    "h5 float images": (lambda p: (write_shapes3d(p), _replace_h5(p, "images", lambda a: a.astype(np.float32))),
                        Shapes3D, "images must be uint8, got float32"),
    "incomplete grid": (lambda p: (write_shapes3d(p), _drop_h5_rows(p, "images", "labels")), Shapes3D,
                        "95 rows for 96 combinations: 1 missing, 0 repeated"),
    "not a zip": (lambda p: p.write_text("hello"), DSpritesFile, "not an .npz (zip) archive"),
    "truncated zip": (
        lambda p: (write_dsprites(p), _truncate(p)), DSpritesFile, "not an .npz (zip) archive, or truncated"
    ),
    "corrupt member": (lambda p: (write_dsprites(p), _corrupt_member(p, "imgs.npy")), DSpritesFile, "corrupt"),
    "no imgs": (lambda p: np.savez(p, latents_classes=full_grid(DSPRITES_SIZES)), DSpritesFile, "no array 'imgs'"),
    "mpi3d sizes": (lambda p: np.savez(p, images=np.zeros((10, 64, 64, 3), np.uint8)), MPI3D,
                    "images has 10 rows but the factor sizes [6, 6, 2, 3, 3, 40, 40] make 1036800"),
    "repeated rows": (
        lambda p: np.savez(p, images=np.zeros((4, 8, 8), np.uint8), factors=np.array([[0], [1], [1], [0]])),
        NpzDataset, "4 rows for 2 combinations: 0 missing, 2 repeated",
    ),
    "float range": (lambda p: np.savez(p, images=np.full((2, 8, 8), 255.0), factors=np.array([[0], [1]])),
                    NpzDataset, "float images must lie in [0, 1]"),
    "constant factor": (lambda p: np.savez(p, images=np.zeros((2, 8, 8), np.uint8), factors=np.array([[0, 0], [0, 1]])),
                        NpzDataset, "factor(s) factor_0 take a single value"),
}


def _replace_h5(path: Path, name: str, change) -> None:
    """Rewrite dataset ``name`` of an HDF5 file as ``change(its array)``."""
    with h5py.File(path, "a") as file:
        data = change(file[name][()])
        del file[name]
        file.create_dataset(name, data=data)


def _drop_h5_rows(path: Path, *names: str) -> None:
    with h5py.File(path, "a") as file:
        for name in names:
            data = file[name][1:]
            del file[name]
            file.create_dataset(name, data=data)


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, case):
    make, dataset_class, message = BAD_FILES[case]
    path = tmp_path / ("data.h5" if dataset_class is Shapes3D else "data.npz")
    make(path)
    with pytest.raises(UserError) as error:
        dataset_class(str(path), cache_dir=str(tmp_path / "cache"))
    text = str(error.value)
    assert "\n" not in text and text.startswith(f"dataset.path={path}: ") and message in text, text
    assert not list(tmp_path.glob("cache/*"))  # no partial cache left behind


def test_bad_files_through_the_cli_exit_2_with_one_line(tmp_path, monkeypatch, capfd):
    """The CLI prints a dataset's UserError as its one line (every message: the test above)."""
    path = tmp_path / "missing.h5"
    cli = {"cwd": tmp_path, "monkeypatch": monkeypatch, "capfd": capfd}
    result = call_vaelab("train", "dataset=shapes3d", f"dataset.path={path}", "logger=none", **cli)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("vaelab: error:")]
    assert errors == [f"vaelab: error: dataset.path={path}: no such file"] and "Traceback" not in result.stderr
    # The path is mandatory (`path: ???`).
    result = call_vaelab("train", "dataset=mpi3d", "logger=none", **cli)
    assert result.returncode == 2 and "vaelab: error: dataset.path: Missing mandatory value" in result.stderr


# --- train and eval through the CLI on every file format ------------------------------------------


def test_train_and_eval_end_to_end_on_every_file_format(tmp_path, monkeypatch, capfd):
    """Datasets named in the user's own config dir (path in the file), one sweep; eval from checkpoints."""
    data, cache, configs = tmp_path / "data", tmp_path / "cache", tmp_path / "conf" / "dataset"
    data.mkdir()
    configs.mkdir(parents=True)
    write_dsprites(data / "dsprites.npz")
    write_shapes3d(data / "3dshapes.h5")
    write_mpi3d(data / "mpi3d.npz")
    write_npz(data / "mine.npz")
    extra = {"mpi3d": f"factor_sizes: {list(MPI3D_SIZES)}\n",
             "dsprites_file": "correlation: [{factors: [pos_x, pos_y], strength: 0.9}]\n"}  # fmt: skip
    for name, base, file in [("my_dsprites", "dsprites_file", "dsprites.npz"), ("my_shapes", "shapes3d", "3dshapes.h5"),
                             ("my_mpi3d", "mpi3d", "mpi3d.npz"), ("my_npz", "npz", "mine.npz")]:  # fmt: skip
        (configs / f"{name}.yaml").write_text(
            f"defaults:\n  - {base}\n  - _self_\npath: {data / file}\ncache_dir: {cache}\n{extra.get(base, '')}"
        )
    names = ["my_dsprites", "my_shapes", "my_mpi3d", "my_npz"]
    trained = call_vaelab(
        "train", "-m", f"--config-dir={tmp_path / 'conf'}", f"dataset={','.join(names)}",
        "trainer.max_steps=2", "trainer.val_check_interval=2", "data.batch_size=8", "data.val_size=8",
        "metrics=none", "information.num_samples=0", "images.num_images=0", "logger=none",
        f"hydra.sweep.dir={tmp_path / 'runs'}", "hydra.sweep.subdir=${hydra.job.num}",
        cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "training factors correlated: pos_x -> pos_y" in trained.stderr
    checkpoints = [tmp_path / "runs" / str(job) / "checkpoints" / "last.ckpt" for job in range(len(names))]
    shapes = [torch.load(c, weights_only=False)["state_dict"]["model.encoder.0.weight"].shape[1] for c in checkpoints]
    assert shapes == [1, 3, 3, 1]  # input channels: dSprites and the npz are grey, 3D Shapes and MPI3D colour

    # `vaelab eval` rebuilds each dataset from the checkpoint's config (the path is in it): fast suite, tiny grids.
    evaluated = call_vaelab(
        "eval", "-m", "ckpt=" + ",".join(str(c) for c in checkpoints), "metrics=fast", "logger=none",
        f"hydra.sweep.dir={tmp_path / 'evals'}", "hydra.sweep.subdir=${hydra.job.num}",
        cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    scores = [json.loads(line) for line in evaluated.stdout.splitlines() if line.startswith("{")]
    assert len(scores) == len(names)
    for score in scores:
        assert {"metrics/mig", "metrics/factor_vae", "metrics/modularity"} <= score.keys()
        assert all(np.isfinite(value) for value in score.values())


# --- procedural variants -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def variants():
    return ColorDSprites(), NoisyDSprites(), ProceduralDSprites()


def test_variants_are_three_channel_and_not_binary(variants):
    colour, noisy, plain = variants
    for dataset in (colour, noisy):
        assert dataset.image_shape == (3, 64, 64) and not dataset.binary
        assert dataset.factor_sizes == plain.factor_sizes
    from vaelab.models import ConvVAE

    model = ConvVAE(image_shape=colour.image_shape, binary_data=colour.binary)
    assert model.likelihood == "gaussian"  # model.likelihood=auto
    images = noisy.images_at(np.array([0, 1]))
    assert model(images).decoded.shape == images.shape


def test_color_dsprites_colours_the_sprite_per_image(variants):
    colour, _, plain = variants
    index = np.array([10, 20_000, 10, 737_279])
    images, shapes = colour.images_at(index), plain.images_at(index)
    on = shapes[:, 0] > 0
    assert torch.all(images[:, :, ~on[0]][0] == 0)  # black background
    per_image = images.amax(dim=(2, 3))  # the colour: each channel in [0.5, 1]
    assert torch.all(per_image >= 0.5) and torch.all(per_image <= 1)
    for i in range(len(index)):
        pixels = images[i][:, on[i]]
        assert torch.all(pixels == pixels[:, :1])  # one colour over the whole sprite
    torch.testing.assert_close(images[0], images[2], rtol=0, atol=0)  # same index, same image
    assert not torch.allclose(per_image[0], per_image[1]) and not torch.allclose(per_image[1], per_image[3])


def test_noisy_dsprites_white_sprite_on_fixed_noise(variants):
    _, noisy, plain = variants
    index = np.array([5, 6, 5])
    images, shapes = noisy.images_at(index), plain.images_at(index)
    on = shapes[:, 0] > 0
    assert torch.all(images[0][:, on[0]] == 1.0)
    background = images[0][:, ~on[0]]
    assert 0.45 < background.mean().item() < 0.55 and background.min() >= 0 and background.max() < 1
    torch.testing.assert_close(images[0], images[2], rtol=0, atol=0)
    assert not torch.equal(images[0][:, ~on[0]], images[1][:, ~on[0]])
    # The same image whatever batch it comes in, and another variant_seed gives other noise.
    torch.testing.assert_close(noisy.images_at(np.array([6]))[0], images[1], rtol=0, atol=0)
    assert not torch.equal(NoisyDSprites(variant_seed=1).images_at(np.array([5]))[0], images[0])


# --- correlated factors ----------------------------------------------------------------------------


class DSpritesGrid(GroundTruthDataset):
    """The dSprites grid without images: all a factor sampler needs."""

    image_shape, binary = (1, 64, 64), True

    def __init__(self, correlation=None) -> None:
        sizes = (3, 6, 40, 32, 32)
        names = ("shape", "scale", "orientation", "pos_x", "pos_y")
        self.grid = FactorGrid(names, sizes, tuple(np.arange(s, dtype=float) for s in sizes))
        self.configure_correlation(correlation)

    def images(self, factors):
        raise NotImplementedError


@pytest.mark.parametrize(
    ("pair", "strength"),
    [
        (("pos_x", "pos_y"), 0.8),
        (("pos_x", "pos_y"), 0.3),
        (("shape", "orientation"), -0.6),
        (("orientation", "scale"), 0.5),
    ],
)
def test_training_factors_have_the_configured_correlation(pair, strength):
    dataset = DSpritesGrid([{"factors": list(pair), "strength": strength}])
    a, b = (dataset.factor_names.index(name) for name in pair)
    factors = dataset.sample_training_factors(200_000, np.random.default_rng(0))
    assert np.corrcoef(factors[:, a], factors[:, b])[0, 1] == pytest.approx(strength, abs=0.01)
    # The source factor stays uniform, the others untouched; every target value still occurs.
    assert np.bincount(factors[:, a]).min() > 0.9 * len(factors) / dataset.factor_sizes[a]
    assert len(np.unique(factors[:, b])) == dataset.factor_sizes[b]
    others = [k for k in range(5) if k not in (a, b)]
    assert np.abs(np.corrcoef(factors[:, others].T) - np.eye(len(others))).max() < 0.01


def test_strength_zero_is_independent_and_one_is_equal_quantile():
    independent = DSpritesGrid([{"factors": ["pos_x", "pos_y"], "strength": 0}])
    factors = independent.sample_training_factors(200_000, np.random.default_rng(0))
    assert abs(np.corrcoef(factors[:, 3], factors[:, 4])[0, 1]) < 0.01
    counts = np.bincount(factors[:, 4], minlength=32)
    assert counts.min() > 0.9 * counts.mean()
    locked = DSpritesGrid([{"factors": ["pos_x", "pos_y"], "strength": 1}])
    factors = locked.sample_training_factors(10_000, np.random.default_rng(0))
    np.testing.assert_array_equal(factors[:, 4], factors[:, 3])
    mirrored = DSpritesGrid([{"factors": ["pos_x", "pos_y"], "strength": -1}])
    factors = mirrored.sample_training_factors(10_000, np.random.default_rng(0))
    np.testing.assert_array_equal(factors[:, 4], 31 - factors[:, 3])
    # Different sizes: orientation (40) goes to the quantile nearest scale's (6); ties split.
    coarse = DSpritesGrid([{"factors": ["scale", "orientation"], "strength": 1}])
    factors = coarse.sample_training_factors(10_000, np.random.default_rng(0))
    target = (factors[:, 1] + 0.5) / 6
    nearest = np.abs((np.arange(40) + 0.5) / 40 - target[:, None]).min(axis=1)
    np.testing.assert_allclose(np.abs((factors[:, 2] + 0.5) / 40 - target), nearest, atol=1e-12)


def test_correlation_changes_training_batches_only(tmp_path):
    plain = DSpritesGrid(None)
    correlated = DSpritesGrid([{"factors": ["pos_x", "pos_y"], "strength": 0.9}])
    # Without correlation the training stream is the uniform sampler, draw for draw (old runs unchanged).
    uniform = plain.sample_factors(64, np.random.default_rng([1, 7]))
    np.testing.assert_array_equal(batch_factors(plain, 64, seed=1, step=7), uniform)
    np.testing.assert_array_equal(batch_factors(correlated, 64, 1, 7), batch_factors(correlated, 64, 1, 7))
    assert not np.array_equal(batch_factors(correlated, 64, 1, 7), batch_factors(plain, 64, 1, 7))
    # Validation and metrics sample the uniform grid.
    uniform = plain.sample_factors(100, np.random.default_rng(3))
    np.testing.assert_array_equal(correlated.sample_factors(100, np.random.default_rng(3)), uniform)
    # The override as typed on the command line reaches the dataset.
    cfg = compose_train(["dataset.correlation=[{factors:[pos_x,pos_y],strength:0.5}]"], tmp_path)
    dataset = hydra.utils.instantiate(cfg.dataset)
    assert [(p.source, p.target, p.strength) for p in dataset.correlation.pairs] == [(3, 4, 0.5)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"factors": ["pos_x", "pos_y"], "strength": 0.5}, "expected a list of pairs"),
        ([{"factors": ["pos_x", "colour"], "strength": 0.5}], "unknown factor 'colour'; this dataset has shape, scale"),
        ([{"factors": ["pos_x", "pos_x"], "strength": 0.5}], "cannot be paired with itself"),
        ([{"factors": ["pos_x", "pos_y"], "strength": 1.5}], "strength=1.5: expected a number in [-1, 1]"),
        ([{"factors": ["pos_x", "pos_y"]}], "expected {factors: [a, b], strength: s}"),
        ([{"factors": ["pos_x", "pos_y"], "strength": 0.5}, {"factors": ["shape", "pos_y"], "strength": 0.5}],
         "correlation[1]: factor 'pos_y' is already redrawn"),
        ([{"factors": ["pos_x", "pos_y"], "strength": 0.5}, {"factors": ["shape", "pos_x"], "strength": 0.5}],
         "was the source of an earlier pair"),
    ],
)
def test_bad_correlation_settings_are_one_line_errors(spec, message):
    with pytest.raises(UserError) as error:
        DSpritesGrid(spec)
    assert message in str(error.value) and str(error.value).startswith("dataset.correlation")
