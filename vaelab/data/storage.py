"""Arrays inside dataset files, read without loading them whole: .npz members and HDF5 datasets.

The pixel arrays of the ground-truth datasets are large (3D Shapes: 5.9 GB of
uint8, MPI3D: 12.7 GB), so by default only the rows a batch needs are read,
straight from an uncompressed copy of the array on disk (a :class:`StoredArray`):

* an .npz member stored uncompressed (``np.savez``) is read in place: its data
  starts after the member's zip local header and its .npy header (``np.load``'s
  ``mmap_mode`` does not apply to .npz, hence :meth:`NpzArchive.stored`);
* an HDF5 dataset with contiguous, unfiltered storage is read in place at
  ``dataset.id.get_offset()``;
* anything else (``np.savez_compressed`` members, chunked/compressed HDF5) is
  converted once into a plain ``.npy`` under the cache directory, streamed in
  chunks (memory stays at one chunk), written to a temporary name and renamed
  into place, and read from there. The cache file's name carries a hash of
  the source's path, size and modification time: a changed source gets a new
  cache (older ones for that source are deleted), an unchanged one reuses it.
  After the array the file records what it copies (:func:`cache_record`); a cache
  cut short, of another shape or recording another source is rebuilt, with a
  warning, never read.

Rows are read with positioned reads (consecutive rows in one read) rather than
through ``np.memmap``: the layout is the same (a fixed offset plus row * row
bytes), but a mapping puts every page the kernel brings in — with large page-cache
folios and 8 MB readahead, about 2 MB per randomly read 12 KB image — into the
process's resident set, so a training run's RSS climbed to the file's size
(measured: 5.8 GB after 200 batches on 3D Shapes). With reads, the file's pages
stay in the kernel's page cache, shared and reclaimable, and RSS stays at the
batch buffers (docs/datasets.md has the numbers).

``in_memory=True`` reads the array into RAM instead (from the cache if one is
already there, else straight from the source, without writing a cache).

Every problem with a file is a :class:`UserError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
import zipfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaelab.errors import UserError, first_line

log = logging.getLogger("vaelab")

CHUNK_BYTES = 64 * 2**20  # rows per conversion chunk: about this many bytes of source pixels
READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, struct.error, KeyError)


def file_error(path: str | os.PathLike, problem: str) -> UserError:
    """The one-line error for a dataset file: ``dataset.path=FILE: problem``."""
    return UserError(f"dataset.path={os.fspath(path)}: {problem}")


def default_cache_dir() -> Path:
    """$VAELAB_CACHE_DIR, else $XDG_CACHE_HOME/vaelab, else ~/.cache/vaelab."""
    if os.environ.get("VAELAB_CACHE_DIR"):
        return Path(os.environ["VAELAB_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "vaelab"


@dataclass(frozen=True)
class ArrayInfo:
    """Shape and dtype of an array in a file, without reading it."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class StoredArray:
    """A C-ordered array at a byte offset in a file, read by rows on demand (never mapped or read whole).

    Holds no open file between reads (each call opens, reads, closes: microseconds next
    to a batch), so it pickles, survives ``fork`` and never leaks a descriptor.
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = Path(path), int(offset), tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _read_into(self, file, buffer: memoryview, position: int) -> None:
        file.seek(position)
        done = 0
        while done < len(buffer):
            count = file.readinto(buffer[done : done + 2**30])
            if not count:
                raise file_error(self.path, "the file ended while reading images (truncated since it was opened?)")
            done += count

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """``array[rows]`` for ascending ``rows``; each run of consecutive rows is one read."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        if len(rows) == 0:
            return out
        if rows[0] < 0 or rows[-1] >= self.shape[0]:
            raise IndexError(f"rows outside 0..{self.shape[0] - 1}")
        view = memoryview(out).cast("B")
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        with open(self.path, "rb", buffering=0) as file:  # unbuffered: reads land in `out` directly
            for start, stop in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(rows)]])):
                position = self.offset + int(rows[start]) * self.row_bytes
                self._read_into(file, view[start * self.row_bytes : stop * self.row_bytes], position)
        return out

    def load(self) -> np.ndarray:
        """The whole array in memory."""
        out = np.empty(self.shape, dtype=self.dtype)
        with open(self.path, "rb", buffering=0) as file:
            self._read_into(file, memoryview(out).cast("B"), self.offset)
        return out


def _stored_in(path: Path, offset: int, info: ArrayInfo, what: str) -> StoredArray:
    if offset + info.nbytes > path.stat().st_size:
        raise file_error(path, f"{what} runs past the end of the file (truncated)")
    return StoredArray(path, offset, info.shape, info.dtype)


def _read_npy_header(stream) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from a stream positioned at the start of a .npy."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    raise ValueError(f".npy format version {version} is not supported")


