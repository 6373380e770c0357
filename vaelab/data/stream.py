"""The training stream and the validation set, both functions of seeds only.

Batch t of the training stream is rendered from factor vectors drawn with
``np.random.default_rng([seed, t])``: the stream is indexed by the global step,
so a resumed run sees exactly the batches the uninterrupted run would have seen,
whatever happened before. The validation set is one fixed draw (its own seed),
shared by every run so their ``val/…`` figures are comparable.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from vaelab.data.grid import GroundTruthDataset
from vaelab.data.pairs import PairSampling
from vaelab.errors import check_int


def batch_factors(dataset: GroundTruthDataset, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The factor vectors of training batch ``step``, seeded by (seed, step).

    Uniform on the grid unless ``dataset.correlation`` pairs factors (training only;
    validation and metrics keep the uniform grid).
    """
    return dataset.sample_training_factors(batch_size, np.random.default_rng([seed, step]))


def batch_pair_factors(dataset: GroundTruthDataset, pairs: PairSampling, batch_size: int, seed: int, step: int) -> np.ndarray:
    """(batch_size, 2, K): the factor vectors of the pairs of training batch ``step``, seeded by
    (seed, step). The first observations are drawn as :func:`batch_factors` draws a batch."""
    rng = np.random.default_rng([seed, step])
    first = dataset.sample_training_factors(batch_size, rng)
    return np.stack([first, pairs.sample(first, dataset.factor_sizes, rng)], axis=1)


@dataclass(eq=False)  # compared by identity, as the loaders that hold it expect
class TrainingStream(IterableDataset):
    """Endless batches ``{"images", "factors", "step"}`` starting at ``start_step``.

    Under DDP, step t has one global batch of ``batch_size * world_size`` factor vectors
    (or pairs), drawn as above, and rank r trains on slice r of it: n ranks see exactly
    the batches of one process with an n times larger batch, and a pair is never split.

    ``render=False``: batches without ``images``, which the dataset renders on the training
    device once the factors are there (:meth:`GroundTruthDataModule.on_after_batch_transfer`).
    ``prefetch`` > 0: batches are made that many ahead on a background thread (``pin_memory``:
    in page-locked memory, whose copies to a GPU run asynchronously).
    """

    dataset: GroundTruthDataset
    batch_size: int
    seed: int
    start_step: int = 0
    rank: int = 0
    world_size: int = 1
    pairs: PairSampling | None = None
    render: bool = True
    prefetch: int = 0
    pin_memory: bool = False

    def __iter__(self):
        if self.prefetch > 0:
            return made_ahead(self.batches(), self.prefetch, self.pin_memory)
        return self.batches()

    def batches(self):
        shard = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        global_size = self.batch_size * self.world_size
        for step in itertools.count(self.start_step):
            if self.pairs is not None:
                pair_factors = batch_pair_factors(self.dataset, self.pairs, global_size, self.seed, step)[shard]
                factors = np.concatenate([pair_factors[:, 0], pair_factors[:, 1]])  # first observations, then second
            else:
                factors = batch_factors(self.dataset, global_size, self.seed, step)[shard]
            batch = {"factors": torch.from_numpy(factors), "step": step}
            if self.render:
                batch = {"images": self.dataset.images(factors), **batch}
            elif draws := self.dataset.draws(factors):  # per-image random inputs, for render on the device
                batch["draws"] = draws
            yield batch


def _pinned(batch: dict) -> dict:
    """``batch`` with its tensors, nested ones (a variant's draws) too, in page-locked memory."""
    return {key: value.pin_memory() if isinstance(value, torch.Tensor) else _pinned(value) if isinstance(value, dict) else value
            for key, value in batch.items()}  # fmt: skip