def _read_exact(stream, size: int) -> bytes:
    parts, remaining = [], size
    while remaining > 0:
        part = stream.read(remaining)
        if not part:
            raise EOFError(f"the data ends {remaining} bytes early (truncated)")
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


class SourceFile(ABC):
    """What the dataset file formats share: the file must exist (``~`` expanded), is opened once
    (:meth:`_open`, which names its arrays), and is closed by ``close`` or a ``with`` block."""

    kind: str

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise file_error(path, "no such file")
        self._handle = self._open()

    @abstractmethod
    def _open(self):
        """Open ``self.path`` and set ``self.names``; returns what ``close`` closes."""

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> SourceFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NpzArchive(SourceFile):
    """An .npz file whose members are read on demand (small ones whole, large ones in place or streamed)."""

    kind = "npz"

    def _open(self) -> zipfile.ZipFile:
        try:
            self._zip = zipfile.ZipFile(self.path)
        except READ_ERRORS as error:
            raise file_error(self.path, f"not an .npz (zip) archive, or truncated ({first_line(error)})") from None
        self.names = tuple(n.removesuffix(".npy") for n in self._zip.namelist() if n.endswith(".npy"))
        self._infos: dict[str, tuple[ArrayInfo, bool]] = {}
        return self._zip

    def _member(self, name: str) -> zipfile.ZipInfo:
        if name not in self.names:
            raise file_error(self.path, f"no array {name!r} (it has {', '.join(self.names) or 'none'})")
        return self._zip.getinfo(name + ".npy")

    def info(self, name: str) -> ArrayInfo:
        """Shape and dtype from the member's .npy header (decompresses only the header)."""
        if name not in self._infos:
            try:
                with self._zip.open(self._member(name)) as stream:
                    shape, fortran, dtype = _read_npy_header(stream)
            except UserError:
                raise
            except READ_ERRORS as error:
                raise file_error(self.path, f"array {name!r} is unreadable ({first_line(error)})") from None
            self._infos[name] = (ArrayInfo(tuple(shape), np.dtype(dtype)), fortran)
        return self._infos[name][0]

    def load(self, name: str) -> np.ndarray:
        """A whole (small) array; object arrays (pickles) are refused, never unpickled."""
        self._member(name)
        try:
            with self._zip.open(name + ".npy") as stream:
                return np.lib.format.read_array(stream, allow_pickle=False)
        except READ_ERRORS as error:
            raise file_error(self.path, f"array {name!r} is unreadable ({first_line(error)})") from None

    def stored(self, name: str) -> StoredArray | None:
        """The member read in place, or None if it is compressed (or Fortran-ordered)."""
        member, info = self._member(name), self.info(name)
        if member.compress_type != zipfile.ZIP_STORED or member.flag_bits & 0x1 or self._infos[name][1]:
            return None
        try:
            with open(self.path, "rb") as raw:
                raw.seek(member.header_offset)
                # The local header (30 bytes, then name and extra field, whose lengths can
                # differ from the central directory's) precedes the member's .npy bytes.
                local = struct.unpack("<4sHHHHHIIIHH", _read_exact(raw, 30))
                if local[0] != b"PK\x03\x04":
                    raise ValueError("bad zip local header")
                raw.seek(member.header_offset + 30 + local[9] + local[10])
                _read_npy_header(raw)
                offset = raw.tell()
        except READ_ERRORS as error:
            raise file_error(self.path, f"array {name!r} is unreadable ({first_line(error)})") from None
        return _stored_in(self.path, offset, info, f"array {name!r}")

    def iter_rows(self, name: str, rows_per_chunk: int) -> Iterator[np.ndarray]:
        """The array in consecutive row blocks, decompressed as it goes."""
        info = self.info(name)
        if self._infos[name][1]:
            raise file_error(self.path, f"array {name!r} is stored in Fortran order; save it C-ordered")
        row_bytes = info.nbytes // max(info.shape[0], 1)
        try:
            with self._zip.open(self._member(name)) as stream:
                _read_npy_header(stream)
                for start in range(0, info.shape[0], rows_per_chunk):
                    rows = min(rows_per_chunk, info.shape[0] - start)
                    data = _read_exact(stream, rows * row_bytes)
                    yield np.frombuffer(data, dtype=info.dtype).reshape((rows, *info.shape[1:]))
                stream.read()  # reaching the end checks the member's CRC
        except READ_ERRORS as error:
            raise file_error(self.path, f"array {name!r} is corrupt or truncated ({first_line(error)})") from None


class H5File(SourceFile):
    """An HDF5 file whose datasets are read on demand (h5py, imported only here)."""

    kind = "h5"

    def _open(self):
        try:
            import h5py
        except ImportError:  # pragma: no cover - h5py is a dependency
            raise file_error(self.path, "reading .h5 files needs h5py (pip install h5py)") from None
        try:
            self._file = h5py.File(self.path, "r")
        except READ_ERRORS as error:
            raise file_error(self.path, f"not a readable HDF5 file, or truncated ({first_line(error)})") from None
        self.names = tuple(name for name, item in self._file.items() if isinstance(item, h5py.Dataset))
        return self._file

    def _dataset(self, name: str):
        if name not in self.names:
            raise file_error(self.path, f"no dataset {name!r} (it has {', '.join(self.names) or 'none'})")
        return self._file[name]

    def info(self, name: str) -> ArrayInfo:
        dataset = self._dataset(name)
        return ArrayInfo(tuple(dataset.shape), np.dtype(dataset.dtype))

    def load(self, name: str) -> np.ndarray:
        try:
            return self._dataset(name)[()]
        except READ_ERRORS as error:
            raise file_error(self.path, f"dataset {name!r} is unreadable ({first_line(error)})") from None

    def stored(self, name: str) -> StoredArray | None:
        """The dataset read in place if its storage is contiguous and unfiltered, else None."""
        dataset, info = self._dataset(name), self.info(name)
        offset = dataset.id.get_offset()
        if dataset.chunks is not None or offset is None or dataset.external or info.dtype.kind not in "biuf":
            return None
        return _stored_in(self.path, offset, info, f"dataset {name!r}")

    def iter_rows(self, name: str, rows_per_chunk: int) -> Iterator[np.ndarray]:
        dataset = self._dataset(name)
        if dataset.chunks:  # whole HDF5 chunks per read: each is decompressed once
            rows_per_chunk = max(dataset.chunks[0], rows_per_chunk // dataset.chunks[0] * dataset.chunks[0])
        try:
            for start in range(0, dataset.shape[0], rows_per_chunk):
                yield dataset[start : start + rows_per_chunk]
        except READ_ERRORS as error:
            raise file_error(self.path, f"dataset {name!r} is corrupt or truncated ({first_line(error)})") from None


def open_source(path: str | os.PathLike, kind: str) -> SourceFile:
    """Open ``path`` as ``kind`` ("npz" or "h5"); a missing or unreadable file is a UserError."""
    if path is None or str(path) == "":
        raise UserError("dataset.path is not set: give dataset.path=FILE")
    return NpzArchive(path) if kind == "npz" else H5File(path)


@dataclass(frozen=True)
class RowTransform:
    """A per-chunk conversion applied on the way into the cache (or memory), e.g. bit packing."""

    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    shape: Callable[[tuple[int, ...]], tuple[int, ...]]
    dtype: np.dtype


PACK_BITS = RowTransform(  # binary images, 8 pixels a byte along the last axis (1/8 of the disk and memory)
    name="packbits",
    dtype=np.dtype(np.uint8),
    apply=lambda rows: np.packbits(rows != 0, axis=-1),
    shape=lambda shape: (*shape[:-1], (shape[-1] + 7) // 8),
)


def cache_path(source: SourceFile, name: str, cache_dir: Path, transform: RowTransform | None) -> Path:
    """``<stem>-<path hash>-<array>[-<transform>]-<size/mtime hash>.npy`` under ``cache_dir``."""
    resolved = str(source.path.resolve())
    stat = source.path.stat()
    path_hash = hashlib.sha1(resolved.encode()).hexdigest()[:10]
    version_hash = hashlib.sha1(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    suffix = f"-{transform.name}" if transform else ""
    return cache_dir / f"{source.path.stem}-{path_hash}-{name}{suffix}-{version_hash}.npy"


# After a cache file's array: a JSON record of what it was built from, its length (8 bytes,
# little-endian) and this marker. numpy ignores bytes after the array; vaelab checks them.
CACHE_MARKER = b"VAELAB-CACHE-v1"
CACHE_TRAILER = struct.Struct("<Q")


def cache_record(source: SourceFile, name: str, transform: RowTransform | None) -> dict:
    """What a cache file is a copy of: the source file (path, size, modification time), the array
    and the transform. Stored in the file, so that a cache from another file is never read."""
    stat = source.path.stat()
    return {"source": str(source.path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "array": name, "transform": transform.name if transform else None}  # fmt: skip


def _open_cache(path: Path, expected: ArrayInfo, record: dict) -> tuple[StoredArray | None, str | None]:
    """(the cache file, None), or (None, why it cannot be used) when it exists but is cut short,
    holds another array or was built from another file; (None, None) when there is none."""
    if not path.is_file():
        return None, None
    try:
        with open(path, "rb") as stream:
            shape, fortran, dtype = _read_npy_header(stream)
            offset = stream.tell()
            end = offset + expected.nbytes
            if tuple(shape) != expected.shape or np.dtype(dtype) != expected.dtype or fortran:
                return None, f"holds a {tuple(shape)} {np.dtype(dtype)} array, not this dataset's {expected.shape} {expected.dtype}"
            size = path.stat().st_size
            tail = len(CACHE_MARKER) + CACHE_TRAILER.size
            if size < end:
                return None, "is cut short"
            no_record = "has no record of its source (cut short, or written by an older vaelab)"
            if size < end + tail:
                return None, no_record
            stream.seek(size - tail)
            (length,), marker = CACHE_TRAILER.unpack(stream.read(CACHE_TRAILER.size)), stream.read(len(CACHE_MARKER))
            if marker != CACHE_MARKER or end + length + tail != size:
                return None, no_record
            stream.seek(end)
            saved = json.loads(_read_exact(stream, length))
    except (*READ_ERRORS, json.JSONDecodeError):
        return None, "is unreadable"
    if saved != record:
        return None, f"was built from another file ({saved.get('source')}, array {saved.get('array')!r})"
    return StoredArray(path, offset, expected.shape, expected.dtype), None


def _convert(
    source: SourceFile, name: str, transform: RowTransform | None, write: Callable[[np.ndarray], None]
) -> None:
    info = source.info(name)
    row_bytes = max(info.nbytes // max(info.shape[0], 1), 1)
    for rows in source.iter_rows(name, max(1, CHUNK_BYTES // row_bytes)):
        write(transform.apply(rows) if transform else np.ascontiguousarray(rows))


def _build_cache(
    source: SourceFile, name: str, target: Path, expected: ArrayInfo, transform, record: dict
) -> None:
    """Write the cache: header, the rows chunk by chunk, then ``record`` (:data:`CACHE_MARKER`),
    to a temporary name; fsync; rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    log.info("caching %s:%s as %s (once; %.2f GB)", source.path, name, target, expected.nbytes / 1e9)
    started = time.perf_counter()
    try:
        with open(partial, "wb") as out:
            header = {"descr": np.lib.format.dtype_to_descr(expected.dtype), "fortran_order": False,
                      "shape": expected.shape}  # fmt: skip
            np.lib.format.write_array_header_1_0(out, header)
            _convert(source, name, transform, lambda rows: out.write(memoryview(rows).cast("B")))
            recorded = json.dumps(record, sort_keys=True).encode()
            out.write(recorded + CACHE_TRAILER.pack(len(recorded)) + CACHE_MARKER)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    prefix = target.name[: target.name.rindex("-") + 1]  # the same source and array, older versions
    for stale in target.parent.glob(f"{prefix}*.npy"):
        if stale != target:
            stale.unlink(missing_ok=True)
    log.info("cached %s in %.1f s", target.name, time.perf_counter() - started)


def _read_into_memory(source: SourceFile, name: str, expected: ArrayInfo, transform) -> np.ndarray:
    array = np.empty(expected.shape, dtype=expected.dtype)
    filled = 0

    def write(rows: np.ndarray) -> None:
        nonlocal filled
        array[filled : filled + len(rows)] = rows
        filled += len(rows)

    _convert(source, name, transform, write)
    return array


def pixel_array(
    source: SourceFile,
    name: str,
    *,
    in_memory: bool,
    cache_dir: str | os.PathLike | None,
    transform: RowTransform | None = None,
) -> np.ndarray | StoredArray:
    """The array ``name`` of ``source`` (after ``transform``): read in place, read from the cache
    (built on first use), or an array in memory when ``in_memory``."""
    info = source.info(name)
    if transform is None:
        expected = info
    else:
        expected = ArrayInfo(transform.shape(info.shape), transform.dtype)
    in_place = None if transform else source.stored(name)
    if in_place is not None:
        return in_place.load() if in_memory else in_place
    cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = cache_path(source, name, cache_root, transform)
    record = cache_record(source, name, transform)
    cached, problem = _open_cache(target, expected, record)
    if cached is not None:
        log.info("using cache %s", target)
        return cached.load() if in_memory else cached
    if problem is not None:  # only a cache: rebuilt from the source, never read, never an error
        log.warning("the cache %s %s; %s", target, problem, "reading the source" if in_memory else "rebuilding it")
    if in_memory:
        return _read_into_memory(source, name, expected, transform)
    try:
        _build_cache(source, name, target, expected, transform, record)
    except OSError as error:  # unwritable directory, disk full (read errors are UserErrors already)
        raise UserError(f"dataset.cache_dir={cache_root}: cannot write the cache ({first_line(error)})") from None
    cached, _ = _open_cache(target, expected, record)
    if cached is None:  # pragma: no cover - the file was just written
        raise UserError(f"dataset.cache_dir={cache_root}: the cache {target.name} could not be read back")
    return cached