def made_ahead(batches, depth: int, pin_memory: bool):
    """The batches of the iterator ``batches``, made on a background thread ``depth`` ahead of
    the one consumed (in page-locked memory with ``pin_memory``), in the same order. An error
    in the thread is raised here; closing this generator stops the thread."""
    import queue
    import threading

    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for batch in batches:
                if pin_memory:
                    batch = _pinned(batch)
                if not offer(batch):
                    return
            offer(_ThreadEnded(None))  # the end
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            offer(_ThreadEnded(error))

    thread = threading.Thread(target=work, name="vaelab-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if isinstance(item, _ThreadEnded):
                if item.error is None:
                    return
                raise item.error
            yield item
    finally:
        stop.set()


class _ThreadEnded:
    """What ends :func:`made_ahead`'s thread: its error, or None at the end of the batches."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class GroundTruthDataModule(pl.LightningDataModule):
    """Training stream + fixed validation set over one ground-truth dataset.

    With ``pairs`` (a weakly-supervised objective) ``batch_size`` counts pairs, and the
    validation batches are pairs too: ``val_size // 2`` of them, a fixed draw from ``val_seed``,
    so a validation pass sees as many images as without pairs. ``val_images`` (pictures) stays
    single images."""

    def __init__(
        self,
        dataset: GroundTruthDataset,
        batch_size: int = 64,
        seed: int = 0,
        val_size: int = 1024,
        val_seed: int = 12345,
        pairs: PairSampling | None = None,
        render_on_device: bool | None = None,
    ) -> None:
        """``render_on_device``: render training batches on the training device after the factors
        are copied there (datasets that can: ``dataset.renders_on_device``); None: wherever that
        device is not the CPU (the same images, bit for bit, either way)."""
        super().__init__()
        check_int("data.batch_size", batch_size, minimum=1)
        check_int("data.val_size", val_size, minimum=1)
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.val_size = val_size
        self.val_seed = val_seed
        self.pairs = pairs
        self.render_on_device = render_on_device
        self._val_images: torch.Tensor | None = None

    def train_dataloader(self) -> DataLoader:
        # Start where the trainer is (non-zero after a checkpoint restore).
        trainer = self.trainer
        start = trainer.global_step if trainer is not None else 0
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        wanted = self.render_on_device if self.render_on_device is not None else device.type != "cpu"
        on_cuda = device.type == "cuda"
        # On a GPU, what the host makes (factors, and images the dataset cannot render there) is
        # made ahead on a thread, in page-locked memory, so the step never waits for it.
        stream = TrainingStream(
            self.dataset, self.batch_size, self.seed, start_step=start, rank=rank, world_size=world, pairs=self.pairs,
            render=not (wanted and self.dataset.renders_on_device), prefetch=2 if on_cuda else 0, pin_memory=on_cuda,
        )  # fmt: skip
        return DataLoader(stream, batch_size=None)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """A training batch without images (``render_on_device``): rendered here, on the device."""
        if isinstance(batch, dict) and "images" not in batch and "factors" in batch:
            batch["images"] = self.dataset.render(batch["factors"], **batch.pop("draws", {}))
        return batch

    @property
    def val_images(self) -> torch.Tensor:
        """The fixed validation images, rendered on first use."""
        if self._val_images is None:
            factors = self.dataset.sample_factors(self.val_size, np.random.default_rng(self.val_seed))
            self._val_images = self.dataset.images(factors)
        return self._val_images

    def val_dataloader(self) -> DataLoader:
        if self.pairs is None:
            return DataLoader(TensorDataset(self.val_images), batch_size=max(self.batch_size, 256))
        # Pairs travel as (P, 2, C, H, W) so that a batch of the loader never splits one.
        rng = np.random.default_rng(self.val_seed)
        first = self.dataset.sample_factors(max(1, self.val_size // 2), rng)
        pair_factors = np.stack([first, self.pairs.sample(first, self.dataset.factor_sizes, rng)], axis=1)  # (P, 2, K)
        images = self.dataset.images(pair_factors.reshape(-1, pair_factors.shape[-1])).unflatten(0, pair_factors.shape[:2])
        return DataLoader(TensorDataset(images, torch.from_numpy(pair_factors)), batch_size=max(self.batch_size, 128))
